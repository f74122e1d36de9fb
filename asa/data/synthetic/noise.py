"""Pure-noise volumes: the negative control of a pretraining study (`asa-study`).

An encoder pretrained on these has seen no anatomy: no tissue, no edges, no symmetry, nothing a
segmenter of brains could reuse beyond local intensity statistics. If such an encoder helps the
segmenter as much as one pretrained on brains, the study measures something else than what
pretraining learned from brains (an initialisation scale, a longer effective schedule, ...).

Each volume is Gaussian white noise smoothed by a Gaussian of ``sigma`` voxels (so that masked
blocks cannot be copied from their neighbours beyond about a voxel), standardised, then mapped to
mean 0.5 and sd 0.15 and clipped to [0.001, 1] over the whole grid: the intensity range of the template
subjects, everywhere non-zero (no brain mask to find). Volume ``index`` of seed ``seed`` depends on
those two only; a volume of several channels (as many as the pretraining arms read) draws each channel
apart, its first channel the single-channel volume.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from asa.data.layouts.pretrain import CHANNELS
from asa.data.synthetic.demo import write_nifti
from asa.io import atomic_write_text

__all__ = ["NoiseVolume", "make_noise_volume", "write_noise_dataset"]


@dataclass
class NoiseVolume:
    """``images``: {channel: float32 [X, Y, Z] in [0, 1]} (``"t1"`` alone by default); ``affine``: voxel -> world
    (mm), RAS+."""

    images: dict[str, np.ndarray]
    affine: np.ndarray


def make_noise_volume(size: int | tuple[int, int, int] = 64, *, seed: int = 0, index: int = 0, sigma: float = 1.0,
                      affine: np.ndarray | None = None, channels: Sequence[str] = ("t1",)) -> NoiseVolume:
    """Noise volume ``index`` of seed ``seed`` on a grid of ``size``^3 (or ``size`` (x, y, z)) voxels.

    Args:
        size: one edge or three, at least 16 voxels.
        seed, index: the draw; the same pair gives the same array, bit for bit.
        sigma: smoothing of the white noise in voxels (0: white noise).
        affine: 4x4 voxel -> world of the grid, e.g. the cohort's it stands beside (default: 1 mm, centred).
        channels: the channel names, each an independent draw; the first is the one a single-channel volume holds.
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
    if not channels or len(set(channels)) != len(channels):
        raise ValueError(f"channels must name one or more distinct channels, got {list(channels)}")
    return NoiseVolume(images={name: _noise(shape, [seed, index, 27, *([k] if k else [])], sigma)
                               for k, name in enumerate(channels)}, affine=affine.copy())


def _noise(shape: tuple[int, ...], draw: list[int], sigma: float) -> np.ndarray:
    """One channel: smoothed white noise of the seed sequence ``draw``, standardised, at mean 0.5 and sd 0.15."""
    field = np.random.default_rng(draw).standard_normal(shape)
    if sigma > 0:
        field = ndimage.gaussian_filter(field, sigma, mode="wrap")
    field = (field - field.mean()) / max(float(field.std()), 1e-12)
    return np.clip(0.5 + 0.15 * field, 1e-3, 1.0).astype(np.float32)  # never 0: no background to find


def write_noise_dataset(out: str | Path, *, cases: int = 4, size: int | tuple[int, int, int] = 64, seed: int = 0,
                        affine: np.ndarray | None = None, overwrite: bool = False,
                        channels: Sequence[str] = ("t1",)) -> Path:
    """Write ``cases`` noise volumes (`make_noise_volume`) as a file list under ``out`` (``images/`` and
    ``files.csv``, the ``filelist`` layout: the ``t1`` channel in ``path``, any other in a column of its name),
    for pretraining a negative-control encoder; returns ``out``.

    Args:
        out: the folder; it must be missing or empty unless ``overwrite`` (`FileExistsError`).
        cases: number of volumes, at least 1.
        size, seed: as `make_noise_volume`; volume i is ``make_noise_volume(size, seed=seed, index=i)``.
        affine: the grid of the cohort the control stands beside (e.g. one of its subjects' affine), so that
            voxel size and field of view match; default 1 mm.
        overwrite: write into a folder that holds files.
        channels: ``t1`` first, then any of the file list's other channels (``t1ce``, ``t2``, ``flair``).
    """
    if cases < 1:
        raise ValueError(f"cases must be >= 1, got {cases}")
    others = list(channels[1:])
    if list(channels[:1]) != ["t1"] or any(c not in CHANNELS or c == "t1" for c in others):
        raise ValueError(f"channels must be t1, then any of {[c for c in CHANNELS if c != 't1']}, got {list(channels)}")
    out = Path(out).expanduser()
    held = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if held and not overwrite:
        raise FileExistsError(f"--out {out} is not empty ({', '.join(held[:5])}): choose a new folder, or pass "
                              "overwrite=True to write into it anyway")
    rows = []
    for index in range(cases):
        cid = f"DEMO_{index:03d}"
        volume = make_noise_volume(size, seed=seed, index=index, affine=affine, channels=channels)
        files = [f"images/{cid}{'' if name == 't1' else '_' + name}.nii.gz" for name in channels]
        for name, file in zip(channels, files):
            write_nifti(volume.images[name], volume.affine, out / file, "RAS", np.float32)
        rows.append(",".join([cid, *files]) + "\n")
    atomic_write_text(out / "files.csv", ",".join(["id", "path", *others]) + "\n" + "".join(rows))
    return out
