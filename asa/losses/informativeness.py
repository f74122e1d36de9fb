"""Per-patch informativeness Ḡ from gradient-orientation histograms (AR-loss steps 1–4, docs/method.md §1.5)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

NORMALIZATIONS = ("l2", "none")
EPS = 1e-5


@torch.no_grad()
def patch_informativeness(
    volume: torch.Tensor,
    patch_size: int = 8,
    bins: int = 8,
    normalize: str = "l2",
) -> torch.Tensor:
    """Ḡ of every patch of every sample, computed on the input's device.

    1. central differences ``g_x(v) = I(v+e_x) - I(v-e_x)`` (zero padding), likewise y, z;
    2. ``θ = arccos(g_z/|g|)``, ``φ = |atan2(g_y, g_x)|``, both in [0, π];
    3. |g| accumulated into a bins × bins histogram G[r, c] per patch, r = ⌊θ/(π/b)⌋,
       c = ⌊φ/(π/b)⌋ (clamped to b-1); the voxels of all channels go into the same histogram;
    4. ``G / sqrt(ΣG² + ε²)`` (``normalize="l2"``, the paper's) or G as is (``"none"``),
       then Ḡ = mean of G over its b² bins.

    volume: [B, C, D, H, W] -> [B, N] (raster order over the patch grid), no gradient.
    """
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    if volume.ndim != 5:
        raise ValueError(f"volume must be [B, C, D, H, W], got shape {tuple(volume.shape)}")
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    b, c, d, h, w = volume.shape
    s = patch_size
    if any(n % s for n in (d, h, w)):
        raise ValueError(f"volume size {(d, h, w)} must be divisible by patch_size {s}")
    x = volume.float()
    p = F.pad(x, (1, 1, 1, 1, 1, 1))
    gx = p[:, :, 2:, 1:-1, 1:-1] - p[:, :, :-2, 1:-1, 1:-1]
    gy = p[:, :, 1:-1, 2:, 1:-1] - p[:, :, 1:-1, :-2, 1:-1]
    gz = p[:, :, 1:-1, 1:-1, 2:] - p[:, :, 1:-1, 1:-1, :-2]
    mag = torch.sqrt(gx * gx + gy * gy + gz * gz)
    cos_theta = (gz / torch.where(mag > 0, mag, torch.ones_like(mag))).clamp(-1.0, 1.0)
    width = math.pi / bins
    r = (torch.arccos(cos_theta) / width).floor().clamp(max=bins - 1)
    col = (torch.atan2(gy, gx).abs() / width).floor().clamp(max=bins - 1)
    bin_id = (r * bins + col).long()

    g0, g1, g2 = d // s, h // s, w // s
    n = g0 * g1 * g2
    # flat histogram slot of every voxel, in the volume's own layout (no per-patch copies of the
    # volume): (sample · N + patch) · b² + bin, the patch from the voxel's coordinates
    dev = volume.device
    patch = ((torch.arange(d, device=dev) // s * (g1 * g2)).view(d, 1, 1)
             + (torch.arange(h, device=dev) // s * g2).view(h, 1) + torch.arange(w, device=dev) // s)
    first = (torch.arange(b, device=dev) * n).view(b, 1, 1, 1, 1)
    index = ((first + patch) * bins**2 + bin_id).reshape(-1)  # [B·C·D·H·W]
    hist = torch.zeros(b * n * bins**2, device=dev, dtype=torch.float32)
    hist.index_add_(0, index, mag.reshape(-1))
    hist = hist.view(b, n, bins**2)
    if normalize == "l2":
        hist = hist / torch.sqrt((hist * hist).sum(-1, keepdim=True) + EPS**2)
    return hist.mean(-1)
