"""Datasets of whole cases with one target each (classification, regression): the pretraining crop
plus the case's target."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from asa.data.case import Case
from asa.data.datasets import CaseDataset, build_pretrain_dataset
from asa.data.targets import Targets

__all__ = ["TargetDataset", "build_target_dataset"]


class TargetDataset(torch.utils.data.Dataset):
    """Items of ``base`` (``{"image", "id", ...}``) plus ``"target"``: int64 class index (``kind``
    binary / multiclass) or float32 value (continuous), looked up by the item's id in ``values``."""

    def __init__(self, base: CaseDataset, values: Mapping[str, int | float], kind: str) -> None:
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
    size: int | Sequence[int],
    augment: bool,
    cache_dir: str | Path | None = None,
    channels: Sequence[str] = ("t1",),
    seed: int | None = None,
    store: str | Path | None = None,
) -> TargetDataset:
    """Items ``{"image": FloatTensor[C, *size], "id", "target"}``: the brain-centred crop of
    pretraining (`build_pretrain_dataset`: z-scored in brain, mid-sagittal plane at the centre of
    axis 0, at the pretraining grid; ``augment`` adds its intensity augmentation), so the crop is the
    reference grid (patch offset 0). ``targets`` must hold a value for every case (`Targets.for_cases`
    reports those without one, which the caller leaves out)."""
    base = build_pretrain_dataset(cases, size=size, cache_dir=cache_dir, augment=augment, channels=channels,
                                  seed=seed, store=store)
    return TargetDataset(base, targets.values, targets.kind)
