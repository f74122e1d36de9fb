"""Reconstruction objectives of the masked autoencoder: the loss on the predicted patches.

An objective is a part of :class:`asa.models.MaskedAutoencoder`: ``forward(x, pred, mask, regions)``
-> (loss, weights [B, N]), with x [B, C, D, H, W] the input volume, pred [B, N, s³·C] the predicted
patches, mask [B, N] (1 = masked) and regions [B, 1, D, H, W] integer labels (or None); it declares
whether it needs the regions (``uses_regions``) and names its loss weights (``weighting``).
"""

from __future__ import annotations

import torch
from torch import nn

from asa.losses import AttentiveReconstructionLoss, FocalRegionLoss, patch_informativeness
from asa.losses.reconstruction import WEIGHTINGS
from asa.models.blocks.patch import patchify

LOSS_WEIGHTINGS = (*WEIGHTINGS, "focal_region")


class PatchReconstruction(nn.Module):
    """Masked MSE over the masked patches, their weights uniform (MAE) or the attentive ones of the
    AR-loss (docs/method.md §1.5: Ḡ from ``bins`` × ``bins`` orientation histograms, ``normalize``d);
    ``norm_pix_loss`` normalises each target patch first. weights: p [B, N] (0 on visible patches)."""

    uses_regions = False

    def __init__(self, patch_size: int, *, weighting: str, norm_pix_loss: bool, bins: int, normalize: str) -> None:
        super().__init__()
        self.patch_size, self.bins, self.normalize = patch_size, bins, normalize
        self.criterion = AttentiveReconstructionLoss(weighting, norm_pix_loss)
        self.weighting = weighting

    def forward(self, x: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor,
                regions: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        informativeness = None
        if self.weighting == "attentive":
            informativeness = patch_informativeness(x, self.patch_size, self.bins, self.normalize)  # [B, N]
        return self.criterion(pred, patchify(x, self.patch_size), mask, informativeness)


class FocalRegionReconstruction(nn.Module):
    """RAT's focal region loss (β = ``beta``, docs/method.md §1.6b) over the voxels of the masked patches, the
    regions being the voxel labels; ``norm_pix_loss`` normalises each target patch first.
    weights: the mean focal weight w of each masked patch [B, N] (0 on visible patches)."""

    uses_regions = True
    weighting = "focal_region"

    def __init__(self, patch_size: int, *, beta: float, norm_pix_loss: bool) -> None:
        super().__init__()
        self.patch_size, self.norm_pix_loss = patch_size, norm_pix_loss
        self.criterion = FocalRegionLoss(beta)

    def forward(self, x: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor,
                regions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        target = patchify(x, self.patch_size).float()  # [B, N, s³·C]
        if self.norm_pix_loss:
            target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
        voxel_ids = patchify(regions.long(), self.patch_size)  # [B, N, s³]
        voxel_ids = voxel_ids.repeat_interleave(x.shape[1], dim=-1)  # values ordered (s, s, s, C)
        loss, w = self.criterion(pred, target, voxel_ids, mask[..., None])
        return loss, w.mean(-1) * mask


def reconstruction_objective(
    weighting: str, *, patch_size: int, norm_pix_loss: bool, bins: int, normalize: str, focal_beta: float
) -> nn.Module:
    """The objective of ``weighting`` (one of ``LOSS_WEIGHTINGS``): ``attentive`` / ``uniform``
    :class:`PatchReconstruction`, ``focal_region`` :class:`FocalRegionReconstruction`."""
    if weighting not in LOSS_WEIGHTINGS:
        raise ValueError(f"loss_weighting must be one of {LOSS_WEIGHTINGS}, got {weighting!r}")
    if weighting == "focal_region":
        return FocalRegionReconstruction(patch_size, beta=focal_beta, norm_pix_loss=norm_pix_loss)
    return PatchReconstruction(patch_size, weighting=weighting, norm_pix_loss=norm_pix_loss, bins=bins,
                               normalize=normalize)
