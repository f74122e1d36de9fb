"""Pretraining augmentation drawn in the loader and applied to the batch after the transfer
(``augment_on="device"``) gives the numbers of the CPU path, bit for bit, on CPU tensors."""
from __future__ import annotations

import pytest
import torch
from monai.transforms import RandFlipd, RandGaussianNoised
from torch.utils.data import default_collate

from asa.data import RegionSource, build_pretrain_dataset
from asa.data.augmentation import BrainIntensityd, DeferredAugmentation, apply_deferred_augmentation
from asa.train.data import move_to

SEEDS = range(12)


@pytest.mark.parametrize("source", ["files", "float16", "float32"])
@pytest.mark.parametrize("regions", [False, True])
@pytest.mark.parametrize("augment, flip_axes", [(True, ()), (False, (0,)), (True, (0, 1, 2))])
def test_augmentation_on_the_device_gives_the_cpu_numbers(store_cases, pretrain_stores, source, regions, augment,
                                                          flip_axes):
    kw = dict(crop=40, augment=augment, flip_axes=flip_axes, regions=RegionSource("cluster", k=3) if regions else None,
              store=None if source == "files" else pretrain_stores[source])
    cpu = build_pretrain_dataset(store_cases, augment_on="cpu", **kw)
    device = build_pretrain_dataset(store_cases, augment_on="device", **kw)
    expected, drawn = [], []
    for seed in SEEDS:
        for ds, out in ((cpu, expected), (device, drawn)):
            ds.reseed(seed)
            out.append(ds[seed % len(store_cases)])
    expected = default_collate(expected)
    batch = apply_deferred_augmentation(move_to(default_collate(drawn), torch.device("cpu")))
    assert set(batch) == set(expected) and batch["id"] == expected["id"]
    assert batch["image"].dtype == expected["image"].dtype == torch.float32
    assert torch.equal(batch["image"], expected["image"])
    if regions:
        assert torch.equal(batch["region"], expected["region"])
    draws = default_collate(drawn)["augment"]  # the seeds draw both outcomes of every choice
    for key in (["scaled", "shifted"] if augment else []) + [f"flip{a}" for a in flip_axes]:
        assert 0 < int(draws[key].sum()) < len(SEEDS), key


def test_deferring_only_what_it_can_apply():
    with pytest.raises(ValueError, match="cannot defer"):
        DeferredAugmentation(BrainIntensityd([RandGaussianNoised(keys="image")]))
    with pytest.raises(ValueError, match="cannot defer"):
        DeferredAugmentation(RandFlipd(keys="image", spatial_axis=(0, 1)))
    with pytest.raises(ValueError, match="augment_on must be one of"):
        build_pretrain_dataset([], crop=32, augment_on="gpu")
    with pytest.raises(ValueError, match="flip_axes"):
        build_pretrain_dataset([], crop=32, flip_axes=(3,))
