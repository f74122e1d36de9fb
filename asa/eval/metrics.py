"""Overlap and surface-distance metrics on boolean masks (DESIGN.md §3).

Conventions (BraTS challenge):

- Both masks empty: Dice 1, HD95 0 — the method correctly found nothing.
- Exactly one mask empty: Dice 0, HD95 :data:`EMPTY_HD95` = 373.13 mm (the diagonal of the
  240×240×155 mm BraTS volume, the largest distance possible there).
- ``ignore``: voxels where ``ignore`` is True are removed from *both* masks before anything is
  computed (WMH challenge: label 2 "other pathology" counts neither as hit nor as miss).

HD95 follows MONAI (:func:`monai.metrics.compute_hausdorff_distance` with ``percentile=95``):
the surface of a mask is its foreground voxels with at least one 6-connected background
neighbour (outside the array counts as background); for every surface voxel of ``pred`` the
Euclidean distance in millimetres (voxel spacing applied per axis) to the nearest surface voxel
of ``ref`` is taken, and vice versa; the 95th percentile (linear interpolation,
``torch.quantile``) of each directed set is computed, and HD95 is the larger of the two.
(medpy's ``hd95`` instead takes the percentile of the pooled distances of both directions; the
two agree on symmetric cases and differ by at most a voxel or so otherwise.)
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Sequence

import numpy as np
import torch

EMPTY_HD95: float = 373.13
"""HD95 (mm) when exactly one of prediction and reference is empty (BraTS convention)."""

HD_PERCENTILE: float = 95.0


def _as_bool(mask: np.ndarray, name: str) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.dtype != bool:
        raise TypeError(f"{name} must be a boolean array, got dtype {mask.dtype}")
    return mask


def _prepare(
    pred: np.ndarray, ref: np.ndarray, ignore: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Check shapes/dtypes and remove ignored voxels from both masks."""
    pred, ref = _as_bool(pred, "pred"), _as_bool(ref, "ref")
    if pred.shape != ref.shape:
        raise ValueError(f"pred and ref must have the same shape, got {pred.shape} and {ref.shape}")
    if ignore is not None:
        ignore = _as_bool(ignore, "ignore")
        if ignore.shape != ref.shape:
            raise ValueError(f"ignore must have the shape of ref {ref.shape}, got {ignore.shape}")
        pred, ref = pred & ~ignore, ref & ~ignore
    return pred, ref


def dice(pred: np.ndarray, ref: np.ndarray, *, ignore: np.ndarray | None = None) -> float:
    """Dice = 2|P∩R| / (|P|+|R|) of boolean masks of equal shape; 1.0 when both are empty."""
    pred, ref = _prepare(pred, ref, ignore)
    total = int(pred.sum()) + int(ref.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(pred, ref).sum()) / total


def _check_spacing(spacing: float | Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    values = (float(spacing),) * ndim if np.isscalar(spacing) else tuple(float(s) for s in spacing)
    if len(values) != ndim or not all(np.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"spacing must be {ndim} positive finite numbers (mm per axis), got {spacing!r}")
    return values


def hd95(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: float | Sequence[float] | None = None,
    *,
    ignore: np.ndarray | None = None,
) -> float:
    """95th-percentile symmetric Hausdorff distance in mm (module docstring: convention, empties).

    Args:
        pred, ref: boolean masks of equal shape, e.g. [D, H, W].
        spacing: voxel size in mm per array axis (None: 1 mm isotropic).
        ignore: optional boolean mask of voxels removed from both masks.
    """
    pred, ref = _prepare(pred, ref, ignore)
    spacing_t = _check_spacing(spacing, pred.ndim)
    has_pred, has_ref = bool(pred.any()), bool(ref.any())
    if not has_pred and not has_ref:
        return 0.0
    if has_pred != has_ref:
        return EMPTY_HD95
    if importlib.util.find_spec("scipy") is None:
        raise ImportError("hd95 needs scipy (MONAI computes surface distances with it): pip install scipy")
    from monai.metrics import compute_hausdorff_distance

    with warnings.catch_warnings():
        # MONAI passes its own deprecated `always_return_as_numpy` argument internally.
        warnings.simplefilter("ignore", FutureWarning)
        value = compute_hausdorff_distance(
            torch.from_numpy(np.ascontiguousarray(pred))[None, None],  # [B=1, C=1, *spatial]
            torch.from_numpy(np.ascontiguousarray(ref))[None, None],
            include_background=True,
            percentile=HD_PERCENTILE,
            spacing=list(spacing_t),
        )
    return float(value.item())
