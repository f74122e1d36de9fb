"""The checks before anything trains as one frozen record (asa.study.checks.Checks): the lines it says, in order, and
the record checks.json keeps and the report reads, a line that is not there left out."""

from __future__ import annotations

import json

from asa.study.checks import Checks, Endpoint

OVERLAP = {"lines": ["no cohort to check (no --pretrain-data and no --encoder given)"], "overlapping": [],
           "accepted": False}


def test_a_fixed_split_without_a_store_keeps_no_cohort_design_or_control_line():
    checks = Checks(OVERLAP, ("channels",), (), Endpoint("Dice_mean", "mean Dice"))
    assert checks.record() == {"overlap": OVERLAP, "channels": ["channels"], "skull": [],
                               "endpoint": {"key": "Dice_mean", "label": "mean Dice", "line": (
                                   "Primary endpoint: mean Dice, named before any training (every verdict reads it).")}}
    assert checks.lines() == [checks.endpoint.line, *OVERLAP["lines"], "channels"]


def test_every_line_is_said_in_order_and_kept_in_the_order_of_before():
    checks = Checks(OVERLAP, ("c1", "c2"), ("skull",), Endpoint("lesion", "lesion Dice"), cohort="store",
                    design="folds", supervised="control")
    assert list(checks.record()) == ["overlap", "cohort", "channels", "skull", "design", "supervised", "endpoint"]
    assert checks.lines() == [checks.endpoint.line, "folds", "store", *OVERLAP["lines"], "c1", "c2", "skull", "control"]
    assert json.loads(json.dumps(checks.record()))["supervised"] == "control"
