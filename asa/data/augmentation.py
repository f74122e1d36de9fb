"""Random augmentation (never cached) and the pipelines' last step (MONAI transforms on dicts).

Pretraining follows the paper (the brain-centred crop only); the optional light intensity changes
act inside the brain mask and leave the background at its value, the optional flips mirror the
crop (along the left-right axis the brain-centred crop stays centred). Either runs on the CPU in
the loader, or, deferred (`DeferredAugmentation`), is only drawn there and applied to the batch on
the device (`apply_deferred_augmentation`) with the same numbers. Fine-tuning gets
foreground-oversampled random crops on the brain frame's patch lattice, rotation, scaling, flips
along every axis (left-right included: brains are near-symmetric, the labels are side-agnostic, and a
left-right flip maps a crop to its mirror crop's offset) and gamma. Label-like keys are always
interpolated with ``nearest``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import (
    Compose,
    RandAdjustContrastd,
    RandFlipd,
    RandRotated,
    RandScaleIntensityd,
    RandShiftIntensityd,
    RandZoomd,
    Randomizable,
    Transform,
)

from asa.data.lattice import LatticeCropd, LatticeFlipd
from asa.data.labels import Task

__all__ = ["AUGMENT_ON", "BrainIntensityd", "DeferredAugmentation", "apply_deferred_augmentation", "pretrain_augmentation",
           "segmentation_train_augmentation", "Finalize"]

AUGMENT_ON = ("cpu", "device")  # where random augmentation is applied (it is drawn in the loader either way)


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


def pretrain_augmentation(*, intensity: bool = True, flip_axes: Sequence[int] = (), region: bool = False) -> Compose:
    """Optional augmentation for pretraining (the paper uses the brain-centred crop only).
    ``intensity``: scale (±10 %, probability 0.8) and shift (±0.1, probability 0.5) of the z-scored
    image inside the brain mask. ``flip_axes``: a flip along each of these array axes with
    probability 0.5 (of the image, and of the ``"region"`` map with ``region``); along the
    left-right axis the brain-centred crop maps onto itself (voxel i to size - 1 - i), so the
    mid-sagittal plane stays centred. No other spatial change."""
    steps: list[Transform] = []
    if intensity:
        steps.append(BrainIntensityd([
            RandScaleIntensityd(keys="image", factors=0.1, prob=0.8),
            RandShiftIntensityd(keys="image", offsets=0.1, prob=0.5),
        ]))
    for axis in flip_axes:
        if int(axis) not in (0, 1, 2):
            raise ValueError(f"flip_axes: array axes 0, 1 or 2 of the crop, got {axis}")
        steps.append(RandFlipd(keys=["image", *(["region"] if region else [])], prob=0.5, spatial_axis=int(axis)))
    return Compose(steps)


class DeferredAugmentation(Randomizable, Transform):
    """A random transform of `pretrain_augmentation`, drawn but not applied: its draws for the item
    (the same random numbers the transform itself would draw: it shares the transform's random
    state and seeding) go into ``d["augment"]``, and `apply_deferred_augmentation` applies them to
    the collated batch, e.g. on the device after the transfer. Wraps `BrainIntensityd` over
    RandScaleIntensityd then RandShiftIntensityd (draws ``scaled``/``scale``, ``shifted``/``shift``)
    or a RandFlipd along one axis (draws ``flip<axis>``)."""

    def __init__(self, transform: Transform) -> None:
        kinds = [type(t) for t in getattr(transform, "transforms", [])]
        if isinstance(transform, BrainIntensityd) and kinds == [RandScaleIntensityd, RandShiftIntensityd]:
            self.kind = "intensity"
        elif isinstance(transform, RandFlipd) and isinstance(transform.flipper.spatial_axis, int):
            self.kind = "flip"
        else:
            raise ValueError(f"DeferredAugmentation: cannot defer {transform!r}; it defers BrainIntensityd"
                             "([RandScaleIntensityd, RandShiftIntensityd]) and single-axis RandFlipd")
        self.transform = transform

    def set_random_state(self, seed: int | None = None,
                         state: np.random.RandomState | None = None) -> "DeferredAugmentation":
        self.transform.set_random_state(seed=seed, state=state)  # seeds derived as the transform's own
        return self

    def randomize(self, data: Any = None) -> None:
        pass

    def draw(self) -> dict[str, Any]:
        """This item's draws, in the order the transform's ``__call__`` makes them."""
        if self.kind == "flip":
            flip = self.transform
            flip.randomize(None)
            return {f"flip{flip.flipper.spatial_axis}": bool(flip._do_transform)}
        scale, shift = self.transform.transforms
        scale.randomize(None)
        scaled = bool(scale._do_transform)
        if scaled:
            scale.scaler.randomize(None)
        shift.randomize(None)
        shifted = bool(shift._do_transform)
        if shifted:
            shift.shifter.randomize(None)
        # the factor as RandScaleIntensity multiplies by it (1 + factor, in float64), the offset as drawn
        return {"scaled": scaled, "scale": 1.0 + float(scale.scaler.factor) if scaled else 1.0,
                "shifted": shifted, "shift": float(shift.shifter._offset) if shifted else 0.0}

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        d = dict(data)
        d["augment"] = {**d.get("augment", {}), **self.draw()}
        return d


def apply_deferred_augmentation(batch: dict[str, Any]) -> dict[str, Any]:
    """Apply the draws of `DeferredAugmentation` to a collated batch, wherever it is (the device):
    ``"image"`` [B, C, *S] (float32 after it), ``"brain"`` bool [B, 1, *S] (for the intensity
    changes), ``"region"`` [B, 1, *S] (flipped too), ``"augment"`` the draws ([B] each). Gives the
    numbers the transforms give on the CPU: the same float32 products and sums, kept inside the
    brain (``torch.where``), and flips. ``"augment"`` and ``"brain"`` are dropped."""
    out = {k: v for k, v in batch.items() if k not in ("augment", "brain")}
    draws = batch["augment"]
    x = batch["image"].float()

    def per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:  # [B] -> [B, 1, 1, 1, 1]
        return v.to(like.device).view(-1, *[1] * (like.ndim - 1))

    if "scale" in draws:
        before = x
        scale = per_sample(draws["scale"], x).to(torch.float32)  # float64 1 + factor, rounded as torch rounds a scalar
        x = torch.where(per_sample(draws["scaled"], x), x * scale, x)
        x = torch.where(per_sample(draws["shifted"], x), x + per_sample(draws["shift"], x).to(torch.float32), x)
        x = torch.where(batch["brain"].to(x.device).bool(), x, before)
    for key in sorted(k for k in draws if k.startswith("flip")):
        dim = int(key[len("flip"):]) + 2
        flip = draws[key]
        x = torch.where(per_sample(flip, x), x.flip(dim), x)
        if "region" in out:
            out["region"] = torch.where(per_sample(flip, out["region"]), out["region"].flip(dim), out["region"])
    out["image"] = x
    return out


def segmentation_train_augmentation(
    task: Task,
    crop: Sequence[int],
    *,
    samples_per_case: int = 1,
    sampling: str = "classes",
    pos_fraction: float | None = None,
    oversampling: str = "batch",
    rotate_deg: float = 15.0,
    zoom: tuple[float, float] = (0.85, 1.25),
    flip_axes: Sequence[int] = (0, 1, 2),
    gamma: tuple[float, float] = (0.7, 1.5),
    lattice: int = 8,
    reference_size: Sequence[int] | None = None,
    lr_axis: int = 0,
    region: bool = False,
) -> Compose:
    """Fine-tuning augmentation: foreground-oversampled random crops (`LatticeCropd`; ``sampling="classes"``,
    nnU-Net's: a ``pos_fraction`` of crops (null: 0.33) centred on a voxel of a class drawn uniformly among the
    classes present, the rest placed uniformly; ``"foreground"``, asa's earlier form: a ``pos_fraction`` (null:
    2/3) centred on any labelled voxel, the rest on an unlabelled one; ``oversampling`` "batch", nnU-Net's: that share
    forced in every batch, or "crop": each crop forced with that probability) starting on the brain frame's ``lattice``
    (the ViT patch size) around a ``reference_size`` box (the pretraining crop; default ``crop``) centred on the
    recorded brain centre, each with its patch ``"offset"``; then rotation, zoom, flips, gamma.
    ``region``: the items carry a ``"region"`` map, transformed like the label."""
    keys = ["image", "label", *(["region"] if region else [])]
    label_mode = "nearest"
    modes = ("bilinear", *[label_mode] * (len(keys) - 1))
    rad = float(np.deg2rad(rotate_deg))
    reference = tuple(crop) if reference_size is None else tuple(reference_size)
    return Compose(
        [
            LatticeCropd(keys, label_key="fg", spatial_size=list(crop), patch=lattice, reference_size=reference,
                         pos=pos_fraction, num_samples=samples_per_case, sampling=sampling, oversampling=oversampling),
            RandRotated(keys=keys, range_x=rad, range_y=rad, range_z=rad, prob=0.2,
                        mode=modes, padding_mode="zeros"),
            RandZoomd(keys=keys, prob=0.2, min_zoom=zoom[0], max_zoom=zoom[1],
                      mode=("trilinear", *modes[1:]), padding_mode="constant", keep_size=True),
            *[LatticeFlipd(keys, spatial_axis=a, prob=0.5, lr_axis=lr_axis, reference_patches=reference[a] // lattice,
                           crop_patches=crop[a] // lattice) for a in flip_axes],
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
