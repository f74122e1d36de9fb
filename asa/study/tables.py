"""A transfer study's outputs: each run's budget check, the pilot's budget, the Table-4-shaped tables and plot."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from asa.eval.metrics import EMPTY_HD95
from asa.eval.plots import line_plot
from asa.io import atomic_write_text
from asa.study.arms import ARMS
from asa.study.common import markdown_table as table, rows_csv
from asa.study.statistics import LESION, delta_prefix, metric_keys, summarize

PLATEAU_TOL = 0.05  # relative loss drop between the last two quarters of a run below which it has plateaued
VAL_PLATEAU_TOL = 0.02  # spread (max − min) of validation Dice over a run's last 20 % within which it has plateaued


def budget_check(losses: Sequence[float], rel_encoder: Sequence[float], rel_decoder: Sequence[float]) -> dict[str, Any]:
    """Whether a run learned what its budget allows: its loss's drop over the last quarter, its relative updates."""
    v = np.asarray(losses, dtype=float)
    if v.size < 4:
        raise ValueError(f"budget check needs at least 4 logged loss windows, got {v.size}: lower trainer.log_every")
    q = v.size // 4
    third, last = v[-2 * q:-q].mean(), v[-q:].mean()
    drop = float((third - last) / max(abs(third), 1e-12))
    enc, dec = (float(np.mean(u)) if len(u) else math.nan for u in (rel_encoder, rel_decoder))
    return {"final_loss": float(last), "loss_drop": drop, "plateau": drop < PLATEAU_TOL, "rel_update_encoder": enc,
            "rel_update_decoder": dec, "rel_update_ratio": enc / dec if dec and not math.isnan(dec) else math.nan}


def logged_series(run_dir: Path, tags: Sequence[str]) -> dict[str, list[tuple[int, float]]]:
    """The (step, value) pairs of each of ``tags`` in a run's TensorBoard folder, in step order (empty: not logged)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if not (run_dir / "tb").is_dir():
        return {t: [] for t in tags}
    events = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0}).Reload()  # read, returns itself
    have = set(events.Tags()["scalars"])
    return {t: [(int(e.step), float(e.value)) for e in sorted(events.Scalars(t), key=lambda e: e.step)]
            if t in have else [] for t in tags}


def logged_budget(run_dir: Path) -> dict[str, Any]:
    """`budget_check` of a finished run; if it validated, its last Dice, ``val_curve`` ([step, Dice]) and whether
    that Dice plateaued: its spread over the last 20 % of the rounds (2 at least; from 3 rounds) ≤ `VAL_PLATEAU_TOL`."""
    tags = ("train/loss", "train/rel_update/encoder", "train/rel_update/decoder")
    series = logged_series(run_dir, [*tags, "val/dice"])
    out = budget_check(*([v for _, v in series[t]] for t in tags))
    if not (val := series["val/dice"]):
        return out
    dice = np.asarray([v for _, v in val], dtype=float)
    last = dice[-max(2, math.ceil(0.2 * dice.size)):]
    spread = float(last.max() - last.min()) if dice.size >= 3 else math.nan
    return {**out, "val_dice": float(dice[-1]), "val_spread": spread,
            "val_plateau": spread <= VAL_PLATEAU_TOL if dice.size >= 3 else None, "val_curve": [list(x) for x in val]}


BUDGET_WINDOW = 3  # the fewest validation rounds `converged_budget` fits a trend over (a pilot needs two such spans)


def _rise(curve: np.ndarray) -> tuple[float, float]:
    """The rise of a curve's least-squares line from its first round to its last, and that rise's one-sided 95 %
    upper bound (the slope's, its standard error from the residuals, at Student's t with rounds − 2 df). Written
    out rather than read off `scipy.stats.linregress`, whose standard error is NaN for a curve with no spread (scipy
    1.17): an exactly flat curve has a bound of 0, not none."""
    x, y = curve[:, 0] - curve[:, 0].mean(), curve[:, 1] - curve[:, 1].mean()
    slope = float(x @ y / (x @ x))
    stderr = math.sqrt(float(np.sum((y - slope * x) ** 2)) / (len(curve) - 2) / float(x @ x))
    span = float(curve[-1, 0] - curve[0, 0])
    return slope * span, (slope + float(stats.t.ppf(0.95, len(curve) - 2)) * stderr) * span


def converged_budget(curve: Sequence[Sequence[float]], *, tol: float, window: int = BUDGET_WINDOW) -> dict[str, Any]:
    """Where a constant-lr validation Dice curve stopped rising, with its noise: the first round from which the
    curve's linear trend to its end rises less than ``tol`` at its one-sided 95 % upper bound, and does so from
    every later round too (a later span is shorter and noisier: one lucky span is not a level). The spans read are
    the last quarter of the rounds at least (``window`` rounds at least), so a level is found by 3/4 of the curve
    or not at all. ``rise`` / ``rise_hi``: the trend and its bound from the budget's round (``since``), or over the
    curve's last half where none levelled."""
    if len(curve) < 2 * window:
        raise ValueError(f"converged_budget needs at least {2 * window} validation rounds, got {len(curve)}")
    points = np.asarray(curve, dtype=float)[:, :2]
    starts = range(len(points) - max(window, math.ceil(len(points) / 4)) + 1)
    rises = [_rise(points[i:]) for i in starts]
    level = [hi < tol for _, hi in rises]
    first = next((i for i in starts if all(level[i:])), None)
    if first is None:  # not levelled: the trend over the last half (a span of `starts`), the budget the curve's end
        at, budget = len(points) // 2, int(points[-1, 0])
    else:
        at, budget = first, int(points[first, 0])
    rise, hi = rises[at]
    return {"budget": budget, "converged": first is not None, "since": int(points[at, 0]), "rise": rise,
            "rise_hi": hi, "tol": tol, "window": window}


def _ci(r: Mapping[str, Any], p: str, digits: int = 3) -> str:
    """'+0.040 [+0.010, +0.070]': the paired Δ ``p`` and its crossed random-effects CI, the one the verdicts read."""
    return f"{r[p]:+.{digits}f} [{r[p + '_re_lo']:+.{digits}f}, {r[p + '_re_hi']:+.{digits}f}]"


def _arm(r: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> str:
    """An arm's cell: its name, and the arm its Δ is taken against where the rows' references differ (a twin)."""
    several = len({x["reference"] for x in rows if "reference" in x}) > 1
    return f"{r['arm']} (Δ vs {r['reference']})" if several and "reference" in r else str(r["arm"])


def markdown_table(rows: Sequence[Mapping[str, Any]], names: Sequence[str], reference: str) -> str:
    """Table-4-shaped Markdown: arm × labeled cases, the scores ± sd over seeds, and Δ mean Dice vs ``reference``."""
    hd = any("HD95_mean" in r for r in rows)
    nsd, lesion = all("NSD_mean" in r for r in rows), all(LESION in r for r in rows)
    head = ["arm", "labeled", *names, "mean", *(["lesion mean"] if lesion else []), *(["HD95 mean (mm)"] if hd else []),
            *(["NSD mean"] if nsd else []), "encoder zeroed", f"Δ mean vs {reference} [95 % CI, random effects]",
            "bootstrap CI (seeds × cases)", "Δ per seed", "case-only CI",
            *([f"Δ HD95 vs {reference} [95 % CI, random effects]"] if hd else [])]

    def cell(r: Mapping[str, Any], key: str, digits: int = 3) -> str:  # ± sd over seeds, when there are several
        return f"{r[key]:.{digits}f}" + ("" if math.isnan(sd := r[key + "_sd"]) else f" ± {sd:.{digits}f}")

    return table(head, [[_arm(r, rows), str(r["n"]), *(cell(r, f"Dice_{c}") for c in names), cell(r, "Dice_mean"),
                         *([cell(r, LESION)] if lesion else []), *([cell(r, "HD95_mean", 1)] if hd else []),
                         *([cell(r, "NSD_mean")] if nsd else []),
                         "— (no encoder)" if math.isnan(r["Dice_mean_zeroed"])
                         else f"{r['Dice_mean_zeroed']:.3f} (drop {r['encoder_drop']:+.3f})",
                         *([_ci(r, "delta"), f"[{r['delta_lo']:+.3f}, {r['delta_hi']:+.3f}]",
                            " ".join(f"{float(v):+.3f}" for v in r["delta_per_seed"].split()),
                            f"[{r['delta_case_lo']:+.3f}, {r['delta_case_hi']:+.3f}]",
                            *([_ci(r, "delta_HD95_mean", 1)] if hd else [])] if "delta" in r else ["—"] * (4 + hd))]
                        for r in rows])


def class_differences_table(rows: Sequence[Mapping[str, Any]], names: Sequence[str], reference: str) -> str:
    """Markdown: per arm and N, every class's paired Δ to ``reference`` with its crossed random-effects 95 % CI."""
    keys = [k for k in metric_keys(rows, names) if k not in ("Dice_mean", "HD95_mean")]  # the main table has these two
    head = ["arm", "labeled", *(f"Δ {k.replace('_', ' ')}" + (" (mm)" if k.startswith("HD95") else "") for k in keys)]
    return table(head, [[_arm(r, rows), str(r["n"])] + [_ci(r, delta_prefix(k), 1 if k.startswith("HD95") else 3)
                                                         for k in keys] for r in rows if "delta" in r])


def draw_lines(budgets: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per N: how many distinct labeled sets the seeds drew, and how many cases two of them share."""
    lines = []
    for n in sorted({int(b["n"]) for b in budgets}):
        sets = {int(b["seed"]): frozenset(str(b["train"]).split()) for b in budgets
                if int(b["n"]) == n and isinstance(b.get("train"), str) and b["train"]}
        if not sets:
            continue
        pairs = [len(sets[a] & sets[b]) for i, a in enumerate(sorted(sets)) for b in sorted(sets)[i + 1:]]
        lines.append(f"At N = {n}: {len(sets)} seed(s) drew {len(set(sets.values()))} distinct set(s) of labeled cases"
                     + (f"; two seeds' sets share {np.mean(pairs):.1f} of {n} cases on average" if pairs else "")
                     + (" (every seed trains on the same cases: the seeds differ in their training's randomness "
                        "alone, not in the labeled draw)" if len(set(sets.values())) == 1 and len(sets) > 1 else "")
                     + ".")
    return lines


def report_markdown(rows: Sequence[Mapping[str, Any]], names: Sequence[str], reference: str, *, n_boot: int,
                    draws: Sequence[str] = ()) -> str:
    """transfer.md: the Table-4-shaped table, how to read it (``draws``: `draw_lines`), the per-class differences."""
    notes = ["Labeled = training cases of each run; ± = sd over seeds of the per-seed test means (a seed is a draw of "
             "labeled cases from the training pool and a fine-tuning seed; draws of a small pool share cases: "
             f"{' '.join(draws) if draws else 'see the runs splits.json'}). Δ = arm − {reference}, paired by N, seed "
             "and test case. Its 95 % CI is the crossed random-effects interval of seeds × test cases (ANOVA mean "
             "squares, asa.eval.random_effects: each part at its t quantile, or with replicated pretraining runs "
             "one shared t from 3 runs and 3 seeds; with --folds, the cross-validated draws' folded_interval), the "
             "one the study's verdicts read; beside it the two-level percentile bootstrap "
             f"({n_boot} resamples: test cases, then seeds, with replacement), too narrow with 2–3 seeds. 'Δ per seed' "
             "lists the mean Δ of every seed; 'case-only CI' resamples test cases only (per case, Δ averaged over "
             "seeds), which ignores the spread between labeled draws. Encoder zeroed: mean Dice with every encoder "
             "state the decoder receives set to zero (drop = what the encoder contributes)."]
    if any("HD95_mean" in r for r in rows):
        notes.append("HD95 per class in mm (voxel spacing of the label), scored as asa-evaluate scores it: the larger "
                     "of the two directed 95th percentiles of surface distances (MONAI); both masks empty: 0 mm, "
                     f"exactly one empty: {EMPTY_HD95} mm (BraTS). HD95 mean averages the classes, empties included; "
                     "lower is better, so a negative Δ HD95 favours the arm.")
    if all("NSD_mean" in r for r in rows):
        notes.append("NSD: normalised surface Dice (the share of both surfaces within the tolerance of the other), "
                     "scored as asa-evaluate scores it at its default tolerance; higher is better.")
    return (markdown_table(rows, names, reference) + "\n" + "\n\n".join(notes) + "\n\nPaired differences per class "
            "[95 % CI: the crossed random-effects interval]:\n\n" + class_differences_table(rows, names, reference))


def svg_plot(rows: Sequence[Mapping[str, Any]], *, xlabel: str = "labeled cases", ylabel: str = "mean Dice",
             dodge: bool = False) -> str:
    """Mean Dice (± sd over seeds) against the number of labeled cases, one line per arm (SVG, `asa.eval.plots`;
    the axes' labels and ``dodge`` as `asa.eval.plots.line_plot` takes them)."""
    return line_plot({arm: [(r["n"], r["Dice_mean"], r["Dice_mean_sd"]) for r in rows if r["arm"] == arm]
                      for arm in dict.fromkeys(r["arm"] for r in rows)}, xlabel=xlabel, ylabel=ylabel, dodge=dodge)


def unlearned_classes(rows: Sequence[Mapping[str, Any]], names: Sequence[str]) -> list[str]:
    """One line per N and class every arm scores Dice 0 on: no difference there because nothing was learned."""
    zeros = {n: [c for c in names if all(r[f"Dice_{c}"] <= 1e-6 for r in rows if int(r["n"]) == n)]
             for n in sorted({int(r["n"]) for r in rows})}
    return [f"At {n} labeled case(s) every arm scores Dice 0 on {', '.join(zero)}: nothing was learned there, so the "
            f"table can say nothing about a difference between the arms on {'it' if len(zero) == 1 else 'them'}."
            for n, zero in zeros.items() if zero]


CURVE_FRACTIONS = (0.2, 0.4, 0.6, 0.8, 1.0)
CURVE_HEAD = "val Dice at " + " / ".join(f"{f:.0%}" for f in CURVE_FRACTIONS) + " of the run"


def curve_cell(runs: Sequence[Mapping[str, Any]]) -> str:
    """The mean validation Dice of runs of one arm and N at the round nearest each of `CURVE_FRACTIONS`."""
    if not (curves := [r["val_curve"] for r in runs if r.get("val_curve")]):
        return "—"
    points = [np.mean([c[min(len(c) - 1, max(0, round(f * len(c)) - 1))][1] for c in curves]) for f in CURVE_FRACTIONS]
    return " / ".join(f"{x:.3f}" for x in points)


def budget_table(budgets: Sequence[Mapping[str, Any]]) -> str:
    """Markdown: per arm and N, steps (each count its runs trained, should they differ), final loss (± sd), runs
    plateaued, the mean relative updates and their ratio."""
    val = any(b.get("val_plateau") is not None for b in budgets)
    head = ["arm", "labeled", "steps", "final loss", "plateaued", *(["val Dice plateaued", CURVE_HEAD] if val else []),
            "rel. update encoder", "rel. update decoder", "encoder / decoder", "train s / run"]
    lines = []
    for arm, n in sorted({(b["arm"], int(b["n"])) for b in budgets}, key=lambda k: (k[1], k[0])):
        runs = [b for b in budgets if (b["arm"], int(b["n"])) == (arm, n)]
        loss = [r["final_loss"] for r in runs]
        sd = f" ± {np.std(loss, ddof=1):.3f}" if len(loss) > 1 else ""

        def mean(key: str, spec: str = ".2g") -> str:  # "—": nothing logged (no registered encoder) or timed
            values = [v for r in runs if not math.isnan(v := float(r.get(key, math.nan)))]
            return f"{np.mean(values):{spec}}" if values else "—"

        checked = [r for r in runs if r.get("val_plateau") is not None]
        plateau_val = ([f"{sum(bool(r['val_plateau']) for r in checked)}/{len(checked)}", curve_cell(checked)]
                       if val else [])
        steps = "/".join(str(s) for s in sorted({int(r["steps"]) for r in runs}))
        lines.append([arm, str(n), steps, f"{np.mean(loss):.3f}{sd}",
                      f"{sum(bool(r['plateau']) for r in runs)}/{len(runs)}", *plateau_val,
                      mean("rel_update_encoder"), mean("rel_update_decoder"), mean("rel_update_ratio"),
                      mean("train_seconds", ".0f")])
    return table(head, lines)


def declared_order(row: Mapping[str, Any]) -> tuple[int, int]:
    """Where a row's arm stands: its place in `asa.study.arms.ARMS` (an --encoder arm after them), then its cohort
    size. A stable sort by it leaves each arm's replicates, N and seeds as they were, and nothing to --arms' order."""
    arm, cohort = row.get("encoder_arm") or row["arm"], row.get("cohort")
    return list(ARMS).index(arm) if arm in ARMS else len(ARMS), -1 if cohort in (None, "") else int(cohort)


@dataclasses.dataclass(frozen=True)
class Outputs:
    """A fine-tuning stage's rows as `write_outputs` wrote them, its arms in their declared order (`declared_order`).

    Args:
        scores: a row per arm, N, seed and test case (scores.csv).
        rows: a row per arm and N, the scores summarised (transfer.csv).
        budgets: a row per run, its budget check (runs.csv).
        markdown: transfer.md.
    """

    scores: list[dict[str, Any]]
    rows: list[dict[str, Any]]
    budgets: list[dict[str, Any]]
    markdown: str


def write_outputs(scores: Sequence[Mapping[str, Any]], names: Sequence[str], reference: str | Mapping[str, str],
                  out: Path, *, n_boot: int = 10000, budgets: Sequence[Mapping[str, Any]] = (),
                  undone: int = 0) -> Outputs:
    """scores.csv, transfer.md / .csv, runs.csv and dice_vs_cases.svg under ``out``; returns their rows."""
    scores = sorted(scores, key=declared_order)
    arms = list(dict.fromkeys(r["arm"] for r in scores))
    budgets = sorted(budgets, key=lambda b: arms.index(b["arm"]) if b["arm"] in arms else len(arms))
    rows = summarize(scores, names, reference, n_boot=n_boot)
    label = (reference if isinstance(reference, str)
             else " / ".join(dict.fromkeys(v for k, v in reference.items() if k != v)) or "reference")
    md = report_markdown(rows, names, label, n_boot=n_boot, draws=draw_lines(budgets))
    if notes := unlearned_classes(rows, names):
        md += "\n" + "\n".join(f"- {line}" for line in notes) + "\n"
    if budgets:
        md += ("\nBudget check (one row per arm and N; final loss = mean training loss over the last quarter of "
               f"the run; plateaued = its drop from the third quarter is below {PLATEAU_TOL:.0%}; val Dice plateaued "
               f"(with --val-cases) = the spread of validation Dice over the run's last 20 % of rounds is at most "
               f"{VAL_PLATEAU_TOL}; relative update = ‖Δw‖/‖w‖ per optimiser step, mean over the run; train s / run = "
               "wall time of the run's asa-finetune process, mean over the runs trained in this folder):\n\n"
               + budget_table(budgets))
        atomic_write_text(out / "runs.csv", rows_csv(budgets))
    if undone:
        md = f"**Partial: {undone} run(s) not trained yet** (rerun the same command to continue).\n\n" + md
    for name, text in (("scores.csv", rows_csv(scores)), ("transfer.csv", rows_csv(rows)), ("transfer.md", md),
                       ("dice_vs_cases.svg", svg_plot(rows))):
        atomic_write_text(out / name, text)
    return Outputs(scores, rows, budgets, md)
