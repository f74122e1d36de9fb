"""Fine-tuning loss: Dice + cross-entropy (softmax tasks) or Dice + BCE (overlapping regions), with an
optional focal region term (RAT, docs/method.md §1.6b)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import MaskedDiceLoss
from torch import nn

from asa.losses.focal_region import FocalRegionLoss

IGNORE = -1


class SegmentationLoss(nn.Module):
    """``Dice + CE`` for softmax tasks, ``Dice + BCE`` for multilabel region tasks (BraTS).

    logits: [B, K, ...]. target: multilabel float [B, K, ...]; softmax int64 [B, 1, ...] with
    ``-1`` for ignored voxels (WMH label 2), which are left out of both terms.

    ``dice_background``: the Dice term of a softmax task counts the background class (channel 0) too;
    false (the default) leaves it out, as nnU-Net's Dice does (``do_bg=False``; MONAI's
    ``include_background=False``): background Dice is near 1 from the first steps and dilutes the small
    classes' share of the gradient. Multilabel tasks have no background channel: every region counts.

    ``focal_weight`` λ > 0 adds ``λ · FocalRegionLoss(β = focal_beta)`` between the probabilities
    (softmax, or sigmoid for multilabel tasks) and the one-hot target, over the ``regions`` map
    [B, 1, ...] passed to forward (ignored voxels left out).

    Not MONAI's ``DiceCELoss``: it has no mask or ignore index (a perfect WMH prediction with half
    the voxels ignored would score 0.25, not 0), and with several sigmoid channels it takes a
    softmax cross-entropy across them instead of BCE. It equals this loss only for softmax tasks
    without ignored voxels.
    """

    def __init__(self, multilabel: bool, *, focal_weight: float = 0.0, focal_beta: float = 1.0,
                 dice_background: bool = False) -> None:
        super().__init__()
        if focal_weight < 0:
            raise ValueError(f"focal region weight must be >= 0, got {focal_weight}")
        self.multilabel = multilabel
        self.focal_weight = focal_weight
        self.focal = FocalRegionLoss(focal_beta) if focal_weight > 0 else None
        # one-hot here, before the mask: MONAI would one-hot the masked class map and count every
        # ignored voxel as background
        self.dice = MaskedDiceLoss(sigmoid=multilabel, softmax=not multilabel,
                                   include_background=multilabel or dice_background)

    def forward(self, logits: torch.Tensor, target: torch.Tensor, regions: torch.Tensor | None = None) -> torch.Tensor:
        loss = self.base(logits.float(), target)
        if self.focal is None:
            return loss
        if regions is None:
            raise ValueError("the focal region term needs a region map per crop (data.regions in the run config)")
        return loss + self.focal_weight * self.focal_term(logits.float(), target, regions)

    def focal_term(self, logits: torch.Tensor, target: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
        """FocalRegionLoss between probabilities and one-hot targets over ``regions`` [B, 1, ...]."""
        if self.multilabel:
            return self.focal(torch.sigmoid(logits), target.float(), regions.long())[0]
        keep = target != IGNORE  # [B, 1, ...]
        onehot = F.one_hot(target[:, 0].long().clamp_min(0), logits.shape[1]).movedim(-1, 1).float()
        return self.focal(torch.softmax(logits, 1), onehot, regions.long(), keep)[0]

    def base(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Dice + CE (or BCE)."""
        if self.multilabel:
            target = target.float()
            everywhere = torch.ones_like(target[:, :1])
            return self.dice(logits, target, mask=everywhere) + F.binary_cross_entropy_with_logits(logits, target)
        keep = target != IGNORE  # [B, 1, ...]
        onehot = F.one_hot(target[:, 0].long().clamp_min(0), logits.shape[1]).movedim(-1, 1).to(logits.dtype)
        dice = self.dice(logits, onehot, mask=keep.to(logits.dtype))  # masked: ignored voxels leave P, T and P∩T
        ce = F.cross_entropy(logits, target[:, 0].long(), ignore_index=IGNORE)
        return dice + ce
