"""asa-prepare's refusals and stops, without a registration (each case's preparation is replaced where one is
needed): --help and refused options load neither torch nor MONAI; OUT a file, unwritable, another dataset or a
non-empty folder of something else; a SIGTERM stops as Ctrl-C does; an empty, damaged or whole-head scan is named."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from asa.cli.prepare import main
from asa.data.prepare.case import case_files, read_volume
from asa.data.prepare.stages import MAX_BRAIN_ML, extract_brain

ARGS = ["--brain", "none", "--spacing", "6", "--box", "template", "--no-progress"]


def test_help_and_refused_options_load_neither_torch_nor_monai(tmp_path):
    code = f"""
import sys
from asa.cli.prepare import main
codes = []
for argv in (["--help"], ["raw", "out", "--brain", "bet"], ["raw", "out", "--spacing", "0"],
             ["raw", "out", "--shard", "3/2"], ["raw", "out", "--min-similarity", "2"],
             ["raw", "out", "--workers", "0"]):
    try:
        codes.append(main(argv))
    except SystemExit as stop:
        codes.append(stop.code)
print(codes, sorted(m for m in ("torch", "monai") if m in sys.modules))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[0, 2, 2, 2, 2, 2] []"
    assert "--min-similarity 2.0: expected a correlation in [0, 1)" in done.stderr


@pytest.fixture
def raw(tmp_path) -> Path:
    from asa.data import write_demo_dataset

    return write_demo_dataset("bids", tmp_path / "raw", cases=2, size=16, seed=0)


def _one_line(capsys) -> str:
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    return lines[0]


def test_out_a_file_is_refused_in_one_line(raw, tmp_path, capsys):
    out = tmp_path / "out.nii.gz"
    out.write_bytes(b"x")
    assert main([str(raw), str(out), *ARGS]) == 2
    assert f"out={out} is a file; expected the folder" in _one_line(capsys)


def test_a_foreign_folder_is_refused_unless_asked_and_a_bids_dataset_is_not_taken_for_a_prepared_one(
        raw, tmp_path, capsys, monkeypatch):
    pytest.importorskip("ants")
    pytest.importorskip("nilearn")
    import asa.data.prepare.pipeline as pipeline

    def fake_case(case, out, settings, *, min_similarity):  # the registration is not what this tests
        record = out / case_files(case).record
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps({"id": case.id}))

    monkeypatch.setattr(pipeline, "prepare_case", fake_case)
    monkeypatch.setattr(pipeline, "write_qc", lambda out: None)
    out = tmp_path / "results"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main([str(raw), str(out), *ARGS]) == 2
    line = _one_line(capsys)
    assert "holds 1 file(s) or folder(s) (notes.txt) and is not a folder asa-prepare made" in line
    assert "--into-existing" in line and not list(out.glob("sub-*"))
    assert main([str(raw), str(out), *ARGS, "--into-existing"]) == 0
    assert (out / "notes.txt").read_text() == "mine" and len(list(out.glob("sub-*/**/*_desc-prepare.json"))) == 2
    assert main([str(raw), str(out), *ARGS]) == 0  # now asa-prepare's own folder: a rerun needs no flag

    bids = tmp_path / "other_bids"
    bids.mkdir()
    (bids / "dataset_description.json").write_text(json.dumps({"Name": "a study", "BIDSVersion": "1.9.0"}))
    for argv in ([str(raw), str(bids), *ARGS], [str(raw), str(bids), *ARGS, "--into-existing"]):
        assert main(argv) == 2
        line = _one_line(capsys)
        assert "is a BIDS dataset that asa-prepare did not make" in line and "other settings" not in line


def test_an_unwritable_out_is_refused_in_one_line(raw, tmp_path, capsys, monkeypatch):
    pytest.importorskip("ants")
    pytest.importorskip("nilearn")
    out = tmp_path / "ro"
    out.mkdir()
    real_open = os.open

    def read_only(path, flags, *args, **kwargs):  # root ignores chmod: a read-only file system simulated
        if flags & os.O_CREAT and Path(path).absolute().parent == out:
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    assert main([str(raw), str(out), *ARGS]) == 2
    assert _one_line(capsys) == f"asa-prepare: error: out={out} cannot be written (Read-only file system); " \
                                "choose a folder you can write to"


def test_sigterm_stops_as_ctrl_c_does_and_keeps_the_finished_cases(raw, tmp_path, capsys, monkeypatch):
    pytest.importorskip("ants")
    pytest.importorskip("nilearn")
    import asa.data.prepare.pipeline as pipeline

    done = []

    def fake_case(case, out, settings, *, min_similarity):
        if done:  # the second case: the scheduler's SIGTERM arrives while it is prepared
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(100):  # the handler runs between two bytecodes
                pass
            raise AssertionError("SIGTERM did not stop asa-prepare")
        record = out / case_files(case).record
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps({"id": case.id}))
        done.append(case.id)

    monkeypatch.setattr(pipeline, "prepare_case", fake_case)
    out = tmp_path / "prepared"
    before = signal.getsignal(signal.SIGTERM)
    assert main([str(raw), str(out), *ARGS]) == 143
    assert _one_line(capsys) == ("[asa-prepare] stopped by SIGTERM (the cases prepared so far stay, recorded; run the "
                                 "same command again to prepare the rest); exit 143")
    assert [p.name for p in out.glob("sub-*/**/*_desc-prepare.json")] == [f"{done[0]}_desc-prepare.json"]
    assert signal.getsignal(signal.SIGTERM) is before  # the script's handler does not outlive it


def test_an_empty_or_damaged_scan_is_named(tmp_path):
    empty = tmp_path / "empty_T1w.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), np.eye(4)), str(empty))
    with pytest.raises(ValueError, match=f"{empty}: the scan is empty"):
        read_volume(empty)
    whole = tmp_path / "whole_T1w.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((32, 32, 32), np.float32), np.eye(4)), str(whole))
    cut = tmp_path / "cut_T1w.nii.gz"
    cut.write_bytes(whole.read_bytes()[: len(whole.read_bytes()) // 2])
    with pytest.raises(ValueError, match=f"{cut}: cannot be read as a NIfTI .*truncated"):
        read_volume(cut)
    assert read_volume(whole)[0].shape == (32, 32, 32)


def test_brain_none_refuses_a_whole_head_by_its_volume_not_by_its_zeros(tmp_path):
    pytest.importorskip("nilearn")
    from asa.data import write_demo_dataset

    heads = write_demo_dataset("bids", tmp_path / "heads", cases=1, size=24, seed=0, anatomy=True, skull=True)
    brains = write_demo_dataset("bids", tmp_path / "brains", cases=1, size=24, seed=0, anatomy=True)
    head = nib.load(str(next(heads.rglob("*_T1w.nii.gz"))))
    data = np.asarray(head.get_fdata(), np.float32)
    data[0, 0, :4] = 0  # a few exact zeros: the head is no longer non-zero everywhere
    with pytest.raises(ValueError, match=r"holds 1\d\.\d L, a whole head's volume, not a brain's \(at most 3 L\)"):
        extract_brain(data, head.affine, "none")
    data[data < 0.05 * data.max()] = 0  # the air set to 0: the head alone still holds 5.5 L
    with pytest.raises(ValueError, match="a whole head's volume"):
        extract_brain(data, head.affine, "none")
    brain = nib.load(str(next(brains.rglob("*_T1w.nii.gz"))))
    mask = extract_brain(np.asarray(brain.get_fdata(), np.float32), brain.affine, "none")
    litres = mask.sum() * abs(np.linalg.det(brain.affine[:3, :3])) / 1e6
    assert 1.0 < litres < MAX_BRAIN_ML / 1000  # the demo brain: about 2 L

