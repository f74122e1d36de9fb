from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from asa.data import get_task, make_splits


def test_brats_regions_round_trip():
    task = get_task("brats")
    label = np.array([[0, 1, 2, 4], [4, 2, 1, 0]], dtype=np.uint8)
    target = task.label_to_target(label)
    assert target.shape == (3, 2, 4) and target.dtype == np.float32
    np.testing.assert_array_equal(target[0], np.isin(label, [1, 2, 4]))  # WT
    np.testing.assert_array_equal(target[1], np.isin(label, [1, 4]))  # TC
    np.testing.assert_array_equal(target[2], label == 4)  # ET
    np.testing.assert_array_equal(task.prediction_to_label(torch.from_numpy(target)), label)
    masks = task.region_masks(label)
    assert list(masks) == ["WT", "TC", "ET"] and masks["TC"].sum() == 4
    t = task.label_to_target(torch.from_numpy(label))
    assert isinstance(t, torch.Tensor) and t.shape == (3, 2, 4)


@pytest.mark.parametrize("name", ["ibsr", "wmh"])
def test_softmax_tasks_round_trip(name):
    task = get_task(name)
    rng = np.random.default_rng(0)
    label = rng.choice(task.label_values, size=(5, 6, 7)).astype(np.uint8)
    target = task.label_to_target(label)
    assert target.dtype == np.int64 and target.shape == label.shape
    if name == "wmh":
        assert np.all(target[label == 2] == -1)
        assert task.ignore_mask(label).sum() == (label == 2).sum()
    onehot = np.stack([(target == k) for k in range(task.num_outputs)]).astype(np.float32)
    back = task.prediction_to_label(onehot)
    keep = ~task.ignore_mask(label)
    np.testing.assert_array_equal(back[keep], label[keep])
    with pytest.raises(ValueError, match="outside the expected"):
        task.label_to_target(np.array([0, 7]))


def test_task_fields():
    assert get_task("brats").num_outputs == 3 and get_task("brats").multilabel
    assert get_task("ibsr").num_outputs == 4 and get_task("ibsr").output_names == ("CSF", "GM", "WM")
    assert get_task("wmh").num_outputs == 2 and get_task("wmh").ignore_label == 2
    with pytest.raises(ValueError, match="unknown task"):
        get_task("kits")
    with pytest.raises(ValueError, match="dataset.json"):
        get_task("msd")


@pytest.mark.parametrize("dataset,n,expected", [
    ("brats", 100, (70, 10, 20)), ("ibsr", 18, (10, 2, 6)), ("wmh", 60, (30, 6, 24)),
    ("wmh", 10, (5, 1, 4)), ("brats", 4, (2, 1, 1)), ("adni", 20, (16, 2, 2)),
])
def test_split_sizes(dataset, n, expected):
    s = make_splits([f"c{i}" for i in range(n)], dataset=dataset)
    assert tuple(len(s[k]) for k in ("train", "val", "test")) == expected


def test_splits_reproducible_disjoint_and_reused(tmp_path):
    ids = [f"case{i:03d}" for i in range(30)]
    a = make_splits(ids, dataset="brats", seed=3)
    b = make_splits(list(reversed(ids)), dataset="brats", seed=3)
    assert a == b
    assert make_splits(ids, dataset="brats", seed=4) != a
    assert set(a["train"]) | set(a["val"]) | set(a["test"]) == set(ids)
    assert not (set(a["train"]) & set(a["val"])) and not (set(a["train"]) & set(a["test"])) and not (set(a["val"]) & set(a["test"]))
    path = tmp_path / "splits.json"
    first = make_splits(ids, dataset="brats", seed=3, path=path)
    # resume: a different seed is ignored because the file wins
    assert make_splits(ids, dataset="brats", seed=99, path=path) == first
    assert json.loads(path.read_text())["seed"] == 3
    with pytest.raises(ValueError, match="does not match the dataset"):
        make_splits(ids[:-1], dataset="brats", path=path)
    custom = make_splits(ids, dataset="brats", counts_or_ratios={"train": 20, "val": 0, "test": 10})
    assert len(custom["val"]) == 0 and len(custom["test"]) == 10


@pytest.mark.parametrize("name", ["brats", "ibsr", "wmh"])
def test_task_survives_a_json_round_trip(name):
    import dataclasses

    from asa.data import Task

    task = get_task(name)
    assert Task.from_dict(json.loads(json.dumps(dataclasses.asdict(task)))) == task
