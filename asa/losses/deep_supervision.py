"""nnU-Net's deep supervision: one loss over the decoder's outputs at several resolutions."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DeepSupervisionLoss", "deep_supervision_weights", "downsample_nearest"]


def deep_supervision_weights(num_outputs: int) -> list[float]:
    """nnU-Net's weights for outputs finest first: 1, 1/2, 1/4, ... normalised to sum 1."""
    if num_outputs < 1:
        raise ValueError(f"deep supervision needs at least one output, got {num_outputs}")
    raw = [2.0**-i for i in range(num_outputs)]
    return [w / sum(raw) for w in raw]


def downsample_nearest(target: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """A label map or target [B, C, *spatial] at ``size`` by nearest neighbour, in its own dtype
    (integer classes, -1 ignore and 0/1 region targets stay exact)."""
    if tuple(target.shape[2:]) == tuple(size):
        return target
    return F.interpolate(target.float(), size=tuple(int(s) for s in size), mode="nearest").to(target.dtype)


class DeepSupervisionLoss(nn.Module):
    """``Σ_i w_i · loss(logits_i, target↓_i)`` over a deep-supervised network's outputs.

    logits: a list ``[logits_0 [B, K, *S_0], logits_1 [B, K, *S_1], ...]`` finest first (the
    network's training output), or one tensor (eval mode, or a network without deep supervision:
    plain ``loss``). The target [B, C, *S_0] (and a region map [B, 1, *S_0], when given) is
    downsampled to each output's size by nearest neighbour, as nnU-Net downsamples its labels.
    Weights are :func:`deep_supervision_weights` of the number of outputs.

    Args:
        loss: ``loss(logits, target[, regions]) -> scalar``, e.g. :class:`SegmentationLoss`.
        num_outputs: the number of outputs the network returns in training.
    """

    def __init__(self, loss: nn.Module, num_outputs: int) -> None:
        super().__init__()
        self.loss = loss
        self.weights = deep_supervision_weights(num_outputs)

    def forward(self, logits: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor,
                regions: torch.Tensor | None = None) -> torch.Tensor:
        if isinstance(logits, torch.Tensor):
            return self.loss(logits, target) if regions is None else self.loss(logits, target, regions)
        if len(logits) != len(self.weights):
            raise ValueError(f"deep supervision: the network returned {len(logits)} outputs, the loss weighs "
                             f"{len(self.weights)}")
        total = logits[0].new_zeros((), dtype=torch.float32)
        for weight, out in zip(self.weights, logits):
            size = out.shape[2:]
            extra = () if regions is None else (downsample_nearest(regions, size),)
            total = total + weight * self.loss(out, downsample_nearest(target, size), *extra)
        return total
