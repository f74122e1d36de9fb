"""Preprocessing and augmentation pipelines (MONAI transforms on dicts).

Deterministic preprocessing (cached by the datasets): load every channel in canonical RAS+, optional
resampling to isotropic ``resample_mm``, brain mask, z-score inside the brain after percentile
clipping (background stays 0), and for pretraining a brain-centred crop/pad whose axis-0 centre is
the left-right centre of the brain (mask extent, or world x = 0 for MNI-aligned data), so the
mid-sagittal plane lies between voxels size/2 - 1 and size/2 (voxel i mirrors size - 1 - i).

Fine-tuning preprocessing records the brain centre of every case (``"centre"``: the left-right
centre of the brain mask, i.e. the mid-sagittal plane, and the mask's centre along the other axes,
exactly as the pretraining crop is centred), which places the brain frame's reference grid
(`asa.data.lattice`).

Random augmentation (never cached): pretraining follows the paper (the brain-centred crop only); the
optional light intensity changes act inside the brain mask and leave the background at its value.
Fine-tuning gets foreground-oversampled random crops on the brain frame's patch lattice, rotation,
scaling, flips along every axis (left-right included: brains are near-symmetric, the labels are
side-agnostic, and a left-right flip maps a crop to its mirror crop's offset) and gamma.
Label-like keys are always interpolated with ``nearest``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from monai.transforms import (
    Compose,
    RandAdjustContrastd,
    RandRotated,
    RandScaleIntensityd,
    RandShiftIntensityd,
    RandZoomd,
    Randomizable,
    Transform,
)
from monai.transforms.utils import generate_spatial_bounding_box

from asa.data.case import Case
from asa.io import Volume, load_volume
from asa.data.lattice import LatticeCropd, LatticeFlipd, reference_origin
from asa.data.tasks import Task

if TYPE_CHECKING:
    from asa.data.regions import RegionSource

__all__ = [
    "case_to_item",
    "load_case_images",
    "brain_mask",
    "normalize_in_brain",
    "brain_centre",
    "crop_or_pad",
    "crop_at",
    "resample_isotropic",
    "PretrainPreprocess",
    "SegmentationPreprocess",
    "pretrain_augmentation",
    "BrainIntensityd",
    "segmentation_train_augmentation",
    "Finalize",
]

LR_CENTRES = ("mask", "world")


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


def normalize_in_brain(image: np.ndarray, mask: np.ndarray, percentiles: tuple[float, float] = (0.5, 99.5)) -> np.ndarray:
    """Per channel: clip to the brain's percentiles, z-score with the brain's mean/std, zero outside.

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


def crop_at(image: np.ndarray, start: Sequence[int], size: Sequence[int], value: float = 0.0) -> np.ndarray:
    """Window of ``size`` starting at voxel ``start`` (may be negative) from image [C, X, Y, Z], filled
    with ``value`` where it leaves the volume. Only the window is read, so ``image`` may be a
    memory-mapped array."""
    src, dst = [], []
    for ax, (n, start) in enumerate(zip(size, start)):
        start = int(start)
        lo, hi = max(start, 0), min(start + n, image.shape[ax + 1])
        if hi <= lo:
            return np.full((image.shape[0], *size), value, dtype=image.dtype)
        src.append(slice(lo, hi))
        dst.append(slice(lo - start, hi - start))
    shape = (image.shape[0], *size)
    inside = all(d.start == 0 and d.stop == n for d, n in zip(dst, size))  # no fill needed
    out = np.empty(shape, dtype=image.dtype) if inside else np.full(shape, value, dtype=image.dtype)
    out[(slice(None), *dst)] = image[(slice(None), *src)]
    return out


def resample_isotropic(image: np.ndarray, affine: np.ndarray, mm: float, mode: str = "bilinear") -> tuple[np.ndarray, np.ndarray]:
    """Resample [C, X, Y, Z] to ``mm`` isotropic voxels with MONAI ``Spacing`` (``nearest`` for labels)."""
    from monai.data import MetaTensor
    from monai.transforms import Spacing

    mt = MetaTensor(torch.as_tensor(image), affine=torch.as_tensor(affine, dtype=torch.float64))
    out = Spacing(pixdim=(mm, mm, mm), mode=mode, dtype=np.float32)(mt)
    return out.as_tensor().numpy().astype(image.dtype, copy=False), out.affine.numpy()


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

    def __init__(self, size: int | Sequence[int] = 128, *, resample_mm: float | None = None, lr_centre: str = "mask",
                 percentiles: tuple[float, float] = (0.5, 99.5), regions: RegionSource | None = None) -> None:
        if lr_centre not in LR_CENTRES:
            raise ValueError(f"lr_centre must be one of {LR_CENTRES}, got {lr_centre!r}")
        self.size = _as_tuple3(size)
        self.resample_mm = resample_mm
        self.lr_centre = lr_centre
        self.percentiles = tuple(percentiles)
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

    def __init__(self, task: Task, *, percentiles: tuple[float, float] = (0.5, 99.5), with_label: bool = True,
                 regions: RegionSource | None = None) -> None:
        self.task = task
        self.percentiles = tuple(percentiles)
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


class BrainIntensityd(Randomizable, Transform):
    """Run intensity ``transforms`` on ``"image"`` and keep their result inside ``"brain"`` only, so
    the background keeps its value (a global shift would make the volume border an edge that the
    AR weights take for information)."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> "BrainIntensityd":
        super().set_random_state(seed=seed, state=state)
        for t in self.transforms:  # distinct, reproducible streams for the wrapped transforms
            if isinstance(t, Randomizable):
                t.set_random_state(seed=int(self.R.randint(2**32 - 1, dtype="uint32")))
        return self

    def randomize(self, data: Any = None) -> None:  # the wrapped transforms draw their own
        pass

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        d = dict(data)
        before = torch.as_tensor(d["image"])
        for t in self.transforms:
            d = t(d)
        brain = torch.as_tensor(d["brain"]).bool()
        d["image"] = torch.where(brain, torch.as_tensor(d["image"]), before)
        return d


def pretrain_augmentation() -> Compose:
    """Optional intensity augmentation for pretraining (the paper uses the brain-centred crop only):
    scale (±10 %) and shift (±0.1) of the z-scored image inside the brain mask. Spatial layout is
    untouched so the mid-sagittal plane stays centred."""
    return Compose(
        [
            BrainIntensityd([
                RandScaleIntensityd(keys="image", factors=0.1, prob=0.8),
                RandShiftIntensityd(keys="image", offsets=0.1, prob=0.5),
            ])
        ]
    )


def segmentation_train_augmentation(
    task: Task,
    patch_size: Sequence[int],
    *,
    samples_per_case: int = 1,
    pos_fraction: float = 2 / 3,
    rotate_deg: float = 15.0,
    zoom: tuple[float, float] = (0.85, 1.25),
    flip_axes: Sequence[int] = (0, 1, 2),
    gamma: tuple[float, float] = (0.7, 1.5),
    lattice: int = 8,
    reference_size: Sequence[int] | None = None,
    lr_axis: int = 0,
    region: bool = False,
) -> Compose:
    """Fine-tuning augmentation: foreground-oversampled random crops (``pos_fraction`` of crops
    centred on a foreground voxel) starting on the brain frame's ``lattice`` (the ViT patch size)
    around a ``reference_size`` box (the pretraining crop; default ``patch_size``) centred on the
    recorded brain centre, each with its patch ``"offset"``; then rotation, zoom, flips, gamma.
    ``region``: the items carry a ``"region"`` map, transformed like the label."""
    keys = ["image", "label", *(["region"] if region else [])]
    label_mode = "nearest"
    modes = ("bilinear", *[label_mode] * (len(keys) - 1))
    rad = float(np.deg2rad(rotate_deg))
    pos = max(pos_fraction, 0.0)
    reference = tuple(patch_size) if reference_size is None else tuple(reference_size)
    return Compose(
        [
            LatticeCropd(keys, label_key="fg", spatial_size=list(patch_size), patch=lattice,
                         reference_size=reference, pos=min(pos, 1.0), num_samples=samples_per_case),
            RandRotated(keys=keys, range_x=rad, range_y=rad, range_z=rad, prob=0.2,
                        mode=modes, padding_mode="zeros"),
            RandZoomd(keys=keys, prob=0.2, min_zoom=zoom[0], max_zoom=zoom[1],
                      mode=("trilinear", *modes[1:]), padding_mode="constant", keep_size=True),
            *[LatticeFlipd(keys, spatial_axis=a, prob=0.5, lr_axis=lr_axis, reference_patches=reference[a] // lattice,
                           crop_patches=patch_size[a] // lattice) for a in flip_axes],
            RandAdjustContrastd(keys="image", gamma=gamma, prob=0.3, retain_stats=True),
        ]
    )


class Finalize(Transform):
    """Plain tensors (no MetaTensor), label dtype restored, region maps int64, images float32 (or, with
    ``float_image=False``, as they come: a store's float16 crop is converted on the device), helper
    keys dropped."""

    def __init__(self, keep: Sequence[str], label_dtype: torch.dtype | None = None, *, float_image: bool = True) -> None:
        self.keep = tuple(keep)
        self.label_dtype = label_dtype
        self.float_image = float_image

    def _one(self, d: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for k in self.keep:
            v = d[k]
            if isinstance(v, torch.Tensor):
                v = v.as_tensor() if hasattr(v, "as_tensor") else v
                if k == "label" and self.label_dtype is not None:
                    v = v.round().to(self.label_dtype) if self.label_dtype == torch.int64 else v.to(self.label_dtype)
                elif k == "region":
                    v = v.round().long()
                elif k == "image" and self.float_image:
                    v = v.float()
                v = v.contiguous()
            out[k] = v
        return out

    def __call__(self, data: Any) -> Any:
        if isinstance(data, list):
            return [self._one(d) for d in data] if len(data) != 1 else self._one(data[0])
        return self._one(data)
