"""Pure-noise volumes: the negative control of a pretraining study (`asa.study.study`).

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
from pathlib import Path

import numpy as np
from scipy import ndimage

from asa.data.synthetic.demo import write_nifti
from asa.io import atomic_write_text

__all__ = ["NoiseVolume", "make_noise_volume", "write_noise_dataset"]


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


def write_noise_dataset(out: str | Path, *, cases: int = 4, size: int | tuple[int, int, int] = 64, seed: int = 0,
                        affine: np.ndarray | None = None, overwrite: bool = False) -> Path:
    """Write ``cases`` noise volumes (`make_noise_volume`) as a T1w file list under ``out`` (``images/`` and
    ``files.csv``, the ``filelist`` layout), for pretraining a negative-control encoder; returns ``out``.

    Args:
        out: the folder; it must be missing or empty unless ``overwrite`` (`FileExistsError`).
        cases: number of volumes, at least 1.
        size, seed: as `make_noise_volume`; volume i is ``make_noise_volume(size, seed=seed, index=i)``.
        affine: the grid of the cohort the control stands beside (e.g. one of its subjects' affine), so that
            voxel size and field of view match; default 1 mm.
        overwrite: write into a folder that holds files.
    """
    if cases < 1:
        raise ValueError(f"cases must be >= 1, got {cases}")
    out = Path(out).expanduser()
    held = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if held and not overwrite:
        raise FileExistsError(f"--out {out} is not empty ({', '.join(held[:5])}): choose a new folder, or pass "
                              "overwrite=True to write into it anyway")
    rows = []
    for index in range(cases):
        volume, cid = make_noise_volume(size, seed=seed, index=index, affine=affine), f"DEMO_{index:03d}"
        write_nifti(volume.images["t1"], volume.affine, out / "images" / f"{cid}.nii.gz", "RAS", np.float32)
        rows.append(f"{cid},images/{cid}.nii.gz\n")
    atomic_write_text(out / "files.csv", "id,path\n" + "".join(rows))
    return out
