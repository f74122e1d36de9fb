"""Percentile bootstrap confidence intervals of a case-level metric.

The cases are resampled, not voxels or crops: each of ``n_resamples`` resamples draws N case
indices with replacement (``numpy.random.default_rng(seed).integers(0, N, size=N)``, one draw per
resample in turn), or, with ``strata``, draws within every stratum as many cases as it holds
(strata in sorted order, so each resample keeps e.g. the class counts of the truth; pROC's default
for AUROC). The metric is computed on each resample; resamples where it is undefined (NaN, e.g.
a class missing from a resample) are dropped and counted. The interval is the
``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` percentiles of the remaining values (linear
interpolation, numpy's default), and the point estimate is the metric on all cases.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["Estimate", "bootstrap_ci"]


@dataclass(frozen=True)
class Estimate:
    """A metric on all cases (``value``) with its percentile bootstrap interval [``low``, ``high``];
    ``n_valid`` of the ``n_resamples`` resamples had a defined value."""

    value: float
    low: float
    high: float
    confidence: float
    n_resamples: int
    n_valid: int

    def to_dict(self) -> dict[str, float | int | None]:
        """JSON-friendly (NaN written as None)."""
        def num(x: float) -> float | None:
            return None if math.isnan(x) else float(x)

        return {"value": num(self.value), "ci_low": num(self.low), "ci_high": num(self.high),
                "confidence": self.confidence, "n_resamples": self.n_resamples, "n_valid": self.n_valid}


def bootstrap_ci(metric: Callable[..., float], *arrays: object, n_resamples: int = 1000, confidence: float = 0.95,
                 seed: int = 0, strata: object | None = None) -> Estimate:
    """``metric(*arrays)`` with a percentile bootstrap interval over the cases (the first axis of
    every array; module docstring for the method). ``n_resamples=0`` gives the value alone (NaN bounds)."""
    if not arrays:
        raise ValueError("bootstrap_ci needs at least one array")
    data = [np.asarray(a) for a in arrays]
    n = data[0].shape[0] if data[0].ndim else 0
    if n == 0 or any(a.ndim == 0 or a.shape[0] != n for a in data):
        raise ValueError(f"the arrays must share a non-empty first axis (cases), got shapes {[a.shape for a in data]}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if n_resamples < 0:
        raise ValueError(f"n_resamples must be >= 0, got {n_resamples}")
    groups = None
    if strata is not None:
        s = np.asarray(strata)
        if s.shape != (n,):
            raise ValueError(f"strata must have one entry per case ({n}), got shape {s.shape}")
        groups = [np.flatnonzero(s == g) for g in np.unique(s)]
    value = float(metric(*data))
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(n_resamples):
        if groups is None:
            idx = rng.integers(0, n, size=n)
        else:
            idx = np.concatenate([g[rng.integers(0, g.size, size=g.size)] for g in groups])
        stats.append(float(metric(*(a[idx] for a in data))))
    valid = np.asarray([x for x in stats if not math.isnan(x)])
    if valid.size == 0:
        low = high = float("nan")
    else:
        low, high = (float(q) for q in np.percentile(valid, [50.0 * (1 - confidence), 50.0 * (1 + confidence)]))
    return Estimate(value, low, high, float(confidence), int(n_resamples), int(valid.size))
