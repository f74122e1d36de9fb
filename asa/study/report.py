"""The report of ``asa-study``: one page (``<out>/report/README.md`` with SVG plots beside it, and ``report.json``)
that reads the study's numbers in order — the instruments first (the checks, the pilot, each pretraining run's
held-out loss, the controls), then each question as a paired contrast with its CI and a verdict that follows from
the CI alone: helped (the CI above 0), hurt (below 0), or no difference this study can detect."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from asa.eval import seed_case_bootstrap
from asa.eval.plots import interval_plot, line_plot
from asa.io import atomic_write_json, atomic_write_text
from asa.study import transfer
from asa.study.common import machine_line, markdown_table

__all__ = ["CONTRASTS", "contrast_rows", "instrument_faults", "verdict", "write_report"]

# the study's questions as paired contrasts (arm, reference, the question, kind): {c} / {s} stand for the largest
# and the smallest cohort; a contrast is read when both of its arms ran. kind: "positive" (a control that must
# move), "negative" (one that must not help), "question"
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
KEYS = (("Dice_mean", "mean Dice"), ("NSD_mean", "NSD"))
LESION_KEY = (transfer.LESION, "lesion Dice")  # with --lesion-classes: the mean Dice of those classes


def keys_of(scores: Sequence[Mapping[str, Any]]) -> tuple[tuple[str, str], ...]:
    """The contrasted scores: mean Dice and NSD, and the lesion Dice when the study names lesion classes."""
    return KEYS + ((LESION_KEY,) if scores and all(LESION_KEY[0] in r for r in scores) else ())


def verdict(low: float, high: float) -> str:
    """What a paired difference's 95 % CI says: ``helped`` (above 0), ``hurt`` (below 0) or ``no difference``."""
    if math.isnan(low) or math.isnan(high):
        return "not measured"
    return "helped" if low > 0 else "hurt" if high < 0 else "no difference"


def contrast_rows(scores: Sequence[Mapping[str, Any]], cohorts: Sequence[int], encoders: Sequence[str] = (), *,
                  n_boot: int) -> list[dict[str, Any]]:
    """Each contrast of `CONTRASTS` (and every --encoder arm − scratch) whose two arms were scored, per N: the paired
    difference (same N, seed and test case) of each of `KEYS` with its seed × case bootstrap CI and its verdict."""
    arms = {r["arm"] for r in scores}
    table = [(a.format(c=max(cohorts), s=min(cohorts)) if cohorts else a,
              r.format(c=max(cohorts), s=min(cohorts)) if cohorts else r, q, kind) for a, r, q, kind in CONTRASTS]
    table += [(name, "scratch", f"does the encoder {name} help? ({name} − scratch)", "question") for name in encoders]
    rows = []
    for arm, ref, question, kind in table:
        if arm == ref or not {arm, ref} <= arms:
            continue
        for n in sorted({int(r["n"]) for r in scores}):
            row: dict[str, Any] = {"question": question, "kind": kind, "arm": arm, "reference": ref, "n": n}
            for key, _ in keys_of(scores):
                d = transfer.paired_matrix(scores, arm, ref, n, key)
                est = seed_case_bootstrap(d, n_resamples=n_boot)
                row[key] = [est.value, est.low, est.high]
            row["verdict"] = verdict(*row["Dice_mean"][1:])
            rows.append(row)
    return rows


def control_line(row: Mapping[str, Any]) -> str:
    """A control's reading: did it move as it must?"""
    v, lo, hi = row["Dice_mean"]
    ci = f"Δ mean Dice {v:+.3f} [{lo:+.3f}, {hi:+.3f}] at N = {row['n']}"
    if row["kind"] == "positive":
        return (f"Positive control moved, as it must ({ci}): the study can detect a gain of this size." if lo > 0 else
                f"**Positive control did not move** ({ci}): an encoder trained with labels did not beat scratch, so "
                "this study cannot show what pretraining gives; read no null below as evidence.")
    return (f"Negative control did not help, as it must not ({ci})." if lo <= 0 else
            f"**Negative control helped** ({ci}): pretraining on pure noise beat scratch, so a gain of the pretrained "
            "arms may be the recipe's (initialisation scale, schedule), not what they learned from the scans.")


FOUND = 0.1  # the pilot's mean test Dice under which the scratch twin is said not to learn the task


def instrument_faults(contrasts: Sequence[Mapping[str, Any]], pilot: Mapping[str, Any]) -> list[str]:
    """The instruments that failed, each one sentence: the scratch twin learns nothing (the pilot's mean test Dice
    under `FOUND`: every Δ is noise), the positive control did not move (no gain can be detected), the negative
    control helped (a gain may be the recipe's)."""
    faults = []
    test = pilot.get("test") or {}
    if test and (mean := float(np.mean(list(test.values())))) < FOUND:
        faults.append(f"the scratch twin does not learn the task (the pilot's mean test Dice {mean:.3f} < {FOUND}), so "
                      "every difference is noise.")
    if any(r["kind"] == "positive" and r["Dice_mean"][1] <= 0 for r in contrasts):
        faults.append("the positive control did not move, so this study cannot detect a gain of the size it gives.")
    if any(r["kind"] == "negative" and r["Dice_mean"][1] > 0 for r in contrasts):
        faults.append("the negative control helped, so a gain may be the recipe's, not what pretraining learned.")
    return faults


def question_line(row: Mapping[str, Any]) -> str:
    v, lo, hi = row["Dice_mean"]
    said = {"helped": "helped", "hurt": "hurt", "no difference": "made no difference this study can detect"}
    line = f"{row['question']} At N = {row['n']}: {said[row['verdict']]} (Δ mean Dice {v:+.3f} [{lo:+.3f}, {hi:+.3f}])"
    if LESION_KEY[0] in row:
        v, lo, hi = row[LESION_KEY[0]]
        line += f"; on the lesions it {said[verdict(lo, hi)]} (Δ lesion Dice {v:+.3f} [{lo:+.3f}, {hi:+.3f}])"
    return line + "."


def contrast_table(rows: Sequence[Mapping[str, Any]]) -> str:
    keys = [(k, label) for k, label in (*KEYS, LESION_KEY) if rows and k in rows[0]]
    head = ["question", "arm − reference", "N", *(f"Δ {label} [95 % CI]" for _, label in keys), "verdict"]
    cells = [[r["question"], f"{r['arm']} − {r['reference']}", str(r["n"]),
              *(f"{r[k][0]:+.3f} [{r[k][1]:+.3f}, {r[k][2]:+.3f}]" for k, _ in keys), r["verdict"]] for r in rows]
    return markdown_table(head, cells, left=2)


def pretraining_lines(runs: Sequence[Mapping[str, Any]]) -> tuple[str, list[str]]:
    """The pretraining table and one flag per run whose held-out masked loss was still falling at its end."""
    cells, flags = [], []
    for r in runs:
        curve = r.get("val_curve") or []
        first, last = (f"{curve[0][1]:.4f}", f"{curve[-1][1]:.4f}") if curve else ("—", "—")
        rising = r.get("loss_rise", 0.0) >= transfer.PLATEAU_TOL  # NaN (older records, short runs): not rising
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
                         f"{r['loss_drop']:.1%} over the last quarter of the run; its contrasts read an unfinished encoder.")
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


def write_report(out: Path, info: Mapping[str, Any], *, n_boot: int) -> Path:
    """``<out>/report/``: README.md, report.json, contrasts.json and the plots (SVG) of a finished study."""
    folder = out / "report"
    scores = _read_csv(out / "transfer" / "scores.csv")
    rows = _read_csv(out / "transfer" / "transfer.csv")
    budgets = _read_csv(out / "transfer" / "runs.csv")
    cohorts = sorted({int(r["cohort"]) for r in info.get("pretraining", []) if r["arm"] != "noise"})
    encoders = [k.split("=", 1)[0] for k in info.get("encoders", [])]
    contrasts = contrast_rows(scores, cohorts, encoders, n_boot=n_boot)
    plots = {}
    plots["dice_vs_n.svg"] = line_plot(
        {arm: [(r["n"], r["Dice_mean"], r["Dice_mean_sd"]) for r in rows if r["arm"] == arm]
         for arm in dict.fromkeys(r["arm"] for r in rows)}, xlabel="labeled cases N", ylabel="mean Dice (± sd over seeds)")
    if contrasts:
        plots["contrasts.svg"] = interval_plot([f"{r['arm']} − {r['reference']}, N = {r['n']}" for r in contrasts],
                                               {label: [tuple(r[k]) for r in contrasts] for k, label in keys_of(scores)})
    classes = list(info.get("classes", []))
    deltas = [r for r in rows if "delta" in r and isinstance(r.get("delta"), float)]
    if classes and deltas:
        plots["classes.svg"] = interval_plot(
            [f"{r['arm']}, N = {int(r['n'])}" for r in deltas],
            {c: [(r.get(f"delta_Dice_{c}"), r.get(f"delta_Dice_{c}_lo"), r.get(f"delta_Dice_{c}_hi")) for r in deltas]
             for c in classes})
    pilot = info.get("pilot") or {}
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
    controls = [control_line(r) for r in contrasts if r["kind"] != "question"]
    questions = [question_line(r) for r in contrasts if r["kind"] == "question"]
    failed = instrument_faults(contrasts, info.get("pilot") or {})
    sc, checks = info["scale"], info["checks"]
    budget = (f"The pilot (scratch, constant lr, {pilot.get('pilot_steps')} steps) "
              + (f"levelled off at step {pilot.get('budget')}" if pilot.get("converged") else "was still rising at its end")
              + f"; every arm fine-tunes {info['steps']} steps"
              + (f" — held there by --budget-cap, below the {pilot.get('asked')} the pilot asked for: the arms are "
                 "compared before the scratch twin levels off, not at their end points" if pilot.get("capped") else "")
              + ".") if pilot else ""
    recipe = (f"Recipe: {info['recipe']} for every arm" + (f", the encoder at {info['encoder_lr_scale']} × the decoder's "
              "lr for every arm (pretrained or not)" if info["recipe"] == "adamw" else
              " (nnU-Net's PretrainedTrainer: 1e-3 for a network from a pretrained file, 1e-2 from scratch)") + ".")
    overlap = checks["overlap"]
    lines = [
        f"# Does pretraining help? ({info['network']}, {info['scale_name']} scale)", "",
        machine_line(info["machine"], info["finished"]), "",
        f"Crop {sc['crop']}³; N = {', '.join(map(str, sc['cases']))} labeled cases × seeds "
        f"{', '.join(map(str, sc['seeds']))}; {sc['test']} fixed test and {sc['val']} validation cases; pretraining "
        f"{sc['pretrain_steps']} steps per run. {recipe}", "",
        "## Answers", "",
        *([f"**Read these answers as no evidence either way**: {' '.join(failed)}", ""] if failed else []),
        *(f"- {q}" for q in questions or ["No pretraining arm was scored."]), "",
        "## The instruments", "",
        *(f"- {line}" for line in [*controls, *flags]),
        *([f"- {checks['cohort']}"] if "cohort" in checks else []),
        f"- Overlap of the pretraining cohort with the test and validation cases: {'; '.join(overlap['lines'])}"
        + (" — **accepted with --accept-overlap: these cases' scores are not held out.**" if overlap.get("accepted") else ""),
        *(f"- {line}" for line in [*checks["channels"], *checks.get("skull", [])]),
        *([f"- {checks['supervised']}"] if "supervised" in checks else []),
        *([f"- {budget}"] if budget else []), "",
        "## Contrasts", "", "Paired by N, seed and test case; 95 % CI: the seed × case bootstrap "
        f"({n_boot} resamples).", "", contrast_table(contrasts) if contrasts else "No contrast had both arms.", "",
        *(["![contrasts](contrasts.svg)", ""] if "contrasts.svg" in plots else []),
        "## Dice against N", "", "![dice vs N](dice_vs_n.svg)", "",
        *(["Per class (Δ to the reference, 95 % CI):", "", "![classes](classes.svg)", ""] if "classes.svg" in plots else []),
        "## The budget (the pilot)", "", budget or "No pilot.", "",
        *(["![pilot](pilot.svg)", ""] if "pilot.svg" in plots else []),
        "## Pretraining", "", pretraining_md, "",
        *(["![pretraining](pretraining.svg)", ""] if "pretraining.svg" in plots else []),
        *(["The loss weights' spread (a weighting with a CV near 0.1 cannot move a result):", "",
           "![weights](weights.svg)", ""] if "weights.svg" in plots else []),
        "## Cost", "", cost_table(info, budgets), "",
        "## Transfer (every arm)", "", (out / "transfer" / "transfer.md").read_text(), "",
        "Commands:", "", "```", *info["commands"], "```", ""]
    atomic_write_json(folder / "contrasts.json", contrasts)
    atomic_write_json(folder / "report.json", {**info, "contrasts": contrasts, "plots": sorted(plots)})
    atomic_write_text(folder / "README.md", "\n".join(lines))
    return folder
