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
  3 draws that t with each part taken at its upper 75 % bound for the df (`pooled_df`), so that a part small by
  chance does not lift the df; with 2 runs the runs' whole spread ``MS_run / N`` at ``t_1``, the parts in quadrature.

Every interval is location-equivariant (its half-width h reads only the mean squares), so one simulation at δ = 0
gives each its coverage (``|mean| ≤ h``) and its whole power curve: the verdict rule of `asa.study.readings.verdict`
reads "helped" when the interval lies above 0 and the estimate is at least the minimum effect m, i.e. at a true δ
when ``δ > max(h − mean₀, m − mean₀)``, so the simulated MDE at 80 % power is that maximum's 80th percentile. The
``printed`` MDE is what a study's page prints (`CrossedInterval.mde`: a noncentral t at the interval's df) from the
true variance components.

Two variance models (SDs in Dice; the per-case SD of one paired difference is about 0.10 in both): ``seed``, the
labeled draw dominates (run 0.03, draw 0.08), ``case``, the test cases dominate (run 0.01, draw 0.03, case 0.08),
and ``run``, the pretraining run dominates (run 0.05, draw 0.03, case 0.03).

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

from asa.eval.random_effects import (CrossedInterval, crossed_half_width, crossed_parts, effect_name, half_width,
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
}
SUBSETS = [(0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)]
INTERVALS = ("oracle", "before", "satterthwaite", "quadrature", "plug-in", "asa")
CONFIDENCE, POWER, MIN_EFFECT = 0.95, 0.8, 0.01
FULL = {"pretraining": (2, 3, 4), "seed": (3, 8), "case": (16, 32)}
QUICK = {"pretraining": (3,), "seed": (3,), "case": (16,)}


def simulate(rng: np.random.Generator, datasets: int, shape: tuple[int, int, int], sd: dict[str, float]
             ) -> np.ndarray:
    """``datasets`` studies' paired differences at δ = 0: [datasets, P, S, C]."""
    d = np.zeros((datasets, *shape))
    for t in SUBSETS:
        size = (datasets, *(shape[a] if a in t else 1 for a in range(3)))
        d += rng.normal(0.0, sd[effect_name(t, FACTORS)], size)
    return d


def true_variance(shape: tuple[int, int, int], sd: dict[str, float]) -> float:
    """V = Σ_T σ²_T / Π_{f∈T} n_f: the variance of the grand mean."""
    return sum(sd[effect_name(t, FACTORS)] ** 2 / math.prod(shape[a] for a in t) for t in SUBSETS)


def half_widths(d: np.ndarray, v_true: float) -> dict[str, np.ndarray]:
    """Each interval's half-width [datasets] for the studies ``d`` [datasets, P, S, C]."""
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
    return {"oracle": np.full(len(d), stats.norm.ppf(q) * math.sqrt(v_true)),
            "before": half_width(before, CONFIDENCE),
            "satterthwaite": stats.t.ppf(q, nu) * np.sqrt(v),
            "quadrature": half_width(disjoint, CONFIDENCE),
            "plug-in": stats.t.ppf(q, pooled_df(parts, upper=None)) * np.sqrt(sum(p for _, p, _ in parts)),
            "asa": crossed_half_width(parts, shape, CONFIDENCE)}


def printed_mde(shape: tuple[int, int, int], sd: dict[str, float]) -> float:
    """The MDE a study's page prints (`CrossedInterval.mde`) when its variance components are the true ones."""
    comps = {effect_name(t, FACTORS): sd[effect_name(t, FACTORS)] ** 2 for t in SUBSETS}
    planned = CrossedInterval(0.0, math.nan, math.nan, CONFIDENCE, math.nan, math.nan, components=comps,
                              levels=dict(zip(FACTORS, shape)))
    return planned.mde(power=POWER, alpha=1 - CONFIDENCE, levels=planned.levels)


def row(*, model: str, shape: tuple[int, int, int], datasets: int, seed: int = 0, chunk: int = 2000) -> dict:
    """Coverage, mean half-width and simulated 80 %-power MDE of every interval on one design and model."""
    sd = MODELS[model]
    v_true = true_variance(shape, sd)
    rng = np.random.default_rng([seed, *shape, list(MODELS).index(model)])
    means, halves = [], {name: [] for name in INTERVALS}
    for start in range(0, datasets, chunk):
        d = simulate(rng, min(chunk, datasets - start), shape, sd)
        means.append(d.mean(axis=(1, 2, 3)))
        for name, h in half_widths(d, v_true).items():
            halves[name].append(h)
    mean = np.concatenate(means)
    out = {"model": model, "sd": sd, "pretraining": shape[0], "seeds": shape[1], "cases": shape[2],
           "datasets": datasets, "se": math.sqrt(v_true), "min_effect": MIN_EFFECT}
    for name in INTERVALS:
        h = np.concatenate(halves[name])
        cover = float(np.mean(np.abs(mean) <= h))
        out[name] = {"coverage": cover, "coverage_se": math.sqrt(cover * (1 - cover) / datasets),
                     "half_width": float(h.mean()),
                     "mde": float(np.quantile(np.maximum(h - mean, MIN_EFFECT - mean), POWER))}
    for name in INTERVALS:
        out[name]["mde_to_oracle"] = out[name]["mde"] / out["oracle"]["mde"]
    out["asa"]["printed_mde"] = printed_mde(shape, sd)
    return out


def markdown(rows: Sequence[dict]) -> str:
    """The table docs/studies.md holds: coverage and MDE ÷ the oracle's for each interval, the oracle's MDE, and the
    chosen interval's printed MDE ÷ its simulated one."""
    names = INTERVALS[1:]
    lines = ["| variance model | P | S | C | oracle MDE | " + " | ".join(f"{n}: coverage | MDE ÷ oracle" for n in names)
             + " | asa: printed ÷ simulated MDE |",
             "| --- | ---: | ---: | ---: | ---: | " + " | ".join("---: | ---:" for _ in names) + " | ---: |"]
    for r in rows:
        cells = " | ".join(f"{r[n]['coverage']:.3f} | {r[n]['mde_to_oracle']:.2f}" for n in names)
        lines.append(f"| {r['model']}-dominated | {r['pretraining']} | {r['seeds']} | {r['cases']} | "
                     f"{r['oracle']['mde']:.3f} | {cells} | {r['asa']['printed_mde'] / r['asa']['mde']:.2f} |")
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
    start, rows = time.perf_counter(), []
    for model in MODELS:
        for runs in grid["pretraining"]:
            for seeds in grid["seed"]:
                for cases in grid["case"]:
                    rows.append(row(model=model, shape=(runs, seeds, cases), datasets=datasets, seed=args.seed))
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
