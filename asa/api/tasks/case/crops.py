"""Test-time crops of a whole case for case-level prediction (issue #24): the brain-centred crop of
fine-tuning plus, where the (preprocessed) volume is larger than the crop, crops shifted by half a
crop along each axis, clipped to the volume and kept on the brain frame's patch lattice.

A case network sees one crop at the pretraining grid; prediction and validation average its outputs
over these crops (`asa.api.tasks.case.outputs.case_output`).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import Transform

from asa.api.configuration.schema import CASE_CROPS, DEFAULT_CASE_CROPS
from asa.data.geometry import crop_at
from asa.data.lattice import reference_origin
from asa.data.preprocessing import PretrainPreprocess
from asa.data.store import _crop as store_crop  # a window of a stored array

__all__ = ["CASE_CROPS", "DEFAULT_CASE_CROPS", "case_crop_origins", "CaseCrops", "StoreCaseCrops"]


def case_crop_origins(
    shape: Sequence[int], centre: Sequence[float], size: Sequence[int], *, lattice: int, crops: str = DEFAULT_CASE_CROPS
) -> tuple[np.ndarray, np.ndarray]:
    """(starts [K, 3] voxels, offsets [K, 3] in ``lattice`` units) of a case's test-time crops.

    The first crop is the brain-centred one (`reference_origin`, offset 0). With ``crops="grid"``
    each axis a also takes a crop shifted by half a crop, rounded down to a multiple of ``lattice``,
    towards each side where the volume extends beyond the centred crop; where less than half a
    crop is left, the shift stops at the volume's edge (again a multiple of ``lattice``; none when
    that is 0). The crops are every combination of these per-axis positions, in the order of their
    offsets (the centred crop first); a volume no larger than the crop gives the centred crop alone.
    """
    if crops not in CASE_CROPS:
        raise ValueError(f"crops={crops!r}: expected one of {CASE_CROPS}")
    if lattice < 1:
        raise ValueError(f"case_crop_origins: lattice must be >= 1, got {lattice}")
    origin = reference_origin(centre, size)
    per_axis = []
    for n, p, o in zip(shape, size, origin):
        shifts = [0]
        if crops == "grid":
            half = (int(p) // 2) // lattice * lattice
            below, above = int(o), int(n) - int(o) - int(p)  # voxels of the volume before / after the crop
            low, high = min(half, below) // lattice * lattice, min(half, above) // lattice * lattice
            shifts += ([-low] if low > 0 else []) + ([high] if high > 0 else [])
        per_axis.append(shifts)
    shifts = sorted(itertools.product(*per_axis), key=lambda s: (any(s), s))  # the centred crop first
    shifts = np.asarray(shifts, dtype=np.int64)  # [K, 3] voxels
    return origin[None] + shifts, shifts // lattice


def _stack(crops: list[np.ndarray], offsets: np.ndarray, item_id: str) -> dict[str, Any]:
    return {"image": torch.from_numpy(np.stack(crops)).float(), "offset": torch.from_numpy(offsets), "id": item_id}


class CaseCrops(Transform):
    """item -> ``{"image": float32 [K, C, *size], "offset": int64 [K, 3], "id"}``: the crops of
    `case_crop_origins` on the volume `PretrainPreprocess` prepares (z-scored in brain, brain
    centre); crop 0 is the crop `PretrainPreprocess` gives, value for value."""

    def __init__(self, size: int | Sequence[int], *, lattice: int, crops: str = DEFAULT_CASE_CROPS,
                 resample_mm: float | None = None, lr_centre: str = "mask") -> None:
        self.pre = PretrainPreprocess(size, resample_mm=resample_mm, lr_centre=lr_centre)
        self.lattice, self.crops = int(lattice), crops
        case_crop_origins((1, 1, 1), (0, 0, 0), self.pre.size, lattice=self.lattice, crops=crops)  # checks the options

    def __call__(self, item: Mapping[str, Any]) -> dict[str, Any]:
        full = self.pre.prepare(dict(item))
        image = full["image"]
        starts, offsets = case_crop_origins(image.shape[1:], full["centre"], self.pre.size, lattice=self.lattice,
                                            crops=self.crops)
        return _stack([crop_at(image, s, self.pre.size) for s in starts], offsets, item["id"])


class StoreCaseCrops(Transform):
    """Store item -> what `CaseCrops` gives, reading only the crops from the store."""

    def __init__(self, size: Sequence[int], *, lattice: int, crops: str = DEFAULT_CASE_CROPS) -> None:
        self.size, self.lattice, self.crops = tuple(int(s) for s in size), int(lattice), crops

    def __call__(self, item: Mapping[str, Any]) -> dict[str, Any]:
        starts, offsets = case_crop_origins(item["shape"], item["centre"], self.size, lattice=self.lattice,
                                            crops=self.crops)
        return _stack([store_crop(item, "image", s, self.size).astype(np.float32) for s in starts], offsets, item["id"])
