"""Random augmentation (never cached) and the pipelines' last step (MONAI transforms on dicts).

Pretraining follows the paper (the brain-centred crop only); the optional light intensity changes
act inside the brain mask and leave the background at its value. Fine-tuning gets
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
    RandRotated,
    RandScaleIntensityd,
    RandShiftIntensityd,
    RandZoomd,
    Randomizable,
    Transform,
)

from asa.data.lattice import LatticeCropd, LatticeFlipd
from asa.data.tasks import Task

__all__ = ["BrainIntensityd", "pretrain_augmentation", "segmentation_train_augmentation", "Finalize"]


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
