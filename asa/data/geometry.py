"""Spatial helpers of the preprocessing: the brain centre, crop/pad windows and isotropic resampling.

The pretraining crop is brain-centred: its axis-0 centre is the left-right centre of the brain (mask
extent, or world x = 0 for MNI-aligned data), so the mid-sagittal plane lies between voxels size/2 - 1
and size/2 (voxel i mirrors size - 1 - i). Fine-tuning records the same centre per case, which places
the brain frame's reference grid (`asa.data.lattice`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.transforms.utils import generate_spatial_bounding_box

from asa.data.lattice import reference_origin

__all__ = ["LR_CENTRES", "brain_centre", "crop_at", "crop_or_pad", "grid_note", "resample_isotropic"]

LR_CENTRES = ("mask", "world")
ANISOTROPY = 1.5  # largest / smallest voxel edge above which a grid is anisotropic (1 × 1 × 3 mm: 3)
OBLIQUE_DEG = 10.0  # a voxel axis this far from its nearest world (RAS) axis: an oblique grid


def brain_centre(mask: np.ndarray, affine: np.ndarray | None = None, lr_centre: str = "mask") -> np.ndarray:
    """Array coordinates [3] of the brain centre: bounding-box centre of ``mask``; with
    ``lr_centre="world"`` the axis-0 coordinate is where world x = 0 (MNI-aligned inputs)."""
    if lr_centre not in LR_CENTRES:
        raise ValueError(f"lr_centre must be one of {LR_CENTRES}, got {lr_centre!r}")
    if not mask.any():
        return (np.array(mask.shape) - 1) / 2
    start, end = generate_spatial_bounding_box(mask[None])  # end is exclusive
    centre = (np.array(start, dtype=float) + np.array(end, dtype=float) - 1) / 2
    if lr_centre == "world":
        if affine is None:
            raise ValueError("lr_centre='world' needs the affine")
        world = affine @ np.append(centre, 1.0)
        world[0] = 0.0
        centre[0] = (np.linalg.inv(affine) @ world)[0]
    return centre


def crop_or_pad(image: np.ndarray, centre: Sequence[float], size: Sequence[int], value: float = 0.0) -> np.ndarray:
    """Window of ``size`` around ``centre`` from image [C, X, Y, Z], zero-padded where it leaves the
    volume. The window starts at round(centre - (size - 1) / 2), so a centre at a half-integer
    coordinate lands exactly in the middle of an even-sized output."""
    return crop_at(image, reference_origin(centre, size), size, value)


def crop_at(image: np.ndarray, start: Sequence[int], size: Sequence[int], value: float = 0.0, *,
            out: np.ndarray | None = None) -> np.ndarray:
    """Window of ``size`` starting at voxel ``start`` (may be negative) from image [C, X, Y, Z], filled
    with ``value`` where it leaves the volume. Only the window is read, so ``image`` may be a
    memory-mapped array. ``out`` [C, *size]: write the window there (any dtype the values cast to,
    e.g. a slot of a batch) instead of a new array of the image's dtype."""
    shape = (image.shape[0], *(int(n) for n in size))
    if out is None:
        out = np.empty(shape, dtype=image.dtype)
    elif out.shape != shape:
        raise ValueError(f"crop_at: out has shape {out.shape}, the window {shape}")
    src, dst = [], []
    for ax, (n, begin) in enumerate(zip(shape[1:], start)):
        begin = int(begin)
        lo, hi = max(begin, 0), min(begin + n, image.shape[ax + 1])
        if hi <= lo:
            out.fill(value)
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - begin, hi - begin))
    if not all(d.start == 0 and d.stop == n for d, n in zip(dst, shape[1:])):  # the window leaves the volume
        out.fill(value)
    out[(slice(None), *dst)] = image[(slice(None), *src)]
    return out


def resample_isotropic(image: np.ndarray, affine: np.ndarray, mm: float, mode: str = "bilinear") -> tuple[np.ndarray, np.ndarray]:
    """Resample [C, X, Y, Z] to ``mm`` isotropic voxels with MONAI ``Spacing`` (``nearest`` for labels)."""
    from monai.data import MetaTensor
    from monai.transforms import Spacing

    mt = MetaTensor(torch.as_tensor(image), affine=torch.as_tensor(affine, dtype=torch.float64))
    out = Spacing(pixdim=(mm, mm, mm), mode=mode, dtype=np.float32)(mt)
    return out.as_tensor().numpy().astype(image.dtype, copy=False), out.affine.numpy()


def grid_note(affines: dict[str, np.ndarray]) -> str | None:
    """One note on the cases whose voxel grid (``affines``: case id -> its image's [4, 4] affine) is
    anisotropic (edges differing more than `ANISOTROPY` times) or oblique (a voxel axis more than
    `OBLIQUE_DEG` degrees off the world axes), saying what the brain frame assumes and how to resample;
    None when every grid is near-isotropic and aligned."""
    anisotropic, oblique = {}, {}
    for case, affine in affines.items():
        axes = np.asarray(affine, dtype=np.float64)[:3, :3]
        spacing = np.linalg.norm(axes, axis=0)
        if spacing.min() > 0 and spacing.max() / spacing.min() > ANISOTROPY:
            anisotropic[case] = " × ".join(f"{s:g}" for s in np.round(spacing, 2)) + " mm"
        angle = float(np.degrees(np.arccos(np.clip(np.abs(axes / spacing).max(axis=0).min(), 0.0, 1.0))))
        if angle > OBLIQUE_DEG:
            oblique[case] = f"{angle:.0f}° off the RAS axes"
    if not anisotropic and not oblique:
        return None
    found = [f"{len(found)} of {len(affines)} case(s) {what} (e.g. {next(iter(found))}: {next(iter(found.values()))})"
             for found, what in ((anisotropic, "have anisotropic voxels"), (oblique, "are oblique")) if found]
    return ("; ".join(found) + ". The brain frame (the crop centred on the brain, the symmetric position code of "
            "model.pos_mode=mirror, the coordinate channel) assumes near-isotropic voxels with the mid-sagittal "
            "plane across array axis 0 (left-right). data.resample_mm=1, in training or asa-preprocess, resamples "
            "to 1 mm isotropic voxels but keeps the grid's axes: reslice oblique scans to the scanner's or a "
            "template's axes (a rigid registration, e.g. to MNI) first")

