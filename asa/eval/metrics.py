"""Overlap and surface-distance metrics on boolean masks (docs/method.md §3).

Conventions (BraTS challenge):

- Both masks empty: Dice 1, HD95 0 — the method correctly found nothing.
- Exactly one mask empty: Dice 0, HD95 :data:`EMPTY_HD95` = 373.13 mm (the diagonal of the
  240×240×155 mm BraTS volume, the largest distance possible there).
- ``ignore``: voxels where ``ignore`` is True are removed from *both* masks before anything is
  computed (WMH challenge: label 2 "other pathology" counts neither as hit nor as miss).

HD95 has two conventions in use (``convention``), which differ by millimetres on real cases.
Both start from the same surface distances: the surface of a mask is its foreground voxels with at
least one 6-connected background neighbour (outside the array counts as background; MONAI's
``get_edge_surface_distance``); for every surface voxel of ``pred`` the Euclidean distance in
millimetres (voxel spacing applied per axis) to the nearest surface voxel of ``ref`` is taken, and
vice versa. Percentiles use linear interpolation (``torch.quantile``, as numpy's default).

- ``max_directed`` (default; MONAI's ``compute_hausdorff_distance(percentile=95)``, BraTS tooling):
  the 95th percentile of each directed set, then the larger of the two.
- ``pooled`` (medpy's ``hd95``, which the ASA authors' release uses): the 95th percentile of both
  directions' distances pooled together.

They are not interchangeable: ``pooled`` never exceeds ``max_directed`` by more than the
interpolation between neighbouring order statistics, and it can lie far below it — a prediction
with a small far-away false positive (a few large ``pred -> ref`` distances among many zeros) has
a large directed percentile, while pooled with the other direction's zeros they fall above the
95th percentile (tests: 15 mm vs 0 mm on a hand-made case). Even identical directed distributions
give different values (interpolation over n vs 2n samples). Compare with published numbers only
under the same convention.

NSD, the normalised surface Dice (Nikolov et al. 2021; the FOMO25 challenge's segmentation metric
beside Dice), is the fraction of both surfaces lying within a tolerance τ (mm) of the other:
``(|{d ∈ D_pred→ref : d ≤ τ}| + |{d ∈ D_ref→pred : d ≤ τ}|) / (|D_pred→ref| + |D_ref→pred|)``, from the
same surface voxels and Euclidean distances in mm as HD95 (MONAI's ``compute_surface_dice``, surface
size counted in voxels). Empty sets as FOMO25 scores them (and as Dice): both masks empty → 1,
exactly one empty → 0 (MONAI returns NaN for the first).
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

HD95_CONVENTIONS: tuple[str, ...] = ("max_directed", "pooled")
"""``max_directed``: max of the two directed 95th percentiles (MONAI, BraTS); ``pooled``: 95th
percentile of both directions' distances together (medpy, the ASA paper's tables)."""


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


NSD_EMPTY: dict[str, float] = {"both_empty": 1.0, "one_empty": 0.0}
"""NSD when both masks are empty / exactly one is (FOMO25's convention, as for Dice)."""


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
    convention: str = "max_directed",
) -> float:
    """95th-percentile symmetric Hausdorff distance in mm (module docstring: conventions, empties).

    Args:
        pred, ref: boolean masks of equal shape, e.g. [D, H, W].
        spacing: voxel size in mm per array axis (None: 1 mm isotropic).
        ignore: optional boolean mask of voxels removed from both masks.
        convention: ``max_directed`` (MONAI, BraTS; default) or ``pooled`` (medpy).
    """
    if convention not in HD95_CONVENTIONS:
        raise ValueError(f"hd95 convention must be one of {HD95_CONVENTIONS}, got {convention!r}")
    pred, ref = _prepare(pred, ref, ignore)
    spacing_t = _check_spacing(spacing, pred.ndim)
    has_pred, has_ref = bool(pred.any()), bool(ref.any())
    if not has_pred and not has_ref:
        return 0.0
    if has_pred != has_ref:
        return EMPTY_HD95
    if importlib.util.find_spec("scipy") is None:
        raise ImportError("hd95 needs scipy (MONAI computes surface distances with it): pip install scipy")
    from monai.metrics.utils import get_edge_surface_distance

    with warnings.catch_warnings():
        # MONAI passes its own deprecated `always_return_as_numpy` argument internally.
        warnings.simplefilter("ignore", FutureWarning)
        _, distances, _ = get_edge_surface_distance(
            torch.from_numpy(np.ascontiguousarray(pred)).float(),
            torch.from_numpy(np.ascontiguousarray(ref)).float(),
            distance_metric="euclidean",
            spacing=list(spacing_t),
            symmetric=True,  # (pred -> ref, ref -> pred)
        )
    q = HD_PERCENTILE / 100
    if convention == "pooled":
        return float(torch.quantile(torch.cat([d.double() for d in distances]), q).item())
    return float(max(torch.quantile(d.double(), q) for d in distances).item())


def _check_tolerance(tolerance: float) -> float:
    tolerance = float(tolerance)
    if not np.isfinite(tolerance) or tolerance < 0:
        raise ValueError(f"NSD tolerance must be a finite number of mm >= 0, got {tolerance!r}")
    return tolerance


def normalized_surface_dice(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: float | Sequence[float] | None = None,
    *,
    tolerance: float = 1.0,
    ignore: np.ndarray | None = None,
) -> float:
    """Normalised surface Dice (NSD) in [0, 1]: the share of both surfaces within ``tolerance`` mm of
    the other (module docstring: definition, empty sets).

    Args:
        pred, ref: boolean masks of equal shape, e.g. [D, H, W].
        spacing: voxel size in mm per array axis (None: 1 mm isotropic).
        tolerance: the accepted surface deviation τ in mm (a distance d counts when d ≤ τ).
        ignore: optional boolean mask of voxels removed from both masks.
    """
    tolerance = _check_tolerance(tolerance)
    pred, ref = _prepare(pred, ref, ignore)
    spacing_t = _check_spacing(spacing, pred.ndim)
    has_pred, has_ref = bool(pred.any()), bool(ref.any())
    if not has_pred and not has_ref:
        return NSD_EMPTY["both_empty"]
    if has_pred != has_ref:
        return NSD_EMPTY["one_empty"]
    if importlib.util.find_spec("scipy") is None:
        raise ImportError("NSD needs scipy (MONAI computes surface distances with it): pip install scipy")
    from monai.metrics import compute_surface_dice

    def as_batch(mask: np.ndarray) -> torch.Tensor:  # [1, 1, D, H, W]: one class, background left out
        return torch.from_numpy(np.ascontiguousarray(mask))[None, None].float()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # MONAI's own deprecated argument, passed internally
        nsd = compute_surface_dice(as_batch(pred), as_batch(ref), class_thresholds=[tolerance],
                                   include_background=True, distance_metric="euclidean", spacing=list(spacing_t))
    return float(nsd[0, 0].item())
