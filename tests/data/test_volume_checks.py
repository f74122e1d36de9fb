"""The upfront case check reads every volume once: damaged contents are found before training."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from asa.data import CaseError, discover, get_task, write_demo_dataset
from asa.data.layouts import base
from asa.data.preprocessing import SegmentationPreprocess, brain_mask, flat_channels
from asa.data.store import passed_checks
from asa.data.store_writer import build_store
from tests.fixtures.volumes import damage, rewrite


@pytest.fixture
def damaged(tmp_path) -> tuple[Path, dict]:
    root = write_demo_dataset("brats", tmp_path / "brats", cases=6, size=24, seed=0)
    return root, damage(root)


def test_each_damaged_content_fault_is_reported_with_its_file(damaged, tmp_path):
    root, faults = damaged
    report = tmp_path / "bad_cases.json"
    with pytest.raises(CaseError) as info:
        discover("brats", root, on_bad_case="error", option="data.on_bad_case", report_path=report)
    msg = str(info.value)
    for cid, (path, words) in faults.items():
        line = next(ln for ln in msg.splitlines() if ln.strip().startswith(f"- {cid}:"))
        assert str(path) in line and words in line, line
    assert "data.on_bad_case=skip" in msg and not report.exists()


def test_skip_lists_them_and_keeps_the_rest(damaged, tmp_path):
    root, faults = damaged
    report = tmp_path / "bad_cases.json"
    cases = discover("brats", root, on_bad_case="skip", report_path=report, workers=2)
    assert len(cases) == 2 and not {c.id for c in cases} & set(faults)
    data = json.loads(report.read_text())
    assert sorted(s["id"] for s in data["skipped"]) == sorted(faults) and data["kept"] == 2


def test_report_only_when_something_was_skipped(tmp_path):
    root = write_demo_dataset("brats", tmp_path / "ok", cases=2, size=16, seed=0)
    report = tmp_path / "bad_cases.json"
    assert len(discover("brats", root, on_bad_case="skip", report_path=report)) == 2
    assert not report.exists()


def test_a_store_vouches_for_the_checks_of_its_unchanged_files_only(damaged, tmp_path, monkeypatch):
    """The store is the one cache of the checks: a rerun of asa-preprocess (``checked=passed_checks``)
    reads only what the store does not vouch for: the cases it rejected, and files changed since."""
    root, faults = damaged
    store, task = tmp_path / "store", get_task("brats")
    assert passed_checks(store) is None  # no store yet: every case is read
    first = discover("brats", root, on_bad_case="skip")
    build_store(first, store, preprocessor=SegmentationPreprocess(task), channels=task.channels, progress=False)
    read: list[str] = []
    real = base.load_volume

    def reading(path, *args, **kwargs):
        read.append(Path(path).parent.name)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(base, "load_volume", reading)
    again = discover("brats", root, on_bad_case="skip", checked=passed_checks(store))
    assert [c.id for c in again] == [c.id for c in first]
    assert set(read) == set(faults)  # the rejected cases are read again, the stored ones not
    # a stored case whose file changed is read again, and a repaired one now passes
    kept = first[0]
    rewrite(kept.images["t1"], lambda a: a * 2.0)
    bad_id = next(cid for cid, (_, words) in faults.items() if words == "all zeros")
    rewrite(faults[bad_id][0], lambda a: a + np.arange(a.size, dtype=np.float32).reshape(a.shape))  # not constant
    read.clear()
    again = discover("brats", root, on_bad_case="skip", checked=passed_checks(store))
    assert set(read) == set(faults) | {kept.id} and bad_id in {c.id for c in again}


def test_flat_channels_on_hand_made_volumes():
    brain = np.zeros((8, 8, 8), bool)
    brain[2:6, 2:6, 2:6] = True  # 64 brain voxels
    ramp = np.arange(512, dtype=np.float32).reshape(8, 8, 8) * brain
    inside = np.where(brain, 5.0, 0.0).astype(np.float32)
    image = np.stack([ramp, inside, np.full((8, 8, 8), 5.0, np.float32)])
    assert brain_mask(image[:2]).sum() == 64  # 0 outside, so the mask is the brain
    assert flat_channels(image, brain) == [(1, 5.0, 5.0), (2, 5.0, 5.0)]
    assert flat_channels(image[:1], brain) == []
    # float rounding around a large value is no contrast: 1000 ± 1e-4 spans 2e-7 of the value
    jitter = 1000.0 + 1e-4 * np.random.default_rng(0).standard_normal((1, 8, 8, 8)).astype(np.float32)
    (c, lo, hi), = flat_channels(jitter, brain)
    assert c == 0 and 0 < hi - lo <= 1e-6 * 1000.0
    # one brain voxel of 64 (1.6 %) differs: the 0.5th..99.5th percentile range still has contrast
    one = inside.copy()
    one[3, 3, 3] = 9.0
    assert flat_channels(one[None], brain) == []
    assert flat_channels(image, np.zeros_like(brain))[0][0] == 0  # no brain at all: nothing to z-score


def _constant(root: Path) -> dict[str, tuple[Path, str]]:
    """Make one image of two BraTS cases constant: all 5s, and 5 inside the brain (0 outside)."""
    ids = sorted(p.name for p in root.iterdir() if p.is_dir())
    flair, t1 = root / ids[0] / f"{ids[0]}_flair.nii.gz", root / ids[1] / f"{ids[1]}_t1.nii.gz"
    rewrite(flair, lambda a: np.full_like(a, 5.0))
    rewrite(t1, lambda a: np.where(a != 0, 5.0, 0.0).astype(np.float32))
    return {ids[0]: (flair, "voxels, are both 5)"), ids[1]: (t1, "voxels, are both 5)")}


def test_a_constant_image_is_a_bad_case_naming_the_file(tmp_path):
    """Like an all-zero image, a constant one would reach training as a brain of zeros (z-scoring divides
    by ~0): refused with on_bad_case=error, skipped and listed with skip."""
    root = write_demo_dataset("brats", tmp_path / "brats", cases=3, size=24, seed=0)
    faults = _constant(root)
    with pytest.raises(CaseError) as info:
        discover("brats", root, on_bad_case="error", option="data.on_bad_case")
    for cid, (path, words) in faults.items():
        line = next(ln for ln in str(info.value).splitlines() if ln.strip().startswith(f"- {cid}:"))
        assert f"{path}: image is constant inside the brain" in line and words in line, line
        assert "z-scoring it would divide by ~0" in line
    report = tmp_path / "bad_cases.json"
    kept = discover("brats", root, on_bad_case="skip", report_path=report)
    assert [c.id for c in kept] == sorted(set(p.name for p in root.iterdir()) - set(faults))
    skipped = {s["id"]: s["reason"] for s in json.loads(report.read_text())["skipped"]}
    assert set(skipped) == set(faults) and all("constant inside the brain" in r for r in skipped.values())


def test_a_constant_pretraining_scan_is_a_bad_case(tmp_path):
    root = write_demo_dataset("bids", tmp_path / "bids", cases=2, size=16, seed=0)
    t1 = discover("bids", root)[1].images["t1"]
    rewrite(t1, lambda a: np.full_like(a, 5.0))
    skipped: list = []
    assert len(discover("bids", root, on_bad_case="skip", skipped=skipped)) == 1
    assert skipped[0].reason.startswith(f"{t1}: image is constant inside the brain")
    assert "over the brain mask, every voxel, are both 5" in skipped[0].reason  # not skull-stripped: all of it


@pytest.mark.parametrize("workers", [0, 1])
def test_a_data_worker_failure_is_one_line_naming_the_file(tmp_path, workers):
    """A file damaged after the upfront check: the error names the case, the file and the fault."""
    import torch

    from asa.api.machinery.run import describe_error
    from asa.data import build_pretrain_dataset

    root = write_demo_dataset("bids", tmp_path / "bids", cases=2, size=16, seed=0)
    cases = discover("bids", root)
    bad = cases[1].images["t1"]
    bad.write_bytes(bad.read_bytes()[:300])
    ds = build_pretrain_dataset(cases, crop=16, augment=False)
    with pytest.raises(Exception) as info:
        list(torch.utils.data.DataLoader(ds, batch_size=1, num_workers=workers))
    line = describe_error(info.value)
    assert "\n" not in line and line.startswith(f"case {cases[1].id}: {bad}: ") and "corrupt" in line, line
