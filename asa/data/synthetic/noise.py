"""Pure-noise volumes: the negative control of a pretraining study.

An encoder pretrained on these has seen no anatomy: no tissue, no edges, no symmetry, nothing a
segmenter of brains could reuse beyond local intensity statistics. If such an encoder helps the
segmenter as much as one pretrained on brains, the study measures something else than what
pretraining learned from brains (an initialisation scale, a longer effective schedule, ...).

Each volume is Gaussian white noise smoothed by a Gaussian of ``sigma`` voxels (so that masked
blocks cannot be copied from their neighbours beyond about a voxel), standardised, then mapped to
mean 0.5 and sd 0.15 and clipped to [0.001, 1] over the whole grid: the intensity range of the template
subjects, everywhere non-zero (no brain mask to find). Volume ``index`` of seed ``seed`` depends on
those two only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["NoiseVolume", "make_noise_volume"]


@dataclass
class NoiseVolume:
    """``images``: {"t1": float32 [X, Y, Z] in [0, 1]}; ``affine``: voxel -> world (mm), RAS+."""

    images: dict[str, np.ndarray]
    affine: np.ndarray


def make_noise_volume(size: int | tuple[int, int, int] = 64, *, seed: int = 0, index: int = 0, sigma: float = 1.0,
                      affine: np.ndarray | None = None) -> NoiseVolume:
    """Noise volume ``index`` of seed ``seed`` on a grid of ``size``^3 (or ``size`` (x, y, z)) voxels.

    Args:
        size: one edge or three, at least 16 voxels.
        seed, index: the draw; the same pair gives the same array, bit for bit.
        sigma: smoothing of the white noise in voxels (0: white noise).
        affine: 4x4 voxel -> world of the grid, e.g. the cohort's it stands beside (default: 1 mm, centred).
    """
    shape = (int(size),) * 3 if isinstance(size, (int, np.integer)) else tuple(int(s) for s in size)
    if len(shape) != 3 or min(shape) < 16:
        raise ValueError(f"size must be one edge or three (x, y, z) of at least 16 voxels, got {size}")
    if not np.isfinite(sigma) or sigma < 0:
        raise ValueError(f"sigma must be a number of voxels >= 0, got {sigma}")
    if affine is None:
        affine = np.eye(4)
        affine[:3, 3] = -(np.array(shape) - 1) / 2
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise ValueError(f"affine must be 4x4, got {affine.shape}")
    rng = np.random.default_rng([seed, index, 27])
    field = rng.standard_normal(shape)
    if sigma > 0:
        field = ndimage.gaussian_filter(field, sigma, mode="wrap")
    field = (field - field.mean()) / max(float(field.std()), 1e-12)
    image = np.clip(0.5 + 0.15 * field, 1e-3, 1.0).astype(np.float32)  # never 0: no background to find
    return NoiseVolume(images={"t1": image}, affine=affine.copy())
