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
        self.dice = MaskedDiceLoss(sigmoid=multilabel, softmax=not multilabel, to_onehot_y=not multilabel)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if self.multilabel:
            target = target.float()
            everywhere = torch.ones_like(target[:, :1])
            return self.dice(logits, target, mask=everywhere) + F.binary_cross_entropy_with_logits(logits, target)
        keep = target != IGNORE  # [B, 1, ...]
        clean = target.masked_fill(~keep, 0)
        dice = self.dice(logits, clean, mask=keep.float())
        ce = F.cross_entropy(logits, target[:, 0].long(), ignore_index=IGNORE)
        return dice + ce
