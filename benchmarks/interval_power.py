"""Coverage and power of a study's interval over pretraining runs × labeled draws × test cases.

Simulates the paired differences (pretrained − scratch) of a crossed design, ``d[r, s, c] = δ + p_r + a_s + b_c +
(pa)_rs + (pb)_rc + (ab)_sc + e_rsc`` over P pretraining runs × S labeled draws × C test cases, each effect normal
with the SD of its variance model, and reads every simulated study with each interval:

- ``oracle``: the variance of the mean known, ``mean ± z · sqrt(V)`` (exact: the mean is normal);
- ``before``: the per-factor interval before (the run part ``MS_run / N`` at ``t_{P−1}``, the draws'
  ``MS_draw / N`` at ``t_{S−1}``, the cases' ``(MS_case − MS_residual)⁺ / N`` at ``t_{C−1}``: the parts overlap);
- ``satterthwaite``: ``mean ± t_ν · sqrt(V̂)`` with Satterthwaite's ν (`asa.eval.random_effects.satterthwaite`);
- ``quadrature``: parts that do not overlap (the run component ``(MS_run − MS_rd − MS_rc + MS_rdc)⁺ / N`` alone at
  ``t_{P−1}``, the draws' ``MS_draw / N`` at ``t_{S−1}``, the cases' ``(MS_case − MS_draw×case)⁺ / N`` at
  ``t_{C−1}``), their half-widths in quadrature (the first proposal);
- ``plug-in``: the parts of `asa.eval.random_effects.crossed_parts` under one t, at their Welch–Satterthwaite df
  ``(Σ v)² / Σ v² / df`` (the run part's df Satterthwaite's for its four mean squares: `pooled_df`, ``upper=None``);
- ``asa``: the interval `asa.eval.random_effects.crossed_interval` gives (`crossed_half_width`): from 3 runs and
  3 draws that t at `shared_df` (the smaller df of the parts at their upper 75 % bounds and of the draws' part at its
  95 % one), so that a part small by chance does not lift the df; with 2 runs the runs' whole spread ``MS_run / N``
  at ``t_1``, the parts in quadrature.

Cross-validated designs (``d[r, q, c]``: R repeats of K folds, draw (q, k) scoring its fold's cases) are read by
the oracle, ``before`` (the runs' means' spread ``s² / P`` at P − 1 df beside the draw and case parts) and ``asa``
(`asa.eval.random_effects.folded_parts`: from 3 runs the run component alone).

Every interval is location-equivariant (its half-width h reads only the mean squares), so one simulation at δ = 0
gives each its coverage (``|mean| ≤ h``) and its whole power curve: the verdict rule of `asa.study.readings.verdict`
reads "helped" when the interval lies above 0 and the estimate is at least the minimum effect m, i.e. at a true δ
when ``δ > max(h − mean₀, m − mean₀)``, so the simulated MDE at 80 % power is that maximum's 80th percentile. The
``printed`` MDE is what each study's page prints (`CrossedInterval.mde`: a noncentral t at the interval's df, from
its own estimates); a true effect of its median size is detected with the power the table gives.

Variance models (SDs in Dice, `MODELS`): ``seed``, the labeled draw dominates (run 0.03, draw 0.08), ``case``, the
test cases dominate (run 0.01, draw 0.03, case 0.08), ``run``, the pretraining run dominates (run 0.05, draw 0.03,
case 0.03), ``draw``, the draw alone (0.10), ``run×case``, a run × case interaction (0.08) without a run effect,
and ``skewed``, ``case``'s SDs with every effect over cases a standardised exponential's (skewness 2).

    python -m benchmarks.interval_power --json benchmarks/results/interval_power.json   # the docs' table
    python -m benchmarks.interval_power --table benchmarks/results/interval_power.json  # the table of a saved run
    python -m benchmarks.interval_power --quick                                         # one row per model
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence

import numpy as np
from scipy import stats

from asa.eval.random_effects import (crossed_half_width, crossed_parts, effect_name, folded_parts, half_width, mde,
                                     mean_squares, pooled_df, satterthwaite)

FACTORS = ("pretraining", "seed", "case")
# model -> SD of every effect (the subsets of FACTORS by name), Dice
MODELS = {
    "seed": {"pretraining": 0.03, "seed": 0.08, "case": 0.03, "pretraining×seed": 0.03, "pretraining×case": 0.02,
             "seed×case": 0.04, "pretraining×seed×case": 0.08},
    "case": {"pretraining": 0.01, "seed": 0.03, "case": 0.08, "pretraining×seed": 0.02, "pretraining×case": 0.02,
             "seed×case": 0.03, "pretraining×seed×case": 0.05},
    "run": {"pretraining": 0.05, "seed": 0.03, "case": 0.03, "pretraining×seed": 0.02, "pretraining×case": 0.02,
            "seed×case": 0.03, "pretraining×seed×case": 0.08},
    "draw": {"pretraining": 0.01, "seed": 0.10, "case": 0.03, "pretraining×seed": 0.01, "pretraining×case": 0.01,
             "seed×case": 0.03, "pretraining×seed×case": 0.06},
    "run×case": {"pretraining": 0.0, "seed": 0.03, "case": 0.03, "pretraining×seed": 0.01, "pretraining×case": 0.08,
                 "seed×case": 0.03, "pretraining×seed×case": 0.05},
}
MODELS["skewed"] = MODELS["case"]  # its effects over cases skewed (`simulate`)
# (model, P, S, C) beyond the FULL grid of the first three models; (model, P, cases, folds, repeats) cross-validated
EXTRA = [*((m, p, s, 16) for m in ("draw", "run×case", "skewed") for p in (3, 4) for s in (3, 8))]
FOLDED = [(m, *design) for design in ((2, 18, 3, 2), (3, 18, 3, 2), (4, 40, 4, 2)) for m in ("seed", "case", "run")]
SUBSETS = [(0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)]
INTERVALS = ("oracle", "before", "satterthwaite", "quadrature", "plug-in", "asa")
FOLDED_INTERVALS = ("oracle", "before", "asa")
CONFIDENCE, POWER, MIN_EFFECT = 0.95, 0.8, 0.01
FULL = {"pretraining": (2, 3, 4), "seed": (3, 8), "case": (16, 32)}
QUICK = {"pretraining": (3,), "seed": (3,), "case": (16,)}


def _effect(rng: np.random.Generator, sd: float, size: tuple[int, ...], skewed: bool) -> np.ndarray:
    """Normal effects, or with ``skewed`` a standardised exponential's (skewness 2: a few cases gain much)."""
    return sd * (rng.exponential(1.0, size) - 1.0) if skewed else rng.normal(0.0, sd, size)


def simulate(rng: np.random.Generator, datasets: int, shape: tuple[int, int, int], model: str) -> np.ndarray:
    """``datasets`` studies' paired differences at δ = 0: [datasets, P, S, C]."""
    d = np.zeros((datasets, *shape))
    for t in SUBSETS:
        size = (datasets, *(shape[a] if a in t else 1 for a in range(3)))
        d += _effect(rng, MODELS[model][effect_name(t, FACTORS)], size, model == "skewed" and 2 in t)
    return d


def simulate_folded(rng: np.random.Generator, datasets: int, runs: int, fold: np.ndarray, model: str) -> np.ndarray:
    """``datasets`` cross-validated studies at δ = 0, [datasets, P, R, C]: draw (repeat q, fold k) scores the cases
    ``fold[q] == k``; its effect and the run × draw one are shared by its fold, the draw × case one by the runs."""
    sd, (n_rep, n_case), n_fold = MODELS[model], fold.shape, int(fold.max()) + 1
    rep = np.arange(n_rep)[:, None]
    effects = {"pretraining": (runs, 1, 1), "seed": (1, n_rep, n_fold), "case": (1, 1, n_case),
               "pretraining×seed": (runs, n_rep, n_fold), "pretraining×case": (runs, 1, n_case),
               "seed×case": (1, n_rep, n_case), "pretraining×seed×case": (runs, n_rep, n_case)}
    d = np.zeros((datasets, runs, n_rep, n_case))
    for name, size in effects.items():
        x = _effect(rng, sd[name], (datasets, *size), model == "skewed" and "case" in name)
        d += x[..., rep, fold] if "seed" in name and "case" not in name else x
    return d


def true_variance(shape: tuple[int, int, int], sd: dict[str, float]) -> float:
    """V = Σ_T σ²_T / Π_{f∈T} n_f: the variance of the grand mean."""
    return sum(sd[effect_name(t, FACTORS)] ** 2 / math.prod(shape[a] for a in t) for t in SUBSETS)


def folded_variance(runs: int, fold: np.ndarray, sd: dict[str, float]) -> float:
    """V of a cross-validated mean (`simulate_folded`, equal folds): G = R·K draws, R·C scored cells."""
    (n_rep, n_case), draws = fold.shape, fold.shape[0] * (int(fold.max()) + 1)
    over = {"pretraining": runs, "seed": draws, "case": n_case, "pretraining×seed": runs * draws,
            "pretraining×case": runs * n_case, "seed×case": n_rep * n_case,
            "pretraining×seed×case": runs * n_rep * n_case}
    return sum(sd[name] ** 2 / n for name, n in over.items())


def half_widths(d: np.ndarray, v_true: float) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each interval's (half-width, se) [datasets] for the studies ``d`` [datasets, P, S, C]."""
    shape = d.shape[1:]
    n = math.prod(shape)
    ms, df = mean_squares(d, factors=3)
    q = (1 + CONFIDENCE) / 2
    before = (("pretraining", ms[(0,)] / n, shape[0] - 1), ("seed", ms[(1,)] / n, shape[1] - 1),
              ("case", np.maximum(ms[(2,)] - ms[(0, 1, 2)], 0.0) / n, shape[2] - 1))
    run = np.maximum(ms[(0,)] - ms[(0, 1)] - ms[(0, 2)] + ms[(0, 1, 2)], 0.0) / n
    disjoint = (("pretraining", run, shape[0] - 1), ("seed", ms[(1,)] / n, shape[1] - 1),
                ("case", np.maximum(ms[(2,)] - ms[(1, 2)], 0.0) / n, shape[2] - 1))
    parts = crossed_parts(ms, df, shape, FACTORS)
    v, nu = satterthwaite(ms, df, shape)
    se = np.sqrt(sum(p for _, p, _ in parts))
    return {"oracle": (np.full(len(d), stats.norm.ppf(q) * math.sqrt(v_true)), np.full(len(d), math.sqrt(v_true))),
            "before": (half_width(before, CONFIDENCE), np.sqrt(sum(p for _, p, _ in before))),
            "satterthwaite": (stats.t.ppf(q, nu) * np.sqrt(v), np.sqrt(v)),
            "quadrature": (half_width(disjoint, CONFIDENCE), np.sqrt(sum(p for _, p, _ in disjoint))),
            "plug-in": (stats.t.ppf(q, pooled_df(parts, upper=None)) * se, se),
            "asa": (crossed_half_width(parts, shape, CONFIDENCE), se)}


def folded_half_widths(d: np.ndarray, fold: np.ndarray, v_true: float) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(half-width, se) [datasets] of the oracle, the interval before (the runs' means' spread ``s² / P`` at P − 1 df
    beside the draw and case parts) and asa's (`folded_parts`: the run component alone) for ``d`` [datasets, P, R,
    C]."""
    inner = folded_parts(d.mean(axis=1, keepdims=True), fold)
    before = (("pretraining", d.mean(axis=(2, 3)).var(axis=1, ddof=1) / d.shape[1], d.shape[1] - 1), *inner)
    asa = folded_parts(d, fold)
    q = (1 + CONFIDENCE) / 2
    return {"oracle": (np.full(len(d), stats.norm.ppf(q) * math.sqrt(v_true)), np.full(len(d), math.sqrt(v_true))),
            **{name: (half_width(parts, CONFIDENCE), np.sqrt(sum(p for _, p, _ in parts)))
               for name, parts in (("before", before), ("asa", asa))}}


_NU = np.logspace(0, 6, 600)  # df grid: t quantiles and noncentralities read by interpolation, study by study
_T = stats.t.ppf((1 + CONFIDENCE) / 2, _NU)
_LAMBDA = np.array([mde(1.0, nu, alpha=1 - CONFIDENCE, power=POWER) for nu in _NU])


def printed_mdes(h: np.ndarray, se: np.ndarray) -> np.ndarray:
    """The MDE each study's page prints (`CrossedInterval.mde`): a noncentral t at the interval's df, the ν whose
    ``t_ν · se`` is its half-width ``h``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(se > 0, h / se, _T[-1])
    log_nu = np.interp(-ratio, -_T, np.log(_NU))  # t_ν decreases in ν
    return np.interp(log_nu, np.log(_NU), _LAMBDA) * se


def summary(out: dict, mean: np.ndarray, halves: dict[str, list], names: Sequence[str]) -> dict:
    """Coverage, mean half-width and simulated 80 %-power MDE of every interval; for asa's, the MDE the studies print
    (median and 10th–90th percentiles) and the power of a true effect of each size."""
    datasets = len(mean)
    for name in names:
        h = np.concatenate([x for x, _ in halves[name]])
        cover = float(np.mean(np.abs(mean) <= h))
        reach = np.maximum(h - mean, MIN_EFFECT - mean)  # a true δ above it is read "helped"
        out[name] = {"coverage": cover, "coverage_se": math.sqrt(cover * (1 - cover) / datasets),
                     "half_width": float(h.mean()), "mde": float(np.quantile(reach, POWER))}
        if name == "asa":
            printed = np.quantile(printed_mdes(h, np.concatenate([x for _, x in halves[name]])), [0.1, 0.5, 0.9])
            out[name]["printed_mde"] = [float(x) for x in printed]
            out[name]["printed_power"] = [float(np.mean(reach < x)) for x in printed]
    for name in names:
        out[name]["mde_to_oracle"] = out[name]["mde"] / out["oracle"]["mde"]
    return out


def row(*, model: str, shape: tuple[int, int, int], datasets: int, seed: int = 0, chunk: int = 2000) -> dict:
    """Every interval's coverage and MDEs (`summary`) on one crossed design and model."""
    sd = MODELS[model]
    v_true = true_variance(shape, sd)
    rng = np.random.default_rng([seed, *shape, list(MODELS).index(model)])
    means, halves = [], {name: [] for name in INTERVALS}
    for start in range(0, datasets, chunk):
        d = simulate(rng, min(chunk, datasets - start), shape, model)
        means.append(d.mean(axis=(1, 2, 3)))
        for name, h in half_widths(d, v_true).items():
            halves[name].append(h)
    out = {"model": model, "sd": sd, "design": "crossed", "pretraining": shape[0], "seeds": shape[1],
           "cases": shape[2], "datasets": datasets, "se": math.sqrt(v_true), "min_effect": MIN_EFFECT}
    return summary(out, np.concatenate(means), halves, INTERVALS)


def folded_row(*, model: str, runs: int, cases: int, folds: int, repeats: int, datasets: int, seed: int = 0,
               chunk: int = 2000) -> dict:
    """Coverage and MDEs (`summary`) of the oracle, the interval before and asa's on one cross-validated design."""
    sd = MODELS[model]
    rng = np.random.default_rng([seed, runs, cases, folds, repeats, list(MODELS).index(model)])
    fold = np.stack([rng.permutation(cases) % folds for _ in range(repeats)])  # [R, C]: equal folds
    v_true = folded_variance(runs, fold, sd)
    means, halves = [], {name: [] for name in FOLDED_INTERVALS}
    for start in range(0, datasets, chunk):
        d = simulate_folded(rng, min(chunk, datasets - start), runs, fold, model)
        means.append(d.mean(axis=(1, 2, 3)))
        for name, h in folded_half_widths(d, fold, v_true).items():
            halves[name].append(h)
    out = {"model": model, "sd": sd, "design": f"{folds} folds × {repeats}", "pretraining": runs,
           "seeds": folds * repeats, "cases": cases, "datasets": datasets, "se": math.sqrt(v_true),
           "min_effect": MIN_EFFECT}
    return summary(out, np.concatenate(means), halves, FOLDED_INTERVALS)


LABELS = {"seed": "seed-dominated", "case": "case-dominated", "run": "run-dominated", "draw": "draw-only",
          "run×case": "run × case", "skewed": "case-dominated, skewed"}


def markdown(rows: Sequence[dict]) -> str:
    """The table docs/studies.md holds: coverage and MDE ÷ the oracle's for each interval (— where it does not apply:
    cross-validated designs), the oracle's MDE, and the MDE asa's studies print (median) with the power of a true
    effect of that size."""
    names = INTERVALS[1:]
    lines = ["| variance model | design | P | S | C | oracle MDE | "
             + " | ".join(f"{n}: coverage | MDE ÷ oracle" for n in names) + " | asa: printed MDE | its power |",
             "| --- | --- | ---: | ---: | ---: | ---: | " + " | ".join("---: | ---:" for _ in names)
             + " | ---: | ---: |"]
    for r in rows:
        cells = " | ".join(f"{r[n]['coverage']:.3f} | {r[n]['mde_to_oracle']:.2f}" if n in r else "— | —"
                           for n in names)
        lines.append(f"| {LABELS[r['model']]} | {r['design']} | {r['pretraining']} | {r['seeds']} | {r['cases']} | "
                     f"{r['oracle']['mde']:.3f} | {cells} | {r['asa']['printed_mde'][1]:.3f} | "
                     f"{r['asa']['printed_power'][1]:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="one design (P 3, S 3, C 16) per model, 2,000 studies each")
    p.add_argument("--datasets", type=int, help="simulated studies per row (default 20,000; --quick 2,000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the rows to this file")
    p.add_argument("--table", metavar="JSON", help="print the table of a saved run (its --json) and exit")
    args = p.parse_args(argv)
    if args.table:
        with open(args.table) as fh:
            print(markdown(json.load(fh)["rows"]), end="")
        return 0
    datasets = args.datasets or (2000 if args.quick else 20000)
    if datasets < 100:
        print("interval_power: error: --datasets must be >= 100", file=sys.stderr)
        return 2
    grid = QUICK if args.quick else FULL
    crossed = [(m, p, s, c) for m in ("seed", "case", "run") for p in grid["pretraining"] for s in grid["seed"]
               for c in grid["case"]]
    start, rows = time.perf_counter(), []
    for model, runs, seeds, cases in crossed + ([] if args.quick else EXTRA):
        rows.append(row(model=model, shape=(runs, seeds, cases), datasets=datasets, seed=args.seed))
        print(markdown(rows[-1:]).splitlines()[-1], flush=True)
    for model, runs, cases, folds, repeats in FOLDED[:1] if args.quick else FOLDED:
        rows.append(folded_row(model=model, runs=runs, cases=cases, folds=folds, repeats=repeats, datasets=datasets,
                               seed=args.seed))
        print(markdown(rows[-1:]).splitlines()[-1], flush=True)
    seconds = time.perf_counter() - start
    print(f"\n{datasets} simulated studies per row, nominal {CONFIDENCE:.0%}, {POWER:.0%} power, minimum effect "
          f"{MIN_EFFECT}, {seconds:.0f} s\n")
    print(markdown(rows))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"datasets": datasets, "seed": args.seed, "confidence": CONFIDENCE, "power": POWER,
                       "seconds": round(seconds, 1), "rows": rows}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
