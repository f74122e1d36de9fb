"""How often a nominal bootstrap interval covers the truth when cases come in sessions of subjects.

Simulates data sets of ``--subjects`` subjects with ``--sessions`` sessions each, whose sessions
share a subject effect (intra-class correlation ``--icc``), computes the percentile bootstrap
interval of a case-level metric twice with `asa.eval.bootstrap_ci` — resampling cases (sessions
taken as independent) and resampling subjects with all their sessions (``groups``) — and counts
how often each covers the metric's population value.

- ``--metric mae``: a regression model's error on session j of subject i is
  ``e_ij = u_i + ε_ij`` (u ~ N(0, icc), ε ~ N(0, 1 − icc)); the truth is E|e| = sqrt(2/π).
- ``--metric auroc``: half the subjects are positive (the class is the subject's); a session's score
  is ``δ·y_i + u_i + ε_ij``; the truth is Φ(δ / sqrt(2)) (unit variance per session). The
  bootstrap resamples within each class, as `asa.eval.classification_summary` does.

    python scripts/interval_coverage.py --datasets 200 --metric mae
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence

import numpy as np
from scipy.stats import norm

from asa.eval import auroc, bootstrap_ci, mae


def simulate(rng: np.random.Generator, *, metric: str, subjects: int, sessions: int, icc: float, effect: float
             ) -> tuple[tuple[np.ndarray, ...], np.ndarray, np.ndarray | None, float]:
    """One data set: (the metric's arrays, subject of each case, strata or None, population value)."""
    u = np.repeat(rng.normal(0.0, math.sqrt(icc), subjects), sessions)
    eps = rng.normal(0.0, math.sqrt(1.0 - icc), subjects * sessions)
    groups = np.repeat(np.array([f"sub-{i:04d}" for i in range(subjects)]), sessions)
    if metric == "mae":
        truth = rng.uniform(55.0, 90.0, subjects * sessions)
        return (truth, truth + u + eps), groups, None, math.sqrt(2.0 / math.pi)
    y = np.repeat(np.arange(subjects) % 2, sessions)
    return (y, effect * y + u + eps), groups, y, float(norm.cdf(effect / math.sqrt(2.0)))


def coverage(*, metric: str, datasets: int, subjects: int, sessions: int, icc: float, effect: float,
             resamples: int, confidence: float, seed: int) -> dict:
    """Coverage and mean width of the case- and subject-resampling intervals over ``datasets`` data sets."""
    fn = {"mae": mae, "auroc": auroc}[metric]
    rng = np.random.default_rng(seed)
    hits = {"cases": 0, "subjects": 0}
    width = {"cases": 0.0, "subjects": 0.0}
    truth = float("nan")
    for d in range(datasets):
        arrays, groups, strata, truth = simulate(rng, metric=metric, subjects=subjects, sessions=sessions, icc=icc,
                                                 effect=effect)
        for unit, g in (("cases", None), ("subjects", groups)):
            est = bootstrap_ci(fn, *arrays, n_resamples=resamples, confidence=confidence, seed=seed + d, strata=strata,
                               groups=g)
            hits[unit] += int(est.low <= truth <= est.high)
            width[unit] += (est.high - est.low) / datasets
    out = {"metric": metric, "truth": truth, "datasets": datasets, "subjects": subjects, "sessions": sessions,
           "icc": icc, "confidence": confidence, "resamples": resamples, "seed": seed}
    for unit in hits:
        p = hits[unit] / datasets
        out[unit] = {"coverage": p, "coverage_se": math.sqrt(p * (1 - p) / datasets), "mean_width": width[unit]}
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--metric", choices=("mae", "auroc"), default="mae", help="the case-level metric (default mae)")
    p.add_argument("--datasets", type=int, default=200, help="simulated data sets (default 200)")
    p.add_argument("--subjects", type=int, default=40, help="subjects per data set (default 40)")
    p.add_argument("--sessions", type=int, default=3, help="sessions per subject (default 3)")
    p.add_argument("--icc", type=float, default=0.8,
                   help="share of a session's variance that its subject shares with its other sessions (default 0.8)")
    p.add_argument("--effect", type=float, default=1.0, help="auroc: score shift of the positive class (default 1)")
    p.add_argument("--resamples", type=int, default=500, help="bootstrap resamples per interval (default 500)")
    p.add_argument("--confidence", type=float, default=0.95, help="nominal coverage (default 0.95)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the result to this file")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    problems = [f"--{k} must be >= {lo}, got {getattr(args, k)}" for k, lo in
                (("datasets", 1), ("subjects", 4), ("sessions", 1), ("resamples", 1)) if getattr(args, k) < lo]
    if not 0.0 <= args.icc < 1.0:
        problems.append(f"--icc must lie in [0, 1), got {args.icc}")
    if not 0.0 < args.confidence < 1.0:
        problems.append(f"--confidence must lie in (0, 1), got {args.confidence}")
    if problems:
        print("interval_coverage: error: " + "; ".join(problems), file=sys.stderr)
        return 2
    start = time.perf_counter()
    out = coverage(metric=args.metric, datasets=args.datasets, subjects=args.subjects, sessions=args.sessions,
                   icc=args.icc, effect=args.effect, resamples=args.resamples, confidence=args.confidence,
                   seed=args.seed)
    out["seconds"] = round(time.perf_counter() - start, 1)
    print(f"{args.metric}: {args.datasets} data sets of {args.subjects} subjects × {args.sessions} sessions "
          f"(icc {args.icc:g}), nominal {args.confidence:.0%}, {args.resamples} resamples; truth {out['truth']:.4f}")
    for unit in ("cases", "subjects"):
        r = out[unit]
        print(f"  resampling {unit:<9} coverage {r['coverage']:.1%} (± {r['coverage_se']:.1%}), "
              f"mean width {r['mean_width']:.4f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
