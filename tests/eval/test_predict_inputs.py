from __future__ import annotations

from pathlib import Path

import pytest

from asa.data import get_task, write_demo_dataset
from asa.eval.predict import cases_from_files, gather_cases


def _touch(folder: Path, *names: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / n for n in names]
    for p in paths:
        p.write_bytes(b"")
    return paths


def test_one_channel_files_are_one_case_each(tmp_path):
    paths = _touch(tmp_path, "subj_2020.nii.gz", "scan_0000.nii.gz", "other.nii")
    cases = cases_from_files(paths, get_task("ibsr"))
    assert sorted(c.id for c in cases) == ["other", "scan", "subj_2020"]
    assert all(list(c.images) == ["t1"] and c.label is None for c in cases)


def test_multichannel_files_follow_nnunet_naming(tmp_path):
    paths = _touch(tmp_path, "a_0001.nii.gz", "a_0000.nii.gz", "b_0000.nii.gz", "b_0001.nii.gz")
    cases = cases_from_files(paths, get_task("wmh"))
    assert [c.id for c in cases] == ["a", "b"]
    assert cases[0].images == {"t1": tmp_path / "a_0000.nii.gz", "flair": tmp_path / "a_0001.nii.gz"}
    with pytest.raises(ValueError, match=r"case 'c': found channels \[0\].*needs 2"):
        cases_from_files(_touch(tmp_path, "c_0000.nii.gz"), get_task("wmh"))
    with pytest.raises(ValueError, match="not a NIfTI"):
        cases_from_files(_touch(tmp_path, "notes.txt"), get_task("wmh"))


def test_gather_reads_layouts_folders_and_reports_missing_inputs(tmp_path):
    root = write_demo_dataset("wmh", tmp_path / "wmh", cases=2, size=32, seed=0)
    assert len(gather_cases(root, get_task("wmh"))) == 2
    files = _touch(tmp_path / "plain", "x.nii.gz", "y.nii.gz")
    assert [c.id for c in gather_cases(tmp_path / "plain", get_task("ibsr"))] == ["x", "y"]
    assert [c.id for c in gather_cases([str(f) for f in files], get_task("ibsr"))] == ["x", "y"]
    with pytest.raises(FileNotFoundError, match="missing.nii.gz"):
        gather_cases([tmp_path / "missing.nii.gz"], get_task("ibsr"))
    empty = _touch(tmp_path / "empty", "readme.txt")[0].parent
    with pytest.raises(FileNotFoundError, match="no .nii"):
        gather_cases(empty, get_task("ibsr"))
