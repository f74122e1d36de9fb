"""asa-study's overlap check with nothing to check against says why: no cohort was given, or the --encoder files
given carry none."""

from __future__ import annotations

from pathlib import Path

from asa.data.case import Case
from asa.study.checks import check_overlap
from asa.study.runs import FixedSplit


def test_no_cohort_to_check_names_what_was_not_given(monkeypatch):
    cases = [Case("a", {"t1": Path("a.nii.gz")}), Case("b", {"t1": Path("b.nii.gz")})]
    split = FixedSplit(test=("a",), val=("b",), pool=(), supervised=())
    alone = check_overlap([], None, cases, split, None, accept=False)
    assert alone["lines"] == ["no cohort to check (no --pretrain-data and no --encoder given)"]
    assert alone["overlapping"] == [] and not alone["accepted"]
    import asa.study.checks as checks

    monkeypatch.setattr(checks, "encoder_cohort", lambda path, option: None)  # a file that carries no cohort
    carried = check_overlap([], None, cases, split, {"enc": "enc.pt"}, accept=False)
    assert carried["lines"] == ["no cohort to check (the --encoder files carry none)"]
