"""asa-evaluate never replaces an earlier evaluation without overwrite=true (its files moved aside, as asa-predict
moves earlier predictions), scores by default the test cases of the run whose checkpoint wrote the predictions
(predictions.json -> <run>/checkpoints/best.pt -> <run>/splits.json), warns when split_file=null scores training
cases, and writes one line per case into a log instead of a progress bar. 4 demo cases at 16³, their labels as the
predictions; no network runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from asa.api import evaluate
from asa.api.config import compose_config
from asa.api.machinery.run import OptionError
from asa.api.machinery.rundir import RunDirError
from asa.data import discover, write_demo_dataset


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[Path, Path, list[str]]:
    """(the dataset, a fine-tuning run folder with its splits.json, the case ids: 2 train, 1 val, 1 test)."""
    base = tmp_path_factory.mktemp("evaluate")
    data = write_demo_dataset("brats", base / "brats", cases=4, size=16, seed=0)
    ids = sorted(c.id for c in discover("brats", data))
    run = base / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "best.pt").write_bytes(b"")
    (run / "splits.json").write_text(json.dumps({"train": ids[:2], "val": ids[2:3], "test": ids[3:]}))
    return data, run, ids


def _predictions(folder: Path, data: Path, ids: list[str], checkpoint: Path | None) -> Path:
    """``folder`` holding the labels of ``ids`` as predictions, and the record asa-predict writes naming
    ``checkpoint`` (None: no record)."""
    folder.mkdir()
    labels = {c.id: c.label for c in discover("brats", data)}
    for cid in ids:
        shutil.copy(labels[cid], folder / f"{cid}.nii.gz")
    if checkpoint is not None:
        cases = {cid: {"files": [f"{cid}.nii.gz"], "checkpoint": str(checkpoint)} for cid in ids}
        (folder / "predictions.json").write_text(json.dumps({"format": "asa-predictions", "cases": cases}))
    return folder


def _evaluate(data: Path, pred: Path, out: Path, *extra: str) -> dict:
    return evaluate(compose_config("evaluate", ["data=brats", f"data.root={data}", f"pred={pred}", f"output={out}",
                                                *extra]))


def test_an_earlier_evaluation_is_refused_then_moved_aside(study, tmp_path, capsys):
    data, run, ids = study
    pred = _predictions(tmp_path / "pred", data, ids, run / "checkpoints" / "best.pt")
    out = tmp_path / "eval"
    _evaluate(data, pred, out, "split_file=null")
    (out / "notes.txt").write_text("mine\n")  # not the evaluation's: stays where it is
    before = {name: (out / name).read_bytes() for name in ("summary.json", "per_case.csv")}
    with pytest.raises(RunDirError) as refusal:
        _evaluate(data, pred, out)
    text = str(refusal.value)
    assert text.startswith(f"output={out} already holds an evaluation (summary.json, per_case.csv); writing there "
                           "would replace or mix them, so nothing was written.")
    assert f"output={out}-new" in text and "(its files are moved to eval.replaced-<time>): ... overwrite=true" in text
    assert {name: (out / name).read_bytes() for name in before} == before
    summary = _evaluate(data, pred, out, "overwrite=true")
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("eval.replaced-")]
    assert len(aside) == 1 and {p.name: p.read_bytes() for p in aside[0].iterdir()} == before
    assert summary["n_cases"] == 1 and json.loads((out / "summary.json").read_text())["n_cases"] == 1
    assert (out / "notes.txt").read_text() == "mine\n"
    assert f"moved the previous evaluation (summary.json, per_case.csv) to {aside[0]}" in capsys.readouterr().err


def test_the_test_cases_of_the_checkpoints_run_are_scored_by_default(study, tmp_path, capsys):
    data, run, ids = study
    pred = _predictions(tmp_path / "pred", data, ids, run / "checkpoints" / "best.pt")
    summary = _evaluate(data, pred, tmp_path / "eval")
    assert [r["case_id"] for r in summary["per_case"]] == ids[3:] and summary["n_expected"] == 1
    assert summary["split"] == {"split_file": str(run / "splits.json"), "subset": "test", "training_cases": [],
                                "chosen": f"split_file=auto: the run of {run / 'checkpoints' / 'best.pt'}"}
    assert json.loads((tmp_path / "eval" / "summary.json").read_text())["split"] == summary["split"]
    out = capsys.readouterr().out
    assert (f"[asa] split_file=auto: scoring the test cases of {run / 'splits.json'}, the split of the run whose "
            f"checkpoint {run / 'checkpoints' / 'best.pt'} wrote pred; split_file=null scores every case") in out
    assert "1 of 1 case(s) scored" in out


def test_every_case_with_split_file_null_warns_of_the_training_cases(study, tmp_path, capsys):
    data, run, ids = study
    pred = _predictions(tmp_path / "pred", data, ids, run / "checkpoints" / "best.pt")
    summary = _evaluate(data, pred, tmp_path / "eval", "split_file=null")
    assert summary["n_cases"] == 4 and summary["split"]["training_cases"] == ids[:2]
    warning = [ln for ln in capsys.readouterr().err.splitlines() if "warning" in ln]
    assert warning == [f"[asa] warning: split_file=null scores every case, and 2 of the 4 predictions in pred={pred} "
                       f"are of training cases of the checkpoint {run / 'checkpoints' / 'best.pt'} "
                       f"({run / 'splits.json'}: train; {ids[0]}, {ids[1]}): their scores are not held out; "
                       "split_file=auto (the default) scores the run's test cases"]


@pytest.mark.parametrize("record", ["none", "outside a run"])
def test_without_a_run_split_every_case_is_scored_and_said(study, tmp_path, capsys, record):
    data, _, ids = study
    checkpoint = None if record == "none" else tmp_path / "exported" / "segmenter.pt"
    pred = _predictions(tmp_path / "pred", data, ids, checkpoint)
    summary = _evaluate(data, pred, tmp_path / "eval")
    assert summary["n_cases"] == 4 and summary["split"]["split_file"] is None
    why = (f"pred={pred} names no checkpoint (predictions.json of asa-predict)" if checkpoint is None else
           f"the checkpoint {checkpoint} is not in a run folder's checkpoints/ beside a splits.json")
    assert f"[asa] split_file=auto: {why}, so every case of data.root is scored" in capsys.readouterr().err


def test_a_subset_without_predictions_is_refused_naming_what_pred_holds(study, tmp_path):
    data, run, ids = study
    pred = _predictions(tmp_path / "pred", data, ids[3:], run / "checkpoints" / "best.pt")  # the test case alone
    with pytest.raises(OptionError, match=r"^split_file=auto: .*splits.json, the split of the run whose checkpoint "
                                          r".*best.pt wrote pred, has val cases none of which pred=.* predicts \(it "
                                          r"predicts, per subset: train 0, val 0, test 1\); set subset= to one of "
                                          r"train, val, test"):
        _evaluate(data, pred, tmp_path / "eval", "subset=val")
    assert not (tmp_path / "eval").exists()


def test_predictions_of_data_the_run_never_split_are_all_scored_and_said(study, tmp_path, capsys):
    """A model evaluated on another dataset: none of its predictions is of a case of its run's split."""
    data, _, ids = study
    other = tmp_path / "other"
    (other / "checkpoints").mkdir(parents=True)
    (other / "splits.json").write_text(json.dumps({"train": ["x1"], "val": ["x2"], "test": []}))
    pred = _predictions(tmp_path / "pred", data, ids, other / "checkpoints" / "best.pt")
    summary = _evaluate(data, pred, tmp_path / "eval")
    assert summary["n_cases"] == 4 and summary["split"]["split_file"] is None
    assert (f"none of the predictions in pred={pred} is of a case of {other / 'splits.json'}, the split of the run "
            f"whose checkpoint {other / 'checkpoints' / 'best.pt'} wrote pred, so every case of data.root is scored"
            ) in capsys.readouterr().err
    (other / "splits.json").write_text(json.dumps({"train": ids[:3], "val": ids[3:], "test": []}))
    with pytest.raises(OptionError, match=r"splits.json, the split of .* wrote pred, has no test case; set subset= "
                                          r"to one of train, val, test"):
        _evaluate(data, pred, tmp_path / "eval2")


def test_a_log_gets_one_line_per_case_not_a_progress_bar(study, tmp_path, capsys):
    data, run, ids = study
    pred = _predictions(tmp_path / "pred", data, ids, run / "checkpoints" / "best.pt")
    _evaluate(data, pred, tmp_path / "eval", "split_file=null")
    err = capsys.readouterr().err  # not a terminal, as a scheduler's log
    assert "\r" not in err and "evaluate:" not in err
    assert [ln.split(" (")[0] for ln in err.splitlines() if ln.startswith("[asa] scored")] == [
        f"[asa] scored {n}/4: {cid}" for n, cid in enumerate(ids, 1)]


def test_a_terminal_gets_the_bar_and_no_lines(monkeypatch, capsys):
    from asa.eval.progress import CaseProgress

    monkeypatch.setattr("sys.stderr.isatty", lambda: True)
    with CaseProgress(2, desc="evaluate", verb="scored") as progress:
        progress.advance("a")
        progress.advance(None)  # a case passed over: the bar moves, no case is counted done
        assert progress.done == 1 and progress.bar.n == 2
    err = capsys.readouterr().err
    assert "evaluate: 100%" in err and "[asa] scored" not in err
