"""Masked reconstruction loss: attentive (AR-loss steps 5–6), uniform (plain MAE) and normalised targets."""

from __future__ import annotations

import torch
from torch import nn

WEIGHTINGS = ("attentive", "uniform")


def masked_patch_weights(mask: torch.Tensor, informativeness: torch.Tensor | None = None) -> torch.Tensor:
    """Weights p over the masked patches of each sample, summing to 1 (docs/method.md §1.5 step 5).

    ``p_i = Ḡ_i / Σ_j Ḡ_j`` over masked patches; uniform ``1 / #masked`` without ``informativeness``
    or when all masked Ḡ are 0. Visible patches get 0. mask, informativeness: [B, N] -> [B, N].
    """
    m = mask.float()
    uniform = m / m.sum(-1, keepdim=True).clamp_min(1.0)
    if informativeness is None:
        return uniform
    g = informativeness.detach().float() * m
    total = g.sum(-1, keepdim=True)
    return torch.where(total > 0, g / torch.where(total > 0, total, torch.ones_like(total)), uniform)


def weight_spread(weights: torch.Tensor, units: torch.Tensor) -> dict[str, float]:
    """How far the loss weights of the masked units are from uniform, averaged over the batch: ``cv``, their
    coefficient of variation std(p) / mean(p) (population std; 0 when uniform), and ``effective_share``,
    (Σp)² / (n · Σp²) = the effective number of units 1 / Σp² over the n masked ones for p summing to 1
    (1 when uniform; 1/n when one unit takes all). A weighting whose cv is about 0.1 cannot move a result.

    weights, units: [B, N] (units: 1 = a masked unit, whatever its weight, 0 included)."""
    m = units.detach().float()
    p = weights.detach().float() * m
    n = m.sum(-1).clamp_min(1.0)
    mean = p.sum(-1) / n
    var = ((p - mean[:, None]).pow(2) * m).sum(-1) / n
    cv = var.sqrt() / mean.clamp_min(1e-30)
    share = p.sum(-1).pow(2) / (n * p.pow(2).sum(-1)).clamp_min(1e-30)
    cv_mean, share_mean = torch.stack([cv.mean(), share.mean()]).tolist()  # one device sync per step, not two
    return {"cv": cv_mean, "effective_share": share_mean}


class AttentiveReconstructionLoss(nn.Module):
    """``L = mean_batch Σ_i p_i · mean_voxels((X_i - Y_i)²)`` over masked patches (docs/method.md §1.5 step 6).

    ``weighting="attentive"`` takes p from the informativeness Ḡ (the ASA / A-SSL rows),
    ``"uniform"`` is plain masked MSE (the MAE / SPE+SSL rows). ``norm_pix_loss`` normalises each
    target patch to zero mean, unit variance first (MAE option). The weights carry no gradient.
    """

    def __init__(self, weighting: str = "attentive", norm_pix_loss: bool = False) -> None:
        super().__init__()
        if weighting not in WEIGHTINGS:
            raise ValueError(f"loss weighting must be one of {WEIGHTINGS}, got {weighting!r}")
        self.weighting = weighting
        self.norm_pix_loss = norm_pix_loss

    def forward(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        mask: torch.Tensor,
        informativeness: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """pred, target: [B, N, P]; mask: [B, N] (1 = masked); informativeness: [B, N] Ḡ.

        Returns (loss scalar, weights [B, N]).
        """
        if self.weighting == "attentive" and informativeness is None:
            raise ValueError("attentive weighting needs the patch informativeness Ḡ")
        target = target.float()
        if self.norm_pix_loss:
            mean = target.mean(-1, keepdim=True)
            var = target.var(-1, keepdim=True)
            target = (target - mean) / (var + 1e-6).sqrt()
        weights = masked_patch_weights(mask, informativeness if self.weighting == "attentive" else None)
        per_patch = (pred.float() - target).pow(2).mean(-1)  # [B, N]
        return (weights * per_patch).sum(-1).mean(), weights
