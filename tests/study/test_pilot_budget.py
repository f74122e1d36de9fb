"""The pilot's budget: where its constant-lr validation Dice stopped rising, read with the curve's own noise."""

import dataclasses
import json

import numpy as np
import pytest

from asa.study.report import budget_line
from asa.study.tables import converged_budget

STEPS = np.arange(120, 2401, 120)  # a 2,400-step pilot validated every 120 steps: 20 rounds


def _levelled(dice: np.ndarray, tol: float = 0.03) -> dict:
    return converged_budget(list(zip(STEPS.tolist(), dice.tolist())), tol=tol)


def test_a_curve_flat_after_its_knee_levels_there_and_a_straight_rise_does_not():
    knee = _levelled(0.1 + 0.4 * np.minimum(STEPS, 960) / 960)  # rises to 0.5 at step 960, exactly flat after
    assert (knee["budget"], knee["converged"], knee["since"]) == (960, True, 960)
    assert knee["rise"] == pytest.approx(0.0, abs=1e-12) and knee["rise_hi"] == pytest.approx(0.0, abs=1e-12)
    # from step 840 the line through 0.45 and thirteen 0.5s rises: not a level, so the budget is not earlier
    assert not _levelled(0.1 + 0.4 * np.minimum(STEPS, 960) / 960, tol=0.0)["converged"]
    rising = _levelled(0.2 + 0.3 * STEPS / 2400)  # a straight line: +0.15 over its last half, with no noise
    assert (rising["budget"], rising["converged"], rising["since"]) == (2400, False, 1320)
    assert rising["rise"] == pytest.approx(0.3 * (2400 - 1320) / 2400)
    assert rising["rise_hi"] == pytest.approx(rising["rise"])


def test_two_noisy_rounds_early_are_not_read_as_a_level():
    """The trailing-mean rule before read its best smoothed round: this still-rising line with two high rounds at
    steps 600 and 720 set a budget of 840 and "levelled off". The trend from every later round still rises."""
    dice = 0.1 + 0.3 * STEPS / 2400
    dice[4:6] = 0.6
    said = _levelled(dice)
    assert not said["converged"] and said["budget"] == 2400


def test_still_rising_noisy_curves_are_seldom_read_as_levelled():
    """200 curves that still rise 0.096 over their last half (0.5 (1 − e^(−step/4000))), each round with noise
    of sd 0.06, about the spread of a 30-case bed's pilot about its trend (0.058 and 0.138 measured). The
    trailing-mean rule before read 36 of them (18 %) as levelled, with a median budget of 1,680; this reads 10 (5 %,
    each span's one-sided level)."""
    rng = np.random.default_rng(7)
    levelled = [_levelled(0.5 * (1 - np.exp(-STEPS / 4000)) + rng.normal(0, 0.06, STEPS.size))["converged"]
                for _ in range(200)]
    assert sum(levelled) <= 10


def test_a_quiet_curve_that_levelled_is_found_within_a_round_of_its_knee():
    """A linear trend from the round before the knee (0.05 under the level, then flat) rises about 0.019 over
    the span: the level is read to about a round."""
    rng = np.random.default_rng(3)
    budgets = [_levelled(0.1 + 0.4 * np.minimum(STEPS, 960) / 960 + rng.normal(0, 0.005, STEPS.size))
               for _ in range(50)]
    assert sum(b["converged"] and 840 <= b["budget"] <= 1320 for b in budgets) >= 48


def test_the_budget_line_gives_the_trend_and_its_bound():
    pilot = {"pilot_steps": 2400, "learned": True, **_levelled(0.1 + 0.4 * np.minimum(STEPS, 960) / 960)}
    assert budget_line(pilot, 960) == (
        "The pilot (scratch, constant lr, 2400 steps) levelled off at step 960 (from there to its end its validation "
        "Dice's linear trend: +0.000, one-sided 95 % upper bound +0.000, under the minimum effect 0.03); every arm "
        "fine-tunes 960 steps.")
    pilot = {"pilot_steps": 2400, "learned": True, **_levelled(0.2 + 0.3 * STEPS / 2400)}
    assert budget_line(pilot, 2400) == (
        "The pilot (scratch, constant lr, 2400 steps) was not shown to level off (from no round on did its validation "
        "Dice's linear trend to its end stay under the minimum effect 0.03 at its one-sided 95 % upper bound; over "
        "its last half, from step 1320: +0.135, one-sided 95 % upper bound +0.135); every arm fine-tunes 2400 steps.")
    old = {"pilot_steps": 1200, "learned": True, "converged": False, "budget": 1200}  # a record before the trend
    assert budget_line(old, 1200) == ("The pilot (scratch, constant lr, 1200 steps) was not shown to level off; "
                                       "every arm fine-tunes 1200 steps.")


def test_the_budget_reads_the_lesion_curve_when_the_lesion_classes_are_named(tmp_path):
    """Mean Dice (tissue classes) flat from the first round, the lesion's still rising: the primary endpoint's
    curve, the lesion's, sets the budget, not the mean that levels first."""
    from torch.utils.tensorboard import SummaryWriter

    from asa.study.readout import pilot_budget
    from asa.study.runs import SCALES

    mean = np.full(STEPS.size, 0.8)
    lesion = 0.1 + 0.4 * STEPS / 2400
    with SummaryWriter(str(tmp_path / "tb")) as tb:
        for step, dice in zip(STEPS.tolist(), lesion.tolist()):
            tb.add_scalar("val/dice_lesion", dice, step)
    scores = tmp_path / "scores.json"
    scores.write_text(json.dumps({"budget": {"val_curve": [[s, d] for s, d in zip(STEPS.tolist(), mean.tolist())]}}))
    scale = dataclasses.replace(SCALES["cpu"], pilot_steps=2400)
    read = pilot_budget(scores, scale, None, lesion_classes=["lesion"], tol=0.03)
    assert (read["converged"], read["steps"], read["since"]) == (False, 2400, 1320)
    assert read["rise"] == pytest.approx(0.4 * (2400 - 1320) / 2400, rel=1e-5)  # the lesion's trend (float32 logs)
    unnamed = pilot_budget(scores, scale, None, lesion_classes=[], tol=0.03)
    assert (unnamed["converged"], unnamed["steps"]) == (True, 120)


def test_a_study_under_way_keeps_the_budget_its_pilot_was_read_at(tmp_path):
    """A pilot.json of an earlier call (here a reading by another rule, levelled at 840) stands while its curve is
    the pilot's: a later version of the rule does not move a running study's budget. --budget-cap still applies;
    another curve is read afresh."""
    from asa.study.readout import pilot_budget
    from asa.study.runs import SCALES

    rising = [[s, d] for s, d in zip(STEPS.tolist(), (0.2 + 0.3 * STEPS / 2400).tolist())]
    scores = tmp_path / "scores.json"
    scores.write_text(json.dumps({"budget": {"val_curve": rising}}))
    scale = dataclasses.replace(SCALES["cpu"], pilot_steps=2400)
    earlier = {"budget": 840, "converged": True, "best": 0.305, "tol": 0.01, "window": 3, "steps": 840,
               "curve": rising, "lesion_curve": []}
    read = pilot_budget(scores, scale, None, lesion_classes=[], tol=0.03, kept=earlier)
    assert (read["budget"], read["converged"], read["steps"], read["best"]) == (840, True, 840, 0.305)
    assert pilot_budget(scores, scale, 600, lesion_classes=[], tol=0.03, kept=earlier)["steps"] == 600
    other = {**earlier, "curve": rising[:-1]}
    afresh = pilot_budget(scores, scale, None, lesion_classes=[], tol=0.03, kept=other)
    assert (afresh["converged"], afresh["steps"], afresh["since"]) == (False, 2400, 1320)


def _pilot_run(tmp_path, steps, mean, lesion):
    """A pilot's scores.json (its mean Dice curve) and TensorBoard (its lesion class's rounds)."""
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(tmp_path / "tb")) as tb:
        for step, dice in zip(steps, lesion):
            tb.add_scalar("val/dice_lesion", dice, step)
    scores = tmp_path / "scores.json"
    scores.write_text(json.dumps({"budget": {"val_curve": [[s, d] for s, d in zip(steps, mean)]}}))
    return scores


def test_a_levelled_budget_is_the_round_s_step_every_run_at_the_pilot_s_n_trains_to(tmp_path):
    """--pilot-steps 1000 at N = 8, batch 2: a round every 48 steps; levelled at step 144, the budget is 144 (it was
    rounded up to 150, while each run's 38 epochs of 4 steps train 152), and a run at N = 8 trains exactly that."""
    from asa.study import transfer
    from asa.study.readout import pilot_budget
    from asa.study.runs import SCALES

    epochs, every = transfer.cadence(1000, 8, 2)
    steps = [4 * every * k for k in range(1, epochs // every + 1)] + [1000]
    lesion = [0.1 + 0.4 * min(s, 144) / 144 for s in steps]
    read = pilot_budget(_pilot_run(tmp_path, steps, lesion, lesion), dataclasses.replace(SCALES["cpu"],
                        pilot_steps=1000), None, lesion_classes=["lesion"], tol=0.03)
    assert (read["converged"], read["budget"], read["steps"]) == (True, 144, 144)
    assert transfer.cadence(read["steps"], 8, 2)[0] * 4 == 144


def test_the_pilot_s_figure_plots_the_curve_its_budget_was_read_from(tmp_path):
    """Tissue Dice flat at 0.8, the lesion's rising: the budget reads the lesion curve, and so does the figure."""
    from types import SimpleNamespace

    from asa.eval.plots import line_plot
    from asa.study import report
    from asa.study.readout import pilot_budget
    from asa.study.runs import SCALES

    lesion = (0.1 + 0.4 * STEPS / 2400).tolist()
    scale = dataclasses.replace(SCALES["cpu"], pilot_steps=2400)
    pilot = pilot_budget(_pilot_run(tmp_path, STEPS.tolist(), [0.8] * STEPS.size, lesion), scale, None,
                         lesion_classes=["lesion"], tol=0.03)
    plots = report.figures({"pilot": pilot}, [], SimpleNamespace(contrasts=[], classes=[], keys=[]))
    drawn = [(s, d, 0.0) for s, d in pilot["lesion_curve"]]
    assert [d for _, d, _ in drawn] == pytest.approx(lesion, rel=1e-6)
    assert plots["pilot.svg"] == line_plot({"scratch (pilot)": drawn}, xlabel="step",
                                           ylabel="validation lesion Dice (lesion)", categorical=False)


def test_a_pilot_restored_without_its_logs_keeps_the_lesion_curve_its_pilot_json_read(tmp_path):
    """A progress record carries the pilot's scores.json and pilot.json, not its TensorBoard logs: on the new
    machine the pilot reads its lesion curve from that pilot.json (and so learned the task, at the same budget),
    not an empty curve (a NaN best lesion Dice, read as a pilot that did not learn). A pilot.json for other lesion
    classes, or for another curve, lends it nothing."""
    from asa.study.readout import pilot_budget
    from asa.study.runs import SCALES

    lesion = (0.1 + 0.4 * np.minimum(STEPS, 960) / 960).tolist()
    scale = dataclasses.replace(SCALES["cpu"], pilot_steps=2400)
    trained = tmp_path / "trained"
    trained.mkdir()
    first = pilot_budget(_pilot_run(trained, STEPS.tolist(), [0.8] * STEPS.size, lesion), scale, None,
                         lesion_classes=["lesion"], tol=0.03)
    assert (first["learned"], first["converged"], first["steps"]) == (True, True, 960)
    kept = json.loads(json.dumps(first))  # as the pilot.json on disk reads back
    restored = tmp_path / "restored"
    restored.mkdir()
    (restored / "scores.json").write_text((trained / "scores.json").read_text())  # no tb/ beside it
    again = pilot_budget(restored / "scores.json", scale, None, lesion_classes=["lesion"], tol=0.03, kept=kept)
    assert (again["learned"], again["converged"], again["steps"]) == (True, True, 960)
    assert again["lesion_curve"] == kept["lesion_curve"] and again["best_lesion_dice"] == pytest.approx(0.5)
    for other in ({**kept, "lesion_classes": ["edema"]}, {**kept, "curve": kept["curve"][:-1]}, None):
        unread = pilot_budget(restored / "scores.json", scale, None, lesion_classes=["lesion"], tol=0.03, kept=other)
        assert not unread["learned"] and unread["lesion_curve"] == []
