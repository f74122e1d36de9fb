"""The report of ``asa-study``: one page (``<out>/report/README.md`` with SVG plots beside it, and ``report.json``)
that reads the study's numbers in order — the instruments first (the checks, the pilot, each pretraining run's
held-out loss, the controls), then each question as a paired contrast of mean Dice with its CI and a verdict.

How a verdict is read: one primary question, named before the data (pretrained − scratch at the smallest N: asa,
else mae, else the first --encoder arm), is read at 95 % (its seed × case bootstrap CI); every other question is
exploratory, read on its two-sided bootstrap p after a Holm correction across them. A contrast is "helped" or "hurt"
only when it clears that bar and its estimate is at least the minimum effect (``--min-effect``, Dice); else "no
difference this study can detect". When an instrument fails (the scratch twin learns nothing, the positive control
does not move, the negative control helps) every verdict reads "not interpretable"; the quick scale, a few steps per
run, reads none."""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from asa.eval import bootstrap_p, seed_case_bootstrap, seed_case_means
from asa.eval.plots import interval_plot, line_plot
from asa.io import atomic_write_json, atomic_write_text
from asa.study import statistics, transfer
from asa.study.common import machine_line, markdown_table

__all__ = ["CONTRASTS", "contrast_rows", "holm", "instrument_faults", "read_family", "verdict", "write_report"]

# the study's questions as paired contrasts (arm, reference, the question, kind): {c} / {s} stand for the largest
# and the smallest cohort; a contrast is read when both of its arms ran. kind: "positive" (a control that must
# move), "negative" (one that must not help), "question". An arm's first contrast is against its twin (the arm that
# differs from it by its encoder alone).
CONTRASTS = (
    ("supervised", "scratch", "the positive control: an encoder trained with labels on other cases − scratch", "positive"),
    ("noise-c{c}", "scratch", "the negative control: mae's recipe on pure noise − scratch", "negative"),
    ("mae-c{c}", "scratch", "does masked pretraining help? (mae − scratch)", "question"),
    ("asa-c{c}", "scratch", "does ASA's pretraining help? (asa − scratch)", "question"),
    ("asa-c{c}", "mae-c{c}", "does the attentive loss add to mae? (asa − mae)", "question"),
    ("mae-c{c}", "noise-c{c}", "did mae learn something from the scans? (mae − the same recipe on noise)", "question"),
    ("asa-coord-c{c}", "scratch-coord", "does ASA's pretraining help an encoder with the coordinate channel? "
     "(asa-coord − scratch with the channel)", "question"),
    ("scratch-coord", "scratch", "does the coordinate channel help without pretraining? (scratch with it − scratch)",
     "question"),
    ("asa-coord-c{c}", "asa-c{c}", "does the coordinate channel help a pretrained encoder? (asa-coord − asa, both "
     "pretrained)", "question"),
    ("mae-c{c}", "mae-c{s}", "does a larger cohort help mae? (largest − smallest cohort)", "question"),
    ("asa-c{c}", "asa-c{s}", "does a larger cohort help asa? (largest − smallest cohort)", "question"),
)
# the primary question: the first of these arms that ran − scratch at the smallest N (else the first --encoder arm)
PRIMARY = ("asa-c{c}", "mae-c{c}")
SCRATCH = "scratch"
# arm (its cohort left out) -> its twin, the reference of its first contrast (reversed: the first one stays)
TWINS = {arm.removesuffix("-c{c}"): ref for arm, ref, _, _ in reversed(CONTRASTS)}
KEYS = (("Dice_mean", "mean Dice"), ("NSD_mean", "NSD"))
LESION_KEY = (statistics.LESION, "lesion Dice")  # with --lesion-classes: the mean Dice of those classes
ALPHA = 0.05  # the primary question's CI is 1 − ALPHA; the exploratory questions' family-wise error rate (Holm)
LEVEL = f"{100 * (1 - ALPHA):g} %"
PLUMBING, UNREADABLE = "— (plumbing check)", "not interpretable"


def keys_of(scores: Sequence[Mapping[str, Any]]) -> tuple[tuple[str, str], ...]:
    """The contrasted scores: mean Dice and NSD, and the lesion Dice when the study names lesion classes."""
    return KEYS + ((LESION_KEY,) if scores and all(LESION_KEY[0] in r for r in scores) else ())


def twin_of(arm: str) -> str:
    """The arm ``arm`` is compared with per class: its twin (`TWINS`; scratch for an --encoder arm)."""
    return TWINS.get(re.sub(r"-c\d+$", "", arm), SCRATCH)


def verdict(low: float, high: float, value: float = math.nan, *, min_effect: float = 0.0) -> str:
    """What a paired difference's CI says: ``helped`` (above 0), ``hurt`` (below 0) — each only when the estimate
    ``value`` is at least ``min_effect`` in size — or ``no difference``; ``not measured`` without a CI."""
    if math.isnan(low) or math.isnan(high):
        return "not measured"
    if not (low > 0 or high < 0) or (not math.isnan(value) and abs(value) < min_effect):
        return "no difference"
    return "helped" if low > 0 else "hurt"


def why_no_difference(low: float, high: float, value: float, *, min_effect: float) -> str | None:
    """Why a contrast reads no difference: its CI holds 0 (``"ci"``) or its estimate is under ``min_effect``."""
    if math.isnan(low) or math.isnan(high):
        return None
    return "minimum effect" if (low > 0 or high < 0) and abs(value) < min_effect else "ci"


def holm(p: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the given order (Holm 1979): the i-th smallest of the m p-values times
    (m − i + 1), made non-decreasing along that order and capped at 1, so that "adjusted p < α" rejects what Holm's
    procedure rejects at family-wise level α. NaN stays NaN and does not count in m."""
    order = sorted((i for i, x in enumerate(p) if not math.isnan(x)), key=lambda i: p[i])
    out, running = [math.nan] * len(p), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p[i]))
        out[i] = running
    return out


def contrast_rows(scores: Sequence[Mapping[str, Any]], cohorts: Sequence[int], encoders: Sequence[str] = (), *,
                  n_boot: int, min_effect: float = 0.01) -> list[dict[str, Any]]:
    """Each contrast of `CONTRASTS` (and every --encoder arm − scratch) whose two arms were scored, per N: the paired
    difference (same N, seed and test case) of each of `KEYS` with its seed × case bootstrap CI, the two-sided
    bootstrap p of its mean Dice (the same resamples, `asa.eval.bootstrap_p`) and its 95 % verdict with
    ``min_effect`` (`verdict`; `read_family` reads the questions as a family)."""
    arms = {r["arm"] for r in scores}
    table = [(a.format(c=max(cohorts), s=min(cohorts)) if cohorts else a,
              r.format(c=max(cohorts), s=min(cohorts)) if cohorts else r, q, kind) for a, r, q, kind in CONTRASTS]
    table += [(name, SCRATCH, f"does the encoder {name} help? ({name} − scratch)", "question") for name in encoders]
    rows = []
    for arm, ref, question, kind in table:
        if arm == ref or not {arm, ref} <= arms:
            continue
        for n in sorted({int(r["n"]) for r in scores}):
            row: dict[str, Any] = {"question": question, "kind": kind, "arm": arm, "reference": ref, "n": n}
            for key, _ in keys_of(scores):
                d = statistics.paired_matrix(scores, arm, ref, n, key)
                est = seed_case_bootstrap(d, n_resamples=n_boot)
                row[key] = [est.value, est.low, est.high]
                if key == "Dice_mean":
                    row["p"] = bootstrap_p(seed_case_means(d, n_resamples=n_boot))
            v, lo, hi = row["Dice_mean"]
            row["verdict"] = verdict(lo, hi, v, min_effect=min_effect)
            row["why"] = (why_no_difference(lo, hi, v, min_effect=min_effect) if row["verdict"] == "no difference"
                          else None)
            rows.append(row)
    return rows


def read_family(rows: Sequence[dict[str, Any]], cohorts: Sequence[int], encoders: Sequence[str] = (), *,
                min_effect: float, alpha: float = ALPHA) -> dict[str, Any] | None:
    """Give every contrast its role and reading, in place: the controls stay as `contrast_rows` read them (at 95 %);
    the primary question (pretrained − scratch at the smallest N: the first of `PRIMARY` that ran, else the first
    --encoder arm) keeps its 95 % verdict; every other question is exploratory: ``p_holm`` (Holm across them) and
    "helped" / "hurt" only where p_holm < ``alpha``, the CI on that side of 0 and the estimate at least
    ``min_effect``. Returns the primary row (None when no pretrained arm was scored)."""
    questions = [r for r in rows if r["kind"] == "question"]
    for r in rows:
        r["role"] = "control" if r["kind"] != "question" else "exploratory"
    names = [a.format(c=max(cohorts), s=min(cohorts)) for a in PRIMARY] if cohorts else []
    primary = None
    if questions:
        smallest = min(r["n"] for r in questions)
        for name in [*names, *encoders[:1]]:
            primary = next((r for r in questions if r["arm"] == name and r["reference"] == SCRATCH
                            and r["n"] == smallest), None)
            if primary is not None:
                primary["role"] = "primary"
                break
    others = [r for r in questions if r["role"] == "exploratory"]
    for r, adjusted in zip(others, holm([r["p"] for r in others])):
        r["p_holm"] = adjusted
        if r["verdict"] in ("helped", "hurt") and not adjusted < alpha:
            r["verdict"], r["why"] = "no difference", "holm"
    return primary


def control_line(row: Mapping[str, Any], *, min_effect: float, read: bool = True) -> str:
    """A control's reading: did it move as it must? (``read`` False: its numbers alone, no reading.)"""
    v, lo, hi = row["Dice_mean"]
    ci = f"Δ mean Dice {v:+.3f} [{lo:+.3f}, {hi:+.3f}] at N = {row['n']}"
    name = "Positive control" if row["kind"] == "positive" else "Negative control"
    if not read:
        return f"{name} ({row['arm']} − {row['reference']}): {ci}."
    if row["kind"] == "positive":
        return (f"Positive control moved, as it must ({ci}): the study can detect a gain of this size."
                if row["verdict"] == "helped" else
                f"**Positive control did not move** ({ci}; a move is a CI above 0 and at least {min_effect:g} Dice): "
                "an encoder trained with labels did not beat scratch, so this study cannot show what pretraining "
                "gives; read no null below as evidence.")
    return (f"Negative control did not help, as it must not ({ci})." if row["verdict"] != "helped" else
            f"**Negative control helped** ({ci}): pretraining on pure noise beat scratch, so a gain of the pretrained "
            "arms may be the recipe's (initialisation scale, schedule), not what they learned from the scans.")


FOUND = 0.1  # the pilot's mean test Dice under which the scratch twin is said not to learn the task


def instrument_faults(contrasts: Sequence[Mapping[str, Any]], pilot: Mapping[str, Any]) -> list[str]:
    """The instruments that failed, each one sentence: the scratch twin learns nothing (the pilot's mean test Dice
    under `FOUND`, or the pilot's record says it did not learn: every Δ is noise), the positive control did not move
    (no gain can be detected), the negative control helped (a gain may be the recipe's); a control moves when its
    verdict (`contrast_rows`: the CI off 0 and the estimate at least the minimum effect) says so."""
    faults = []
    test = pilot.get("test") or {}
    mean = float(np.mean(list(test.values()))) if test else math.nan
    if mean < FOUND:
        faults.append(f"the scratch twin does not learn the task (the pilot's mean test Dice {mean:.3f} < {FOUND}), so "
                      "every difference is noise.")
    elif pilot.get("learned") is False:  # its validation Dice (or lesion Dice) stayed under the study's floor
        best = [f"{label} {pilot[key]:.3f}" for key, label in (("best_dice", "best validation Dice"),
                                                               ("best_lesion_dice", "best lesion Dice"))
                if not math.isnan(float(pilot.get(key, math.nan)))]
        faults.append("the scratch twin does not learn the task (the pilot did not learn"
                      + (f": {', '.join(best)}, under {pilot['floor']}" if best and "floor" in pilot else "")
                      + "), so every difference is noise.")
    if any(r["kind"] == "positive" and r["verdict"] != "helped" for r in contrasts):
        faults.append("the positive control did not move, so this study cannot detect a gain of the size it gives.")
    if any(r["kind"] == "negative" and r["verdict"] == "helped" for r in contrasts):
        faults.append("the negative control helped, so a gain may be the recipe's, not what pretraining learned.")
    return faults


def reading(row: Mapping[str, Any], *, min_effect: float) -> str:
    """A contrast's verdict as the page prints it: the verb, or why there is none."""
    v = row["verdict"]
    if v != "no difference":
        return v
    why = {"minimum effect": f" (smaller than the minimum effect {min_effect:g} Dice)",
           "holm": f" (p = {row.get('p_holm', math.nan):.3f} after Holm across the exploratory questions)"}
    return "no difference this study can detect" + why.get(row.get("why"), "")


def _ci(values: Sequence[float]) -> str:
    v, lo, hi = values
    return f"{v:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def question_line(row: Mapping[str, Any], *, min_effect: float) -> str:
    """One answer: the question, N, the verdict (or why there is none) and the Δ mean Dice it was read on; the lesion
    Dice, when scored, beside it as information."""
    p = f"; Holm p = {row['p_holm']:.3f}" if "p_holm" in row else ""
    line = (f"{row['question']} At N = {row['n']}: {reading(row, min_effect=min_effect)} "
            f"(Δ mean Dice {_ci(row['Dice_mean'])}{p})")
    if LESION_KEY[0] in row:
        line += f"; Δ lesion Dice {_ci(row[LESION_KEY[0]])} (shown, not read)"
    return line + "."


def contrast_table(rows: Sequence[Mapping[str, Any]], *, min_effect: float) -> str:
    keys = [(k, label) for k, label in (*KEYS, LESION_KEY) if rows and k in rows[0]]
    head = ["question", "arm − reference", "N", "role", *(f"Δ {label} [95 % CI]" for _, label in keys),
            "p (Holm)", "verdict"]
    cells = [[r["question"], f"{r['arm']} − {r['reference']}", str(r["n"]), r.get("role", "—"),
              *(_ci(r[k]) for k, _ in keys),
              "—" if math.isnan(r.get("p", math.nan)) else f"{r['p']:.3f}"
              + (f" ({r['p_holm']:.3f})" if "p_holm" in r else ""),
              reading(r, min_effect=min_effect)] for r in rows]
    return markdown_table(head, cells, left=2)


def family_lines(contrasts: Sequence[Mapping[str, Any]], primary: Mapping[str, Any] | None, keys: Sequence[str], *,
                 min_effect: float) -> list[str]:
    """How the answers are read: the primary question, how many questions and on which score, the bar of each."""
    questions = [r for r in contrasts if r["kind"] == "question"]
    others = [r for r in questions if r["role"] == "exploratory"]
    controls = [r for r in contrasts if r["kind"] != "question"]
    shown = [label for label in keys if label != "mean Dice"]
    text = (f"How the answers are read: this page reads {len(questions)} question(s) "
            f"({len({r['question'] for r in questions})} contrast(s) × {len({r['n'] for r in questions})} N) and "
            f"{len({r['arm'] for r in controls})} control(s) at each N, on mean Dice alone"
            + (f" ({' and '.join(shown)} are shown as information: no verdict is read from them)" if shown else "")
            + ". ")
    if primary is not None:
        text += (f"The primary question, named before the data: {primary['arm']} − {primary['reference']} at the "
                 f"smallest N ({primary['n']}), read at {LEVEL} (its CI). ")
    else:
        text += "There is no primary question: no pretrained arm was scored against scratch. "
    if others:
        text += (f"The other {len(others)} are exploratory: each is read on its two-sided bootstrap p after a Holm "
                 f"correction across those {len(others)} (family-wise error {100 * ALPHA:g} %); its CI is shown "
                 "uncorrected. ")
    return [text + (f"A contrast reads as an effect (a gain or a loss) only when it clears its bar and its estimate is "
                    f"at least the minimum effect, {min_effect:g} Dice (--min-effect); anything else is no difference "
                    f"this study can detect. The controls are instruments, each read at {LEVEL} with the same "
                    "minimum effect."), ""]


def pretraining_lines(runs: Sequence[Mapping[str, Any]]) -> tuple[str, list[str]]:
    """The pretraining table and one flag per run whose held-out masked loss was still falling at its end."""
    cells, flags = [], []
    for r in runs:
        curve = r.get("val_curve") or []
        first, last = (f"{curve[0][1]:.4f}", f"{curve[-1][1]:.4f}") if curve else ("—", "—")
        # the run's own tolerance (older records: the fine-tuning budget check's); NaN (short runs): not rising
        rising = r.get("loss_rise", 0.0) >= r.get("tol", transfer.PLATEAU_TOL)
        level = {None: "not checked (< 4 rounds)", True: "levelled",
                 False: "rose from its best" if rising else "still falling"}[r.get("plateau")]
        cv, share = r.get("weights_cv", math.nan), r.get("weights_share", math.nan)
        cells.append([r["run"], str(r["cohort"]), str(r["steps"]), f"{r['seconds']:.0f}", f"{first} → {last}",
                      level + ("" if math.isnan(r.get("loss_drop", math.nan)) else f" ({r['loss_drop']:.1%})"),
                      "—" if math.isnan(cv) else f"{cv:.2f}", "—" if math.isnan(share) else f"{share:.2f}"])
        if r.get("plateau") is False and rising:
            flags.append(f"{r['run']}: its held-out masked loss ended {r['loss_rise']:.1%} above its lowest value: the "
                         "encoder fits its training volumes, not the held-out ones; its contrasts read that encoder.")
        elif r.get("plateau") is False:
            flags.append(f"{r['run']} was pretrained far from its plateau: its held-out masked loss still fell "
                         f"{r['loss_drop']:.1%} over the last quarter of the optimiser's progress (its summed lr); its "
                         "contrasts read an unfinished encoder.")
    head = ["run", "cohort", "steps", "wall time (s)", "held-out loss first → last", "last quarter",
            "loss weights CV", "effective share"]
    return markdown_table(head, cells), flags


def cost_table(info: Mapping[str, Any], budgets: Sequence[Mapping[str, Any]]) -> str:
    """Seconds per arm: pretraining (each run's wall time) and fine-tuning (mean train seconds per run), on the
    machine of the report."""
    rows = []
    for r in info.get("pretraining", []):
        rows.append([r["run"], "pretraining", f"{r['seconds']:.0f}", f"{r['steps'] / r['seconds']:.2f}"
                     if r["seconds"] and not math.isnan(r["seconds"]) else "—"])
    for name in ("pilot", "supervised"):
        if (seconds := info.get("runs", {}).get(name)) is not None:
            rows.append([name, "fine-tuning (control)" if name == "supervised" else "fine-tuning (pilot)",
                         f"{seconds:.0f}", "—"])
    by_arm: dict[str, list[Mapping[str, Any]]] = {}
    for b in budgets:
        by_arm.setdefault(str(b["arm"]), []).append(b)
    for arm, runs in by_arm.items():
        secs = [float(b["train_seconds"]) for b in runs if not math.isnan(float(b["train_seconds"]))]
        steps = [int(b["steps"]) for b in runs]
        rows.append([arm, f"fine-tuning ({len(runs)} runs)", f"{np.mean(secs):.0f} per run" if secs else "—",
                     f"{np.mean(steps) / np.mean(secs):.2f}" if secs else "—"])
    return markdown_table(["arm", "what", "wall time (s)", "steps / s"], rows)


def _read_csv(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _number(v: str) -> Any:
    try:
        return float(v)
    except (TypeError, ValueError):
        return v


def read_scores(path: Path, classes: Sequence[str]) -> list[dict[str, Any]]:
    """scores.csv, its lesion Dice under `statistics.LESION` whatever the file's age: a file written before the column
    was renamed holds it as ``Dice_lesion`` (read as the lesion Dice unless a class is called ``lesion``: there the
    column is that class's Dice)."""
    scores = _read_csv(path)
    if "lesion" not in classes:
        for row in scores:
            if statistics.OLD_LESION in row and statistics.LESION not in row:
                row[statistics.LESION] = row.pop(statistics.OLD_LESION)
    return scores


def class_rows(scores: Sequence[Mapping[str, Any]], classes: Sequence[str], *, n_boot: int) -> list[dict[str, Any]]:
    """Per arm and N, the paired difference of each class's Dice to the arm's own twin (`twin_of`) with its seed × case
    CI: {"arm", "reference", "n", "Dice_<class>": [value, low, high]}."""
    arms = list(dict.fromkeys(str(r["arm"]) for r in scores))
    rows = []
    for n in sorted({int(r["n"]) for r in scores}):
        for arm in arms:
            ref = twin_of(arm)
            if arm == ref or ref not in arms:
                continue
            row: dict[str, Any] = {"arm": arm, "reference": ref, "n": n}
            for c in classes:
                est = seed_case_bootstrap(statistics.paired_matrix(scores, arm, ref, n, f"Dice_{c}"), n_resamples=n_boot)
                row[f"Dice_{c}"] = [est.value, est.low, est.high]
            rows.append(row)
    return rows


def steps_phrase(runs: Sequence[Mapping[str, Any]], *, where: bool = True) -> str:
    """The pretraining runs' recorded step counts: "pretraining 5 steps per run", or with several counts "pretraining
    3–5 steps per run" (``where``: and where each run's is)."""
    steps = sorted({int(r["steps"]) for r in runs})
    if not steps:
        return "no pretraining run"
    return (f"pretraining {steps[0]} steps per run" if len(steps) == 1 else
            f"pretraining {steps[0]}–{steps[-1]} steps per run"
            + (" (each run's count in the pretraining table)" if where else ""))


def write_report(out: Path, info: Mapping[str, Any], *, n_boot: int) -> Path:
    """``<out>/report/``: README.md, report.json, contrasts.json and the plots (SVG) of a finished study."""
    folder = out / "report"
    classes = list(info.get("classes", []))
    scores = read_scores(out / "transfer" / "scores.csv", classes)
    rows = _read_csv(out / "transfer" / "transfer.csv")
    budgets = _read_csv(out / "transfer" / "runs.csv")
    cohorts = sorted({int(r["cohort"]) for r in info.get("pretraining", []) if r["arm"] != "noise"})
    encoders = [k.split("=", 1)[0] for k in info.get("encoders", [])]
    min_effect = float(info.get("min_effect", 0.01))
    plumbing = info.get("scale_name") == "quick"
    pilot = info.get("pilot") or {}
    contrasts = contrast_rows(scores, cohorts, encoders, n_boot=n_boot, min_effect=min_effect)
    primary = read_family(contrasts, cohorts, encoders, min_effect=min_effect)
    failed = instrument_faults(contrasts, pilot)
    controls = [control_line(r, min_effect=min_effect, read=not plumbing) for r in contrasts if r["kind"] != "question"]
    if plumbing or failed:  # no verdict at all: the numbers stay, the verbs go
        for r in contrasts:
            r["verdict"], r["why"] = (PLUMBING if plumbing else UNREADABLE), None
    keys = keys_of(scores)
    plots = {}
    plots["dice_vs_n.svg"] = line_plot(
        {arm: [(r["n"], r["Dice_mean"], r["Dice_mean_sd"]) for r in rows if r["arm"] == arm]
         for arm in dict.fromkeys(r["arm"] for r in rows)}, xlabel="labeled cases N", ylabel="mean Dice (± sd over seeds)",
        dodge=True)
    if contrasts:
        plots["contrasts.svg"] = interval_plot([f"{r['arm']} − {r['reference']}, N = {r['n']}" for r in contrasts],
                                               {label: [tuple(r[k]) for r in contrasts] for k, label in keys},
                                               xlabels={label: f"Δ {label}" for _, label in keys}, zero=True)
    per_class = class_rows(scores, classes, n_boot=n_boot) if classes else []
    if per_class:
        plots["classes.svg"] = interval_plot(
            [f"{r['arm']} − {r['reference']}, N = {r['n']}" for r in per_class],
            {c: [tuple(r[f"Dice_{c}"]) for r in per_class] for c in classes},
            xlabels={c: f"Δ Dice {c}" for c in classes}, zero=True)
    if pilot.get("curve"):
        plots["pilot.svg"] = line_plot({"scratch (pilot)": [(s, d, 0.0) for s, d in pilot["curve"]]}, xlabel="step",
                                       ylabel="validation Dice", categorical=False)
    curves = {r["run"]: [(s, v, 0.0) for s, v in r["val_curve"]] for r in info.get("pretraining", []) if r["val_curve"]}
    if curves:
        plots["pretraining.svg"] = line_plot(curves, xlabel="step", ylabel="held-out masked loss", categorical=False,
                                             clip=None)
    weighted = [r for r in info.get("pretraining", []) if not math.isnan(r.get("weights_cv", math.nan))]
    if weighted:
        plots["weights.svg"] = interval_plot([r["run"] for r in weighted],
                                             {"loss weights CV": [(r["weights_cv"], None, None) for r in weighted],
                                              "effective share": [(r["weights_share"], None, None) for r in weighted]})
    for name, svg in plots.items():
        atomic_write_text(folder / name, svg)
    pretraining_md, flags = pretraining_lines(info.get("pretraining", []))
    ordered = sorted((r for r in contrasts if r["kind"] == "question"), key=lambda r: r["role"] != "primary")
    questions = [question_line(r, min_effect=min_effect) for r in ordered]
    sc, checks = info["scale"], info["checks"]
    budget = (f"The pilot (scratch, constant lr, {pilot.get('pilot_steps')} steps) "
              + ("did not learn the task (its best validation Dice stayed under the floor, so it has no level to "
                 "find)" if pilot.get("learned") is False else f"levelled off at step {pilot.get('budget')}"
                 if pilot.get("converged") else "was still rising at its end")
              + f"; every arm fine-tunes {info['steps']} steps"
              + (f" — held there by --budget-cap, below the {pilot.get('asked')} the pilot asked for: the arms are "
                 "compared before the scratch twin levels off, not at their end points" if pilot.get("capped") else "")
              + ".") if pilot else ""
    recipe = (f"Recipe: {info['recipe']} for every arm" + (f", the encoder at {info['encoder_lr_scale']} × the decoder's "
              "lr for every arm (pretrained or not)" if info["recipe"] == "adamw" else
              " (nnU-Net's PretrainedTrainer: 1e-3 for a network from a pretrained file, 1e-2 from scratch)") + ".")
    overlap = checks["overlap"]
    if plumbing:
        top = ["**Plumbing check: no answer can come from this page.** The quick scale runs a few steps per run "
               f"({steps_phrase(info.get('pretraining', []), where=False)}, {info['steps']} fine-tuning steps per "
               "arm): it shows that every stage runs and writes its outputs, not whether pretraining helps, so no "
               "verdict is read below. Run --scale cpu or --scale gpu for an answer.", ""]
    elif failed:
        top = [f"**Not interpretable**: {' '.join(failed)} Every answer below reads \"{UNREADABLE}\": its numbers are "
               "shown, no verdict is read from them.", ""]
    else:
        top = []
    lines = [
        f"# Does pretraining help? ({info['network']}, {info['scale_name']} scale)", "",
        machine_line(info["machine"], info["finished"]), "", *top,
        f"Crop {sc['crop']}³; N = {', '.join(map(str, sc['cases']))} labeled cases × seeds "
        f"{', '.join(map(str, sc['seeds']))}; {sc['test']} fixed test and {sc['val']} validation cases; "
        f"{steps_phrase(info.get('pretraining', []))}; minimum effect {min_effect:g} Dice. {recipe}", "",
        "## Answers", "",
        *family_lines(contrasts, primary, [label for _, label in keys], min_effect=min_effect),
        *(f"- {'**Primary:** ' if r['role'] == 'primary' else ''}{q}" for r, q in zip(ordered, questions)),
        *([] if questions else ["- No pretraining arm was scored."]), "",
        "## The instruments", "",
        *(f"- {line}" for line in [*controls, *flags]),
        *([f"- {checks['cohort']}"] if "cohort" in checks else []),
        f"- Overlap of the pretraining cohort with the labeled cases: {'; '.join(overlap['lines'])}"
        + (" — **accepted with --accept-overlap: these cases' scores are not held out.**" if overlap.get("accepted") else ""),
        *(f"- {line}" for line in [*checks["channels"], *checks.get("skull", [])]),
        *([f"- {checks['supervised']}"] if "supervised" in checks else []),
        *([f"- {budget}"] if budget else []), "",
        "## Contrasts", "", "Paired by N, seed and test case; 95 % CI: the seed × case bootstrap "
        f"({n_boot} resamples); p: the two-sided bootstrap p of the mean Dice from the same resamples, Holm's in "
        "brackets for the exploratory questions.", "",
        contrast_table(contrasts, min_effect=min_effect) if contrasts else "No contrast had both arms.", "",
        *(["![contrasts](contrasts.svg)", ""] if "contrasts.svg" in plots else []),
        "## Dice against N", "", "![dice vs N](dice_vs_n.svg)", "",
        *(["Per class (Δ Dice of each arm to its own twin, as in the answers: asa-coord to scratch with the coordinate "
           "channel, every other arm to scratch; 95 % CI):", "", "![classes](classes.svg)", ""]
          if "classes.svg" in plots else []),
        "## The budget (the pilot)", "", budget or "No pilot.", "",
        *(["![pilot](pilot.svg)", ""] if "pilot.svg" in plots else []),
        "## Pretraining", "", pretraining_md, "",
        *(["![pretraining](pretraining.svg)", ""] if "pretraining.svg" in plots else []),
        *(["The loss weights' spread (per run: the coefficient of variation of its attentive loss weights and their "
           "effective share, (Σp)² / (n·Σp²); 0 and 1 for uniform weights):", "",
           "![weights](weights.svg)", ""] if "weights.svg" in plots else []),
        "## Cost", "", cost_table(info, budgets), "",
        "## Transfer (every arm)", "", (out / "transfer" / "transfer.md").read_text(), "",
        "Commands:", "", "```", *info["commands"], "```", ""]
    atomic_write_json(folder / "contrasts.json", contrasts)
    atomic_write_json(folder / "report.json", {**info, "contrasts": contrasts, "plots": sorted(plots)})
    atomic_write_text(folder / "README.md", "\n".join(lines))
    return folder
