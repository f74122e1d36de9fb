"""asa-study's page: README.md, its SVG plots and report.json; it draws a `asa.study.readings.Reading`, which decides
what a number may be read as."""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from asa.eval.plots import interval_plot, line_plot
from asa.io import atomic_write_json, atomic_write_text
from asa.study.common import machine_line, markdown_table
from asa.study import arms as declared
from asa.study.readings import (ALPHA, KEYS, LESION_KEY, LEVEL, NOT_READ, Contrast, Looks, ProbeReading, ProbeRow,
                                Reading, Verdict, read)
from asa.study.tables import Outputs, declared_order, svg_plot

# how often a true effect of the printed MDE's size is detected, over the simulated designs of docs/studies.md
# ("Power with replicated pretraining runs": the median printed MDE of each of its rows)
PRINTED_MDE_POWER = (0.61, 0.82)


def mde_line(primary: Contrast, *, min_effect: float, looks: Looks, of: str = "the primary") -> list[str]:
    """The minimum detectable effect of the primary (``of``: of the primary at a head start) from the study's own
    variance (aimed at 80 % power, two-sided at the primary's error rate over its ``looks``), printed as the estimate
    it is, with what the minimum effect adds to it."""
    interval, more = primary.bar.interval, primary.bar.mde_more or {}
    comps, what = interval["components"], "variance components"
    if not comps:
        comps, what = {name: v for name, v, _ in interval["parts"]}, "the variance parts of the mean"
    levels = interval["levels"]
    parts = ", ".join(f"{k} {v:.2g}" for k, v in comps.items())
    line = (f"Minimum detectable effect of {of}, estimated from this study's own variance (aimed at 80 % power, "
            f"two-sided {100 * looks.alpha:.4g} %, on its interval; {what} {parts}): "
            f"**{primary.bar.mde:.3f} {primary.endpoint[1]}** (an estimate: in simulated studies a true effect of "
            f"the printed size is detected {PRINTED_MDE_POWER[0]:.0%}–{PRINTED_MDE_POWER[1]:.0%} of the time, not 80 %)")
    if "seeds" in more:
        line += (f"; with twice the labeled draws ({2 * levels['seed']} seeds) {more['seeds']:.3f}, with twice the "
                 f"test cases ({2 * levels['case']}) {more['cases']:.3f}")
    if "pretraining runs" in more:
        line += f", with twice the pretraining runs ({2 * levels['pretraining']}) {more['pretraining runs']:.3f}"
    if "repeats" in more:
        line += (f"; with twice the repeats of the same folds ({2 * levels['repeat']} repeats, "
                 f"{2 * levels['draw']} draws) {more['repeats']:.3f}")
    if "draw" in levels:
        beyond = "other folds" if "repeats" in more else "more draws"
        line += (f"; no projection to {beyond} or more cases is printed: a cross-validated design's draws and cases "
                 "are not crossed, so the variance components such a projection needs are not estimated")
    line += f". The minimum effect read as an effect is {min_effect:g}"
    if primary.bar.mde > min_effect:
        line += ": a true gain of that size would mostly go undetected here."
    else:  # "helped" needs the estimate at the minimum effect too, which an interval clear of 0 does not give
        line += (f": a gain is read only where its estimate reaches it, so a true gain between the minimum detectable "
                 f"effect and {min_effect:g} would mostly not be read as one, even where its interval clears 0.")
    return [line, ""]


def control_line(row: Contrast, said: Reading, *, trained_on: str) -> str:
    """A control's reading: the negative shown small by its bound (a CI touching 0 is not), the positive's size."""
    ci = f"Δ {row.endpoint[1]} {_ci(row.estimate)} at N = {row.n}"
    min_effect, mde = said.min_effect, said.mde
    if not said.interpretable:  # its kind: positive or negative
        return f"{row.kind.capitalize()} control ({row.arm} − {row.reference}): {ci}."
    if row.kind == "positive":
        what = f"an encoder trained with labels on {trained_on}"
        if row.verdict != Verdict.HELPED:
            return (f"**Positive control did not move** ({what}; {ci}; a move is a CI above 0 and at least "
                    f"{min_effect:g} Dice): it did not beat scratch, so this study cannot show what pretraining "
                    "gives; every null among the answers reads not interpretable.")
        if said.detects(row):
            return (f"Positive control moved, as it must ({what}; {ci}): the primary question can detect a gain of "
                    f"this size (its minimum detectable effect {mde:.3f}).")
        moved = (f"Positive control moved, as it must ({what}; {ci}), but the primary question's own minimum "
                 "detectable effect is ")
        if math.isnan(mde):
            return moved + "not measured: this study's primary would not reliably see a gain of the control's size."
        return (moved + f"{mde:.3f}: this study's primary would not reliably see a gain of the control's size, only "
                f"one of {mde:.3f} or more.")
    if row.verdict == Verdict.HELPED:
        return (f"**Negative control helped** ({ci}): pretraining on pure noise beat scratch, so a gain of the "
                "pretrained arms over scratch may be the recipe's (initialisation scale, schedule), not what they "
                "learned from the scans; no such gain is read among the answers.")
    if row.small:
        return f"Negative control shown small, as it must be ({ci}; {row.bound}, under {min_effect:g})."
    return (f"**Negative control not shown small** ({ci}; its one-sided 95 % bound allows gains up to "
            f"{row.bar.bound90[1]:+.3f}, not under the minimum effect {min_effect:g}): an initialisation effect of "
            "that size is not excluded, so no gain of a pretrained arm over scratch is read among the answers.")


def reading(row: Contrast, *, min_effect: float) -> str:
    """A contrast's verdict as the page prints it: the verb, or why there is none."""
    if row.why == "holm":
        return (f"{Verdict.INCONCLUSIVE.value} (an effect is not shown across the family: the test of no effect at "
                f"the family's {100 * ALPHA:g} % gives Holm p = {row.p_holm:.3f})")
    if row.verdict != Verdict.NO_DIFFERENCE and row.why:
        return f"{row.verdict.value} ({row.why})"
    if row.verdict != Verdict.NO_DIFFERENCE:
        return row.verdict.value
    if row.why == "minimum effect":  # its CI is off 0: a difference is seen, one under the minimum effect
        return f"no difference of the minimum effect (its CI is off 0, the difference under {min_effect:g} Dice)"
    return "no difference this study can detect"


def looks_line(looks: Looks) -> str | None:
    """Why the primary is read above 95 %: the looks it is read over, said with the extensions after a look."""
    if looks.count == 1:
        return None
    why = f"The study planned {looks.planned} looks (--looks)"
    if looks.extended:
        why = f"The study was extended after a look (at {'; '.join(looks.extended)})"
    return (f"{why}: the primary is read at {looks.level} (Bonferroni over {looks.count} looks), its bound "
            f"one-sided at {looks.level}; its CI and bound below are those.")


def _ci(values: Sequence[float]) -> str:
    return "{:+.3f} [{:+.3f}, {:+.3f}]".format(*values)  # [value, low, high]


def question_line(row: Contrast, *, min_effect: float) -> str:
    """One answer: the question, N, the verdict, its bound and Δ; the other scores beside it as information."""
    line = f"{row.question} At N = {row.n}"
    if row.looks is not None:
        line += f", read at {row.level} (Bonferroni over {row.looks} looks)"
    line += f": {reading(row, min_effect=min_effect)}; "
    if row.p_holm is not None and row.bound != NOT_READ:  # read on Holm's p: its bound answers this contrast alone
        line += "its bound, this contrast alone (uncorrected): "
    line += f"{row.bound} (Δ {row.endpoint[1]} {_ci(row.estimate)}"
    if row.p_holm is not None:
        line += f"; Holm p = {row.p_holm:.3f}"
    line += ")"
    for key, label in (KEYS[0], LESION_KEY):
        if key != row.endpoint[0] and key in row.estimates:
            line += f"; Δ {label} {_ci(row.estimates[key])} (shown, not read)"
    if row.flags:
        line += "; " + "; ".join(row.flags) + ": its contrasts read that encoder"
    return line + "."


def _p_cell(row: Contrast) -> str:
    """The endpoint's p, Holm's in brackets for an exploratory question; "—" where no p was measured."""
    if math.isnan(row.bar.p):
        return "—"
    if row.p_holm is None:
        return f"{row.bar.p:.3f}"
    return f"{row.bar.p:.3f} ({row.p_holm:.3f})"


def contrast_cells(said: Reading) -> tuple[list[str], list[list[str]]]:
    """The contrast table's head and cells: every contrast's Δs with their CIs, the bootstrap's, p (Holm's), its bound,
    its endpoint's minimum detectable effect ("—" where nothing may be read) and its verdict."""
    head = ["question", "arm − reference", "N", "role", *(f"Δ {label} [95 % CI]" for _, label in said.keys),
            "bootstrap CI", "p (Holm)", "bound (one-sided 95 %)", "MDE (80 % power)", "verdict"]
    cells = []
    for r in said.contrasts:
        mde = math.nan  # a reading from which nothing may be said claims no detectable effect
        if said.interpretable:
            mde = r.bar.mde
        role = r.role
        if r.looks is not None:  # the endpoint's column alone is read over the looks
            role += f" ({r.endpoint[1]}'s CI and bound at {r.level}: {r.looks} looks; its other columns at 95 %)"
        cells.append([r.question, f"{r.arm} − {r.reference}", str(r.n), role,
                      *(_ci(r.estimates[k]) for k, _ in said.keys),
                      "[{1:+.3f}, {2:+.3f}]".format(*r.bootstrap[said.endpoint[0]]), _p_cell(r), r.bound,
                      _number(mde), reading(r, min_effect=said.min_effect)])
    return head, cells


def family_lines(said: Reading) -> list[str]:
    """How the answers are read: the primary, how many questions on which score, the bar of each, their bounds."""
    contrasts, primary, min_effect, keys = said.contrasts, said.primary, said.min_effect, [k for _, k in said.keys]
    questions = [r for r in contrasts if r.kind == "question"]
    others = [r for r in questions if r.role == "exploratory"]
    controls = {r.arm for r in contrasts if r.kind != "question"}
    text = (f"How the answers are read: this page reads {len(questions)} question(s) "
            f"({len({r.question for r in questions})} contrast(s) × {len({r.n for r in questions})} N) and "
            f"{len(controls)} control(s) at each N, on {keys[0]} alone")
    if keys[1:]:
        text += f" ({' and '.join(keys[1:])} shown as information: no verdict is read from them)"
    text += ". Every interval is the crossed random-effects interval of "
    if any("draw" in r.bar.interval["levels"] for r in contrasts):  # `asa.eval.random_effects.folded_interval`
        text += ("the cross-validated draws × test cases (ANOVA mean squares; the draws', the cases' and, with "
                 "replicated pretraining runs, the runs' parts each at its own t, in quadrature; the draw × case "
                 "bootstrap beside it in the table is too narrow with 2–3 draws). ")
    else:
        text += ("seeds × test cases (ANOVA mean squares; with replicated pretraining runs the runs' component is a "
                 "part of its own, and from 3 runs and 3 seeds the parts share one t; the seed × case bootstrap "
                 "beside it in the table is too narrow with 2–3 seeds). ")
    if primary is None:
        text += "There is no primary question: no pretrained arm was scored against scratch. "
    else:
        text += (f"The primary question, named before the data: {primary.arm} − {primary.reference} at the "
                 f"smallest N ({primary.n}), read at {said.looks.level} (its CI")
        if said.looks.count > 1:
            text += f"; Bonferroni over {said.looks.count} looks"
        text += "). "
    if others:
        corrected = sum(not math.isnan(r.bar.p) for r in others)  # Holm counts the measured p's alone
        across = f"those {corrected}"
        if corrected < len(others):
            across += f" with a measured p ({len(others) - corrected} without one)"
        text += (f"The other {len(others)} are exploratory: each is read on its interval's two-sided p after a Holm "
                 f"correction across {across} (family-wise error {100 * ALPHA:g} %), the test of no effect "
                 "across the family; its CI and its bound are shown uncorrected and answer that contrast alone, so one "
                 "off 0 alone but not after Holm reads inconclusive. ")
    return [text + (f"A contrast reads as an effect (a gain or a loss) only when it clears its bar and its estimate is "
                    f"at least the minimum effect, {min_effect:g} Dice (--min-effect); as no difference this study can "
                    f"detect only when its bound excludes a gain and a loss of {min_effect:g}; anything else is "
                    f"inconclusive. Every answer carries its bound, read at one-sided 95 % (the 90 % "
                    f"interval: two one-sided tests at ±{min_effect:g}): \"equivalent within ±{min_effect:g}\" when "
                    "both a gain and a loss of the minimum effect are excluded, \"gains above +x excluded\" when a "
                    "gain of it is, else \"inconclusive: −a to +b\", the range the data allow. A null is read only "
                    "beside a positive control that moved (else \"not interpretable: sensitivity not shown\"), a gain "
                    "over scratch only beside a negative control shown small (its bound under the minimum effect). "
                    f"The controls are instruments, each read at {LEVEL} with the same minimum effect."), ""]


def _number(value: float, spec: str = ".3f") -> str:
    """A number, or "—" where it was not measured (NaN)."""
    if math.isnan(value):
        return "—"
    return format(value, spec)


def pretraining_lines(runs: Sequence[Mapping[str, Any]], said: Reading) -> tuple[str, list[str]]:
    """The pretraining table (each run's export: its step, held-out loss and weight norm) and one flag per run whose
    export is unfinished (`asa.study.readings.unfinished`)."""
    cells = []
    for r in runs:
        curve = r.get("val_curve") or []
        losses = "— → —"
        if curve:
            losses = f"{curve[0][1]:.4f} → {curve[-1][1]:.4f}"
        export = "—"  # a record written before the export was read
        if "export_step" in r:
            export = f"{r['export_step']} ({r['export_progress']:.0%} of the summed lr): {r['export_loss']:.4f}"
        cells.append([r["run"], str(r["cohort"]), str(r["steps"]), f"{r['seconds']:.0f}", losses, export,
                      _export_level(r, rising=r["run"] in said.rising),
                      *(_number(r.get(key, math.nan), ".2f") for key in ("norm_ratio", "weights_cv", "weights_share"))])
    head = ["run", "cohort", "steps", "wall time (s)", "held-out loss first → last",
            "exported at step: held-out loss", "up to the export (last quarter)", "encoder norm / fresh",
            "loss weights CV", "effective share"]
    return markdown_table(head, cells), [f"{why}; its contrasts read that encoder." for why in said.unfinished]


def _export_level(run: Mapping[str, Any], *, rising: bool) -> str:
    """What the plateau check read up to a run's export, in words, with the drop it read and, ``rising``
    (`asa.study.readings.rising`), how far its level at the export stands above its lowest: the medians of the rounds
    in the last and the lowest eighth of its summed lr up to the export (`asa.study.readout.loss_plateau`)."""
    if run.get("early"):
        return "exported in its first eighth"
    level = {None: "not checked (< 4 rounds)", True: "levelled", False: "still falling"}[run.get("plateau")]
    if not math.isnan(run.get("loss_drop", math.nan)):
        level += f" ({run['loss_drop']:.1%})"
    if rising:
        level += f"; at its export {run['loss_rise']:.1%} above its lowest level (medians of eighths of the summed lr)"
    return level


def export_line(runs: Sequence[Mapping[str, Any]]) -> str | None:
    """Whether the negative control was exported where its matched arm was (replicate by replicate), or None when no
    noise run was read."""
    noise = [r for r in runs if declared.ARMS[r["arm"]].noise and "export_step" in r]
    if not noise:
        return None
    matched = declared.matched_by_noise([r["arm"] for r in runs])
    steps = {r["replicate"]: r["export_step"] for r in runs if r["arm"] == matched and "export_step" in r}
    pairs = [(r, steps.get(r.get("replicate"))) for r in noise]
    if matched is None or not all(step == r["export_step"] for r, step in pairs):
        return ("**The negative control is not matched to the arm it controls**: "
                + "; ".join(f"{r['run']} exported at step {r['export_step']}"
                            + (f", {matched}'s run at {step}" if step is not None else "") for r, step in pairs)
                + ": a difference from it mixes what the runs learned with how long they trained.")
    return (f"The negative control is exported where {matched} was, replicate by replicate (steps "
            + ", ".join(str(r["export_step"]) for r, _ in pairs) + "): the same recipe and steps, noise for scans.")


def recorded_controls(info: Mapping[str, Any]) -> dict[str, list[str]]:
    """Each labeled arm -> its runs' names, as the record keeps them: by arm; a record written before each labeled
    arm named its own runs kept the positive control's names as a list, and one before that none (its one run, when
    its seconds are there)."""
    controls = info.get("controls")
    if controls is None:
        ran = declared.RECORDED_CONTROL in info.get("runs", {})
        return {declared.RECORDED_CONTROL: [declared.RECORDED_CONTROL]} if ran else {}
    if isinstance(controls, list):
        return {declared.RECORDED_CONTROL: list(controls)}
    return {str(arm): list(names) for arm, names in controls.items()}


def cost_cells(info: Mapping[str, Any], budgets: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """The cost table's head and cells, seconds per arm: each pretraining run's wall time, fine-tuning's mean per
    run. A run that finished in a sitting killed before times.json kept its seconds reads "not recorded"."""
    rows = [[r["run"], "pretraining", _wall(r["seconds"]), _rate(r["steps"], r["seconds"])]
            for r in info.get("pretraining", [])]
    times = info.get("runs", {})
    if info.get("pilot") or "pilot" in times:
        rows.append(["pilot", "fine-tuning (pilot)", _wall(times.get("pilot")), "—"])
    for arm, names in recorded_controls(info).items():  # a labeled arm's runs: one, or one per draw
        if len(names) == 1:
            rows.append([arm, "fine-tuning (control)", _wall(times.get(names[0])), "—"])
        elif names:
            seconds = [times[name] for name in names if _known(times.get(name))]
            what = f"fine-tuning (control, {len(names)} runs"
            if len(seconds) < len(names):
                what += f"; {len(names) - len(seconds)} not recorded"
            mean = f"{np.mean(seconds):.0f} per run" if seconds else "not recorded"
            rows.append([arm, what + ")", mean, "—"])
    for arm in dict.fromkeys(str(b["arm"]) for b in budgets):
        runs = [b for b in budgets if str(b["arm"]) == arm]
        secs = [float(b["train_seconds"]) for b in runs if not math.isnan(float(b["train_seconds"]))]
        rows.append([arm, f"fine-tuning ({len(runs)} runs)", f"{np.mean(secs):.0f} per run" if secs else "—",
                     f"{np.mean([int(b['steps']) for b in runs]) / np.mean(secs):.2f}" if secs else "—"])
    return ["arm", "what", "wall time (s)", "steps / s"], rows


def _known(seconds: float | None) -> bool:
    """Whether a run's seconds were recorded (None or NaN: it ran in a sitting killed before they were kept)."""
    return seconds is not None and not math.isnan(seconds)


def _wall(seconds: float | None) -> str:
    """A run's wall time as the cost table gives it."""
    return f"{seconds:.0f}" if _known(seconds) else "not recorded"


def _rate(steps: int, seconds: float | None) -> str:
    """A run's steps a second as the cost table gives it ("—" without its seconds)."""
    if _known(seconds) and seconds > 0:
        return f"{steps / seconds:.2f}"
    return "—"


def draws_line(info: Mapping[str, Any], budgets: Sequence[Mapping[str, Any]]) -> str:
    """What each arm's answers rest on: its distinct labeled draws and its pretraining runs."""
    drawn = {(str(b["arm"]), frozenset(b["train"].split())) for b in budgets  # each arm's distinct draws
             if isinstance(b.get("train"), str) and b["train"]}
    draws = sorted(set(Counter(arm for arm, _ in drawn).values()))
    runs = Counter(str(r["arm"]) for r in info.get("pretraining", []))
    line = "Distinct labeled draws per arm: "
    if draws:
        line += "–".join(map(str, draws))
    else:
        line += "not recorded (runs scored before their cases were kept)"
    line += "; pretraining runs per arm: "
    if not runs:
        return line + "none."
    line += ", ".join(f"{arm} {k}" for arm, k in runs.items())
    if max(runs.values()) == 1:
        line += (" (one run each: the intervals carry labeled draws and test cases, not the spread between "
                 "pretraining runs, so an answer is about these encoders more than about their method)")
    return line + "."


def steps_phrase(runs: Sequence[Mapping[str, Any]], *, where: bool = True) -> str:
    """"pretraining 5 steps per run", or "pretraining 3–5 steps per run" (``where``: and where each run's is)."""
    steps = sorted({int(r["steps"]) for r in runs})
    if not steps:
        return "no pretraining run"
    phrase = f"pretraining {'–'.join(map(str, sorted({steps[0], steps[-1]})))} steps per run"
    if where and len(steps) > 1:
        phrase += " (each run's count in the pretraining table)"
    return phrase


def figures(info: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], said: Reading) -> dict[str, str]:
    """The page's plots (SVG) by file name: Dice against N (``rows``: one per arm and N), the contrasts, the
    classes, the pilot's curve, the pretraining curves and the loss weights' spread."""
    runs, pilot, classes = info.get("pretraining", []), info.get("pilot") or {}, info.get("classes", [])
    plots = {"dice_vs_n.svg": svg_plot(rows, xlabel="labeled cases N", ylabel="mean Dice (± sd over seeds)",
                                       dodge=True)}
    if said.contrasts:
        series = [(k, label, f"Δ {label}") for k, label in said.keys]
        plots["contrasts.svg"] = interval_plot([f"{r.arm} − {r.reference}, N = {r.n}" for r in said.contrasts],
                                               {label: [tuple(r.estimates[k]) for r in said.contrasts]
                                                for k, label, _ in series},
                                               xlabels={label: x for _, label, x in series}, zero=True)
    if said.classes:
        plots["classes.svg"] = interval_plot([f"{r.arm} − {r.reference}, N = {r.n}" for r in said.classes],
                                             {c: [tuple(r.dice[c]) for r in said.classes] for c in classes},
                                             xlabels={c: f"Δ Dice {c}" for c in classes}, zero=True)
    # the curve its budget was read from: the lesion classes' where they are named
    curve, ylabel = pilot.get("curve"), "validation Dice"
    if pilot.get("lesion_curve"):
        curve, ylabel = pilot["lesion_curve"], f"validation lesion Dice ({', '.join(pilot['lesion_classes'])})"
    if curve:
        plots["pilot.svg"] = line_plot({"scratch (pilot)": [(s, d, 0.0) for s, d in curve]}, xlabel="step",
                                       ylabel=ylabel, categorical=False)
    if curves := {r["run"]: [(s, v, 0.0) for s, v in r["val_curve"]] for r in runs if r["val_curve"]}:
        plots["pretraining.svg"] = line_plot(curves, xlabel="step", ylabel="held-out masked loss", categorical=False,
                                             clip=None)
    if weighted := [r for r in runs if not math.isnan(r.get("weights_cv", math.nan))]:
        plots["weights.svg"] = interval_plot([r["run"] for r in weighted],
                                             {"loss weights CV": [(r["weights_cv"], None, None) for r in weighted],
                                              "effective share": [(r["weights_share"], None, None) for r in weighted]})
    return plots


def answer_lines(said: Reading, *, head_start: int | None = None) -> list[str]:
    """A reading's answers, the primary first, then its minimum detectable effect; read at the end point, or at the
    ``head_start`` step, where the primary's line and its MDE name that step."""
    questions = [r for r in said.contrasts if r.kind == "question"]
    primary, of = "**Primary:** ", "the primary"
    if head_start is not None:
        primary = f"**Primary question at step {head_start} (a head start, not its end point):** "
        of = f"the primary at step {head_start}"
    lines = []
    for r in sorted(questions, key=lambda r: r.role != "primary"):
        lead = "- "
        if r.role == "primary":
            lead = "- " + primary
        lines.append(lead + question_line(r, min_effect=said.min_effect))
    if not questions:
        lines.append("- No pretraining arm was scored.")
    if left_out := [f"{r.arm} − {r.reference} at N = {r.n}: {r.bar.interval['dropped']}" for r in said.contrasts
                    if r.bar.interval.get("dropped")]:
        lines.append("- Test cases left out of an interval, each for a pair some run or draw did not score: "
                     + "; ".join(left_out) + ".")
    lines.append("")
    if not math.isnan(said.mde):
        lines += mde_line(said.primary, min_effect=said.min_effect, looks=said.looks, of=of)
    return lines


def head_start_lines(said: Reading, step: int, end: int, *, trained_on: str) -> list[str]:
    """The section of the same questions read at the head start: every run's state kept at ``step`` of its
    ``end``, read by the same rules as the end point."""
    controls = [control_line(r, said, trained_on=trained_on) for r in said.contrasts if r.kind != "question"]
    table = []
    if said.contrasts:
        table = [f"The contrasts at step {step}, as the table of every contrast below reads the end point's:", "",
                 markdown_table(*contrast_cells(said)), ""]
    return [f"## At the head start (step {step} of {end})", "",
            f"The same runs, each scored again from its state kept at step {step} (trainer.keep_steps), in the "
            f"middle of its schedule: a gain here is a head start, the answers above read where the runs end. The "
            "same questions, rules, controls and looks as above (the Dice with the encoder zeroed is scored at the "
            "end point only).", "", *answer_lines(said, head_start=step), *(f"- {line}" for line in controls), "",
            *table]


def _probe_cell(row: ProbeRow) -> str:
    """A probed encoder's primary probe, with its 95 % CI where it has one."""
    if math.isnan(row.primary_ci[0]):
        return _number(row.primary)
    return f"{_number(row.primary)} [{row.primary_ci[0]:.3f}, {row.primary_ci[1]:.3f}]"


def probe_lines(probes: ProbeReading) -> list[str]:
    """The probe section: the probe table, the factorial's effects and the arm the probes chose."""
    cells = []
    for r in probes.rows:
        replicate = "—"
        if r.replicate is not None:
            replicate = str(r.replicate)
        cells.append([r.encoder, r.arm, replicate, _probe_cell(r), _number(r.r2_mean), _number(r.knn)])
    lines = [f"Every pretrained encoder frozen and probed on {probes.cases} labeled cases the transfer stage "
             "does not score (the validation and training-pool cases; the arm is chosen on them, never on the "
             f"scored test cases) before any fine-tuning (asa-probe, {probes.folds}-fold cross-validation, 95 % "
             f"bootstrap CI over the cases). Primary probe: **{probes.label}**, named before anything trained.", "",
             markdown_table(["encoder", "arm", "pretraining seed", probes.label, "ridge R² mean", "k-NN accuracy"],
                            cells, left=3)]
    if probes.pretrained:
        beat = (f"{probes.beat} of {probes.pretrained} pretrained encoders read higher than the random-init twin "
                f"({probes.random:.3f})")
        if probes.tells_random:
            lines += [beat + ".", ""]
        else:
            lines += [beat + ": the probe does not tell every pretrained encoder from a random one.", ""]
    if probes.effects:
        rows = []
        for e in probes.effects:
            interval = "—"
            if not math.isnan(e.low):
                interval = f"[{e.low:+.3f}, {e.high:+.3f}]"
            rows.append([e.name, f"{e.value:+.3f}", interval, ", ".join(f"{v:+.3f}" for v in e.per_seed), e.reading])
        lines += [f"The factorial on the primary probe, each effect taken within a pretraining seed and read over the "
                  f"{probes.effects[0].seeds} seeds (t interval, seeds − 1 degrees of freedom; minimum effect "
                  f"{probes.min_effect:g}):", "",
                  markdown_table(["effect", "estimate", "95 % CI", "per seed", "reading"], rows, left=1)]
    elif probes.shared:
        shared = "; ".join(f"{' and '.join(arms)} share its cell ({cell})" for cell, arms in probes.shared.items())
        lines += [f"The factorial is not read: {shared}, so which of them it reads would be the order they were named "
                  "in.", ""]
    else:
        lines += ["The factorial is not read: its four cells (mae, asa, mae-coord, asa-coord) did not all run with the "
                  "same pretraining seeds.", ""]
    return [*lines, f"Fine-tuned: **{probes.chosen}** (the highest mean primary probe of the pretraining arms), "
            "with the scratch twins and the controls; the other arms were pretrained and probed, not fine-tuned.", ""]


def _trained_on(design: Mapping[str, Any] | None) -> str:
    """What the positive control trained on: a cross-validated draw's own training part, or cases of its own."""
    if design:
        return ("each draw's own training part (the cases the arms draw N from, trained for the pilot's steps): it "
                "shows that a better start on the same cases moves the fine-tuning, not transfer from other cases")
    return "labeled cases no other run sees"


def budget_line(pilot: Mapping[str, Any], steps: int) -> str:
    """What the pilot found and the steps every arm fine-tunes ("": no pilot)."""
    if not pilot:
        return ""
    line = f"The pilot (scratch, constant lr, {pilot.get('pilot_steps')} steps) "
    if pilot.get("learned") is False:
        line += ("did not learn the task (its best validation Dice stayed under the floor, so it has no level to "
                 "find)")
    elif pilot.get("converged"):
        line += f"levelled off at step {pilot.get('budget')}{_trend(pilot)}"
    else:
        line += f"was not shown to level off{_trend(pilot)}"
    line += f"; every arm fine-tunes {steps} steps"
    if pilot.get("capped"):
        line += (f" — held there by --budget-cap, below the {pilot.get('asked')} the pilot asked for: the arms are "
                 "compared before the scratch twin levels off, not at their end points")
    return line + "."


def _trend(pilot: Mapping[str, Any]) -> str:
    """The pilot's validation Dice trend that set its budget (`asa.study.tables.converged_budget`; "": a record
    written before the trend was kept)."""
    if "rise_hi" not in pilot:
        return ""
    trend = f"{pilot['rise']:+.3f}, one-sided 95 % upper bound {pilot['rise_hi']:+.3f}"
    if pilot["converged"]:
        return (f" (from there to its end its validation Dice's linear trend: {trend}, under the minimum effect "
                f"{pilot['tol']:g})")
    return (f" (from no round on did its validation Dice's linear trend to its end stay under the minimum effect "
            f"{pilot['tol']:g} at its one-sided 95 % upper bound; over its last half, from step {pilot['since']}: "
            f"{trend})")


def _recipe_line(info: Mapping[str, Any]) -> str:
    """The fine-tuning recipe every arm shares."""
    if info["recipe"] == "adamw":
        return (f"Recipe: {info['recipe']} for every arm, the encoder at {info['encoder_lr_scale']} × the decoder's lr "
                "for every arm (pretrained or not).")
    return (f"Recipe: {info['recipe']} for every arm (nnU-Net's PretrainedTrainer: 1e-3 for a network from a "
            "pretrained file, 1e-2 from scratch).")


def _overlap_line(overlap: Mapping[str, Any]) -> str:
    """The pretraining cohort's overlap with the labeled cases, and whether it was accepted."""
    line = f"Overlap of the pretraining cohort with the labeled cases: {'; '.join(overlap['lines'])}"
    if overlap.get("accepted"):
        line += " — **accepted with --accept-overlap: these cases' scores are not held out.**"
    return line


def _top_lines(said: Reading, info: Mapping[str, Any]) -> list[str]:
    """What the page says before its answers: a plumbing check, a failed instrument, or the nulls and gains the
    controls leave unread."""
    if said.plumbing:
        return ["**Plumbing check: no answer can come from this page.** The quick scale runs a few steps per run "
                f"({steps_phrase(info.get('pretraining', []), where=False)}, {info['steps']} fine-tuning steps per "
                "arm): it shows that every stage runs and writes its outputs, not whether pretraining helps, so no "
                "verdict is read below. Run --scale cpu or --scale gpu for an answer."]
    if said.faults:
        return [f"**Not interpretable**: {' '.join(said.faults)} Every answer below reads "
                f"\"{Verdict.UNREADABLE.value}\": its numbers are shown, no verdict is read from them."]
    lines = []
    for what, by_n in (("Nulls", said.controls.nulls), ("Gains over scratch", said.controls.gains)):
        if by_n:
            lines.append(f"**{what} are not interpretable** at N = {', '.join(map(str, sorted(by_n)))}: "
                         f"{'; '.join(dict.fromkeys(by_n.values()))}.")
    return lines


def _endpoint_line(said: Reading) -> str:
    """The primary endpoint and why it is that one."""
    line = f"**Primary endpoint: {said.endpoint[1]}**, named before any training"
    if said.endpoint[0] == LESION_KEY[0]:
        return line + " (the lesion classes named with --lesion-classes)."
    if said.endpoint[1] != KEYS[0][1]:
        return line + " (the set's one foreground class)."
    return line + " (mean Dice over every class: no --lesion-classes and more than one class)."


def _design_phrase(scale: Mapping[str, Any], design: Mapping[str, Any] | None) -> str:
    """How the labeled cases are drawn and scored: cross-validated, or seeds on fixed test cases."""
    if design:
        return (f"by {design['folds']}-fold cross-validation × {design['repeats']} repeat(s): every one of the "
                f"{design['cases']} labeled cases scored {design['repeats']} time(s) by runs that did not see it, N and "
                f"{scale['val']} validation cases drawn inside each fold's training part; ")
    return (f"× seeds {', '.join(map(str, scale['seeds']))}; {scale['test']} fixed test and {scale['val']} validation "
            "cases; ")


def _control_lines(said: Reading, checks: Mapping[str, Any], *, trained_on: str) -> list[str]:
    """The controls' lines, after one saying that no positive control ran where none did."""
    lines = [control_line(r, said, trained_on=trained_on) for r in said.contrasts if r.kind != "question"]
    if said.plumbing or any(r.kind == "positive" for r in said.contrasts):
        return lines
    why = ""
    if "supervised" in checks:
        why = f" ({checks['supervised']})"
    return [f"**No positive control ran**{why}: the study's sensitivity is not shown, so no null below is read as "
            f"evidence (\"{Verdict.UNSHOWN.value}\").", *lines]


def write_report(out: Path, info: Mapping[str, Any], scored: Outputs, *, n_boot: int, looks: Looks = Looks(),
                 head_start: Outputs | None = None) -> Path:
    """``<out>/report/``: README.md, report.json, contrasts.json and the plots (SVG) of a finished study, from its
    record ``info`` and the transfer stage's rows ``scored`` (``head_start``: the same runs' rows at --head-start's
    step, read by the same rules): read once (`asa.study.readings.read`, the primary over the ``looks`` taken), then
    drawn and written."""
    folder = out / "report"
    info = {**info, "pretraining": sorted(info.get("pretraining", []), key=declared_order)}  # not --arms' order
    said = read(scored.scores, info, n_boot=n_boot, looks=looks)
    early = None
    if head_start is not None:
        early = read(head_start.scores, info, n_boot=n_boot, looks=looks)
    plots, contrasts = figures(info, scored.rows, said), said.dicts()
    sc, checks, design = info["scale"], info["checks"], info.get("design")
    trained_on = _trained_on(design)
    controls = _control_lines(said, checks, trained_on=trained_on)
    pretraining_md, flags = pretraining_lines(info.get("pretraining", []), said)
    budget = budget_line(info.get("pilot") or {}, info["steps"])
    top = _top_lines(said, info)
    if top:
        top.append("")
    looks_said = []
    if (line := looks_line(said.looks)) is not None:
        looks_said = [line, ""]
    head_start_said = []
    if early is not None:
        head_start_said = head_start_lines(early, info["head_start"], info["steps"], trained_on=trained_on)
    table = "No contrast had both arms."
    if contrasts:
        table = markdown_table(*contrast_cells(said))
    probes_said = []
    if said.probes is not None:
        probes_said = ["## Frozen probes before fine-tuning", "", *probe_lines(said.probes)]
    fused = []
    if info.get("fused"):
        fused = ["Fine-tuning ran fused (--fused): each draw's runs trained as one unit, so a run's wall time is its "
                 "unit's shared out evenly among its runs, not a time measured alone.", ""]
    instruments = [*controls, export_line(info.get("pretraining", [])), *flags, checks.get("cohort"),
                   _overlap_line(checks["overlap"]), *checks["channels"], *checks.get("skull", []),
                   checks.get("supervised"), budget]

    def figure(name: str, *text: str) -> list[str]:  # a plot the page has, after the lines that introduce it
        if name not in plots:
            return []
        return [*text, f"![{name.removesuffix('.svg')}]({name})", ""]

    lines = [
        f"# Does pretraining help? ({info['network']}, {info['scale_name']} scale)", "",
        machine_line(info["machine"], info["finished"]), "",
        _endpoint_line(said), "",
        *top, *looks_said,
        f"Crop {sc['crop']}³; N = {', '.join(map(str, sc['cases']))} labeled cases " + _design_phrase(sc, design)
        + f"{steps_phrase(info.get('pretraining', []))}; minimum effect {said.min_effect:g} Dice. {_recipe_line(info)}",
        "", draws_line(info, scored.budgets), "",
        "## Answers", "",
        *family_lines(said), *answer_lines(said), *head_start_said,
        "## The instruments", "",
        *(f"- {line}" for line in instruments if line), "",
        "## Contrasts", "", "Paired by N, seed and test case; 95 % CI: the crossed random-effects interval "
        "(asa.eval.random_effects); bootstrap CI: the seed × case percentile bootstrap of the endpoint "
        f"({n_boot} resamples), shown, not read; p: the interval's two-sided p of the endpoint, Holm's in "
        "brackets for the exploratory questions; bound: what its one-sided 95 % bounds exclude.", "",
        table, "",
        *figure("contrasts.svg"),
        "## Dice against N", "", "![dice vs N](dice_vs_n.svg)", "",
        *figure("classes.svg", "Per class (Δ Dice of each arm to its own twin, as in the answers: asa-coord to scratch "
                "with the coordinate channel, every other arm to scratch; 95 % CI):", ""),
        "## The budget (the pilot)", "", budget or "No pilot.", "", *figure("pilot.svg"),
        "## Pretraining", "", pretraining_md, "",
        *probes_said,
        *figure("pretraining.svg"),
        *figure("weights.svg", "The loss weights' spread (per run: the coefficient of variation of its attentive loss "
                "weights and their effective share, (Σp)² / (n·Σp²); 0 and 1 for uniform weights):", ""),
        "## Cost", "", markdown_table(*cost_cells(info, scored.budgets)), "",
        *fused,
        "## Transfer (every arm)", "", scored.markdown, "",
        "Commands:", "", "```", *info["commands"], "```", ""]
    for name, svg in plots.items():
        atomic_write_text(folder / name, svg)
    atomic_write_json(folder / "contrasts.json", contrasts)
    record = {**info, "looks": dataclasses.asdict(said.looks), "contrasts": contrasts, "plots": sorted(plots)}
    if early is not None:
        atomic_write_json(folder / "contrasts-head-start.json", early.dicts())
        record["head_start_contrasts"] = early.dicts()
    atomic_write_json(folder / "report.json", record)
    atomic_write_text(folder / "README.md", "\n".join(lines))
    return folder
