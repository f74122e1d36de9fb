"""Datasets of whole cases with one target each (classification, regression): the pretraining crop
plus the case's target."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.transforms import Compose

from asa.api.tasks.case.crops import DEFAULT_CASE_CROPS, CaseCrops, StoreCaseCrops
from asa.data.case import Case
from asa.data.datasets import CaseDataset, build_pretrain_dataset
from asa.data.preprocessing import case_to_item
from asa.data.store import open_store, store_settings
from asa.data.targets import Targets

__all__ = ["TargetDataset", "build_case_crops_dataset", "build_target_dataset"]


class TargetDataset(torch.utils.data.Dataset):
    """Items of ``base`` (``{"image", "id", ...}``) plus ``"target"``: int64 class index (``kind``
    binary / multiclass) or float32 value (continuous), looked up by the item's id in ``values``."""

    def __init__(self, base: CaseDataset | torch.utils.data.Dataset, values: Mapping[str, int | float], kind: str) -> None:
        missing = [i for i in base.ids if i not in values]
        if missing:
            raise ValueError(f"no target for case(s) {missing[:5]}: skip them before building the dataset")
        self.base, self.values, self.kind = base, dict(values), kind

    @property
    def ids(self) -> list[str]:
        return self.base.ids

    def __len__(self) -> int:
        return len(self.base)

    def reseed(self, seed: int) -> None:
        self.base.reseed(seed)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = dict(self.base[index])
        value = self.values[item["id"]]
        item["target"] = (torch.tensor(float(value), dtype=torch.float32) if self.kind == "continuous"
                          else torch.tensor(int(value), dtype=torch.long))
        return item


def build_target_dataset(
    cases: Sequence[Case],
    targets: Targets,
    *,
    crop: int | Sequence[int],
    augment: bool,
    channels: Sequence[str] = ("t1",),
    seed: int | None = None,
    store: str | Path | None = None,
) -> TargetDataset:
    """Items ``{"image": FloatTensor[C, *crop], "id", "target"}``: the brain-centred crop of
    pretraining (`build_pretrain_dataset`: z-scored in brain, mid-sagittal plane at the centre of
    axis 0, at the pretraining grid; ``augment`` adds its intensity augmentation), so the crop is the
    reference grid (patch offset 0). ``targets`` must hold a value for every case (`Targets.for_cases`
    reports those without one, which the caller leaves out)."""
    base = build_pretrain_dataset(cases, crop=crop, augment=augment, channels=channels, seed=seed, store=store)
    return TargetDataset(base, targets.values, targets.kind)


def build_case_crops_dataset(
    cases: Sequence[Case],
    *,
    crop: int | Sequence[int],
    lattice: int,
    crops: str = DEFAULT_CASE_CROPS,
    targets: Targets | None = None,
    channels: Sequence[str] = ("t1",),
    store: str | Path | None = None,
) -> CaseDataset | TargetDataset:
    """Items ``{"image": FloatTensor[K, C, *crop], "offset": LongTensor[K, 3], "id"[, "target"]}``: a
    case's test-time crops (`asa.api.tasks.case.crops.case_crop_origins` with ``crops`` and ``lattice``,
    the network's patch lattice), crop 0 being the crop `build_target_dataset` gives without
    augmentation; with ``targets`` each item also has its ``"target"`` (as `TargetDataset`)."""
    if store is not None:
        opened = open_store(store)
        pre = CaseCrops(crop, lattice=lattice, crops=crops).pre
        opened.check_settings(store_settings(pre.settings(), channels=channels, dtype="float16"), ignore_regions=True)
        base = CaseDataset(opened.items([c.id for c in cases]),
                           Compose([StoreCaseCrops(pre.size, lattice=lattice, crops=crops)]), seed=None)
    else:
        base = CaseDataset([case_to_item(c, channels) for c in cases], Compose([CaseCrops(crop, lattice=lattice, crops=crops)]),
                           seed=None)
    return base if targets is None else TargetDataset(base, targets.values, targets.kind)
