"""Per-patch informativeness Ḡ from gradient-orientation histograms (AR-loss steps 1–4, docs/method.md §1.5)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F

NORMALIZATIONS = ("l2", "none")
EPS = 1e-5
SLAB_VOXELS = 1 << 19  # voxels per chunk of the histogram pass on a CPU (fp32: 2 MiB per intermediate)


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

    volume: [B, C, D, H, W] -> [B, N] (raster order over the patch grid), no gradient. On a CPU steps 1–3 run
    in cache-sized chunks of about ``SLAB_VOXELS`` voxels (fresh volume-sized intermediates cost more in page
    faults than in arithmetic there); the values are those of one pass, bit for bit.
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
    g0, g1, g2 = d // s, h // s, w // s
    n = g0 * g1 * g2
    samples, depth = _chunk(volume, s)
    dev = volume.device
    # slot of every voxel of a chunk, less its bin: (sample · N + patch) · b², both within the chunk, the patch
    # from the voxel's coordinates, in the volume's own layout (no per-patch copies of the volume)
    patch = ((torch.arange(depth, device=dev) // s * (g1 * g2)).view(depth, 1, 1)
             + (torch.arange(h, device=dev) // s * g2).view(h, 1) + torch.arange(w, device=dev) // s)
    slot = ((torch.arange(samples, device=dev) * n).view(samples, 1, 1, 1, 1) + patch) * bins**2
    padded = F.pad(volume.float(), (1, 1, 1, 1, 1, 1))  # zero padding of the central differences
    hist = torch.zeros(b * n * bins**2, device=dev, dtype=torch.float32)
    # chunk by chunk in memory order: a patch lies in one chunk and index_add_ sums each slot in the voxels'
    # order, so the sums are those of one index_add_ over the batch, bit for bit
    with _one_thread(samples < b or depth < d):
        for i in range(0, b, samples):
            for z in range(0, d, depth):
                part = padded[i:i + samples, :, z:z + depth + 2]  # [m, C, k+2, H+2, W+2]
                m, k = part.shape[0], part.shape[2] - 2
                bin_id, mag = _orientation_bins(part, bins)  # [m, C, k, H, W] each
                first = (i * n + z // s * g1 * g2) * bins**2
                region = hist[first:first + m * (k // s) * g1 * g2 * bins**2]  # the chunk's patches, contiguous
                region.index_add_(0, (slot[:m, :, :k] + bin_id).view(-1), mag.view(-1))
    hist = hist.view(b, n, bins**2)
    if normalize == "l2":
        hist = hist / torch.sqrt((hist * hist).sum(-1, keepdim=True) + EPS**2)
    return hist.mean(-1)


def _chunk(volume: torch.Tensor, s: int) -> tuple[int, int]:
    """(samples, voxel layers) per chunk of the histogram pass. On a CPU about ``SLAB_VOXELS`` voxels, so that
    every intermediate stays in cache: whole samples when one fits, else whole rows of patches of one sample
    (all its channels). On another device the whole batch at once (one kernel per operation)."""
    b, c, d, h, w = volume.shape
    if volume.device.type != "cpu":
        return b, d
    if c * d * h * w <= SLAB_VOXELS:
        return min(b, SLAB_VOXELS // (c * d * h * w)), d
    return 1, s * max(1, SLAB_VOXELS // (c * s * h * w))


@contextmanager
def _one_thread(chunked: bool) -> Iterator[None]:
    """One intra-op thread for a chunked pass: its 20-odd operations per cache-sized chunk are too small to
    share among threads (each would wait for every thread to be scheduled, which on a loaded machine costs
    more than the work: 1.4-2.9× the one-pass time on 2 busy cores); the user's setting is restored after."""
    threads = torch.get_num_threads()
    if not chunked or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _orientation_bins(padded: torch.Tensor, bins: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps 1–3 for the voxels inside a zero-padded chunk: padded [..., k+2, H+2, W+2] -> (histogram bin
    r · b + c as int64, gradient magnitude |g|), each [..., k, H, W]."""
    gx = padded[..., 2:, 1:-1, 1:-1] - padded[..., :-2, 1:-1, 1:-1]
    gy = padded[..., 1:-1, 2:, 1:-1] - padded[..., 1:-1, :-2, 1:-1]
    gz = padded[..., 1:-1, 1:-1, 2:] - padded[..., 1:-1, 1:-1, :-2]
    mag = gx * gx
    mag += gy * gy
    mag += gz * gz
    mag.sqrt_()
    cos_theta = (gz / torch.where(mag > 0, mag, 1.0)).clamp_(-1.0, 1.0)
    width = math.pi / bins
    r = cos_theta.arccos_().div_(width).floor_().clamp_(max=bins - 1)
    col = torch.atan2(gy, gx).abs_().div_(width).floor_().clamp_(max=bins - 1)
    return col.add_(r, alpha=bins).long(), mag  # r · b + c: small integers, exact
