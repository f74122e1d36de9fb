"""asa-predict killed (SIGKILL, a lost node) at any moment continues with ``resume=true``: nothing complete is
predicted again, nothing half-written is read, and what the killed write left is removed at the next start, said
in one line. A prediction job with no network (one text file per case) stands in for a task; the kill is an
exception no handler catches, raised where a SIGKILL would land, and the states it cannot make are planted."""

from __future__ import annotations

import hashlib
import json
import os
import time
from types import SimpleNamespace

import pytest
import torch

from asa.api.config import compose_config
from asa.api.configuration.checks import as_config
from asa.api.machinery.prediction import MANIFEST, STAGE, PredictionJob, PredictSetup
from asa.api.machinery.rundir import RunDirError
from asa.api.tasks.segmentation import SegmentationTask
from asa.io import atomic_write_text, is_temporary

SETUP = PredictSetup(device=torch.device("cpu"), amp_dtype=None, threads=1, sw_batch_size=1, compile=False)


class Killed(BaseException):
    """A SIGKILL: nothing of the job runs after it."""


class Notes(PredictionJob):
    """``<case>.txt`` holding the case id, for the cases a, b and c."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def load_predictor(self, cfg, state, checkpoint, setup) -> None:
        pass

    def prediction_cases(self, cfg, inputs) -> list:
        return [SimpleNamespace(id=cid) for cid in "abc"]

    def prediction_files(self, out) -> list[str]:
        return [p.name for p in out.iterdir() if p.suffix == ".txt" and not is_temporary(p)]

    def predict_case(self, cfg, case, out, setup) -> list:
        self.calls.append(case.id)
        return [atomic_write_text(out / f"{case.id}.txt", f"{case.id}\n")]


@pytest.fixture
def run(tmp_path):
    checkpoint, inputs, out = tmp_path / "a.pt", tmp_path / "images", tmp_path / "preds"
    checkpoint.write_bytes(b"weights")
    inputs.mkdir()

    def predict(*extra: str) -> list[str]:
        job = Notes()
        cfg = as_config(compose_config("predict", [f"checkpoint={checkpoint}", f"input={inputs}", f"output={out}",
                                                   *extra]), "predict")
        job.predict(cfg, {}, checkpoint, str(inputs), SETUP)
        return job.calls
    return predict, out


def _kill_at(monkeypatch, target, *, after: bool) -> None:
    """A kill as ``target`` takes its name: just before the rename, or just after."""
    real = os.replace

    def replace(src, dst):
        if str(dst) == str(target) and not after:
            raise Killed
        real(src, dst)
        if str(dst) == str(target):
            raise Killed
    monkeypatch.setattr(os, "replace", replace)


def _age(path, seconds: float = 600) -> None:
    when = time.time() - seconds
    os.utime(path, (when, when))


@pytest.mark.parametrize("after", [True, False], ids=["after the rename", "before the rename"])
def test_a_kill_as_a_prediction_takes_its_name_redoes_only_what_is_not_in_place(run, monkeypatch, capsys, after):
    """After the rename, b.txt is complete and its record names its content: kept (it was refused as a file
    predictions.json does not record). Before it, b.txt waits in .writing/: removed, and b predicted again."""
    predict, out = run
    _kill_at(monkeypatch, out / "b.txt", after=after)
    with pytest.raises(Killed):
        predict()
    monkeypatch.undo()
    assert (out / "b.txt").is_file() == after and (out / STAGE / "b.txt").is_file() != after
    for left in out.glob(f"{STAGE}/*"):  # a SIGKILL leaves them as they are
        _age(left)
    capsys.readouterr()
    assert predict("resume=true") == (["c"] if after else ["b", "c"])
    said = [ln for ln in capsys.readouterr().err.splitlines() if "temporary" in ln]
    assert said == ([] if after else [f"[asa] removed 1 temporary file(s) that an interrupted prediction write left "
                                      f"in {out} ({STAGE}/b.txt)"])
    assert {p.name: p.read_text() for p in out.glob("*.txt")} == {f"{c}.txt": f"{c}\n" for c in "abc"}
    manifest = json.loads((out / MANIFEST).read_text())
    assert sorted(manifest["cases"]) == ["a", "b", "c"] and manifest["pending"] == {}
    assert sorted(p.name for p in out.iterdir()) == ["a.txt", "b.txt", "c.txt", MANIFEST]  # no lock, no .writing


def test_a_pending_case_is_kept_only_with_its_recorded_content(run):
    """A case recorded but pending (the kill came before its files were renamed) with another file of its name in
    place, e.g. one an earlier run wrote: predicted again, not read. With the recorded content it is kept."""
    predict, out = run
    predict()
    manifest = json.loads((out / MANIFEST).read_text())
    manifest["pending"] = {"b": {"b.txt": hashlib.sha256(b"b, as the killed run wrote it\n").hexdigest()},
                           "c": {"c.txt": hashlib.sha256(b"c\n").hexdigest()}}
    (out / MANIFEST).write_text(json.dumps(manifest))
    assert predict("resume=true") == ["b"]
    assert json.loads((out / MANIFEST).read_text())["pending"] == {}


def test_the_litter_of_a_killed_write_is_removed_and_said_in_one_line(run, capsys):
    """The atomic writer's temporaries in the folder and whatever waits in .writing/, older than the new start's
    lock; a newer one (another writer, a clock ahead) stays."""
    predict, out = run
    predict()
    (out / "c.txt").unlink()
    (out / STAGE).mkdir()
    litter = [out / ".c.txt.k3j9x_2a.tmp.txt", out / STAGE / "c.txt", out / STAGE / ".c.txt.0abc1234.tmp.txt",
              out / f".{MANIFEST}.zz9yx8wv.tmp.json"]
    newer = out / ".c.txt.ab12cd34.tmp.txt"
    for path in [*litter, newer]:
        path.write_text("torn")
        _age(path, -3600 if path == newer else 600)
    capsys.readouterr()
    assert predict("resume=true") == ["c"]
    said = [ln for ln in capsys.readouterr().err.splitlines() if "temporary" in ln]
    assert said == [f"[asa] removed 4 temporary file(s) that an interrupted prediction write left in {out} "
                    f"(.c.txt.k3j9x_2a.tmp.txt, .{MANIFEST}.zz9yx8wv.tmp.json, {STAGE}/.c.txt.0abc1234.tmp.txt, "
                    f"{STAGE}/c.txt)"]
    assert not any(p.exists() for p in litter) and newer.exists() and (out / "c.txt").read_text() == "c\n"


def test_a_complete_file_no_record_names_is_still_refused(run):
    """A prediction in place that predictions.json does not record (another asa, a copy by hand) proves nothing."""
    predict, out = run
    predict()
    (out / "d.txt").write_text("d\n")
    with pytest.raises(RunDirError, match=r"does not record \(d.txt\)"):
        predict("resume=true")
    assert not (out / "run.lock").exists()


def test_a_second_job_on_the_same_output_is_refused_while_the_first_holds_its_lock(run):
    predict, out = run
    out.mkdir()
    (out / "run.lock").write_text(json.dumps({"host": os.uname().nodename, "pid": os.getpid(),
                                              "started": "now", "command": "asa-predict"}))
    with pytest.raises(RunDirError, match=r"output=.* is in use by another job"):
        predict()
    assert sorted(p.name for p in out.iterdir()) == ["run.lock"]


def test_an_output_that_is_a_file_is_refused_before_the_lock(run):
    predict, out = run
    out.write_text("notes")
    with pytest.raises(RunDirError, match=r"output=.* is a file, not a folder"):
        predict()
    assert out.read_text() == "notes"


def test_a_segmentation_temporary_is_no_prediction(tmp_path):
    """The writer's temporary of a case killed mid-write was counted as a prediction the record does not know."""
    for name in ("c1.nii.gz", ".c2.nii.gz.k3j9x_2a.tmp.nii.gz", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert SegmentationTask().prediction_files(tmp_path) == ["c1.nii.gz"]
