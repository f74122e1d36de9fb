"""How often a study's 95 % interval of a paired difference covers the truth with few fine-tuning seeds.

Simulates the paired differences a transfer study scores, ``d[s, c] = μ + a_s + b_c + e_sc`` over S seeds (labeled
draws, ``a ~ N(0, σ²_seed)``) × C test cases (``b ~ N(0, σ²_case)``; ``e ~ N(0, σ²_seed×case)``), and with
``--pretraining P`` a third crossed level, the pretraining run (``p ~ N(0, σ²_pretraining)``, its interactions at
the same share), and counts how often each interval covers μ:

- the seed × case percentile bootstrap (`asa.eval.seed_case_bootstrap`, the report's interval before), with every
  pretraining run's differences averaged into its seed row (the bootstrap has no third level);
- the crossed random-effects t interval with Satterthwaite's df (`asa.eval.random_effects.crossed_interval`'s
  ``satterthwaite``: ANOVA mean squares, negative components at 0);
- the per-factor interval from the same mean squares (its ``low`` / ``high``: each factor's part at its own t
  quantile, added in quadrature), which the report's verdicts read.

With ``--cv C:K:R`` it also simulates cross-validation of a small labeled set
(`asa.eval.random_effects.folded_interval`): C cases, R repeats of K folds, each fold scored by its own labeled
draw (``a ~ N(0, σ²_seed)``), every case once per repeat; the bootstrap there treats each repeat as a seed.

Two variance models, calibrated to the outside bed of docs/studies.md (per-seed Δ −0.020 and +0.047 lesion Dice,
a case-only CI half-width of about 0.037 over 16 test cases): ``seed`` (the labeled draw dominates: σ 0.04 / 0.03
/ 0.06 for seed / case / seed×case) and ``case`` (the test cases dominate: 0.005 / 0.08 / 0.04). μ = 0, so a
non-covering interval is also a false "helped" or "hurt" (the rate is 1 − coverage).

    python -m benchmarks.interval_coverage                       # 2, 3, 5, 10 seeds × both models, 16 cases
    python -m benchmarks.interval_coverage --datasets 200 --seeds 2 --pretraining 2
    python -m benchmarks.interval_coverage --seeds 2 3 --cv 18:3:2 18:3:3 28:4:2
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence

import numpy as np

from asa.eval import seed_case_bootstrap
from asa.eval.random_effects import crossed_interval, folded_interval

# model -> (σ seed, σ case, σ seed×case) in Dice
MODELS = {"seed": (0.04, 0.03, 0.06), "case": (0.005, 0.08, 0.04)}


def simulate(rng: np.random.Generator, *, seeds: int, cases: int, sd: tuple[float, float, float],
             pretraining: int = 1) -> np.ndarray:
    """One study's paired differences (true mean 0): [seeds, cases], or [pretraining, seeds, cases] with
    ``pretraining`` > 1 (the pretraining run and its interactions with seeds and cases at the seed's σ, the
    three-way one at the residual's)."""
    s_seed, s_case, s_res = sd
    a = rng.normal(0, s_seed, (1, seeds, 1))
    b = rng.normal(0, s_case, (1, 1, cases))
    d = a + b + rng.normal(0, s_res, (pretraining, seeds, cases))
    if pretraining > 1:
        d = d + rng.normal(0, s_seed, (pretraining, 1, 1)) + rng.normal(0, s_seed, (pretraining, seeds, 1)) \
            + rng.normal(0, s_case, (pretraining, 1, cases))
        return d
    return d[0]


def coverage(*, model: str, seeds: int, cases: int, datasets: int, resamples: int, pretraining: int = 1,
             seed: int = 0) -> dict:
    """Coverage and mean half-width of both intervals over ``datasets`` simulated studies."""
    rng = np.random.default_rng(seed)
    hits = {"bootstrap": 0, "satterthwaite": 0, "per-factor": 0}
    half = dict.fromkeys(hits, 0.0)
    factors = ("pretraining", "seed", "case") if pretraining > 1 else ("seed", "case")
    for k in range(datasets):
        d = simulate(rng, seeds=seeds, cases=cases, sd=MODELS[model], pretraining=pretraining)
        boot = seed_case_bootstrap(d.mean(axis=0) if pretraining > 1 else d, n_resamples=resamples, seed=k)
        crossed = crossed_interval(d, factors=factors)
        for name, (lo, hi) in (("bootstrap", (boot.low, boot.high)), ("satterthwaite", crossed.satterthwaite),
                               ("per-factor", (crossed.low, crossed.high))):
            hits[name] += int(lo <= 0.0 <= hi)
            half[name] += (hi - lo) / 2 / datasets
    out = {"model": model, "sd": dict(zip(("seed", "case", "seed×case"), MODELS[model])), "seeds": seeds,
           "cases": cases, "pretraining": pretraining, "datasets": datasets, "resamples": resamples}
    for name in hits:
        p = hits[name] / datasets
        out[name] = {"coverage": p, "coverage_se": math.sqrt(p * (1 - p) / datasets), "half_width": half[name]}
    return out


def cv_coverage(*, model: str, cases: int, folds: int, repeats: int, datasets: int, resamples: int,
                seed: int = 0) -> dict:
    """Coverage and mean half-width of the cross-validated interval (and of the bootstrap over repeats × cases)."""
    rng = np.random.default_rng(seed)
    s_seed, s_case, s_res = MODELS[model]
    hits, half = {"bootstrap": 0, "per-factor": 0}, {"bootstrap": 0.0, "per-factor": 0.0}
    for k in range(datasets):
        b = rng.normal(0, s_case, cases)
        d, reps = np.full((folds * repeats, cases), np.nan), []
        for r in range(repeats):
            for f, fold in enumerate(np.array_split(rng.permutation(cases), folds)):
                d[r * folds + f, fold] = b[fold] + rng.normal(0, s_seed) + rng.normal(0, s_res, fold.size)
                reps.append(r)
        per_repeat = np.stack([np.nanmean(d[r * folds:(r + 1) * folds], axis=0) for r in range(repeats)])
        boot = seed_case_bootstrap(per_repeat, n_resamples=resamples, seed=k)
        folded = folded_interval(d, reps)
        for name, (lo, hi) in (("bootstrap", (boot.low, boot.high)), ("per-factor", (folded.low, folded.high))):
            hits[name] += int(lo <= 0.0 <= hi)
            half[name] += (hi - lo) / 2 / datasets
    out = {"model": model, "cases": cases, "folds": folds, "repeats": repeats, "datasets": datasets}
    for name in hits:
        p = hits[name] / datasets
        out[name] = {"coverage": p, "coverage_se": math.sqrt(p * (1 - p) / datasets), "half_width": half[name]}
    return out


def cv_markdown(rows: Sequence[dict]) -> str:
    """The cross-validation table docs/studies.md holds."""
    lines = ["| variance model | labeled cases | folds × repeats | bootstrap (repeats as seeds): coverage | "
             "half-width | per-factor (verdicts): coverage | half-width |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        cells = " | ".join(f"{r[k]['coverage']:.3f} | {r[k]['half_width']:.3f}" for k in ("bootstrap", "per-factor"))
        lines.append(f"| {r['model']}-dominated | {r['cases']} | {r['folds']} × {r['repeats']} | {cells} |")
    return "\n".join(lines) + "\n"


def markdown(rows: Sequence[dict]) -> str:
    """The table docs/studies.md holds."""
    lines = ["| variance model | pretraining runs | seeds | bootstrap: coverage | half-width | "
             "Satterthwaite: coverage | half-width | per-factor (verdicts): coverage | half-width |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        cells = " | ".join(f"{r[k]['coverage']:.3f} | {r[k]['half_width']:.3f}"
                           for k in ("bootstrap", "satterthwaite", "per-factor"))
        lines.append(f"| {r['model']}-dominated | {r['pretraining']} | {r['seeds']} | {cells} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[2, 3, 5, 10], help="fine-tuning seeds (default 2 3 5 10)")
    p.add_argument("--models", nargs="+", choices=sorted(MODELS), default=sorted(MODELS, reverse=True))
    p.add_argument("--cases", type=int, default=16, help="test cases (default 16, the cpu scale's)")
    p.add_argument("--pretraining", type=int, nargs="+", default=[1],
                   help="pretraining runs per arm (default 1; 2: the run a crossed level of its own)")
    p.add_argument("--datasets", type=int, default=2000, help="simulated studies per row (default 2000)")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples per interval (default 1000)")
    p.add_argument("--cv", nargs="*", default=[], metavar="C:K:R",
                   help="also cross-validation designs: C labeled cases, K folds, R repeats (e.g. 18:3:2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the rows to this file")
    args = p.parse_args(argv)
    if min(args.seeds) < 2 or args.cases < 2 or args.datasets < 1 or min(args.pretraining) < 1:
        print("interval_coverage: error: --seeds and --cases must be >= 2, --datasets and --pretraining >= 1",
              file=sys.stderr)
        return 2
    start, rows = time.perf_counter(), []
    for model in args.models:
        for runs in args.pretraining:
            for seeds in args.seeds:
                rows.append(coverage(model=model, seeds=seeds, cases=args.cases, datasets=args.datasets,
                                     resamples=args.resamples, pretraining=runs, seed=args.seed))
                print(markdown(rows[-1:]).splitlines()[-1], flush=True)
    print(f"\n{args.datasets} simulated studies per row, {args.cases} test cases, nominal 95 %, "
          f"{time.perf_counter() - start:.0f} s\n")
    print(markdown(rows))
    cv_rows = []
    for spec in args.cv:
        cases, folds, repeats = (int(v) for v in spec.split(":"))
        for model in args.models:
            cv_rows.append(cv_coverage(model=model, cases=cases, folds=folds, repeats=repeats, datasets=args.datasets,
                                       resamples=args.resamples, seed=args.seed))
            print(cv_markdown(cv_rows[-1:]).splitlines()[-1], flush=True)
    if cv_rows:
        print("\n" + cv_markdown(cv_rows))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"crossed": rows, "cross-validation": cv_rows}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
