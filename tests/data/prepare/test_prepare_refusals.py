"""asa-prepare's refusals and stops, without a registration (each case's preparation is replaced where one is
needed): --help and refused options load neither torch nor MONAI; OUT a file, unwritable (refused before the tools
load), another dataset or a non-empty folder of something else; a SIGTERM stops as Ctrl-C does, says what OUT holds
and leaves no temporary or unrecorded image, and a rerun removes what a killed run left; an empty, damaged, 2D or
whole-head scan is named, every case's before the first registration."""

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


@pytest.mark.slow  # a child process's imports
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
    assert _one_line(capsys) == f"asa-prepare: error: out={out}: cannot write there (read-only file system; a " \
                                "read-only folder?); choose another out"


def test_an_unwritable_out_is_refused_before_the_tools_load_or_a_scan_is_read(raw, tmp_path):
    """The check every job runs on its output folder (asa.io.writable), first: not after ANTs and the cases'
    discovery (torch) have loaded, which takes minutes on a busy node."""
    code = f"""
import errno, os, sys
from pathlib import Path
from asa.cli.prepare import main
out = Path({str(tmp_path / "ro")!r})
out.mkdir()
real_open = os.open
def read_only(path, flags, *args, **kwargs):
    if flags & os.O_CREAT and Path(path).absolute().parent == out:
        raise OSError(errno.EROFS, "Read-only file system", str(path))
    return real_open(path, flags, *args, **kwargs)
os.open = read_only
code = main([{str(raw)!r}, str(out), *{ARGS!r}])
print(code, sorted(m for m in ("torch", "monai", "ants") if m in sys.modules))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "2 []"
    assert "cannot write there (read-only file system" in done.stderr


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
    assert _one_line(capsys) == (f"[asa-prepare] stopped by SIGTERM ({out} holds 1 prepared case(s), each recorded; "
                                 "the cases under way were removed; run the same command again to prepare the rest); "
                                 "exit 143")
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
    with pytest.raises(ValueError, match=r"fills its field of view \(100% of the grid's faces"):
        extract_brain(data, head.affine, "none")  # its air (noise above 0.1 % of the bright end) reaches every face
    data[data < 0.05 * data.max()] = 0  # the air set to 0: the head still holds 5.5 L
    with pytest.raises(ValueError, match="a whole head's volume"):
        extract_brain(data, head.affine, "none")
    brain = nib.load(str(next(brains.rglob("*_T1w.nii.gz"))))
    mask = extract_brain(np.asarray(brain.get_fdata(), np.float32), brain.affine, "none")
    litres = mask.sum() * abs(np.linalg.det(brain.affine[:3, :3])) / 1e6
    assert 1.0 < litres < MAX_BRAIN_ML / 1000  # the demo brain: about 2 L



def _stop(signum: int = signal.SIGTERM) -> None:
    os.kill(os.getpid(), signum)
    for _ in range(100):  # the handler runs between two bytecodes
        pass
    raise AssertionError("the signal did not stop asa-prepare")


def test_a_stop_before_any_case_is_recorded_does_not_say_cases_stay(raw, tmp_path, capsys, monkeypatch):
    pytest.importorskip("ants")
    pytest.importorskip("nilearn")
    import asa.data.prepare.pipeline as pipeline

    monkeypatch.setattr(pipeline, "prepare_case", lambda case, out, settings, *, min_similarity: _stop())
    out = tmp_path / "prepared"
    assert main([str(raw), str(out), *ARGS]) == 143
    line = _one_line(capsys)
    assert line == (f"[asa-prepare] stopped by SIGTERM (no case is prepared in {out}; run the same command again); "
                    "exit 143")


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stop_during_the_writes_leaves_no_temporary_and_no_unrecorded_image(raw, tmp_path, capsys, monkeypatch,
                                                                              request, signum, code):
    """Stopped between a write and its rename (a ``.part`` file on disk) after another image was renamed into place
    (a whole image, no record): neither stays, so no reader takes them for a case."""
    if signum == signal.SIGINT:  # Ctrl-C raises in a user's process; pytest-xdist's workers ignore SIGINT
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        request.addfinalizer(lambda: signal.signal(signal.SIGINT, previous))
    pytest.importorskip("ants")
    pytest.importorskip("nilearn")
    import asa.data.prepare.case as case_module
    import asa.data.prepare.pipeline as pipeline

    def fake_case(case, out, settings, *, min_similarity):  # the real writer, stopped before its second rename
        files = case_files(case)
        case_module._save(np.ones((4, 4, 4), np.float32), np.eye(4), out / files.image("t1"))
        assert (out / files.image("t1")).is_file()
        monkeypatch.setattr(case_module.os, "replace", lambda *a: _stop(signum))
        case_module._save(np.ones((4, 4, 4), np.uint8), np.eye(4), out / files.mask, dtype=np.uint8)

    monkeypatch.setattr(pipeline, "prepare_case", fake_case)
    out = tmp_path / "prepared"
    assert main([str(raw), str(out), *ARGS]) == code
    capsys.readouterr()
    assert [p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.name.startswith("sub-")] == []
    assert [p.relative_to(out).as_posix() for p in out.rglob(".*")] == []


def test_a_rerun_removes_what_a_killed_run_left_before_any_case_starts(raw, tmp_path, capsys, monkeypatch):
    """SIGKILL runs no handler: a part-file, an image renamed into place without its record and the record's own
    temporary stay until the next run, which removes them for the cases it prepares (its own shard's: another
    shard's writes are left alone), before it prepares any."""
    pytest.importorskip("ants")
    pytest.importorskip("nilearn")
    import asa.data.prepare.pipeline as pipeline
    from asa.data import discover

    cases = discover("bids", raw)
    out = tmp_path / "prepared"
    seen = []

    def fake_case(case, out, settings, *, min_similarity):
        seen.append(sorted(p.name for p in out.rglob("*") if p.is_file() and p.parent.name == "anat"
                           and "sub-OTHER" not in p.name))
        record = out / case_files(case).record
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps({"id": case.id}))

    monkeypatch.setattr(pipeline, "prepare_case", fake_case)
    monkeypatch.setattr(pipeline, "write_qc", lambda out: None)
    assert main([str(raw), str(out), *ARGS, "--shard", "0/2"]) == 0  # the first case prepared (a record only)
    files = case_files(cases[1])
    litter = [files.image("t1"), files.folder / f".{files.image('t1').name}.part.nii.gz",
              files.folder / f".{files.transform('t1').name}.part",
              files.folder / f".{files.record.name}.k3j9x_2a.tmp.json"]
    for name in litter:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(b"left by a killed run")
    other = out / "sub-OTHER" / "anat" / ".sub-OTHER_T1w.nii.gz.part.nii.gz"  # another shard's write under way
    other.parent.mkdir(parents=True)
    other.write_bytes(b"being written")
    seen.clear()
    assert main([str(raw), str(out), *ARGS]) == 0
    capsys.readouterr()
    assert seen[0] == []  # the fake records are not done ones: both cases are prepared again, on a clean slate
    assert other.is_file() and not any((out / name).exists() for name in litter if name.name != files.record.name)


def test_every_case_s_scans_are_checked_before_the_first_registration(raw, tmp_path, capsys, monkeypatch):
    """A damaged, a 2D and an empty scan, sorted after the good cases, are each named in one line before the first
    case's slow stages start; none reaches them; the run ends with exit 1 and the reasons in prepare_failed.json."""
    pytest.importorskip("ants")
    pytest.importorskip("nilearn")
    import asa.data.prepare.pipeline as pipeline

    t1 = next(raw.rglob("*_T1w.nii.gz"))
    bad = {"sub-ZCUT": t1.read_bytes()[: len(t1.read_bytes()) // 2], "sub-ZFLAT": None, "sub-ZZERO": None}
    for subject in bad:
        path = raw / subject / "anat" / f"{subject}_T1w.nii.gz"
        path.parent.mkdir(parents=True)
        if subject == "sub-ZCUT":
            path.write_bytes(bad[subject])
        else:
            data = np.ones((16, 16), np.float32) if subject == "sub-ZFLAT" else np.zeros((16, 16, 16), np.float32)
            nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    reached = []

    def fake_case(case, out, settings, *, min_similarity):
        if not reached:
            said = capsys.readouterr()
            reached.append(said.out + said.err)
        reached.append(case.id)
        record = out / case_files(case).record
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps({"id": case.id}))

    monkeypatch.setattr(pipeline, "prepare_case", fake_case)
    monkeypatch.setattr(pipeline, "write_qc", lambda out: None)
    out = tmp_path / "prepared"
    assert main([str(raw), str(out), *ARGS]) == 1
    before_first, *prepared = reached
    assert not any(case.startswith("sub-Z") for case in prepared) and len(prepared) == 2
    assert [line.split(" failed: ")[0] for line in before_first.splitlines() if " failed: " in line] == [
        f"[asa-prepare] {subject}" for subject in bad]
    reasons = {f["id"]: f["reason"] for f in json.loads((out / "prepare_failed.json").read_text())["failed"]}
    assert "sub-ZCUT_T1w.nii.gz: cannot be read as a NIfTI" in reasons["sub-ZCUT"]
    assert "sub-ZFLAT_T1w.nii.gz: expected a 3D image, got shape (16, 16)" in reasons["sub-ZFLAT"]
    assert "sub-ZZERO_T1w.nii.gz: the scan is empty" in reasons["sub-ZZERO"]
