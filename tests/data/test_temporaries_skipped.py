"""Data discovery reads no hidden or temporary file as a case (`asa.io.is_temporary`, one rule for every layout and
asa-predict's folder of files): a stopped asa-prepare's ``.<name>.part.nii.gz``, asa's own ``.<name>.<random>.tmp.nii.gz``,
a ``<name>.tmp.nii.gz``, an editor's ``<name>~``, macOS's ``._<name>`` and whole cases in a dot-folder (a snapshot, a trash folder) are
passed over, with ``on_bad_case=error`` as with ``skip``."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from asa.data import detect_layout, discover, get_task, write_demo_dataset
from asa.data.layouts import LAYOUTS
from asa.eval.predict import gather_cases
from asa.io import is_nifti, is_temporary, strip_nifti


def _plant(root: Path) -> list[Path]:
    """Beside every NIfTI file of ``root``: a truncated dot-file temporary and complete copies under temporary
    names; every case folder again inside a dot-folder. Returns what was planted."""
    planted = []
    for path in sorted(p for p in root.rglob("*") if is_nifti(p)):
        data = path.read_bytes()
        for name, content in ((f".{path.name}.part.nii.gz", data[: len(data) // 2]),  # asa-prepare stopped mid-write
                              (f".{strip_nifti(path.name)}.k3j9x.tmp.nii.gz", data),  # asa's atomic writer's
                              (f"{path.name}.tmp.nii.gz", data), (f"{strip_nifti(path.name)}.part.nii", data),
                              (f"{path.name}~", data), (f"._{path.name}", b"\x00\x05\x16\x07")):  # macOS's
            (path.parent / name).write_bytes(content)
            planted.append(path.parent / name)
    for path in sorted(p for p in root.rglob("*") if is_nifti(p) and not is_temporary(p)):
        top = root / path.relative_to(root).parts[0]  # a case's, subject's or site's folder: a copy in a dot-folder
        if top.is_dir() and not (root / ".snapshot" / top.name).exists():
            shutil.copytree(top, root / ".snapshot" / top.name)
            planted.append(root / ".snapshot" / top.name)
    return planted


@pytest.mark.parametrize("layout", [name for name in LAYOUTS if name != "filelist"])  # a file list names its files
def test_every_layout_passes_over_hidden_and_temporary_files(tmp_path, layout):
    clean = write_demo_dataset(layout, tmp_path / "clean", cases=2, size=16, seed=0)
    expected = [(c.id, sorted(map(str, c.paths()))) for c in discover(layout, clean)]
    root = tmp_path / "planted"
    shutil.copytree(clean, root)
    assert _plant(root)
    assert detect_layout(root) == layout
    found = discover(layout, root, on_bad_case="error")
    assert [(c.id, sorted(str(p).replace(str(root), str(clean)) for p in c.paths())) for c in found] == expected


def test_a_temporary_beside_the_only_files_tells_no_layout(tmp_path):
    (tmp_path / "sub-01" / "anat").mkdir(parents=True)
    (tmp_path / "sub-01" / "anat" / ".sub-01_T1w.nii.gz.part.nii.gz").write_bytes(b"\x1f\x8b")
    with pytest.raises(ValueError, match="cannot tell the layout"):
        detect_layout(tmp_path)


def test_predict_s_folder_of_files_passes_over_them(tmp_path):
    root = write_demo_dataset("ibsr", tmp_path / "ibsr", cases=2, size=16, seed=0)
    folder = tmp_path / "scans"
    folder.mkdir()
    for image in sorted(root.rglob("*_ana_strip.nii*")):
        shutil.copy(image, folder / image.name)
    _plant(folder)
    cases = gather_cases(str(folder), get_task("ibsr"), layout="files")
    assert [c.id for c in cases] == ["IBSR_DEMO_01_ana_strip", "IBSR_DEMO_02_ana_strip"]


@pytest.mark.parametrize("name, temporary", [
    (".sub-01_T1w.nii.gz.part.nii.gz", True), (".last.pt.a1b2c3.tmp.pt", True), ("sub-01_T1w.nii.gz.tmp", True),
    ("sub-01_T1w.tmp.nii.gz", True), ("sub-01_T1w.nii.gz~", True), ("x.nii.gz.tmp3", True), (".snapshot", True),
    ("sub-01_T1w.nii.gz", False), ("sub-01_part-mag_T1w.nii.gz", False), ("case.participants.nii", False),
    ("IBSR_01", False), ("tmp_case.nii.gz", False),
])
def test_the_rule(name, temporary):
    assert is_temporary(name) is temporary
