"""Focal region loss (RAT, docs/method.md §1.6b): an L1 loss weighted toward the regions reconstructed worst."""

from __future__ import annotations

import torch
from torch import nn


def region_error_weights(error: torch.Tensor, regions: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """w: the mean of ``error`` over each element's region (per sample), divided by the largest
    region mean of the batch, clamped to [0, 1]; detached. error: [B, ...]; regions: integer ids
    broadcastable to it; mask (1 = counted) likewise. Elements outside the mask get weight 0."""
    error = error.detach().float()
    b = error.shape[0]
    regions = torch.broadcast_to(regions, error.shape).reshape(b, -1)
    m = torch.ones_like(error) if mask is None else torch.broadcast_to(mask, error.shape).float()
    m = m.reshape(b, -1)
    _, index = torch.unique(regions, return_inverse=True)  # ids as 0..K-1 over the batch
    k = int(index.max()) + 1
    segment = index + k * torch.arange(b, device=index.device)[:, None]  # (sample, region) -> one id
    sums = torch.zeros(b * k, device=error.device).scatter_add_(0, segment.flatten(), (error.reshape(b, -1) * m).flatten())
    counts = torch.zeros(b * k, device=error.device).scatter_add_(0, segment.flatten(), m.flatten())
    means = sums / counts.clamp_min(1.0)  # regions with no counted element: 0
    top = means.max()
    w = means / top if top > 0 else torch.zeros_like(means)
    return (w.clamp(0.0, 1.0)[segment] * m).view_as(error)


class FocalRegionLoss(nn.Module):
    """``L = mean(e ⊙ (1 + β·w))`` with ``e = |X − Y|`` and w from `region_error_weights` (docs/method.md §1.6b).

    w carries no gradient, so the gradient flows through e only; β = 0 gives the L1 loss. RAT's
    class default is β = 1 (its training script uses 1e-3, which is L1 in effect). With ``mask``
    the mean runs over the masked-in elements only (the masked patches of the autoencoder).
    """

    def __init__(self, beta: float = 1.0) -> None:
        super().__init__()
        if beta < 0:
            raise ValueError(f"focal region beta must be >= 0, got {beta}")
        self.beta = beta

    def forward(
        self, pred: torch.Tensor, target: torch.Tensor, regions: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """pred, target: [B, ...]; regions: integer ids broadcastable to them; mask: 1 = in the loss.

        Returns (loss scalar, w shaped like pred).
        """
        if pred.shape != target.shape:
            raise ValueError(f"pred {list(pred.shape)} and target {list(target.shape)} differ in shape")
        if regions.is_floating_point():
            raise ValueError(f"regions must be integer ids, got {regions.dtype}")
        e = (pred.float() - target.float()).abs()
        w = region_error_weights(e, regions, mask)
        weighted = e * (1.0 + self.beta * w)
        if mask is None:
            return weighted.mean(), w
        m = torch.broadcast_to(mask, e.shape).float()
        return (weighted * m).sum() / m.sum().clamp_min(1.0), w
