"""`asa-predict --help` and `asa-evaluate --help` cover case targets too (issue #35: they spoke of
segmentation only, with no word of a case head's checkpoint or its predictions.csv)."""

from __future__ import annotations

import sys

import pytest

from asa.cli import evaluate, predict


def _help(main, app: str, monkeypatch, capsys, cache) -> str:
    monkeypatch.setenv("ASA_CACHE", str(cache))  # composed here, kept in the test's folder
    monkeypatch.setattr(sys, "argv", [app, "--help"])
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code in (0, None)
    return capsys.readouterr().out


def test_predict_help_says_what_a_case_head_writes(monkeypatch, capsys, tmp_path):
    text = _help(predict.main, "asa-predict", monkeypatch, capsys, tmp_path)
    head = text.split("== Configuration")[0]
    assert "With a case head's checkpoint (asa-finetune data=targets: classification or regression)" in head
    assert "predictions.csv" in head and "case_id, prediction" in head and "p_<class>" in head
    assert "input=/data/ADNI_BIDS" in head  # an example of it


def test_evaluate_help_says_how_case_targets_are_scored(monkeypatch, capsys, tmp_path):
    text = _help(evaluate.main, "asa-evaluate", monkeypatch, capsys, tmp_path)
    head = text.split("== Configuration")[0]
    assert "data=brats|ibsr|wmh|msd|targets" in head
    assert "<pred>/predictions.csv against the\ncolumn task.target" in head and "bootstrap" in head
    assert "data=targets data.root=/data/ADNI_BIDS task=case task.target=diagnosis pred=" in head  # an example of it
