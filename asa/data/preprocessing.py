"""Deterministic preprocessing (cached by the datasets; MONAI transforms on dicts).

Load every channel in canonical RAS+, optional resampling to isotropic ``resample_mm``, brain mask,
z-score inside the brain after percentile clipping (background stays 0), and for pretraining a
brain-centred crop/pad (`asa.data.geometry`). Fine-tuning preprocessing keeps the whole volume and
records the brain centre of every case (``"centre"``: the left-right centre of the brain mask, i.e.
the mid-sagittal plane, and the mask's centre along the other axes, exactly as the pretraining crop
is centred), which places the brain frame's reference grid (`asa.data.lattice`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import Transform

from asa.data.case import Case
from asa.data.geometry import LR_CENTRES, brain_centre, crop_or_pad, resample_isotropic
from asa.data.regions import RegionSource
from asa.data.labels import Task
from asa.io import Volume, load_volume

__all__ = [
    "PERCENTILES", "case_to_item", "check_percentiles", "load_case_images", "brain_mask", "flat_channels",
    "normalize_in_brain", "run_percentiles", "PretrainPreprocess", "SegmentationPreprocess",
]


def case_to_item(case: Case, channels: Sequence[str] | None = None) -> dict[str, Any]:
    """Case -> plain dict the pipelines consume; ``stamp`` (mtime, size per file) keys the cache."""
    channels = tuple(channels) if channels is not None else case.channels
    missing = [c for c in channels if c not in case.images]
    if missing:
        raise ValueError(f"case {case.id}: missing channel(s) {missing}; has {list(case.images)}")
    paths = [str(case.images[c]) for c in channels]
    stamp = []
    for p in case.paths():
        st = p.stat()
        stamp.append((str(p), st.st_mtime_ns, st.st_size))
    return {
        "id": case.id,
        "images": paths,
        "frames": [case.frame(c) for c in channels],
        "label": None if case.label is None else str(case.label),
        "stamp": stamp,
    }


def load_case_images(item: dict[str, Any]) -> tuple[np.ndarray, Volume]:
    """Stack the channels of an item: float32 [C, X, Y, Z] in RAS+, and the first channel's Volume."""
    vols = [load_volume(p, label=False, frame=f) for p, f in zip(item["images"], item["frames"])]
    ref = vols[0]
    for v in vols[1:]:
        if v.array.shape != ref.array.shape or not np.allclose(v.affine, ref.affine, atol=1e-3):
            raise ValueError(f"case {item['id']}: {v.path} is not on the grid of {ref.path}")
    return np.stack([v.array for v in vols]), ref


def brain_mask(image: np.ndarray) -> np.ndarray:
    """Bool [X, Y, Z]: non-zero in any channel of image [C, X, Y, Z] (skull-stripped data); when
    more than 90 % of voxels are non-zero (not skull-stripped) the first channel is thresholded at
    20 % of its 99th percentile instead."""
    mask = np.any(image != 0, axis=0)
    if mask.mean() > 0.9:
        ch = image[0]
        mask = ch > 0.2 * np.percentile(ch[:: 2, :: 2, :: 2], 99)
    return mask


PERCENTILES = (0.5, 99.5)  # the intensity range kept inside the brain before z-scoring (data.percentiles' default)
FLAT_TOLERANCE = 1e-6  # relative spread below which a channel has no contrast (float32 rounding)


def check_percentiles(percentiles: Any, option: str = "percentiles") -> tuple[float, float]:
    """``percentiles`` as (low, high) floats: two numbers with 0 <= low < high <= 100, else a ``ValueError`` naming
    ``option``. (0, 100) clips nothing: the z-score inside the brain alone, nnU-Net's ``ZScoreNormalization``
    with ``use_mask_for_norm`` over the same mask."""
    try:
        lo, hi = (float(p) for p in percentiles)
        valid = 0.0 <= lo < hi <= 100.0  # NaN fails too
    except (TypeError, ValueError):
        valid = False
    if not valid:
        shown = list(percentiles) if isinstance(percentiles, (list, tuple)) else percentiles
        raise ValueError(f"{option}={shown}: expected two percentiles [low, high] with 0 <= low < high <= 100, the "
                         f"range each image is clipped to inside its brain before the z-score (default "
                         f"{list(PERCENTILES)}; [0, 100]: no clip, nnU-Net's ZScoreNormalization with the mask)")
    return lo, hi


def run_percentiles(config: Any) -> tuple[float, float]:
    """The percentiles a saved fine-tuning run config (a checkpoint's ``config``) preprocessed with: its
    ``data.percentiles``; `PERCENTILES` for a run saved before the option (which always clipped to them)."""
    data = config.get("data") if hasattr(config, "get") else None
    given = data.get("percentiles") if hasattr(data, "get") else None
    return PERCENTILES if given is None else check_percentiles(given, "the checkpoint's data.percentiles")


def flat_channels(image: np.ndarray, mask: np.ndarray, percentiles: tuple[float, float] = PERCENTILES
                  ) -> list[tuple[int, float, float]]:
    """The channels `normalize_in_brain` cannot z-score: ``(channel, low, high)`` for each channel
    of image [C, X, Y, Z] whose ``percentiles`` inside mask [X, Y, Z] are equal (after clipping every
    brain voxel is one value: std 0) or closer than ``FLAT_TOLERANCE`` times their magnitude (z-scoring
    would blow float rounding up to unit variance). An empty mask makes every channel flat (nan, nan)."""
    if not mask.any():
        return [(c, float("nan"), float("nan")) for c in range(image.shape[0])]
    flat = []
    for c in range(image.shape[0]):
        lo, hi = (float(v) for v in np.percentile(image[c][mask], percentiles))
        if hi - lo <= FLAT_TOLERANCE * max(abs(lo), abs(hi)):
            flat.append((c, lo, hi))
    return flat


def normalize_in_brain(image: np.ndarray, mask: np.ndarray, percentiles: tuple[float, float] = PERCENTILES) -> np.ndarray:
    """Per channel: clip to the brain's percentiles, z-score with the brain's mean/std, zero outside.
    A channel `flat_channels` reports becomes 0 in the brain (the upfront case checks refuse such
    images, see `asa.data.layouts.base.check_case`).

    image: [C, X, Y, Z] float32, mask: [X, Y, Z] bool -> float32 [C, X, Y, Z].
    """
    out = np.zeros_like(image, dtype=np.float32)
    if not mask.any():
        return out
    for c in range(image.shape[0]):
        values = image[c][mask]
        lo, hi = np.percentile(values, percentiles)
        values = np.clip(values, lo, hi)
        std = float(values.std())
        out[c][mask] = (values - values.mean()) / (std if std > 1e-8 else 1.0)
    return out


def _as_tuple3(size: int | Sequence[int]) -> tuple[int, int, int]:
    t = (int(size),) * 3 if isinstance(size, (int, np.integer)) else tuple(int(s) for s in size)
    if len(t) != 3 or min(t) < 1:
        raise ValueError(f"size must be an int or three positive ints, got {size}")
    return t  # type: ignore[return-value]


class PretrainPreprocess(Transform):
    """item -> {"image": float32 Tensor [C, *size], "brain": bool [1, *size], "id"}: load, (resample),
    z-score in brain, brain-centred crop/pad; ``brain`` is the brain mask on the crop. With ``regions``
    (`asa.data.regions.RegionSource`) also ``"region"``: int16 [1, *size], the case's region map
    under the same crop."""

    def __init__(self, size: int | Sequence[int], *, resample_mm: float | None = None, lr_centre: str = "mask",
                 percentiles: tuple[float, float] = PERCENTILES, regions: RegionSource | None = None) -> None:
        if lr_centre not in LR_CENTRES:
            raise ValueError(f"lr_centre must be one of {LR_CENTRES}, got {lr_centre!r}")
        self.size = _as_tuple3(size)
        self.resample_mm = resample_mm
        self.lr_centre = lr_centre
        self.percentiles = check_percentiles(percentiles)
        self.regions = regions

    def settings(self) -> dict[str, Any]:
        out = {"kind": "pretrain", "size": self.size, "resample_mm": self.resample_mm, "lr_centre": self.lr_centre,
               "percentiles": self.percentiles}
        return out if self.regions is None else {**out, "regions": self.regions.settings()}

    def prepare(self, item: dict[str, Any]) -> dict[str, Any]:
        """Everything before the crop, on the whole (resampled) grid: ``"image"`` float32 [C, X, Y, Z]
        z-scored in the brain (0 outside), ``"brain"`` bool [X, Y, Z], ``"centre"`` float64 [3],
        ``"affine"`` [4, 4], ``"spacing"`` [3] and, with ``regions``, ``"region"`` int16 [X, Y, Z]."""
        image, ref = load_case_images(item)
        affine, resample = ref.affine, None
        if self.resample_mm and not np.allclose(ref.spacing, self.resample_mm, atol=1e-3):
            resample = (ref.affine, self.resample_mm)  # a loaded region map is resampled alike
            image, affine = resample_isotropic(image, affine, self.resample_mm)
        mask = brain_mask(image)
        image = normalize_in_brain(image, mask, self.percentiles)
        out = {"image": image, "brain": mask, "centre": brain_centre(mask, affine, self.lr_centre), "affine": affine,
               "spacing": tuple(float(s) for s in np.linalg.norm(affine[:3, :3], axis=0))}
        if self.regions is not None:
            out["region"] = self.regions(item, image, mask, resample=resample)
        return out

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        full = self.prepare(item)
        centre = full["centre"]
        out = {"image": torch.from_numpy(np.ascontiguousarray(crop_or_pad(full["image"], centre, self.size))),
               "brain": torch.from_numpy(crop_or_pad(full["brain"][None], centre, self.size, value=False)),
               "id": item["id"]}
        if self.regions is not None:
            out["region"] = torch.from_numpy(crop_or_pad(full["region"][None], centre, self.size))
        return out


class SegmentationPreprocess(Transform):
    """item -> {"image": [C, X, Y, Z], "centre": float64 [3], "label": target, "fg": uint8 [1, X, Y, Z],
    "id"} on the canonical grid.

    ``centre``: the brain centre in voxels (`brain_centre` of the brain mask), the centre of the
    brain frame's reference grid. target: multilabel tasks float32 [K, X, Y, Z]; softmax tasks int64
    [1, X, Y, Z] (ignore = -1). ``fg`` (label > 0 outside the ignore label) drives foreground oversampling.
    With ``regions`` also ``"region"``: int16 [1, X, Y, Z], the case's region map.
    """

    def __init__(self, task: Task, *, percentiles: tuple[float, float] = PERCENTILES, with_label: bool = True,
                 regions: RegionSource | None = None) -> None:
        self.task = task
        self.percentiles = check_percentiles(percentiles)
        self.with_label = with_label
        self.regions = regions

    def settings(self) -> dict[str, Any]:
        out = {"kind": "segmentation", "task": repr(self.task), "percentiles": self.percentiles, "with_label": self.with_label}
        return out if self.regions is None else {**out, "regions": self.regions.settings()}

    def prepare(self, item: dict[str, Any]) -> dict[str, Any]:
        """The deterministic part on the canonical grid, before the label becomes a target:
        ``"image"`` float32 [C, X, Y, Z], ``"brain"`` bool [X, Y, Z], ``"centre"`` float64 [3],
        ``"affine"``, ``"spacing"``, with labels ``"label"`` int64 [X, Y, Z] (raw values) and ``"fg"``
        bool [X, Y, Z], with ``regions`` ``"region"`` int16 [X, Y, Z]."""
        image, ref = load_case_images(item)
        mask = brain_mask(image)
        image = normalize_in_brain(image, mask, self.percentiles)
        out: dict[str, Any] = {"image": image, "brain": mask, "centre": brain_centre(mask), "affine": ref.affine,
                               "spacing": tuple(float(s) for s in ref.spacing)}
        if self.regions is not None:
            out["region"] = self.regions(item, image, mask)
        if self.with_label:
            if item["label"] is None:
                raise ValueError(f"case {item['id']}: no label file, but the {self.task.name} dataset needs one")
            lab = load_volume(item["label"], label=True)
            if lab.array.shape != image.shape[1:] or not np.allclose(lab.affine, ref.affine, atol=1e-3):
                raise ValueError(f"case {item['id']}: label {lab.path} is not on the grid of {ref.path}")
            raw = lab.array.astype(np.int64)
            out["label"] = raw
            out["fg"] = self.foreground(raw)
        return out

    def foreground(self, raw: np.ndarray) -> np.ndarray:
        """Bool [...]: the voxels foreground oversampling aims at (label > 0 outside the ignore label)."""
        return (raw > 0) & ~self.task.ignore_mask(raw)

    def target(self, raw: np.ndarray) -> np.ndarray:
        """Raw labels [X, Y, Z] -> the training target: float32 [K, ...] (multilabel) or int64 [1, ...]."""
        target = self.task.label_to_target(raw)
        return np.ascontiguousarray(target if self.task.multilabel else target[None])

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        full = self.prepare(item)
        out: dict[str, Any] = {"image": torch.from_numpy(full["image"]), "centre": torch.from_numpy(full["centre"]),
                               "id": item["id"]}
        if self.regions is not None:
            out["region"] = torch.from_numpy(full["region"][None])
        if self.with_label:
            out["label"] = torch.from_numpy(self.target(full["label"]))
            out["fg"] = torch.from_numpy(full["fg"][None].astype(np.uint8))
        return out
