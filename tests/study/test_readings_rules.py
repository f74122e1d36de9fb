"""The verdict rules of asa.study.readings, from hand-made facts: one ordered list, the first rule that applies gives
the verdict, every verdict is reached by some facts; a row judged not interpretable claims no bound; the runs' and the
probes' readings."""
from __future__ import annotations

import dataclasses
import math

import pytest

from asa.study import readings, tables
from asa.study.readings import Facts, Judgment, Verdict

HELPED, NULL = Judgment(Verdict.HELPED), Judgment(Verdict.NO_DIFFERENCE, "ci")

# (facts, the verdict and why they read): one row per way to each verdict
REACHED = [
    (Facts(HELPED, plumbing=True), Judgment(Verdict.PLUMBING)),
    (Facts(HELPED, faulty=True), Judgment(Verdict.UNREADABLE)),
    (Facts(HELPED, share=0.9), Judgment(Verdict.NOT_A_TEST, "the attentive weights' effective share 0.90 > 0.8: "
                                                            "asa's loss is mae's in all but name")),
    (Facts(HELPED, p_holm=0.06), Judgment(Verdict.INCONCLUSIVE, "holm")),
    (Facts(Judgment(Verdict.HURT), p_holm=0.2), Judgment(Verdict.INCONCLUSIVE, "holm")),
    (Facts(NULL, null_fault="no positive control ran"), Judgment(Verdict.UNSHOWN, "no positive control ran")),
    (Facts(HELPED, gain_fault="no negative control ran"), Judgment(Verdict.UNREADABLE, "no negative control ran")),
    (Facts(HELPED, p_holm=0.01), HELPED),
    (Facts(Judgment(Verdict.HURT)), Judgment(Verdict.HURT)),
    (Facts(NULL), NULL),
    (Facts(Judgment(Verdict.INCONCLUSIVE)), Judgment(Verdict.INCONCLUSIVE)),
    (Facts(Judgment(Verdict.NOT_MEASURED)), Judgment(Verdict.NOT_MEASURED)),
]


@pytest.mark.parametrize("facts, expected", REACHED)
def test_each_way_to_a_verdict(facts, expected):
    assert readings.judge(facts) == expected


def test_every_verdict_is_reached():
    assert {judged.verdict for _, judged in REACHED} == set(Verdict)


def test_the_first_rule_that_applies_wins():
    """Facts that every rule up to the last would take: peeling off the first rule's cause hands the verdict to the
    next, in `RULES`' order."""
    facts = Facts(HELPED, p_holm=0.5, plumbing=True, faulty=True, gain_fault="no negative control ran", share=0.9)
    said = []
    for peel in ({}, {"plumbing": False}, {"faulty": False}, {"share": None}, {"p_holm": None}, {"gain_fault": None}):
        facts = Facts(**{**facts.__dict__, **peel})
        said.append(readings.judge(facts).verdict)
    assert said == [Verdict.PLUMBING, Verdict.UNREADABLE, Verdict.NOT_A_TEST, Verdict.INCONCLUSIVE,
                    Verdict.UNREADABLE, Verdict.HELPED]
    # a null with no positive control that moved, and weights near uniform: not a test before not shown
    assert readings.judge(Facts(NULL, null_fault="x", share=0.95)).verdict == Verdict.NOT_A_TEST
    # a gain off 0 alone that fails Holm is inconclusive, whatever the negative control says
    assert readings.judge(Facts(HELPED, p_holm=0.2, gain_fault="x")) == Judgment(Verdict.INCONCLUSIVE, "holm")
    # a NaN share (no run measured it) or one at the bar is no cause
    assert readings.judge(Facts(HELPED, share=math.nan)) == readings.judge(Facts(HELPED, share=0.8)) == HELPED
    assert [rule.__name__ for rule in readings.RULES][-1] == "_settled"  # the last applies to every contrast


def _measured(bound90: tuple[float, float]) -> readings.Measured:
    bar = readings.Bar(0.01, list(bound90), {"levels": {}}, 0.02, None)
    return readings.Measured("q?", "question", "asa-c4", "scratch", "asa", "scratch", 2, readings.KEYS[0],
                             {"Dice_mean": [0.05, 0.02, 0.08]}, {"Dice_mean": [0.05, 0.03, 0.07]}, bar, HELPED)


@pytest.mark.parametrize("verdict, bound", [(Verdict.HELPED, "gains below +0.030 excluded"),
                                            (Verdict.NOT_A_TEST, "gains below +0.030 excluded"),
                                            (Verdict.PLUMBING, readings.NOT_READ),
                                            (Verdict.UNREADABLE, readings.NOT_READ),
                                            (Verdict.UNSHOWN, readings.NOT_READ)])
def test_a_row_not_interpretable_claims_no_bound(verdict, bound):
    row = readings.contrast_row(_measured((0.03, 0.07)), Judgment(verdict), role="exploratory", p_holm=0.02,
                                looks=readings.Looks(), flags=None, min_effect=0.01)
    assert row.bound == bound and row.verdict == verdict and row.p_holm == 0.02 and row.looks is None
    assert list(row.to_dict())[-3:] == ["why", "role", "p_holm"]  # no looks, no flags: not written


def _replace(m: readings.Measured, *, mde: float | None = None, **fields) -> readings.Measured:
    """``m`` with other ``fields`` (``mde``: its bar's)."""
    if mde is not None:
        fields["bar"] = dataclasses.replace(m.bar, mde=mde)
    return dataclasses.replace(m, **fields)


def test_the_primary_sees_a_control_its_minimum_detectable_effect_reaches():
    def reading(primary_mde: float, control: float) -> bool:
        primary = readings.contrast_row(_replace(_measured((0.03, 0.07)), mde=primary_mde), HELPED,
                                        role="primary", p_holm=None, looks=readings.Looks(), flags=None,
                                        min_effect=0.01)
        said = readings.Reading(readings.KEYS[0], (readings.KEYS[0],), (primary,), primary, (),
                                readings.Controls({}, {}), False, 0.01, [])
        positive = _replace(_measured((0.03, 0.07)), estimates={"Dice_mean": [control, 0.0, 0.1]})
        return said.detects(readings.contrast_row(positive, HELPED, role="control", p_holm=None,
                                                  looks=readings.Looks(), flags=None, min_effect=0.01))

    assert reading(0.05, 0.06) and reading(0.06, 0.06) and not reading(0.07, 0.06) and not reading(math.nan, 0.06)


def test_a_run_rises_from_its_own_tolerance_and_a_short_one_never():
    assert readings.rising({"loss_rise": 0.03, "tol": 0.02}) and readings.rising({"loss_rise": 0.02, "tol": 0.02})
    assert not readings.rising({"loss_rise": 0.01, "tol": 0.02}) and not readings.rising({"loss_rise": math.nan})
    assert not readings.rising({})  # a record without the check
    # a record before runs kept their own tolerance: the budget check's
    assert readings.rising({"loss_rise": tables.PLATEAU_TOL}) and not readings.rising({"loss_rise": 0.04})



def test_a_run_exported_at_its_lowest_round_is_said_to_stand_above_its_lowest_level_not_round():
    """Exported at its lowest round (0.54), its last eighth's median (0.57) stands 2.7 % above its lowest eighth's
    (step 9-10's 0.555): the page says so in those terms, not that its lowest round is under the export's."""
    from asa.study import report
    from asa.study.readout import loss_plateau

    losses = [1.0, 0.9, 0.8, 0.75, 0.7, 0.68, 0.62, 0.60, 0.56, 0.55, 0.56, 0.57, 0.57, 0.58, 0.60, 0.54]
    run = {"run": "mae-c40", **loss_plateau(losses, progress=[(i + 1) / 16 for i in range(16)], exported_at=1.0)}
    assert losses[-1] == min(losses) and run["loss_rise"] == pytest.approx((0.57 - 0.555) / 0.555)
    assert report._export_level(run, rising=readings.rising(run)) == (
        "levelled (-0.9%); at its export 2.7% above its lowest level (medians of eighths of the summed lr)")

def test_the_probes_reading_counts_the_encoders_above_the_random_one_and_reads_each_effect():
    rows = [{"encoder": f"{arm}-c4", "arm": arm, "replicate": 0, "primary": v, "primary_ci": [math.nan, math.nan],
             "r2_mean": v, "knn": math.nan} for arm, v in (("mae", 0.1), ("asa", 0.02), ("noise", 0.5))]
    rows.append({"encoder": readings.RANDOM_ROW, "arm": readings.RANDOM_ROW, "replicate": None, "primary": 0.05,
                 "primary_ci": [math.nan, math.nan], "r2_mean": 0.05, "knn": 0.3})
    effects = [{"effect": "w", "value": 0.05, "low": 0.03, "high": 0.07, "per_seed": [0.04, 0.06], "seeds": 2}]
    said = readings.probe_reading({"label": "R²", "cases": 6, "folds": 3, "rows": rows, "effects": effects,
                                   "chosen": "mae"}, min_effect=0.01)
    assert (said.random, said.pretrained, said.beat, said.tells_random) == (0.05, 2, 1, False)  # noise: no arm
    assert [e.reading for e in said.effects] == ["higher"] and said.shared == {}
    assert said.rows[-1].replicate is None and said.chosen == "mae"
