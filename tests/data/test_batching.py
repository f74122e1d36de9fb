"""Whole batches read from a store: equal to collating the items (the path before), bit for bit, and
the shared-memory slots they travel in are reused only once nothing uses a batch any more."""
from __future__ import annotations

import pickle
from multiprocessing.reduction import ForkingPickler

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

import asa.data.batching as B
from asa.data import RegionSource, build_pretrain_dataset
from asa.data.datasets import CaseDataset, StoreCropBatches
from asa.train.data import build_loader, close_loader
from asa.train.rng import item_seed

SIZE = 32  # the pretrain_stores' crop size


def _equal(a, b) -> None:
    """The same batch: keys in order, tensors of the same dtype and values, the rest equal."""
    assert list(a) == list(b)
    for k in a:
        if isinstance(a[k], torch.Tensor):
            assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and torch.equal(a[k], b[k]), k
        elif isinstance(a[k], dict):
            _equal(a[k], b[k])
        else:
            assert a[k] == b[k], k


@pytest.mark.parametrize("dtype", ["float16", "float32"])
@pytest.mark.parametrize("size", [24, 40])  # a crop inside the stored box, one beyond it (zero-filled)
@pytest.mark.parametrize("options", [{}, {"regions": True},
                                     {"augment": True, "flip_axes": (0, 2), "augment_on": "device", "regions": True}])
def test_a_batch_read_whole_equals_its_items_collated(store_cases: list, pretrain_stores: dict, dtype, size,
                                                      options):
    opts = dict(options)
    regions = RegionSource("cluster", k=3) if opts.pop("regions", False) else None
    ds = build_pretrain_dataset(store_cases, crop=size, augment=opts.pop("augment", False), regions=regions,
                                store=pretrain_stores[dtype], **opts)
    assert isinstance(ds, StoreCropBatches)
    indices = [3, 0, 4, 0]
    seeds = [item_seed(7, 2, i) for i in indices]
    items = []
    for i, s in zip(indices, seeds):
        ds.reseed(s)
        items.append(ds[i])
    batch = ds.read_batch(indices, seeds)
    _equal(batch, default_collate(items))
    assert batch["image"].dtype == getattr(torch, dtype) and batch["image"].shape == (4, 1, size, size, size)


def test_cpu_augmentation_keeps_the_item_by_item_path(store_cases, pretrain_stores):
    ds = build_pretrain_dataset(store_cases, crop=SIZE, augment=True, store=pretrain_stores["float16"])
    assert type(ds) is CaseDataset and ds[0]["image"].dtype == torch.float32


@pytest.fixture
def in_a_worker(monkeypatch):
    """`batch_buffer` as inside a DataLoader worker (a fresh pool of slots for this test)."""
    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: object())
    monkeypatch.setattr(B, "_POOL", None)
    monkeypatch.setattr(B, "_MAPPED", {})  # this process plays the training process too


def _send(batch: B.CollatedBatch) -> dict:
    """What the training process receives when a worker puts the batch on its result queue."""
    return pickle.loads(ForkingPickler.dumps(batch))


def _slots_in_use() -> list[int]:
    pool = B._POOL
    return [s.index for s in pool.slots if pool.flags[1 + 2 * s.index]]


def test_a_slot_is_reused_only_when_nothing_uses_its_batch(in_a_worker):
    def batch(value: float) -> B.CollatedBatch:
        x = B.batch_buffer((2, 1, 4, 4, 4), torch.float16)
        x.fill_(value)
        return B.CollatedBatch(image=x, id=["a", "b"])

    got = _send(batch(1.0))
    assert got["id"] == ["a", "b"] and type(got) is dict and bool((got["image"] == 1).all())
    assert _slots_in_use() == [0]  # sent: in use until the training process lets go
    view = got["image"][1, 0, :2]  # a view, and a numpy array over it, keep the batch's memory in use
    array = view.numpy()
    del got
    second = _send(batch(2.0))
    assert _slots_in_use() == [0, 1] and bool((view == 1).all()) and (array == 1).all()
    del view, array
    assert _slots_in_use() == [1]
    third = _send(batch(3.0))  # reuses slot 0, mapped once: it travels by number now
    assert _slots_in_use() == [0, 1] and bool((second["image"] == 2).all()) and bool((third["image"] == 3).all())
    assert len(B._POOL.slots) == 2 and len(B._MAPPED[B._POOL.token]["maps"]) == 2


def test_when_every_slot_is_in_use_a_batch_gets_fresh_memory(in_a_worker):
    held = []
    for k in range(B.SLOTS_PER_SIZE + 2):
        x = B.batch_buffer((3,), torch.int64)
        x.fill_(k)
        held.append(_send(B.CollatedBatch(x=x))["x"])
    assert len(B._POOL.slots) == B.SLOTS_PER_SIZE  # the others went as ordinary shared tensors
    assert [int(t[0]) for t in held] == list(range(B.SLOTS_PER_SIZE + 2))


def test_a_slot_the_worker_never_sent_is_free_again(in_a_worker):
    x = B.batch_buffer((8,), torch.float32)
    assert _slots_in_use() == [0]
    del x  # the dataset failed before the batch was sent
    assert _slots_in_use() == []


@pytest.mark.parametrize("options", [{"augment": False}, {"augment": True, "flip_axes": (0,), "augment_on": "device"}])
def test_workers_deliver_the_batches_of_the_main_process(store_cases, pretrain_stores, options):
    """Two persistent workers and their slots against num_workers=0, two epochs: batches kept all at
    once (``list``: more than the slots, so some travel in fresh memory) and streamed one by one."""
    ds = build_pretrain_dataset(store_cases * 3, crop=SIZE, store=pretrain_stores["float16"], **options)
    assert isinstance(ds, StoreCropBatches)
    ref, ref_sampler, _, _ = build_loader(ds, batch_size=2, rank=0, world_size=1, seed=0, num_workers=0)
    loader, sampler, _, _ = build_loader(ds, batch_size=2, rank=0, world_size=1, seed=0, num_workers=2)
    orders = []
    try:
        for epoch in (0, 1):
            ref_sampler.set_position(epoch)
            sampler.set_position(epoch)
            expected = list(ref)
            kept = list(loader)
            assert len(kept) == len(expected) == 7
            for a, b in zip(expected, kept):
                _equal(a, b)
            sampler.set_position(epoch)
            for a, b in zip(expected, loader, strict=True):
                _equal(a, b)
                assert type(b) is dict
            orders.append([i for b in kept for i in b["id"]])
            assert len(B._MAPPED) == 2  # both workers' batches came in their slots
        assert orders[0] != orders[1]  # each epoch its own order (and draws)
    finally:
        close_loader(loader)
    assert not B._MAPPED  # the exited workers' slots are unmapped
    assert np.isfinite(kept[0]["image"].float().numpy()).all()  # memory still in use stays mapped
