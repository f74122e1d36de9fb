"""asa-study's page: README.md, its SVG plots and report.json; what a number may be read as is `asa.study.readings`'."""

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
from asa.study.probes import probe_lines
from asa.study import arms as declared
from asa.study.readings import (ALPHA, INCONCLUSIVE, KEYS, LESION_KEY, LEVEL, NOT_READ, UNREADABLE, UNSHOWN, Looks,
                                Reading, negative_small, read, unfinished)
from asa.study.tables import PLATEAU_TOL, Outputs, declared_order, svg_plot

# how often a true effect of the printed MDE's size is detected, over the simulated designs of docs/studies.md
# ("Power with replicated pretraining runs": the median printed MDE of each of its rows)
PRINTED_MDE_POWER = (0.61, 0.82)


def mde_line(primary: Mapping[str, Any], *, min_effect: float, looks: Looks) -> list[str]:
    """The primary's minimum detectable effect from the study's own variance (aimed at 80 % power, two-sided at the
    primary's error rate over its ``looks``), printed as the estimate it is."""
    interval, more = primary["interval"], primary.get("mde_more") or {}
    comps, levels = interval["components"] or {name: v for name, v, _ in interval["parts"]}, interval["levels"]
    what = "variance components" if interval["components"] else "the variance parts of the mean"
    parts = ", ".join(f"{k} {v:.2g}" for k, v in comps.items())
    return [f"Minimum detectable effect of the primary, estimated from this study's own variance (aimed at 80 % power, "
            f"two-sided {100 * looks.alpha:.4g} %, on its interval; {what} {parts}): "
            f"**{primary['mde']:.3f} {primary['endpoint_label']}** (an estimate: in simulated studies a true effect of "
            f"the printed size is detected {PRINTED_MDE_POWER[0]:.0%}–{PRINTED_MDE_POWER[1]:.0%} of the time, not 80 %)"
            + (f"; with twice the labeled draws ({2 * levels['seed']} seeds) {more['seeds']:.3f}, with twice the test "
               f"cases ({2 * levels['case']}) {more['cases']:.3f}" if more else "")
            + (f", with twice the pretraining runs ({2 * levels['pretraining']}) {more['pretraining runs']:.3f}"
               if "pretraining runs" in more else "")
            + f". The minimum effect read as an effect is {min_effect:g}"
            + (": a true gain of that size would mostly go undetected here." if primary["mde"] > min_effect else "."),
            ""]


def control_line(row: Mapping[str, Any], *, min_effect: float, read: bool, trained_on: str, primary_mde: float) -> str:
    """A control's reading: the negative shown small by its bound (a CI touching 0 is not), the positive's size."""
    ci = f"Δ {row['endpoint_label']} {_ci(row[row['endpoint']])} at N = {row['n']}"
    if not read:  # its kind: positive or negative
        return f"{row['kind'].capitalize()} control ({row['arm']} − {row['reference']}): {ci}."
    if row["kind"] == "positive":
        what = f"an encoder trained with labels on {trained_on}"
        if row["verdict"] != "helped":
            return (f"**Positive control did not move** ({what}; {ci}; a move is a CI above 0 and at least "
                    f"{min_effect:g} Dice): it did not beat scratch, so this study cannot show what pretraining "
                    "gives; every null below reads not interpretable.")
        if not primary_mde <= row[row["endpoint"]][0]:
            return (f"Positive control moved, as it must ({what}; {ci}), but the primary question's own minimum "
                    "detectable effect is " + ("not measured" if math.isnan(primary_mde) else f"{primary_mde:.3f}")
                    + ": this study's primary would not reliably see a gain of the control's size"
                    + ("" if math.isnan(primary_mde) else f", only one of {primary_mde:.3f} or more") + ".")
        return (f"Positive control moved, as it must ({what}; {ci}): the primary question can detect a gain of this "
                f"size (its minimum detectable effect {primary_mde:.3f}).")
    if row["verdict"] == "helped":
        return (f"**Negative control helped** ({ci}): pretraining on pure noise beat scratch, so a gain of the "
                "pretrained arms over scratch may be the recipe's (initialisation scale, schedule), not what they "
                "learned from the scans; no such gain is read below.")
    if negative_small(row, min_effect=min_effect):
        return f"Negative control shown small, as it must be ({ci}; {row['bound']}, under {min_effect:g})."
    return (f"**Negative control not shown small** ({ci}; its one-sided 95 % bound allows gains up to "
            f"{row['bound90'][1]:+.3f}, not under the minimum effect {min_effect:g}): an initialisation effect of "
            "that size is not excluded, so no gain of a pretrained arm over scratch is read below.")


def reading(row: Mapping[str, Any], *, min_effect: float) -> str:
    """A contrast's verdict as the page prints it: the verb, or why there is none."""
    v, why = row["verdict"], row.get("why")
    if why == "holm":
        return (f"{INCONCLUSIVE} (an effect is not shown across the family: the test of no effect at the family's "
                f"{100 * ALPHA:g} % gives Holm p = {row['p_holm']:.3f})")
    if v != "no difference":
        return f"{v} ({why})" if why else v
    return "no difference this study can detect" + (f" (smaller than the minimum effect {min_effect:g} Dice)"
                                                     if why == "minimum effect" else "")


def looks_line(looks: Looks) -> str | None:
    """Why the primary is read above 95 %: the looks it is read over, said with the extensions after a look."""
    if looks.count == 1:
        return None
    why = (f"The study was extended after a look (at {'; '.join(looks.extended)})" if looks.extended
           else f"The study planned {looks.planned} looks (--looks)")
    return (f"{why}: the primary is read at {looks.level} (Bonferroni over {looks.count} looks), its bound "
            f"one-sided at {looks.level}; its CI and bound below are those.")


def _ci(values: Sequence[float]) -> str:
    return "{:+.3f} [{:+.3f}, {:+.3f}]".format(*values)  # [value, low, high]


def question_line(row: Mapping[str, Any], *, min_effect: float) -> str:
    """One answer: the question, N, the verdict, its bound and Δ; the other scores beside it as information."""
    key = row["endpoint"]
    return (f"{row['question']} At N = {row['n']}"
            + (f", read at {row['level']} (Bonferroni over {row['looks']} looks)" if "looks" in row else "")
            + f": {reading(row, min_effect=min_effect)}; "
            # read on Holm's p, its bound answers this contrast alone, not the family
            + ("its bound, this contrast alone (uncorrected): " if "p_holm" in row and row["bound"] != NOT_READ else "")
            + f"{row['bound']} (Δ {row['endpoint_label']} {_ci(row[key])}"
            + (f"; Holm p = {row['p_holm']:.3f}" if "p_holm" in row else "") + ")"
            + "".join(f"; Δ {label} {_ci(row[k])} (shown, not read)" for k, label in (KEYS[0], LESION_KEY)
                      if k != key and k in row)
            + ("; " + "; ".join(row["flags"]) + ": its contrasts read that encoder" if row.get("flags") else "") + ".")


def contrast_cells(said: Reading) -> tuple[list[str], list[list[str]]]:
    """The contrast table's head and cells: every contrast's Δs with their CIs, the bootstrap's, p (Holm's), its bound
    and its verdict."""
    head = ["question", "arm − reference", "N", "role", *(f"Δ {label} [95 % CI]" for _, label in said.keys),
            "bootstrap CI", "p (Holm)", "bound (one-sided 95 %)", "verdict"]
    cells = [[r["question"], f"{r['arm']} − {r['reference']}", str(r["n"]),
              r.get("role", "—") + (f" (CI and bound at {r['level']}: {r['looks']} looks)" if "looks" in r else ""),
              *(_ci(r[k]) for k, _ in said.keys), "[{1:+.3f}, {2:+.3f}]".format(*r["bootstrap"][said.endpoint[0]]),
              "—" if math.isnan(r.get("p", math.nan)) else f"{r['p']:.3f}"
              + (f" ({r['p_holm']:.3f})" if "p_holm" in r else ""),
              r["bound"], reading(r, min_effect=said.min_effect)] for r in said.contrasts]
    return head, cells


def family_lines(said: Reading) -> list[str]:
    """How the answers are read: the primary, how many questions on which score, the bar of each, their bounds."""
    contrasts, primary, min_effect, keys = said.contrasts, said.primary, said.min_effect, [k for _, k in said.keys]
    questions = [r for r in contrasts if r["kind"] == "question"]
    others = [r for r in questions if r["role"] == "exploratory"]
    folded = any("draw" in r.get("interval", {}).get("levels", {}) for r in contrasts)
    text = (f"How the answers are read: this page reads {len(questions)} question(s) "
            f"({len({r['question'] for r in questions})} contrast(s) × {len({r['n'] for r in questions})} N) and "
            f"{len({r['arm'] for r in contrasts if r['kind'] != 'question'})} control(s) at each N, on {keys[0]} alone"
            + (f" ({' and '.join(keys[1:])} shown as information: no verdict is read from them)" if keys[1:] else "")
            + ". Every interval is the crossed random-effects interval of "
            + ("the cross-validated draws × test cases" if folded else "seeds × test cases")
            + " (ANOVA mean squares; with replicated pretraining runs the runs' component is a part of its own, "
            "and from 3 runs and 3 seeds the parts share one t; the seed × case bootstrap beside it in the table is "
            "too narrow with 2–3 seeds). ")
    text += (f"The primary question, named before the data: {primary['arm']} − {primary['reference']} at the "
             f"smallest N ({primary['n']}), read at {said.looks.level} (its CI"
             + (f"; Bonferroni over {said.looks.count} looks" if said.looks.count > 1 else "") + "). "
             if primary is not None else
             "There is no primary question: no pretrained arm was scored against scratch. ")
    text += (f"The other {len(others)} are exploratory: each is read on its interval's two-sided p after a Holm "
             f"correction across those {len(others)} (family-wise error {100 * ALPHA:g} %), the test of no effect "
             "across the family; its CI and its bound are shown uncorrected and answer that contrast alone, so one "
             "off 0 alone but not after Holm reads inconclusive. " if others else "")
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


def pretraining_lines(runs: Sequence[Mapping[str, Any]]) -> tuple[str, list[str]]:
    """The pretraining table (each run's export: its step, held-out loss and weight norm) and one flag per run whose
    export is unfinished (`asa.study.readings.unfinished`)."""
    cells = []
    for r in runs:
        curve = r.get("val_curve") or []
        level = _export_level(r)
        export = "—"  # a record written before the export was read
        if "export_step" in r:
            export = f"{r['export_step']} ({r['export_progress']:.0%} of the summed lr): {r['export_loss']:.4f}"
        cells.append([r["run"], str(r["cohort"]), str(r["steps"]), f"{r['seconds']:.0f}",
                      f"{curve[0][1]:.4f} → {curve[-1][1]:.4f}" if curve else "— → —", export, level,
                      *("—" if math.isnan(x) else f"{x:.2f}"
                        for x in (r.get("norm_ratio", math.nan), r.get("weights_cv", math.nan),
                                  r.get("weights_share", math.nan)))])
    head = ["run", "cohort", "steps", "wall time (s)", "held-out loss first → last",
            "exported at step: held-out loss", "up to the export (last quarter)", "encoder norm / fresh",
            "loss weights CV", "effective share"]
    return markdown_table(head, cells), [f"{unfinished(r)}; its contrasts read an unfinished encoder."
                                         for r in runs if r.get("plateau") is False]


def _export_level(run: Mapping[str, Any]) -> str:
    """What the plateau check read up to a run's export, in words, with the drop it read and any rise after its
    lowest round (a run's own tolerance; older records: the fine-tuning budget check's)."""
    if run.get("early"):
        return "exported in its first eighth"
    level = {None: "not checked (< 4 rounds)", True: "levelled", False: "still falling"}[run.get("plateau")]
    if not math.isnan(run.get("loss_drop", math.nan)):
        level += f" ({run['loss_drop']:.1%})"
    if run.get("loss_rise", 0.0) >= run.get("tol", PLATEAU_TOL):  # NaN (short runs): not rising
        level += f"; its lowest round {run['loss_rise']:.1%} under the export's"
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


def cost_cells(info: Mapping[str, Any], budgets: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """The cost table's head and cells, seconds per arm: each pretraining run's wall time, fine-tuning's mean per
    run."""
    rows = [[r["run"], "pretraining", f"{r['seconds']:.0f}", f"{r['steps'] / r['seconds']:.2f}"
             if r["seconds"] and not math.isnan(r["seconds"]) else "—"] for r in info.get("pretraining", [])]
    times = info.get("runs", {})
    if (seconds := times.get("pilot")) is not None:
        rows.append(["pilot", "fine-tuning (pilot)", f"{seconds:.0f}", "—"])
    # the positive control's runs: one, or one per cross-validated draw (a record before "controls": the one)
    controls = [times[name] for name in info.get("controls", [declared.SUPERVISED]) if name in times]
    if len(controls) == 1:
        rows.append([declared.SUPERVISED, "fine-tuning (control)", f"{controls[0]:.0f}", "—"])
    elif controls:
        rows.append([declared.SUPERVISED, f"fine-tuning (control, {len(controls)} runs)",
                     f"{np.mean(controls):.0f} per run", "—"])
    for arm in dict.fromkeys(str(b["arm"]) for b in budgets):
        runs = [b for b in budgets if str(b["arm"]) == arm]
        secs = [float(b["train_seconds"]) for b in runs if not math.isnan(float(b["train_seconds"]))]
        rows.append([arm, f"fine-tuning ({len(runs)} runs)", f"{np.mean(secs):.0f} per run" if secs else "—",
                     f"{np.mean([int(b['steps']) for b in runs]) / np.mean(secs):.2f}" if secs else "—"])
    return ["arm", "what", "wall time (s)", "steps / s"], rows


def draws_line(info: Mapping[str, Any], budgets: Sequence[Mapping[str, Any]]) -> str:
    """What each arm's answers rest on: its distinct labeled draws and its pretraining runs."""
    drawn = {(str(b["arm"]), frozenset(b["train"].split())) for b in budgets  # each arm's distinct draws
             if isinstance(b.get("train"), str) and b["train"]}
    draws = sorted(set(Counter(arm for arm, _ in drawn).values()))
    runs = Counter(str(r["arm"]) for r in info.get("pretraining", []))
    return ("Distinct labeled draws per arm: " + ('–'.join(map(str, draws)) if draws else
                                                  "not recorded (runs scored before their cases were kept)")
            + "; pretraining runs per arm: " + (", ".join(f"{arm} {k}" for arm, k in runs.items()) if runs else "none")
            + (" (one run each: the intervals carry labeled draws and test cases, not the spread between "
               "pretraining runs, so an answer is about these encoders more than about their method)"
               if runs and max(runs.values()) == 1 else "") + ".")


def steps_phrase(runs: Sequence[Mapping[str, Any]], *, where: bool = True) -> str:
    """"pretraining 5 steps per run", or "pretraining 3–5 steps per run" (``where``: and where each run's is)."""
    if not (steps := sorted({int(r["steps"]) for r in runs})):
        return "no pretraining run"
    return (f"pretraining {'–'.join(map(str, sorted({steps[0], steps[-1]})))} steps per run"
            + (" (each run's count in the pretraining table)" if where and len(steps) > 1 else ""))


def figures(info: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], said: Reading) -> dict[str, str]:
    """The page's plots (SVG) by file name: Dice against N (``rows``: one per arm and N), the contrasts, the
    classes, the pilot's curve, the pretraining curves and the loss weights' spread."""
    runs, pilot, classes = info.get("pretraining", []), info.get("pilot") or {}, info.get("classes", [])
    plots = {"dice_vs_n.svg": svg_plot(rows, xlabel="labeled cases N", ylabel="mean Dice (± sd over seeds)",
                                       dodge=True)}
    for name, shown, series in (("contrasts.svg", said.contrasts, [(k, label, f"Δ {label}") for k, label in said.keys]),
                                ("classes.svg", said.classes, [(f"Dice_{c}", c, f"Δ Dice {c}") for c in classes])):
        if shown:
            plots[name] = interval_plot([f"{r['arm']} − {r['reference']}, N = {r['n']}" for r in shown],
                                        {label: [tuple(r[k]) for r in shown] for k, label, _ in series},
                                        xlabels={label: x for _, label, x in series}, zero=True)
    if pilot.get("curve"):
        plots["pilot.svg"] = line_plot({"scratch (pilot)": [(s, d, 0.0) for s, d in pilot["curve"]]}, xlabel="step",
                                       ylabel="validation Dice", categorical=False)
    if curves := {r["run"]: [(s, v, 0.0) for s, v in r["val_curve"]] for r in runs if r["val_curve"]}:
        plots["pretraining.svg"] = line_plot(curves, xlabel="step", ylabel="held-out masked loss", categorical=False,
                                             clip=None)
    if weighted := [r for r in runs if not math.isnan(r.get("weights_cv", math.nan))]:
        plots["weights.svg"] = interval_plot([r["run"] for r in weighted],
                                             {"loss weights CV": [(r["weights_cv"], None, None) for r in weighted],
                                              "effective share": [(r["weights_share"], None, None) for r in weighted]})
    return plots


def answer_lines(said: Reading) -> list[str]:
    """A reading's answers, the primary first, then its minimum detectable effect."""
    ordered = sorted((r for r in said.contrasts if r["kind"] == "question"), key=lambda r: r["role"] != "primary")
    return [*(f"- {'**Primary:** ' if r['role'] == 'primary' else ''}{question_line(r, min_effect=said.min_effect)}"
              for r in ordered),
            *([] if ordered else ["- No pretraining arm was scored."]), "",
            *([] if math.isnan(said.mde) else mde_line(said.primary, min_effect=said.min_effect, looks=said.looks))]


def head_start_lines(said: Reading, step: int, end: int, *, trained_on: str) -> list[str]:
    """The section of the same questions read at the head start: every run's state kept at ``step`` of its
    ``end``, read by the same rules as the end point."""
    controls = [control_line(r, min_effect=said.min_effect, read=said.interpretable, trained_on=trained_on,
                             primary_mde=said.mde) for r in said.contrasts if r["kind"] != "question"]
    return [f"## At the head start (step {step} of {end})", "",
            f"The same runs, each scored again from its state kept at step {step} (trainer.keep_steps), in the "
            f"middle of its schedule: a gain here is a head start, the answers above read where the runs end. The "
            "same questions, rules, controls and looks as above (the Dice with the encoder zeroed is scored at the "
            "end point only).", "", *answer_lines(said), *(f"- {line}" for line in controls), ""]


def write_report(out: Path, info: Mapping[str, Any], scored: Outputs, *, n_boot: int, looks: Looks = Looks(),
                 head_start: Outputs | None = None) -> Path:
    """``<out>/report/``: README.md, report.json, contrasts.json and the plots (SVG) of a finished study, from its
    record ``info`` and the transfer stage's rows ``scored`` (``head_start``: the same runs' rows at --head-start's
    step, read by the same rules): read once (`asa.study.readings.read`, the primary over the ``looks`` taken), then
    drawn and written."""
    folder = out / "report"
    info = {**info, "pretraining": sorted(info.get("pretraining", []), key=declared_order)}  # not --arms' order
    said = read(scored.scores, info, n_boot=n_boot, looks=looks)
    early = None if head_start is None else read(head_start.scores, info, n_boot=n_boot, looks=looks)
    plots, contrasts, min_effect = figures(info, scored.rows, said), said.contrasts, said.min_effect
    pilot, sc, checks, design = info.get("pilot") or {}, info["scale"], info["checks"], info.get("design")
    trained_on = ("each draw's own training part (the cases the arms draw N from, trained for the pilot's steps): it "
                  "shows that a better start on the same cases moves the fine-tuning, not transfer from other cases"
                  if design else "labeled cases no other run sees")
    controls = [control_line(r, min_effect=min_effect, read=said.interpretable, trained_on=trained_on,
                             primary_mde=said.mde) for r in contrasts if r["kind"] != "question"]
    if not said.plumbing and not any(r["kind"] == "positive" for r in contrasts):
        why = f" ({checks['supervised']})" if "supervised" in checks else ""
        controls.insert(0, f"**No positive control ran**{why}: the study's sensitivity is not shown, so no null below "
                        f"is read as evidence (\"{UNSHOWN}\").")
    pretraining_md, flags = pretraining_lines(info.get("pretraining", []))
    budget = (f"The pilot (scratch, constant lr, {pilot.get('pilot_steps')} steps) "
              + ("did not learn the task (its best validation Dice stayed under the floor, so it has no level to "
                 "find)" if pilot.get("learned") is False else f"levelled off at step {pilot.get('budget')}"
                 if pilot.get("converged") else "was still rising at its end")
              + f"; every arm fine-tunes {info['steps']} steps"
              + (f" — held there by --budget-cap, below the {pilot.get('asked')} the pilot asked for: the arms are "
                 "compared before the scratch twin levels off, not at their end points" if pilot.get("capped") else "")
              + ".") if pilot else ""
    recipe = (f"Recipe: {info['recipe']} for every arm" + (f", the encoder at {info['encoder_lr_scale']} × the "
              "decoder's lr for every arm (pretrained or not)" if info["recipe"] == "adamw" else
              " (nnU-Net's PretrainedTrainer: 1e-3 for a network from a pretrained file, 1e-2 from scratch)") + ".")
    overlap = (f"Overlap of the pretraining cohort with the labeled cases: {'; '.join(checks['overlap']['lines'])}"
               + (" — **accepted with --accept-overlap: these cases' scores are not held out.**"
                  if checks["overlap"].get("accepted") else ""))
    top = (["**Plumbing check: no answer can come from this page.** The quick scale runs a few steps per run "
            f"({steps_phrase(info.get('pretraining', []), where=False)}, {info['steps']} fine-tuning steps per "
            "arm): it shows that every stage runs and writes its outputs, not whether pretraining helps, so no "
            "verdict is read below. Run --scale cpu or --scale gpu for an answer."] if said.plumbing else
           [f"**Not interpretable**: {' '.join(said.faults)} Every answer below reads \"{UNREADABLE}\": its numbers "
            "are shown, no verdict is read from them."] if said.faults else
           [f"**{what} are not interpretable** at N = {', '.join(map(str, sorted(by_n)))}: "
            f"{'; '.join(dict.fromkeys(by_n.values()))}." for what, by_n in
            (("Nulls", said.controls["nulls"]), ("Gains over scratch", said.controls["gains"])) if by_n])

    def figure(name: str, *text: str) -> list[str]:  # a plot the page has, after the lines that introduce it
        return [*text, f"![{name.removesuffix('.svg')}]({name})", ""] if name in plots else []

    lines = [
        f"# Does pretraining help? ({info['network']}, {info['scale_name']} scale)", "",
        machine_line(info["machine"], info["finished"]), "",
        f"**Primary endpoint: {said.endpoint[1]}**, named before any training"
        + (" (the lesion classes named with --lesion-classes)" if said.endpoint[0] == LESION_KEY[0] else
           " (the set's one foreground class)" if said.endpoint[1] != KEYS[0][1] else
           " (mean Dice over every class: no --lesion-classes and more than one class)") + ".", "",
        *top, *([""] if top else []),
        *([line, ""] if (line := looks_line(said.looks)) else []),
        f"Crop {sc['crop']}³; N = {', '.join(map(str, sc['cases']))} labeled cases " + (
            f"by {design['folds']}-fold cross-validation × {design['repeats']} repeat(s): every one of the "
            f"{design['cases']} labeled cases scored {design['repeats']} time(s) by runs that did not see it, N and "
            f"{sc['val']} validation cases drawn inside each fold's training part; " if design else
            f"× seeds {', '.join(map(str, sc['seeds']))}; {sc['test']} fixed test and {sc['val']} validation cases; ")
        + f"{steps_phrase(info.get('pretraining', []))}; minimum effect {min_effect:g} Dice. {recipe}", "",
        draws_line(info, scored.budgets), "",
        "## Answers", "",
        *family_lines(said), *answer_lines(said),
        *([] if early is None else head_start_lines(early, info["head_start"], info["steps"], trained_on=trained_on)),
        "## The instruments", "",
        *(f"- {line}" for line in [*controls, export_line(info.get("pretraining", [])), *flags, checks.get("cohort"),
                                   overlap, *checks["channels"],
                                   *checks.get("skull", []), checks.get("supervised"), budget] if line), "",
        "## Contrasts", "", "Paired by N, seed and test case; 95 % CI: the crossed random-effects interval "
        "(asa.eval.random_effects); bootstrap CI: the seed × case percentile bootstrap of the endpoint "
        f"({n_boot} resamples), shown, not read; p: the interval's two-sided p of the endpoint, Holm's in "
        "brackets for the exploratory questions; bound: what its one-sided 95 % bounds exclude.", "",
        markdown_table(*contrast_cells(said)) if contrasts else "No contrast had both arms.", "",
        *figure("contrasts.svg"),
        "## Dice against N", "", "![dice vs N](dice_vs_n.svg)", "",
        *figure("classes.svg", "Per class (Δ Dice of each arm to its own twin, as in the answers: asa-coord to scratch "
                "with the coordinate channel, every other arm to scratch; 95 % CI):", ""),
        "## The budget (the pilot)", "", budget or "No pilot.", "", *figure("pilot.svg"),
        "## Pretraining", "", pretraining_md, "",
        *(["## Frozen probes before fine-tuning", "", *probe_lines(info["probes"], min_effect=min_effect)]
          if info.get("probes") else []),
        *figure("pretraining.svg"),
        *figure("weights.svg", "The loss weights' spread (per run: the coefficient of variation of its attentive loss "
                "weights and their effective share, (Σp)² / (n·Σp²); 0 and 1 for uniform weights):", ""),
        "## Cost", "", markdown_table(*cost_cells(info, scored.budgets)), "",
        *(["Fine-tuning ran fused (--fused): each draw's runs trained as one unit, so a run's wall time is its unit's "
           "shared out evenly among its runs, not a time measured alone.", ""] if info.get("fused") else []),
        "## Transfer (every arm)", "", scored.markdown, "",
        "Commands:", "", "```", *info["commands"], "```", ""]
    for name, svg in plots.items():
        atomic_write_text(folder / name, svg)
    atomic_write_json(folder / "contrasts.json", contrasts)
    record = {**info, "looks": dataclasses.asdict(said.looks), "contrasts": contrasts, "plots": sorted(plots)}
    if early is not None:
        atomic_write_json(folder / "contrasts-head-start.json", early.contrasts)
        record["head_start_contrasts"] = early.contrasts
    atomic_write_json(folder / "report.json", record)
    atomic_write_text(folder / "README.md", "\n".join(lines))
    return folder
