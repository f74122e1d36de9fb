"""The upfront case check reads every volume once: damaged contents are found before training."""
from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from asa.data import CaseError, discover, write_demo_dataset
from asa.data.layouts import base


def _rewrite(path: Path, fn) -> None:
    img = nib.load(str(path))
    data = fn(np.asarray(img.dataobj).astype(np.float32))
    nib.save(nib.Nifti1Image(data, img.affine), str(path))


def damage(root: Path) -> dict[str, tuple[Path, str]]:
    """Damage four of the BraTS cases under ``root``, one fault each; returns id -> (file, fault words)."""
    ids = sorted(p.name for p in root.iterdir() if p.is_dir())
    f = {cid: {m: root / cid / f"{cid}_{m}.nii.gz" for m in ("t1", "t1ce", "t2", "flair")} for cid in ids}
    truncated = f[ids[0]]["t1"]
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])  # the label stays fine

    def nan(a):
        a[3, 4, 5] = np.nan
        return a

    _rewrite(f[ids[1]]["t1ce"], nan)
    _rewrite(f[ids[2]]["t2"], np.zeros_like)
    _rewrite(f[ids[3]]["flair"], lambda a: np.stack([a, a], axis=-1))
    return {ids[0]: (truncated, "truncated or corrupt"), ids[1]: (f[ids[1]]["t1ce"], "NaN/Inf"),
            ids[2]: (f[ids[2]]["t2"], "all zeros"), ids[3]: (f[ids[3]]["flair"], "4D")}


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


def test_checks_are_cached_per_unchanged_file(damaged, tmp_path, monkeypatch):
    root, faults = damaged
    cache = tmp_path / "cache"
    first = discover("brats", root, on_bad_case="skip", cache_dir=cache)
    assert (cache / "case_checks.json").is_file()

    def no_reading(*args, **kwargs):
        raise AssertionError("a cached check read a volume again")

    monkeypatch.setattr(base, "load_volume", no_reading)
    assert [c.id for c in discover("brats", root, on_bad_case="skip", cache_dir=cache)] == [c.id for c in first]
    monkeypatch.undo()
    # a repaired file (new size/mtime) is checked again
    bad_id = next(cid for cid, (_, words) in faults.items() if words == "all zeros")
    _rewrite(faults[bad_id][0], lambda a: a + 1.0)
    again = discover("brats", root, on_bad_case="skip", cache_dir=cache)
    assert bad_id in {c.id for c in again}


@pytest.mark.parametrize("workers", [0, 1])
def test_a_data_worker_failure_is_one_line_naming_the_file(tmp_path, workers):
    """A file damaged after the upfront check: the error names the case, the file and the fault."""
    import torch

    from asa.api.common import describe_error
    from asa.data import build_pretrain_dataset

    root = write_demo_dataset("bids", tmp_path / "bids", cases=2, size=16, seed=0)
    cases = discover("bids", root)
    bad = cases[1].images["t1"]
    bad.write_bytes(bad.read_bytes()[:300])
    ds = build_pretrain_dataset(cases, size=16, augment=False)
    with pytest.raises(Exception) as info:
        list(torch.utils.data.DataLoader(ds, batch_size=1, num_workers=workers))
    line = describe_error(info.value)
    assert "\n" not in line and line.startswith(f"case {cases[1].id}: {bad}: ") and "corrupt" in line, line
