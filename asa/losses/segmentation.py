"""Fine-tuning loss: Dice + cross-entropy (softmax tasks) or Dice + BCE (overlapping regions)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import MaskedDiceLoss
from torch import nn

IGNORE = -1


class SegmentationLoss(nn.Module):
    """``Dice + CE`` for softmax tasks, ``Dice + BCE`` for multilabel region tasks (BraTS).

    logits: [B, K, ...]. target: multilabel float [B, K, ...]; softmax int64 [B, 1, ...] with
    ``-1`` for ignored voxels (WMH label 2), which are left out of both terms.
    """

    def __init__(self, multilabel: bool) -> None:
        super().__init__()
        self.multilabel = multilabel
        # one-hot here, before the mask: MONAI would one-hot the masked class map and count every
        # ignored voxel as background
        self.dice = MaskedDiceLoss(sigmoid=multilabel, softmax=not multilabel)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if self.multilabel:
            target = target.float()
            everywhere = torch.ones_like(target[:, :1])
            return self.dice(logits, target, mask=everywhere) + F.binary_cross_entropy_with_logits(logits, target)
        keep = target != IGNORE  # [B, 1, ...]
        onehot = F.one_hot(target[:, 0].long().clamp_min(0), logits.shape[1]).movedim(-1, 1).to(logits.dtype)
        dice = self.dice(logits, onehot, mask=keep.to(logits.dtype))  # masked: ignored voxels leave P, T and P∩T
        ce = F.cross_entropy(logits, target[:, 0].long(), ignore_index=IGNORE)
        return dice + ce
