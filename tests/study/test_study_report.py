"""The report of asa-study (asa.study.report), built from hand-made scores: a verdict needs its CI off 0 and an effect
of at least the minimum; one primary question, the exploratory ones under Holm; a failed instrument or the quick scale
leaves no verdict; each arm against its own twin; a class named "lesion" beside the lesion Dice; the plots' axes."""
from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from asa.eval.plots import line_plot
from asa.eval.random_effects import crossed_interval, folded_interval
from asa.study import report, tables, readings
from asa.study.arms import twin_of

CLASSES = ["CSF", "lesion", "tumour"]
LESION_CLASSES = ["lesion", "tumour"]  # the lesion Dice: the mean of these, next to the class "lesion"'s own Dice
MACHINE = {"cpu": "test", "usable_cores": 1, "cpu_count": 1, "torch_threads": 1, "torch": "2", "gpu": None}


def _scores(effects: dict[str, tuple[float, float]], *, cases: str = "abcdef", ns=(2,)) -> list[dict]:
    """Scores of scratch and every arm of ``effects`` (arm -> (Δ Dice on every class, spread over the cases)), three
    seeds; the class "lesion" scores apart from the others so that its Dice and the lesion Dice differ."""
    rows = []
    for n in ns:
        for arm, (delta, spread) in {"scratch": (0.0, 0.0), **effects}.items():
            for seed in (0, 1, 2):
                for k, case in enumerate(cases):
                    d = delta + spread * (k - (len(cases) - 1) / 2)
                    dice = {"CSF": 0.6 + 0.01 * k + d, "lesion": 0.2 + d, "tumour": 0.4 + 0.02 * seed + d}
                    row = {"arm": arm, "n": n, "seed": seed, "case": case, **{f"Dice_{c}": v for c, v in dice.items()},
                           "Dice_mean": sum(dice.values()) / 3, "NSD_mean": 0.5 + d, "Dice_mean_zeroed": 0.1}
                    row.update({f"Dice_{c}_zeroed": 0.1 for c in CLASSES} | {f"NSD_{c}": 0.5 + d for c in CLASSES})
                    row[tables.LESION] = sum(dice[c] for c in LESION_CLASSES) / len(LESION_CLASSES)
                    rows.append({**row, **identity(arm)})
    return rows


def identity(name: str) -> dict:
    """The columns asa-study writes beside a run's scores to say what its encoder is (never read off its name there):
    here from the hand-made names ``<arm>-c<cohort>[-p<replicate>]``."""
    m = re.fullmatch(r"(.+)-c(\d+)(?:-p(\d+))?", name)
    if m is None:
        return {"encoder_arm": name, "cohort": "", "replicate": 0, "group": name}
    return {"encoder_arm": m.group(1), "cohort": int(m.group(2)), "replicate": int(m.group(3) or 0),
            "group": f"{m.group(1)}-c{m.group(2)}"}


def _run(name: str, arm: str, steps: int) -> dict:
    return {"run": name, "arm": arm, "cohort": 4, "steps": steps, "seconds": 10.0, "val_curve": [[1, 0.9], [steps, 0.8]],
            "plateau": None, "loss_drop": math.nan, "loss_rise": math.nan}


def measured(arm: str, *, p: float, estimate: list[float], bound90: tuple[float, float] = (0.038, 0.082),
             verdict: str = "helped") -> readings.Measured:
    """A question's hand-made measurement: ``arm`` − scratch at N = 2, its endpoint (mean Dice) at ``estimate``."""
    bar = readings.Bar(p, list(bound90), {"levels": {}}, math.nan, None)
    return readings.Measured(f"{arm}?", "question", arm, "scratch", identity(arm)["encoder_arm"], "scratch", 2,
                             readings.KEYS[0], {"Dice_mean": estimate}, {"Dice_mean": estimate}, bar,
                             readings.Judgment(readings.Verdict(verdict)))


def judged(rows: list[readings.Measured]) -> list[readings.Contrast]:
    """``rows`` read as one family by the rule list, nothing else failing."""
    said = readings.family(rows)
    return [readings.contrast_row(r, readings.judge(readings.Facts(r.settled, p_holm=p)), role=role, p_holm=p,
                                  looks=readings.Looks(), flags=None, min_effect=0.01)
            for r, role, p in zip(rows, said.roles, said.p_holm)]


def _study(tmp_path: Path, effects: dict[str, tuple[float, float]], *, scale: str = "cpu", pilot_dice: float = 0.7,
           pilot: dict | None = None, n_boot: int = 2000, ns=(2,), probes: dict | None = None,
           design: dict | None = None, scored=lambda rows: rows) -> tuple[str, list[dict], Path]:
    """A study folder written by hand (transfer outputs from `tables.write_outputs`, each arm against its twin; the
    score rows through ``scored``) and its report -> (README.md, contrasts.json, the report folder)."""
    out = tmp_path / "study"
    scores = scored(_scores(effects, ns=ns))
    arms = list(dict.fromkeys(r["arm"] for r in scores))
    twins = {a: twin_of(identity(a)["encoder_arm"]) for a in arms}
    scored = tables.write_outputs(scores, CLASSES, {a: twins[a] if twins[a] in arms else a for a in arms},
                                  out / "transfer", n_boot=200)
    runs = [_run(f"{arm}-c4", arm, steps) for arm, steps in (("mae", 3), ("asa", 5), ("asa-coord", 5), ("noise", 5))
            if f"{arm}-c4" in arms]
    info = {"scale_name": scale, "network": "resenc", "machine": MACHINE, "finished": "2026-11-25T22:00:00",
            "scale": {"crop": 32, "cases": list(ns), "seeds": [0, 1, 2], "test": 6, "val": 2, "pretrain_steps": 250},
            "steps": 40, "recipe": "adamw", "encoder_lr_scale": 1.0, "min_effect": 0.01, "classes": CLASSES,
            "lesion_classes": LESION_CLASSES,
            "pilot": {"test": {c: pilot_dice for c in CLASSES}, **(pilot or {})}, "pretraining": runs, "encoders": [],
            "checks": {"overlap": {"lines": ["none"]}, "channels": []}, "commands": ["asa-study ..."], "runs": {},
            "probes": probes, "design": design}
    folder = report.write_report(out, info, scored, n_boot=n_boot)
    return (folder / "README.md").read_text(), json.loads((folder / "contrasts.json").read_text()), folder


CONTROLS = {"supervised": (0.1, 0.01), "noise-c4": (0.0, 0.002)}  # the negative control shown small


def _row(contrasts: list[dict], arm: str, reference: str = "scratch") -> dict:
    return next(r for r in contrasts if r["arm"] == arm and r["reference"] == reference)


def test_a_ci_above_zero_under_the_minimum_effect_reads_no_difference(tmp_path):
    page, contrasts, _ = _study(tmp_path, {**CONTROLS, "mae-c4": (0.05, 0.002), "asa-c4": (0.001, 0.0)})
    primary = _row(contrasts, "asa-c4")
    assert primary["role"] == "primary" and primary["Dice_mean"][1] > 0  # the CI is above 0 ...
    assert primary["verdict"] == "no difference" and primary["why"] == "minimum effect"  # ... the effect too small
    # a difference is seen (the CI off 0), one under the minimum effect: not "none this study can detect"
    assert "no difference of the minimum effect (its CI is off 0, the difference under 0.01 Dice)" in page
    assert "**Primary:** does ASA's pretraining help? (asa − scratch) At N = 2: no difference" in page
    # its MDE is under the minimum effect, which a gain must reach too: the line says what that leaves unread
    assert primary["mde"] < 0.01
    mde = next(x for x in page.splitlines() if x.startswith("Minimum detectable effect of the primary"))
    assert mde.endswith("so a true gain between the minimum detectable effect and 0.01 would mostly not be read as "
                        "one, even where its interval clears 0.")
    assert "minimum effect 0.01 Dice" in page.split("## Answers")[0]  # stated up front
    # every other question is exploratory, read under Holm; mae's clear +0.05 clears it
    mae = _row(contrasts, "mae-c4")
    assert mae["role"] == "exploratory" and mae["p_holm"] < 0.05 and mae["verdict"] == "helped"
    asked = [r for r in contrasts if r["kind"] == "question"]
    assert f"this page reads {len(asked)} question(s)" in page and "Holm correction across those " \
        f"{len(asked) - 1}" in page and "on lesion Dice (lesion, tumour) alone (mean Dice and NSD shown as information" in page
    assert _row(contrasts, "supervised")["verdict"] == "helped" and "Not interpretable" not in page


def test_a_failed_instrument_leaves_every_verdict_not_interpretable(tmp_path):
    for pilot_dice, pilot in ((0.001, {}), (0.7, {"learned": False})):
        page, contrasts, _ = _study(tmp_path / str(pilot_dice), {**CONTROLS, "mae-c4": (0.05, 0.002)},
                                    pilot_dice=pilot_dice, pilot=pilot, n_boot=300)
        assert {r["verdict"] for r in contrasts} == {"not interpretable"}
        answers = page.split("## Answers")[1].split("## The instruments")[0]
        lines = [line for line in answers.splitlines() if line.startswith("- ")]
        assert lines and all(": not interpretable; " in line and "(Δ lesion Dice" in line for line in lines)
        assert not re.search(r"\b(helped|hurt)\b", answers)
        table = page.split("## Contrasts")[1].split("## Dice against N")[0]
        assert [row.rsplit("|", 2)[1].strip() for row in table.splitlines() if row.startswith("| ")][2:] == \
            ["not interpretable"] * len(contrasts)
        # the instruments show their numbers and claim no sensitivity
        assert "Positive control (supervised − scratch): Δ lesion Dice" in page and "as it must" not in page
        top = page.split("## Answers")[0]
        assert page.count("the scratch twin does not learn the task") == 1 and "does not learn" in top
        if pilot:  # a flat pilot curve is not said to have levelled off
            assert "did not learn the task" in page and "levelled off" not in page


def test_the_quick_scale_is_a_plumbing_check_with_no_verdict(tmp_path):
    # a negative control that beats scratch and a clear gain: both would read as verdicts at a real scale
    page, contrasts, _ = _study(tmp_path, {"supervised": (0.1, 0.01), "noise-c4": (0.05, 0.0),
                                           "mae-c4": (-0.05, 0.0), "asa-c4": (0.05, 0.0)}, scale="quick", n_boot=300)
    assert "Plumbing check: no answer can come from this page" in page.split("## Answers")[0]
    assert not re.search(r"helped|hurt", page, re.IGNORECASE)
    assert {r["verdict"] for r in contrasts} == {"— (plumbing check)"}


def test_holm_on_hand_computed_p_values():
    # sorted: 0.005 × 4 = 0.02, 0.01 × 3 = 0.03, 0.03 × 2 = 0.06, 0.04 × 1 = 0.04 -> 0.06 (never below an earlier one)
    assert readings.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    adjusted = readings.holm([0.02, math.nan, 0.04])  # NaN: not counted in m = 2
    assert adjusted[0] == pytest.approx(0.04) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.04)
    assert readings.holm([0.6, 0.7]) == [1.0, 1.0] and readings.holm([]) == []

    def row(arm: str, p: float, value: float = 0.05) -> readings.Measured:
        return measured(arm, p=p, estimate=[value, value / 2, 2 * value])

    rows = judged([row("asa-c4", 0.5), row("mae-c4", 0.01), row("x", 0.02), row("y", 0.03)])
    assert rows[0].role == "primary" and rows[0].verdict == "helped" and rows[0].p_holm is None  # at 95 % alone
    assert "p_holm" not in rows[0].to_dict()
    assert [r.p_holm for r in rows[1:]] == pytest.approx([0.03, 0.04, 0.04])
    assert all(r.verdict == "helped" for r in rows)
    rows = judged([row("mae-c4", 0.2), row("x", 0.02), row("y", 0.03)])  # mae is primary (no asa); x and y: m = 2
    assert [r.p_holm for r in rows[1:]] == pytest.approx([0.04, 0.04])
    rows = judged([row("mae-c4", 0.2), row("x", 0.01), row("y", 0.03), row("z", 0.02)])  # m = 3: y's 0.03 × 1 -> 0.04
    assert [r.p_holm for r in rows[1:]] == pytest.approx([0.03, 0.04, 0.04])
    rows = judged([row("mae-c4", 0.2), row("x", 0.01), row("y", 0.02), row("z", 0.021), row("w", 0.5)])  # m = 4
    # 0.01 × 4, 0.02 × 3, 0.021 × 2 = 0.042 -> 0.06 (non-decreasing)
    assert [r.p_holm for r in rows[1:]] == pytest.approx([0.04, 0.06, 0.06, 0.5])
    assert [r.verdict for r in rows[1:]] == ["helped", "inconclusive", "inconclusive", "inconclusive"]
    assert rows[2].why == "holm" and "Holm p = 0.060" in report.reading(rows[2], min_effect=0.01)


def test_a_class_named_lesion_keeps_its_dice_beside_the_lesion_dice(tmp_path):
    _, contrasts, _ = _study(tmp_path, {**CONTROLS, "asa-c4": (0.05, 0.002)}, n_boot=300)
    scores = list(csv.DictReader(open(tmp_path / "study" / "transfer" / "scores.csv")))
    assert float(scores[0]["Dice_lesion"]) == pytest.approx(0.2) and float(scores[0][tables.LESION]) == pytest.approx(0.3)
    table = (tmp_path / "study" / "transfer" / "transfer.md").read_text()
    assert "| lesion |" in table and "lesion mean" in table
    assert tables.LESION in _row(contrasts, "asa-c4")


def test_the_plots_mark_zero_name_their_axes_and_compare_each_arm_with_its_twin(tmp_path):
    page, _, folder = _study(tmp_path, {**CONTROLS, "mae-c4": (0.0, 0.002), "asa-c4": (0.05, 0.002),
                                        "asa-coord-c4": (0.08, 0.002), "scratch-coord": (0.03, 0.002)}, n_boot=300)
    contrasts = (folder / "contrasts.svg").read_text()
    assert "Δ mean Dice" in contrasts and "Δ NSD" in contrasts and 'id="zero' in contrasts
    classes = (folder / "classes.svg").read_text()
    assert "asa-coord-c4 − scratch-coord, N = 2" in classes and "asa-coord-c4 − scratch," not in classes
    assert 'id="zero' in classes and "Δ Dice lesion" in classes
    assert "asa-coord-c4 (Δ vs scratch-coord)" in page  # the transfer table, each arm against its twin
    # the header gives the runs' recorded steps (3 and 5), not the scale's 250
    assert "pretraining 3–5 steps per run" in page and "250 steps" not in page
    assert "cannot move a result" not in page


def _marker_x(svg: str) -> dict[str, float]:
    """The x of each series' first marker, by colour (the legend's come after the plot's)."""
    found: dict[str, float] = {}
    for at, colour in re.findall(r'<use xlink:href="#m[0-9a-f]+" x="([\d.]+)" y="[\d.]+" style="fill: (#[0-9a-f]+)', svg):
        found.setdefault(colour, float(at))
    return found


def test_series_at_one_n_are_drawn_apart():
    series = {"a": [(2, 0.5, 0.1)], "b": [(2, 0.6, 0.1)], "c": [(2, 0.4, 0.05)]}
    apart = _marker_x(line_plot(series, xlabel="N", ylabel="Dice", dodge=True))
    assert len(apart) == 3 and len(set(apart.values())) == 3  # three series, three places
    together = _marker_x(line_plot(series, xlabel="N", ylabel="Dice"))
    assert len(together) == 3 and len(set(together.values())) == 1  # without dodge: one place
    assert sorted(apart.values())[1] == pytest.approx(together["#1f77b4"])  # spread around the category


BOUND = re.compile(r"; (its bound, this contrast alone \(uncorrected\): )?"
                   r"(equivalent within ±0\.01 \(|gains above [+-]\d\.\d{3} excluded|gains below [+-]\d\.\d{3} excluded|"
                   r"losses under \d\.\d{3} excluded|inconclusive: [+-]\d\.\d{3} to [+-]\d\.\d{3})")


def _answers(page: str) -> list[str]:
    return [line for line in page.split("## Answers")[1].split("## The instruments")[0].splitlines()
            if line.startswith("- ")]


def test_without_a_positive_control_a_null_is_not_interpretable_and_every_answer_has_its_bound(tmp_path):
    # no positive control; the negative control flat and tight: a null of asa, a clear gain of mae
    page, contrasts, _ = _study(tmp_path, {"noise-c4": (0.0, 0.002), "mae-c4": (0.05, 0.002), "asa-c4": (0.0, 0.002)})
    asa = _row(contrasts, "asa-c4")
    assert asa["verdict"] == "not interpretable: sensitivity not shown" and asa["why"] == "no positive control ran"
    assert "At N = 2: not interpretable: sensitivity not shown (no positive control ran)" in page
    assert "**No positive control ran**" in page and "**Nulls are not interpretable** at N = 2" in page
    assert _row(contrasts, "mae-c4")["verdict"] == "helped"  # a gain stands on the negative control shown small
    lines = _answers(page)
    assert len(lines) == len([r for r in contrasts if r["kind"] == "question"])
    assert all(BOUND.search(line) or "; — (not read)" in line for line in lines), lines
    assert "equivalent within" not in next(line for line in lines if "(asa − scratch)" in line)
    # the same null beside a positive control that moved: read, with its bound
    page, contrasts, _ = _study(tmp_path / "with", {**CONTROLS, "asa-c4": (0.0, 0.002)})
    assert _row(contrasts, "asa-c4")["verdict"] == "no difference"
    assert all(BOUND.search(line) for line in _answers(page))


def test_the_bounds_read_equivalence_excluded_gains_and_inconclusive_ranges():
    assert readings.bound_text(-0.004, 0.006, min_effect=0.01) == "equivalent within ±0.01 (-0.004 to +0.006)"
    assert readings.bound_text(-0.03, 0.005, min_effect=0.01) == "gains above +0.005 excluded"
    assert readings.bound_text(-0.03, 0.04, min_effect=0.01) == "inconclusive: -0.030 to +0.040"
    assert readings.bound_text(0.02, 0.08, min_effect=0.01) == "gains below +0.020 excluded"
    assert readings.bound_text(-0.08, -0.02, min_effect=0.01) == "losses under 0.020 excluded"
    assert readings.bound_text(math.nan, math.nan, min_effect=0.01).startswith("no bound")


def test_a_negative_control_not_shown_small_leaves_gains_over_scratch_unread(tmp_path):
    # the negative control's mean is 0, but its cases spread: its bound does not exclude a gain of 0.01
    page, contrasts, _ = _study(tmp_path, {"supervised": (0.1, 0.01), "noise-c4": (0.0, 0.03),
                                           "mae-c4": (0.05, 0.002), "asa-c4": (0.05, 0.002)})
    noise = _row(contrasts, "noise-c4")
    assert noise["Dice_mean"][1] < 0 < noise["Dice_mean"][2]  # its CI holds 0, yet it is not shown small
    assert "**Negative control not shown small**" in page
    assert _row(contrasts, "asa-c4")["verdict"] == "not interpretable"
    assert "the negative control is not shown small" in _row(contrasts, "asa-c4")["why"]
    assert _row(contrasts, "asa-c4", "mae-c4")["verdict"] != "not interpretable"  # both pretrained: no recipe gap
    # the gain is left unread, not the study's sensitivity: the primary keeps its MDE, and the positive control is
    # read against it (it read "not measured: ... would not reliably see a gain of the control's size")
    mde = _row(contrasts, "asa-c4")["mde"]
    assert 0 < mde < 0.1 and f"the primary question can detect a gain of this size (its minimum detectable effect " \
        f"{mde:.3f})" in page and "not measured" not in page
    assert next(x for x in page.splitlines() if x.startswith("Minimum detectable effect of the primary"))
    assert page.index("## Answers") < page.index("**Negative control not shown small**")  # its line comes after them
    assert "no gain of a pretrained arm over scratch is read among the answers." in page


def test_near_uniform_attentive_weights_make_asa_minus_mae_no_test_and_the_plateau_flag_reaches_the_answer(tmp_path):
    out = tmp_path / "study"
    scores = _scores({**CONTROLS, "mae-c4": (0.0, 0.002), "asa-c4": (0.0, 0.002)})
    arms = list(dict.fromkeys(r["arm"] for r in scores))
    twins = {a: twin_of(identity(a)["encoder_arm"]) for a in arms}
    scored = tables.write_outputs(scores, CLASSES, {a: twins[a] if twins[a] in arms else a for a in arms},
                                  out / "transfer", n_boot=200)
    runs = [{**_run("asa-c4", "asa", 5), "weights_cv": 0.14, "weights_share": 0.98, "plateau": False,
             "loss_drop": 0.083, "loss_rise": 0.0, "tol": 0.02}, _run("mae-c4", "mae", 5), _run("noise-c4", "noise", 5)]
    info = {"scale_name": "cpu", "network": "resenc", "machine": MACHINE, "finished": "2026-11-25T22:00:00",
            "scale": {"crop": 32, "cases": [2], "seeds": [0, 1, 2], "test": 6, "val": 2, "pretrain_steps": 5},
            "steps": 40, "recipe": "adamw", "encoder_lr_scale": 1.0, "min_effect": 0.01, "classes": CLASSES,
            "lesion_classes": LESION_CLASSES, "pilot": {"test": {c: 0.7 for c in CLASSES}}, "pretraining": runs,
            "encoders": [], "checks": {"overlap": {"lines": ["none"]}, "channels": []}, "commands": [], "runs": {}}
    page = (report.write_report(out, info, scored, n_boot=200) / "README.md").read_text()
    contrasts = json.loads((out / "report" / "contrasts.json").read_text())
    row = _row(contrasts, "asa-c4", "mae-c4")
    assert row["verdict"] == "not a test of the attentive loss" and "effective share 0.98" in row["why"]
    line = next(x for x in _answers(page) if "(asa − mae)" in x)
    assert "not a test of the attentive loss (the attentive weights' effective share 0.98 > 0.8" in line
    primary = next(x for x in _answers(page) if x.startswith("- **Primary:**"))
    assert "asa-c4 unfinished: its held-out loss still fell 8.3% over the last quarter of the summed lr" in primary
    # the primary's minimum detectable effect, from the study's own variance, with more draws and more cases
    mde = next(x for x in page.splitlines() if x.startswith("Minimum detectable effect of the primary"))
    r = _row(contrasts, "asa-c4")
    assert f"**{r['mde']:.3f} lesion Dice (lesion, tumour)**" in mde and "with twice the labeled draws (6 seeds)" in mde
    assert page.index("**Primary endpoint: lesion Dice (lesion, tumour)**") < page.index("## Answers")


def test_the_endpoint_is_the_lesion_when_named_or_the_only_class():
    assert readings.endpoint(["CSF", "GM", "lesion"], ["lesion"]) == (tables.LESION, "lesion Dice (lesion)")
    assert readings.endpoint(["lesion"], []) == ("Dice_mean", "lesion Dice (lesion)")
    assert readings.endpoint(["CSF", "GM", "WM"], []) == ("Dice_mean", "mean Dice")


def test_replicated_pretraining_is_a_level_of_the_interval_and_the_page_counts_the_runs(tmp_path):
    out = tmp_path / "study"
    effects = {**CONTROLS, "noise-c4-p1": (0.001, 0.002), "mae-c4": (0.02, 0.002), "mae-c4-p1": (0.03, 0.002),
               "asa-c4": (0.01, 0.002), "asa-c4-p1": (0.05, 0.002)}
    scores = _scores(effects)
    arms = list(dict.fromkeys(r["arm"] for r in scores))
    scored = tables.write_outputs(scores, CLASSES, {a: "scratch" for a in arms}, out / "transfer", n_boot=200)
    runs = [_run(name, name.split("-")[0], 5) for name in ("mae-c4", "mae-c4-p1", "asa-c4", "asa-c4-p1", "noise-c4",
                                                           "noise-c4-p1")]
    info = {"scale_name": "cpu", "network": "resenc", "machine": MACHINE, "finished": "2026-11-25T22:00:00",
            "scale": {"crop": 32, "cases": [2], "seeds": [0, 1, 2], "test": 6, "val": 2}, "steps": 40,
            "recipe": "adamw", "encoder_lr_scale": 1.0, "min_effect": 0.01, "classes": CLASSES,
            "lesion_classes": LESION_CLASSES, "pilot": {"test": {c: 0.7 for c in CLASSES}}, "pretraining": runs,
            "encoders": [], "checks": {"overlap": {"lines": ["none"]}, "channels": []}, "commands": [], "runs": {}}
    page = (report.write_report(out, info, scored, n_boot=200) / "README.md").read_text()
    contrasts = json.loads((out / "report" / "contrasts.json").read_text())
    assert not any(r["arm"].endswith("-p1") for r in contrasts)  # a replicate is read with its arm, not alone
    asa = _row(contrasts, "asa-c4")
    assert asa["interval"]["levels"] == {"pretraining": 2, "seed": 3, "case": 6}
    assert asa["Dice_mean"][0] == pytest.approx(0.03)  # both runs' differences, averaged
    assert asa["bootstrap"]["Dice_mean"][0] == pytest.approx(0.03)  # the bootstrap beside it too
    # the two runs disagree (+0.01, +0.05): the interval carries it, as the per-seed spread alone would not
    assert asa["interval"]["components"]["pretraining"] > 0 and asa["Dice_mean"][1] < 0
    assert _row(contrasts, "asa-c4", "mae-c4")["Dice_mean"][0] == pytest.approx(0.005)  # run k against run k
    assert "pretraining runs per arm: noise 2, mae 2, asa 2." in page  # in their declared order
    assert "with twice the pretraining runs (4)" in page


def test_the_probe_chosen_arm_is_the_primary_against_its_own_twin_and_the_probes_are_reported(tmp_path):
    """--probe-first fine-tunes one pretraining arm, here asa-coord: the primary question is it − scratch with the
    channel (its twin), and the page holds the probe table, the factorial and the arm chosen."""
    rows = [{"encoder": f"{arm}-c4", "arm": arm, "cohort": 4, "replicate": 0, "primary": v, "primary_ci": [v - .1, v + .1],
             "r2_mean": v, "knn": .5} for arm, v in (("mae", .1), ("asa", .2), ("mae-coord", .15), ("asa-coord", .4))]
    rows.append({"encoder": "random-init", "arm": "random-init", "cohort": None, "replicate": None, "primary": .05,
                 "primary_ci": [math.nan, math.nan], "r2_mean": .05, "knn": .3})
    probed = {"label": "ridge R² (lesion)", "keys": ["ridge/r2_lesion"], "cases": 6, "folds": 3, "rows": rows,
              "effects": [{"effect": "attentive weight (attentive − uniform)", "value": .175, "low": .1, "high": .25,
                           "per_seed": [.17, .18], "seeds": 2}], "chosen": "asa-coord"}
    page, contrasts, _ = _study(tmp_path, {"asa-coord-c4": (0.08, 0.01), "scratch-coord": (0.0, 0.0), **CONTROLS},
                                probes=probed)
    primary = next(r for r in contrasts if r["role"] == "primary")
    assert (primary["arm"], primary["reference"]) == ("asa-coord-c4", "scratch-coord")
    assert "## Frozen probes before fine-tuning" in page and "Fine-tuned: **asa-coord**" in page
    assert "| asa-coord-c4 | asa-coord | 0 | 0.400 [0.300, 0.500] | 0.400 | 0.500 |" in page
    assert "4 of 4 pretrained encoders read higher than the random-init twin (0.050)." in page
    assert "| attentive weight (attentive − uniform) | +0.175 | [+0.100, +0.250] | +0.170, +0.180 | higher |" in page


def test_the_verdict_agrees_with_the_bound_a_wide_interval_reads_inconclusive(tmp_path):
    """A primary whose CI holds 0 while its bound allows a gain of the minimum effect is inconclusive, not "no
    difference" (the 18-case page read "no difference this study can detect" at Δ +0.098, bound inconclusive)."""
    page, contrasts, _ = _study(tmp_path, {**CONTROLS, "asa-c4": (0.1, 0.4)})
    primary = _row(contrasts, "asa-c4")
    assert primary["Dice_mean"][1] < 0 < primary["Dice_mean"][2] and primary["bound"].startswith("inconclusive")
    assert primary["verdict"] == "inconclusive"
    line = next(x for x in _answers(page) if x.startswith("- **Primary:**"))
    assert "At N = 2: inconclusive; inconclusive:" in line and "no difference this study can detect" not in line


def test_the_positive_control_claims_a_sensitivity_only_the_primary_has(tmp_path):
    """"The study can detect a gain of this size" only where the primary's own minimum detectable effect is at
    most the control's gain; else the page says what the primary can see."""
    page, contrasts, _ = _study(tmp_path, {**CONTROLS, "asa-c4": (0.0, 0.3)})
    mde = _row(contrasts, "asa-c4")["mde"]
    assert mde > 0.1 and "can detect a gain of this size" not in page
    assert f"only one of {mde:.3f} or more" in page
    page, contrasts, _ = _study(tmp_path / "tight", {**CONTROLS, "asa-c4": (0.0, 0.002)})
    assert _row(contrasts, "asa-c4")["mde"] < 0.1
    assert "the primary question can detect a gain of this size" in page
    assert "an encoder trained with labels on labeled cases no other run sees" in page


def test_every_table_prints_the_interval_the_verdicts_read(tmp_path):
    """The per-class table and the main table's Δ HD95 column print the crossed random-effects interval (the HD95
    column printed the bootstrap's); a partial table names no option that is gone."""
    scores = _scores({**CONTROLS, "asa-c4": (0.05, 0.05)})
    for r in scores:  # HD95 falls with Dice, case by case
        r.update({f"HD95_{c}": 10 - 20 * r[f"Dice_{c}"] for c in CLASSES})
        r["HD95_mean"] = sum(r[f"HD95_{c}"] for c in CLASSES) / 3
    md = tables.write_outputs(scores, CLASSES, "scratch", tmp_path, n_boot=200, undone=1).markdown
    row = next(r for r in csv.DictReader(open(tmp_path / "transfer.csv")) if r["arm"] == "asa-c4")

    def cell(p: str, digits: int, kind: str) -> str:
        return f"{float(row[p]):+.{digits}f} [{float(row[p + kind + '_lo']):+.{digits}f}, " \
               f"{float(row[p + kind + '_hi']):+.{digits}f}]"

    main, per_class = md.split("Paired differences per class")
    asa = next(line for line in main.splitlines() if line.startswith("| asa-c4 "))
    assert asa.rstrip(" |").endswith(cell("delta_HD95_mean", 1, "_re")) and cell("delta_HD95_mean", 1, "") not in asa
    assert cell("delta_HD95_mean", 1, "_re") != cell("delta_HD95_mean", 1, "")  # the bootstrap's is another interval
    assert "crossed random-effects" in per_class.splitlines()[0] and cell("delta_Dice_CSF", 3, "_re") in per_class
    assert "Partial: 1 run(s) not trained yet" in md and "--reuse" not in md


def test_asa_minus_mae_is_no_test_above_an_effective_share_of_0_8(tmp_path):
    for share, read in ((0.85, False), (0.67, True)):
        out = tmp_path / str(share) / "study"
        scores = _scores({**CONTROLS, "mae-c4": (0.0, 0.002), "asa-c4": (0.0, 0.002)})
        scored = tables.write_outputs(scores, CLASSES, "scratch", out / "transfer", n_boot=50)
        runs = [{**_run("asa-c4", "asa", 5), "weights_share": share}, _run("mae-c4", "mae", 5),
                _run("noise-c4", "noise", 5)]
        info = {"scale_name": "cpu", "network": "resenc", "machine": MACHINE, "finished": "2026-11-25T22:00:00",
                "scale": {"crop": 32, "cases": [2], "seeds": [0, 1, 2], "test": 6, "val": 2}, "steps": 40,
                "recipe": "adamw", "encoder_lr_scale": 1.0, "min_effect": 0.01, "classes": CLASSES,
                "lesion_classes": LESION_CLASSES, "pilot": {"test": {c: 0.7 for c in CLASSES}}, "pretraining": runs,
                "encoders": [], "checks": {"overlap": {"lines": ["none"]}, "channels": []}, "commands": [], "runs": {}}
        report.write_report(out, info, scored, n_boot=50)
        row = _row(json.loads((out / "report" / "contrasts.json").read_text()), "asa-c4", "mae-c4")
        assert (row["verdict"] != "not a test of the attentive loss") is read


def _unscored(rows: list[dict]) -> list[dict]:
    """Every Dice 0: no arm segments a test case."""
    return [{**r, **{k: 0.0 for k in r if (k.startswith("Dice_") or k == tables.LESION) and "zeroed" not in k}}
            for r in rows]


def test_a_reading_that_is_not_interpretable_claims_no_bound_sensitivity_or_detectable_effect(tmp_path):
    """A pilot at Dice 0, or a pilot that learned before a transfer stage scoring Dice 0 everywhere: no line claims
    a verdict, an equivalence, a control shown small or a detectable effect (each did, at the controls or in
    every answer)."""
    for name, pilot_dice, scored in (("pilot", 0.0, lambda rows: rows), ("scored", 0.7, _unscored)):
        page, contrasts, _ = _study(tmp_path / name, {**CONTROLS, "asa-c4": (0.0, 0.0)}, pilot_dice=pilot_dice,
                                    scored=scored, n_boot=200)
        assert {r["verdict"] for r in contrasts} == {"not interpretable"}, name
        assert all(r["bound"] == "— (not read)" for r in contrasts)
        said = "\n".join(line for line in page.splitlines() if not line.startswith("How the answers are read"))
        for claim in ("equivalent within", "can detect", "detectable effect", "shown small", "Minimum detectable",
                      "as it must"):  # the rules of reading state no claim: every other line is checked
            assert claim not in said, (name, claim)
        top = page.split("## Answers")[0]
        assert "**Not interpretable**" in top
        if name == "scored":
            assert "every Dice the transfer stage scored is 0 (" in top and "does not learn" not in top


def test_the_verdict_agrees_with_both_bounds_at_every_edge():
    """Hand-computed: Δ = d + s·(k − 2.5) on 6 cases, the same on 3 seeds, so the interval is the case part's:
    d ± t(5) · s · sd(k) / √6, sd(k) = √3.5; s = 0.00255 gives +0.009 [+0.004, +0.014], its 90 % bound
    [+0.005, +0.013]; s = 0.0102 gives −0.015 [−0.035, +0.005], bound [−0.031, +0.001]."""
    t975, t95 = 2.5706, 2.0150
    for d, s, bound in ((0.009, 0.00255, "gains below +0.005 excluded"),
                        (-0.015, 0.0102, "gains above +0.001 excluded")):
        rows = readings.contrast_rows(_scores({"asa-c4": (d, s)}), [4], n_boot=100, min_effect=0.01)
        row = next(r for r in rows if r.arm == "asa-c4" and r.reference == "scratch")
        se = s * math.sqrt(3.5) / math.sqrt(6)
        assert row.estimates["Dice_mean"] == pytest.approx([d, d - t975 * se, d + t975 * se], abs=1e-4)
        assert row.bar.bound90 == pytest.approx([d - t95 * se, d + t95 * se], abs=1e-4)
        # off 0 under the minimum effect whose bound reaches +0.013; holding 0 whose bound reaches a loss of 0.031
        assert row.settled == readings.Judgment(readings.Verdict.INCONCLUSIVE, None)
        assert readings.bound_text(*row.bar.bound90, min_effect=0.01) == bound
    Judgment = readings.Judgment
    assert readings.settle([0.009, 0.004, 0.014], [0.005, 0.0095], min_effect=0.01) == Judgment("no difference",
                                                                                                 "minimum effect")
    assert readings.settle([0.0, -0.006, 0.006], [-0.005, 0.005], min_effect=0.01) == Judgment("no difference", "ci")
    assert readings.settle([0.03, 0.01, 0.05], [0.013, 0.047], min_effect=0.01) == Judgment("helped", None)
    assert readings.settle([-0.03, -0.05, -0.01], [-0.047, -0.013], min_effect=0.01) == Judgment("hurt", None)
    assert readings.settle([0.0, -0.02, 0.02], [math.nan, math.nan], min_effect=0.01) == Judgment("inconclusive", None)


def test_under_holm_each_line_says_which_question_it_answers():
    """An exploratory contrast off 0 alone (its bound excludes gains below +0.038) but not across the family (Holm
    p 0.069) is inconclusive, not "no difference", and its line says the bound is that contrast's alone."""
    def row(arm: str, p: float) -> readings.Measured:
        return measured(arm, p=p, estimate=[0.06, 0.03, 0.09], bound90=(0.038, 0.082))

    rows = judged([row("asa-c4", 0.5), row("mae-c4", 0.01), row("x", 0.069)])  # m = 2 besides the primary
    assert [r.p_holm for r in rows[1:]] == pytest.approx([0.02, 0.069])  # 0.01 × 2, 0.069 × 1
    assert (rows[2].verdict, rows[2].why) == ("inconclusive", "holm") and rows[1].verdict == "helped"
    line = report.question_line(rows[2], min_effect=0.01)
    assert ("At N = 2: inconclusive (an effect is not shown across the family: the test of no effect at the family's "
            "5 % gives Holm p = 0.069); its bound, this contrast alone (uncorrected): gains below +0.038 excluded") in line
    assert "no difference" not in line


def test_one_reading_the_page_renders(tmp_path):
    """`readings.read` reads the score rows once into a frozen `Reading`; the page and contrasts.json render it."""
    effects = {**CONTROLS, "asa-c4": (0.05, 0.002)}
    page, contrasts, folder = _study(tmp_path, effects, n_boot=200)
    said = readings.read(_scores(effects), json.loads((folder / "report.json").read_text()), n_boot=200)
    with pytest.raises(dataclasses.FrozenInstanceError):
        said.plumbing = True
    assert said.dicts() == contrasts
    assert [(r.arm, r.verdict, r.bound) for r in said.contrasts] == \
        [(r["arm"], r["verdict"], r["bound"]) for r in contrasts]
    assert said.interpretable and said.primary.arm == "asa-c4" and said.mde == pytest.approx(said.primary.bar.mde)


def test_under_cross_validation_the_positive_control_says_it_trained_on_the_arms_own_cases(tmp_path):
    page, _, _ = _study(tmp_path, CONTROLS, design={"folds": 3, "repeats": 1, "draws": 3, "cases": 6})
    control = next(line for line in page.splitlines() if "Positive control" in line)
    assert "each draw's own training part" in control and "not transfer from other cases" in control


def test_the_head_start_is_read_beside_the_end_point_from_the_same_runs(tmp_path):
    """Scores of one study at its end point (mae − scratch +0.001: no detectable difference) and at its head start
    (+0.05, with the same spread): the page reads both by the same rules, the end point first, and keeps the head
    start's contrasts beside the end point's."""
    out = tmp_path / "study"
    arms = {"mae-c4": "scratch", "supervised": "supervised", "noise-c4": "scratch", "scratch": "scratch"}

    def outputs(mae: float, folder: str) -> tables.Outputs:
        scores = _scores({**CONTROLS, "mae-c4": (mae, 0.002)})
        return tables.write_outputs(scores, CLASSES, {**arms, "supervised": "scratch"}, out / folder, n_boot=200)

    info = {"scale_name": "cpu", "network": "resenc", "machine": MACHINE, "finished": "2026-11-28T12:00:00",
            "scale": {"crop": 32, "cases": [2], "seeds": [0, 1, 2], "test": 6, "val": 2, "pretrain_steps": 5},
            "steps": 1800, "head_start": 600, "recipe": "adamw", "encoder_lr_scale": 1.0, "min_effect": 0.01,
            "classes": CLASSES, "lesion_classes": LESION_CLASSES, "pilot": {"test": {c: 0.7 for c in CLASSES}},
            "pretraining": [_run("mae-c4", "mae", 5), _run("noise-c4", "noise", 5)], "encoders": [],
            "checks": {"overlap": {"lines": ["none"]}, "channels": []}, "commands": [], "runs": {}}
    folder = report.write_report(out, info, outputs(0.001, "transfer"), n_boot=200,
                                 head_start=outputs(0.05, "transfer/head-start"))
    page = (folder / "README.md").read_text()
    end, early = page.split("## At the head start (step 600 of 1800)")
    end_primary = next(x for x in end.splitlines() if x.startswith("- **Primary:**"))
    # the head start's primary is named with its step, never as the primary's end point
    assert "- **Primary:**" not in early
    early_primary = next(x for x in early.splitlines()
                         if x.startswith("- **Primary question at step 600 (a head start, not its end point):** "))
    assert "(mae − scratch) At N = 2: no difference this study can detect" in end_primary
    assert "(mae − scratch) At N = 2: helped" in early_primary and "Δ lesion Dice (lesion, tumour) +0.050" in early_primary
    assert "Minimum detectable effect of the primary at step 600, estimated" in early
    assert "Negative control shown small" in early
    assert end.index("## Answers") < end.index("- **Primary:**")
    head = json.loads((folder / "contrasts-head-start.json").read_text())
    assert _row(head, "mae-c4")[tables.LESION][0] == pytest.approx(0.05)
    contrasts = json.loads((folder / "contrasts.json").read_text())
    assert _row(contrasts, "mae-c4")[tables.LESION][0] == pytest.approx(0.001)
    assert json.loads((folder / "report.json").read_text())["head_start_contrasts"] == head
    # each budget's contrast table, every row with its MDE: the head start's in its section, the end point's below
    for section, rows in ((early.split("## The instruments")[0], head), (page.split("## Contrasts")[1], contrasts)):
        table = [x for x in section.splitlines() if x.startswith("| ")]
        assert "MDE (80 % power)" in table[0]
        mae = next(x for x in table if "| mae-c4 − scratch |" in x)
        assert f"| {_row(rows, 'mae-c4')['mde']:.3f} |" in mae


def test_the_cost_table_has_the_positive_control_s_row_one_run_or_one_per_draw():
    """A cross-validated study's control is one run per draw (supervised-s0, -s1, ...): the Cost table gives their
    mean per run, as it gives one control run's seconds; a record written before the runs were named has the one."""
    runs = {"pilot": 40.0, "supervised-s0": 100.0, "supervised-s1": 140.0, "supervised": 7.0}
    cells = report.cost_cells({"runs": runs, "controls": ["supervised-s0", "supervised-s1"]}, [])[1]
    assert cells == [["pilot", "fine-tuning (pilot)", "40", "—"],
                     ["supervised", "fine-tuning (control, 2 runs)", "120 per run", "—"]]
    assert report.cost_cells({"runs": runs}, [])[1][1] == ["supervised", "fine-tuning (control)", "7", "—"]
    assert report.cost_cells({"runs": {"pilot": 40.0}, "controls": []}, [])[1] == [["pilot", "fine-tuning (pilot)",
                                                                                   "40", "—"]]
    assert report.cost_cells({"runs": {"pilot": 40.0}}, [])[1] == [["pilot", "fine-tuning (pilot)", "40", "—"]]


def test_a_run_whose_seconds_a_killed_sitting_lost_reads_not_recorded():
    """A sitting killed (SIGKILL) before the one that kept times.json's sittings left the runs it finished without
    seconds: the pilot (NaN in a record of then, absent now) and some of the control's runs are "not recorded",
    never "nan", and the control's mean is over the runs whose seconds are there."""
    runs = {"pilot": math.nan, "supervised-s1": 100.0, "supervised-s2": 140.0}
    info = {"runs": runs, "pilot": {"budget": 40}, "controls": {"supervised": ["supervised-s0", "supervised-s1",
                                                                              "supervised-s2"]},
            "pretraining": [{"run": "mae-c40", "seconds": math.nan, "steps": 2400}]}
    assert report.cost_cells(info, [])[1] == [
        ["mae-c40", "pretraining", "not recorded", "—"],
        ["pilot", "fine-tuning (pilot)", "not recorded", "—"],
        ["supervised", "fine-tuning (control, 3 runs; 1 not recorded)", "120 per run", "—"]]
    del runs["pilot"]
    assert report.cost_cells(info, [])[1][1] == ["pilot", "fine-tuning (pilot)", "not recorded", "—"]


@pytest.mark.parametrize("fused", [False, True])
def test_the_cost_section_says_when_a_run_s_seconds_are_its_fused_unit_s_shared_out(tmp_path, fused):
    out = tmp_path / "study"
    scores = _scores({**CONTROLS, "mae-c4": (0.02, 0.002)})
    arms = {a: "scratch" for a in dict.fromkeys(r["arm"] for r in scores)}
    scored = tables.write_outputs(scores, CLASSES, arms, out / "transfer", n_boot=200)
    info = {"scale_name": "cpu", "network": "resenc", "machine": MACHINE, "finished": "2026-11-28T12:00:00",
            "scale": {"crop": 32, "cases": [2], "seeds": [0, 1, 2], "test": 6, "val": 2, "pretrain_steps": 5},
            "steps": 40, "fused": fused, "recipe": "adamw", "encoder_lr_scale": 1.0, "min_effect": 0.01,
            "classes": CLASSES, "lesion_classes": LESION_CLASSES, "pilot": {"test": {c: 0.7 for c in CLASSES}},
            "pretraining": [], "encoders": [], "checks": {"overlap": {"lines": ["none"]}, "channels": []},
            "commands": [], "runs": {}}
    cost = (report.write_report(out, info, scored, n_boot=200) / "README.md").read_text().split("## Cost")[1]
    assert ("a run's wall time is its unit's shared out evenly among its runs" in cost.split("## ")[0]) is fused


def _read(effects: dict[str, tuple[float, float]], **kwargs) -> readings.Reading:
    """``effects``' scores (`_scores`) read as a study's record would have them read."""
    scores = _scores(effects)
    runs = [_run(f"{arm}-c4", arm, 5) for arm in ("mae", "asa", "noise") if f"{arm}-c4" in effects]
    info = {"classes": CLASSES, "lesion_classes": LESION_CLASSES, "pretraining": runs, "min_effect": 0.01}
    return readings.read(scores, info, n_boot=100, **kwargs)


def test_a_case_some_run_did_not_score_is_said_left_out_of_its_interval(tmp_path):
    one = lambda rows: [r for r in rows if (r["arm"], r["seed"], r["case"]) != ("mae-c4", 1, "c")]  # noqa: E731
    page, contrasts, _ = _study(tmp_path, {**CONTROLS, "mae-c4": (0.05, 0.002)}, scored=one)
    assert _row(contrasts, "mae-c4")["interval"]["dropped"] == 1
    said = [x for x in _answers(page) if x.startswith("- Test cases left out of an interval")]
    assert said == ["- Test cases left out of an interval, each for a pair some run or draw did not score: "
                    "mae-c4 − scratch at N = 2: 1; mae-c4 − noise-c4 at N = 2: 1."]
    page, _, _ = _study(tmp_path / "whole", {**CONTROLS, "mae-c4": (0.05, 0.002)})
    assert "left out of an interval" not in page


def test_holm_s_count_on_the_page_is_the_count_it_corrected():
    said = _read({**CONTROLS, "mae-c4": (0.05, 0.002), "asa-c4": (0.03, 0.002)})
    others = [r for r in said.contrasts if r.role == "exploratory"]
    m = len(others)
    assert m >= 2 and f"Holm correction across those {m} (family-wise" in report.family_lines(said)[0]
    unmeasured = dataclasses.replace(others[0], bar=dataclasses.replace(others[0].bar, p=math.nan))
    said = dataclasses.replace(said, contrasts=tuple(unmeasured if r is others[0] else r for r in said.contrasts))
    assert f"Holm correction across those {m - 1} with a measured p (1 without one)" in report.family_lines(said)[0]


def test_over_several_looks_the_table_says_only_the_endpoint_s_column_is_widened():
    said = _read({**CONTROLS, "mae-c4": (0.05, 0.002), "asa-c4": (0.03, 0.002)}, looks=readings.Looks(planned=2))
    head, cells = report.contrast_cells(said)
    (primary,) = [c for c in cells if c[3].startswith("primary")]
    assert primary[3] == ("primary (lesion Dice (lesion, tumour)'s CI and bound at 97.5 %: 2 looks; its other columns "
                          "at 95 %)")


def test_twice_the_draws_or_cases_prints_no_larger_mde_than_the_study_s_own():
    """The projections are the study's MDE scaled by the ratio its variance components project, so they agree with
    it: from the expected mean squares alone, twice the seeds printed a larger MDE than the study's in 46 of 300
    seed × case tables like these; a cross-validated table doubles its repeats. (Where 3 runs and 3 seeds share one t, doubling a factor can lower that t's df
    and the projection can exceed the MDE: that is the interval's own rule, docs/studies.md.)"""
    rng = np.random.default_rng(1)
    for shape in ((3, 10), (2, 3, 10)):
        factors = ("pretraining", "seed", "case")[-len(shape):]
        for _ in range(100):
            d = 0.02 * rng.standard_normal(shape) + 0.01 * rng.standard_normal((*shape[:-1], 1))
            bar = readings.endpoint_bar(crossed_interval(d, factors=factors), readings.ALPHA)
            assert list(bar.mde_more) == ["seeds", "cases", "pretraining runs"][:len(shape)]
            assert all(v <= bar.mde * (1 + 1e-9) for v in bar.mde_more.values()), (bar.mde, bar.mde_more)
    # cross-validated, 3 folds of 30 cases: twice the repeats (none exceeded in 900 tables of 1-3 runs × 2 or 5
    # repeats, 150 each)
    for runs, repeats in ((1, 2), (3, 5)):
        reps = np.repeat(np.arange(repeats), 3)
        for _ in range(20):
            fold = np.stack([rng.permutation(np.arange(30) % 3) for _ in range(repeats)])
            table = 0.02 * rng.standard_normal((runs, repeats, 30)) + 0.01 * rng.standard_normal(30)
            d = np.full((runs, 3 * repeats, 30), np.nan)
            for g, (q, k) in enumerate(zip(reps, itertools.cycle(range(3)))):
                d[:, g, fold[q] == k] = table[:, q, fold[q] == k] + 0.01 * rng.standard_normal((runs, 1))
            bar = readings.endpoint_bar(folded_interval(d if runs > 1 else d[0], reps), readings.ALPHA)
            assert list(bar.mde_more) == ["repeats"] and bar.mde_more["repeats"] <= bar.mde * (1 + 1e-9)
    # leave-one-out, 6 cases in 2 repeats, the cases' spread dominating: their part, at C − 1 = 5 df below the draws'
    # 10, grows with the repeats at its larger t, so the projection can exceed the MDE, by 2 % at most here
    ratios = []
    for _ in range(20):
        d = np.full((12, 6), np.nan)
        d[np.arange(12), np.arange(12) % 6] = np.tile(rng.normal(0, 0.05, 6), 2) + rng.normal(0, 0.005, 12)
        bar = readings.endpoint_bar(folded_interval(d, np.repeat([0, 1], 6)), readings.ALPHA)
        ratios.append(bar.mde_more["repeats"] / bar.mde)
    assert max(ratios) > 1 and max(ratios) < 1.02, ratios
