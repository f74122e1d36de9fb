from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch

from asa.data import Task, get_task, make_splits


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


def _region_dataset(root, labels, order=None):
    """A region-based nnU-Net v2 dataset.json under ``root`` (no images: get_task reads only the json)."""
    meta = {"channel_names": {"0": "T1", "1": "FLAIR"}, "labels": {"background": 0, **labels}}
    if order is not None:
        meta["regions_class_order"] = order
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


# region sets of an nnU-Net v2 dataset.json, their regions_class_order, a label map with every
# label value, and hand-written probabilities [K, 6] with the label map they decode to
REGION_SETS = {
    "nested": ({"whole": [1, 2, 3], "core": [2, 3], "enhancing": [3]}, [1, 2, 3],
               [[0, 1, 2, 3, 3, 1]],
               [[.9, .9, .9, .9, .2, .1],   # whole
                [.1, .8, .7, .6, .1, .1],   # core
                [.1, .1, .9, .1, .1, .9]],  # enhancing (the last voxel: enhancing outside whole)
               [1, 2, 3, 2, 0, 3]),
    "disjoint": ({"left": [1], "right": [2]}, [1, 2],
                 [[0, 1, 2, 2, 1, 0]],
                 [[.9, .1, .9, .4, .1, .1],
                  [.1, .9, .9, .1, .1, .6]],
                 [1, 2, 2, 0, 0, 2]),
    "overlapping": ({"ab": [1, 2], "bc": [2, 3]}, [1, 3],
                    None,  # no order gives every label map back (2 and 3 both end in "bc")
                    [[.9, .9, .1, .1, .6, .1],
                     [.1, .9, .9, .1, .6, .1]],
                    [1, 3, 3, 0, 3, 0]),
}


@pytest.mark.parametrize("kind", sorted(REGION_SETS))
def test_region_dataset_json_decodes_with_regions_class_order(tmp_path, kind):
    """nnU-Net v2 decoding: region i painted with regions_class_order[i], later regions over earlier ones."""
    labels, order, label, probs, expected = REGION_SETS[kind]
    task = get_task("msd", _region_dataset(tmp_path, labels, order))
    assert task.multilabel and task.output_names == tuple(labels) and task.regions_class_order == tuple(order)
    np.testing.assert_array_equal(task.prediction_to_label(np.array(probs, np.float32)), expected)
    np.testing.assert_array_equal(task.prediction_to_label(torch.tensor(probs)), expected)
    if label is not None:  # label -> region targets -> label is the identity
        label = np.array(label, np.uint8)
        np.testing.assert_array_equal(task.prediction_to_label(task.label_to_target(label)), label)


def test_nested_regions_decode_to_their_own_masks(tmp_path):
    """Evaluation masks of a decoded nested prediction are the thresholded region outputs (TC and ET
    are not WT), and every label value survives the round trip on a volume."""
    task = get_task("msd", _region_dataset(tmp_path, {"whole": [1, 2, 3], "core": [2, 3], "enhancing": [3]},
                                           [1, 2, 3]))
    rng = np.random.default_rng(0)
    label = rng.integers(0, 4, size=(6, 7, 8)).astype(np.uint8)
    target = task.label_to_target(label)
    back = task.prediction_to_label(target)
    np.testing.assert_array_equal(back, label)
    masks = task.region_masks(back)
    for k, name in enumerate(task.output_names):
        np.testing.assert_array_equal(masks[name], target[k] > 0.5)
    assert masks["enhancing"].sum() < masks["core"].sum() < masks["whole"].sum()


def test_region_dataset_json_needs_a_valid_regions_class_order(tmp_path):
    nested = {"whole": [1, 2, 3], "core": [2, 3], "enhancing": [3]}
    with pytest.raises(ValueError, match=r"dataset\.json.*regions_class_order.*\[1, 2, 3\] decodes"):
        get_task("msd", _region_dataset(tmp_path / "a", nested))
    with pytest.raises(ValueError, match=r"dataset\.json.*regions_class_order\[2\] = 1 is not a label of region 2"):
        get_task("msd", _region_dataset(tmp_path / "b", nested, [3, 2, 1]))
    with pytest.raises(ValueError, match=r"dataset\.json.*has 2 entries for 3 regions"):
        get_task("msd", _region_dataset(tmp_path / "c", nested, [1, 2]))
    with pytest.raises(ValueError, match=r"dataset\.json.*'ignore' label"):
        get_task("msd", _region_dataset(tmp_path / "d", {**nested, "ignore": 4}, [1, 2, 3]))
    with pytest.raises(ValueError, match="need regions_class_order"):  # Python: no order gives the labels back
        Task("x", ("t1",), ("ab", "bc"), True, 2, (0, 1, 2, 3), regions=((1, 2), (2, 3)))


def test_task_record_carries_regions_class_order(tmp_path):
    """The task recorded in a checkpoint (dataclasses.asdict through JSON) comes back with its order;
    a record written before the field existed gets the order that decodes labels back to themselves."""
    import dataclasses

    task = get_task("msd", _region_dataset(tmp_path, {"whole": [1, 2, 3], "core": [2, 3], "enhancing": [3]},
                                           [1, 2, 3]))
    record = json.loads(json.dumps(dataclasses.asdict(task)))
    assert record["regions_class_order"] == [1, 2, 3] and Task.from_dict(record) == task
    old = {k: v for k, v in record.items() if k != "regions_class_order"}
    assert Task.from_dict(old).regions_class_order == (1, 2, 3)
    brats = {k: v for k, v in dataclasses.asdict(get_task("brats")).items() if k != "regions_class_order"}
    assert Task.from_dict(json.loads(json.dumps(brats))) == get_task("brats")
    assert get_task("brats").regions_class_order == (2, 1, 4)


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


def _sessions(root, subject: str, sessions: list[str]) -> None:
    """Give a demo BIDS subject (one ses-M00 session) more sessions: copies of its T1."""
    src = root / subject / "ses-M00" / "anat" / f"{subject}_ses-M00_T1w.nii.gz"
    for ses in sessions:
        dst = root / subject / ses / "anat" / f"{subject}_{ses}_T1w.nii.gz"
        dst.parent.mkdir(parents=True)
        dst.write_bytes(src.read_bytes())


def test_the_sessions_of_a_subject_stay_in_one_part(tmp_path):
    from asa.data import discover, subject_groups, write_demo_dataset

    root = write_demo_dataset("bids", tmp_path / "bids", cases=10, size=16, seed=0, targets=True)
    for i in range(1, 11, 2):  # subjects 1, 3, 5, 7, 9 (0-based even) have ses-M00: two more sessions each
        _sessions(root, f"sub-DEMO{i:03d}", ["ses-M12", "ses-M24"])
    cases = discover("bids", root)
    groups = subject_groups(cases)
    assert len(cases) == 20 and len(set(groups.values())) == 10
    ids = [c.id for c in cases]
    for seed in range(6):
        splits = make_splits(ids, dataset="targets", seed=seed, counts_or_ratios=(0.6, 0.2, 0.2), groups=groups)
        part = {}
        for name, members in splits.items():
            for case in members:
                assert part.setdefault(groups[case], name) == name, (seed, case)
        assert sorted(c for m in splits.values() for c in m) == sorted(ids)
        assert sorted(Counter(part.values()).values()) == [2, 2, 6]  # the shares count subjects
        assert make_splits(reversed(ids), dataset="targets", seed=seed, counts_or_ratios=(0.6, 0.2, 0.2),
                           groups=groups) == splits  # deterministic by seed
    ungrouped = make_splits(ids, dataset="targets", seed=0, counts_or_ratios=(0.6, 0.2, 0.2))
    assert any(len({part for part, m in ungrouped.items() if any(groups[c] == g for c in m)}) > 1
               for g in set(groups.values()))  # without groups some subject would leak
    # one case per subject: the grouped split is the ungrouped one, case for case
    single = {i: i for i in ids}
    assert make_splits(ids, dataset="targets", seed=3, groups=single) == make_splits(ids, dataset="targets", seed=3)
    # a reused file that splits a subject is refused, naming it
    path = tmp_path / "splits.json"
    path.write_text(json.dumps(ungrouped))
    with pytest.raises(ValueError, match="subject sub-DEMO.* has cases in .* subject leak"):
        make_splits(ids, dataset="targets", seed=0, path=path, groups=groups)
