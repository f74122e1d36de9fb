"""The preprocessed cases a dataset read from the files keeps in memory (`asa.data.datasets.CASE_CACHE_BYTES`): each
case is read and normalised once per process, and every item, augmentation included, has the bits of a fresh read."""

from __future__ import annotations

import pytest
import torch
from monai.transforms import Compose, MapTransform, RandFlipd

from asa.data import build_pretrain_dataset, build_segmentation_dataset, discover, get_task
from asa.data import datasets, preprocessing
from asa.data.datasets import CaseDataset

ORDER = [0, 1, 2, 0, 2, 1, 0, 1]  # every case read again, out of order
BUDGET = datasets.CASE_CACHE_BYTES


@pytest.fixture
def reads(monkeypatch) -> list[str]:
    """The ids of the cases whose files are read, in order."""
    seen: list[str] = []
    real = preprocessing.load_case_images

    def counted(item, *args, **kwargs):
        seen.append(item["id"])
        return real(item, *args, **kwargs)

    monkeypatch.setattr(preprocessing, "load_case_images", counted)
    return seen


def assert_same(a, b) -> None:
    """Equal items: tensors bit for bit (dtype and shape included), the rest by value."""
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    else:
        assert a == b


def items_of(build, monkeypatch, cache_bytes: int) -> list:
    monkeypatch.setattr(datasets, "CASE_CACHE_BYTES", cache_bytes)
    ds = build()
    return [ds[i] for i in ORDER]


@pytest.mark.parametrize("train", [True, False])
def test_a_cached_segmentation_dataset_gives_the_items_of_fresh_reads_and_reads_each_case_once(
        demo_root, monkeypatch, reads, train):
    cases = discover("ibsr", demo_root("ibsr"))
    assert len(cases) == 3

    def build():
        return build_segmentation_dataset(cases, get_task("ibsr"), train=train, crop=16, seed=5, rotate_deg=15.0)

    fresh = items_of(build, monkeypatch, 0)
    assert len(reads) == len(ORDER)  # no cache: the files of a case are read at every item
    reads.clear()
    cached = items_of(build, monkeypatch, BUDGET)
    assert reads == [cases[0].id, cases[1].id, cases[2].id]  # once each, in the order first asked for
    assert_same(cached, fresh)
    if train:  # the augmentation drew differently for each read: the cache hands out the case, not the item
        assert not torch.equal(cached[0]["image"], cached[3]["image"])


def test_a_cached_pretraining_dataset_gives_the_items_of_fresh_reads(demo_root, monkeypatch, reads):
    cases = discover("bids", demo_root("bids"))

    def build():
        return build_pretrain_dataset(cases, crop=24, augment=True, flip_axes=(0,), seed=3)

    fresh = items_of(build, monkeypatch, 0)
    reads.clear()
    assert_same(items_of(build, monkeypatch, BUDGET), fresh)
    assert sorted(reads) == sorted(c.id for c in cases)


def test_the_cache_holds_the_cases_that_fit_its_budget(demo_root, monkeypatch, reads):
    """A budget of one case keeps the first case read; the others are read again at every item, with the same
    numbers."""
    cases = discover("ibsr", demo_root("ibsr"))
    task = get_task("ibsr")
    one = CaseDataset([preprocessing.case_to_item(cases[0], task.channels)],
                      Compose([preprocessing.SegmentationPreprocess(task)]), seed=None)[0]
    size = sum(v.element_size() * v.numel() for v in one.values() if isinstance(v, torch.Tensor))

    def build():
        return build_segmentation_dataset(cases, task, train=True, crop=16, seed=5)

    fresh = items_of(build, monkeypatch, 0)
    reads.clear()
    assert_same(items_of(build, monkeypatch, size), fresh)
    assert reads == [cases[0].id, cases[1].id, cases[2].id, cases[2].id, cases[1].id, cases[1].id]
    reads.clear()
    items_of(build, monkeypatch, size - 1)  # not even one case fits: nothing is kept
    assert len(reads) == len(ORDER)


class AddOneInPlace(MapTransform):
    """A later step that writes into its input: the cached case must not see it."""

    def __call__(self, data):
        data["image"] += 1.0
        return data


def test_steps_after_the_cached_one_may_write_in_place(demo_root):
    cases = discover("ibsr", demo_root("ibsr"))
    task = get_task("ibsr")
    steps = [preprocessing.SegmentationPreprocess(task), AddOneInPlace(keys=("image",))]
    items = [preprocessing.case_to_item(c, task.channels) for c in cases]
    fresh = CaseDataset(items, Compose(steps), seed=None)[1]["image"]
    cached = CaseDataset(items, Compose(steps), seed=None, cache_bytes=2**30)
    assert [torch.equal(cached[1]["image"], fresh) for _ in range(3)] == [True] * 3


def test_a_random_first_step_is_refused_with_a_cache():
    with pytest.raises(ValueError, match="cache_bytes=1 needs a deterministic first step, got RandFlipd"):
        CaseDataset([{"image": torch.zeros(1, 2, 2, 2)}], Compose([RandFlipd(keys="image")]), seed=0, cache_bytes=1)
