"""The mean of a fully crossed random-effects design with its interval, from the ANOVA mean squares.

A study scores paired differences ``d`` on a grid of random factors, every cell once: fine-tuning seeds (labeled
draws) × test cases, with replicated pretraining runs × seeds × test cases (cases always last). Each factor and
each interaction is a variance component; the grand mean's variance is ``V = Σ_T σ²_T / Π_{f∈T} n_f`` over every
non-empty set T of factors (the highest interaction holds the residual). With one observation per cell the expected
mean square of T is ``E[MS_T] = Σ_{U⊇T} σ²_U · Π_{f∉U} n_f`` (balanced ANOVA; Searle, Casella & McCulloch 1992,
ch. 4), which inverts to ``σ²_T = Σ_{U⊇T} (−1)^{|U|−|T|} MS_U / Π_{f∉T} n_f`` and gives
``V = Σ_T (−1)^{|T|+1} MS_T / N`` (two factors: ``(MS_seed + MS_case − MS_seed×case) / N``).

Two intervals come from them:

- **Satterthwaite's** ``mean ± t_ν · sqrt(V)``: negative component estimates set to 0 (their mean squares drop
  out), ``ν = V² / Σ (c_U MS_U)² / df_U`` (Satterthwaite 1946). With 2 seeds its ν follows the seed mean square's
  one degree of freedom only while that mean square is large; where it is small by chance ν jumps to the cases'
  and the interval is too narrow (``benchmarks/interval_coverage.py``: 0.89 at 2 seeds where the labeled draw
  dominates).
- **The per-factor interval** (``low``, ``high``: the one a study's verdicts read): the error of the mean is a sum
  of independent parts, each estimated with its own degrees of freedom, and their half-widths add in quadrature
  (the MOVER of Zou & Donner 2008): each draw factor f (seed, pretraining run) contributes ``MS_f / N`` at
  ``t_{n_f − 1}``, the cases ``(MS_case − MS_residual)⁺ / N`` at ``t_{C − 1}``. With seeds × cases the parts are
  the seed means' spread (``σ²_seed/S + σ²_e/N``, exactly) and the cases' (``σ²_case/C``): unbiased for V, and
  with 2 seeds the seed part carries ``t_1`` whatever its mean square; with a pretraining level the parts overlap
  (conservative). Coverage at 2, 3, 5 and 10 seeds: docs/studies.md.

Cross-validation (`folded_interval`): R repeats of K folds are G = R·K labeled draws, each scoring its own fold
of the C cases, every case once per repeat, so draws and cases are not crossed. With ``d = μ + a_draw + b_case + e``
the mean's variance is ``σ²_a / G + σ²_b / C + σ²_e / (R·C)``; its parts: the draw means' spread within each repeat
(pooled, R·(K − 1) df: ``σ²_a / G + (σ²_b + σ²_e) / (R·C)``) and, with R ≥ 2, the rest of the cases' share,
``σ²_b (R − 1) / (R·C)``, σ²_b read off the repeat × case table (``(MS_case − MS_repeat×case) / R``, C − 1 df).

Why not the seed × case bootstrap (`asa.eval.seed_case_bootstrap`): it resamples the 2–3 seeds as if they were the
population, so its interval is too narrow where the labeled draws carry the spread (the same benchmark).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass, field

import numpy as np
from scipy import optimize, stats

__all__ = ["CrossedInterval", "complete_grid", "crossed_interval", "folded_interval"]


@dataclass(frozen=True)
class CrossedInterval:
    """The mean of ``d`` (``value``) with its per-factor ``confidence`` interval [``low``, ``high``] (module
    docstring); ``se`` = sqrt(V) and ``df`` = Satterthwaite's ν, whose t interval is ``satterthwaite``;
    ``parts``: the per-factor interval's independent parts, (name, variance, df) each; ``components``: each
    effect's variance component (truncated at 0: "seed", "case", "seed×case", ...); ``levels``: each factor's
    levels used; ``dropped``: cases left out for a missing pair. NaN bounds where a factor has one level (its
    spread is not measured)."""

    value: float
    low: float
    high: float
    confidence: float
    se: float
    df: float
    satterthwaite: tuple[float, float] = (math.nan, math.nan)
    parts: tuple[tuple[str, float, float], ...] = ()
    components: dict[str, float] = field(default_factory=dict)
    levels: dict[str, int] = field(default_factory=dict)
    dropped: int = 0

    def half_width(self, confidence: float) -> float:
        """The per-factor interval's half-width at ``confidence``: ``sqrt(Σ t²_{df_q} · variance_q)``."""
        if not self.parts:
            return math.nan
        return math.sqrt(sum(_t(confidence, df) ** 2 * v for _, v, df in self.parts))

    def bounds(self, confidence: float) -> tuple[float, float]:
        """The two-sided ``confidence`` interval of the same estimate (0.90: the one-sided 95 % bounds TOST reads)."""
        h = self.half_width(confidence)
        return self.value - h, self.value + h

    @property
    def p(self) -> float:
        """Two-sided p of "the mean is 0": one minus the confidence at which the interval just reaches 0 (its
        dual, as `asa.eval.bootstrap_p` is the bootstrap's). NaN where the interval is."""
        if not self.parts or math.isnan(self.value):
            return math.nan
        if self.value == 0.0:
            return 1.0
        if self.half_width(0.5) == 0.0:  # no spread at all: any confidence excludes a non-zero mean
            return 0.0
        gap = lambda c: self.half_width(c) - abs(self.value)  # noqa: E731  increasing in c
        lo, hi = 1e-12, 1.0 - 1e-12
        if gap(lo) >= 0:
            return 1.0
        if gap(hi) <= 0:
            return 1e-12
        return float(1.0 - optimize.brentq(gap, lo, hi, xtol=1e-12))

    def mde(self, *, power: float = 0.8, alpha: float = 0.05, levels: dict[str, int] | None = None) -> float:
        """The smallest true mean the two-sided level-``alpha`` test on this interval detects with probability
        ``power``: its half-width at 1 − ``alpha`` plus the one-sided ``power`` quantile's (the half-width at
        2·``power`` − 1), ``(t_{1−α/2} + t_{power}) · se`` for one part. ``levels``: another design (e.g. twice the
        seeds: ``{"seed": 6}``), its parts from the same variance components (their expected mean squares)."""
        interval = self if levels is None else self.projected({**self.levels, **levels})
        return interval.half_width(1 - alpha) + interval.half_width(2 * power - 1)

    def projected(self, levels: dict[str, int]) -> CrossedInterval:
        """The interval this study's variance components would give with other numbers of ``levels`` (same factors,
        expected mean squares in place of the observed ones; value and bounds not recomputed)."""
        factors = tuple(self.levels)
        shape = tuple(int(levels[f]) for f in factors)
        subsets = _subsets(len(factors))
        sigma = {t: self.components.get(effect_name(t, factors), 0.0) for t in subsets}
        ms = {u: sum(sigma[t] * math.prod(shape[a] for a in range(len(factors)) if a not in t)
                     for t in subsets if set(u) <= set(t)) for u in subsets}
        return dataclasses.replace(self, parts=_parts(ms, shape, factors), levels=dict(zip(factors, shape)))

    def to_dict(self) -> dict:
        """JSON-friendly (NaN written as None)."""
        def num(x: float) -> float | None:
            return None if math.isnan(x) or math.isinf(x) else float(x)

        return {"value": num(self.value), "ci_low": num(self.low), "ci_high": num(self.high),
                "confidence": self.confidence, "se": num(self.se), "df": num(self.df),
                "satterthwaite": [num(x) for x in self.satterthwaite],
                "parts": [[name, float(v), float(df)] for name, v, df in self.parts],
                "components": {k: float(v) for k, v in self.components.items()}, "levels": dict(self.levels),
                "dropped": self.dropped}


def _t(confidence: float, df: float) -> float:
    q = (1 + confidence) / 2
    return float(stats.norm.ppf(q) if not math.isfinite(df) else stats.t.ppf(q, df))


def _subsets(k: int) -> list[tuple[int, ...]]:
    return [s for r in range(1, k + 1) for s in itertools.combinations(range(k), r)]


def effect_name(subset: tuple[int, ...], factors: tuple[str, ...]) -> str:
    """"seed", "case", "seed×case", ...: the name of the effect of the factors ``subset``."""
    return "×".join(factors[i] for i in subset)


def _parts(ms: dict[tuple[int, ...], float], shape: tuple[int, ...], factors: tuple[str, ...]
           ) -> tuple[tuple[str, float, float], ...]:
    """The per-factor interval's parts: each draw factor's ``MS_f / N`` (df n_f − 1), then the cases'
    ``(MS_case − MS_residual)⁺ / N`` (df C − 1); one factor alone: its ``MS / N``."""
    k, n = len(shape), math.prod(shape)
    if k == 1:
        return ((factors[0], ms[(0,)] / n, float(shape[0] - 1)),)
    out = [(factors[f], ms[(f,)] / n, float(shape[f] - 1)) for f in range(k - 1)]
    out.append((factors[-1], max(0.0, ms[(k - 1,)] - ms[tuple(range(k))]) / n, float(shape[-1] - 1)))
    return tuple(out)


def complete_grid(d: np.ndarray) -> tuple[np.ndarray, int]:
    """The balanced part of ``d`` [..., cases]: levels of every axis but the last that hold no value at all are left
    out (a run that did not finish), then every case (last axis) with a missing pair. -> (grid, cases dropped)."""
    d = np.asarray(d, dtype=float)
    for axis in range(d.ndim - 1):
        other = tuple(a for a in range(d.ndim) if a != axis)
        d = np.compress(~np.isnan(d).all(axis=other), d, axis=axis)
    keep = ~np.isnan(d).any(axis=tuple(range(d.ndim - 1))) if d.ndim > 1 else ~np.isnan(d)
    return d[..., keep], int((~keep).sum())


def mean_squares(grid: np.ndarray) -> tuple[dict[tuple[int, ...], float], dict[tuple[int, ...], int]]:
    """The ANOVA mean square and df of every effect (a non-empty set of axes) of a complete grid: the effect is the
    inclusion–exclusion of the marginal means over the subsets of its axes (``ȳ_s. − ȳ..``, ``y_sc − ȳ_s. − ȳ.c +
    ȳ..``), its sum of squares taken over every cell, its df ``Π (n_f − 1)``."""
    k = grid.ndim
    subsets = _subsets(k)
    marginal = {s: grid.mean(axis=tuple(a for a in range(k) if a not in s), keepdims=True) for s in [(), *subsets]}
    ms, df = {}, {}
    for t in subsets:
        effect = sum((-1) ** (len(t) - len(u)) * marginal[u] for r in range(len(t) + 1)
                     for u in itertools.combinations(t, r))
        df[t] = math.prod(grid.shape[a] - 1 for a in t)
        ms[t] = float((np.broadcast_to(effect, grid.shape) ** 2).sum()) / df[t]
    return ms, df


def crossed_interval(d: object, *, confidence: float = 0.95, factors: tuple[str, ...] = ("seed", "case")
                     ) -> CrossedInterval:
    """The grand mean of ``d`` (one axis per random factor named in ``factors``, cases last; NaN: a missing pair,
    `complete_grid`) with its crossed random-effects ``confidence`` intervals (module docstring)."""
    d = np.asarray(d, dtype=float)
    if d.ndim != len(factors) or d.ndim < 1:
        raise ValueError(f"d must have one axis per factor {factors}, got shape {d.shape}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    grid, dropped = complete_grid(d)
    nan = math.nan
    levels = dict(zip(factors, grid.shape))
    if grid.size == 0:
        return CrossedInterval(nan, nan, nan, confidence, nan, nan, levels=levels, dropped=dropped)
    value = float(grid.mean())
    if min(grid.shape) < 2:  # a factor of one level: its spread (and every interaction's) is not measured
        return CrossedInterval(value, nan, nan, confidence, nan, nan, levels=levels, dropped=dropped)
    k, n = grid.ndim, grid.size
    subsets = _subsets(k)
    ms, df = mean_squares(grid)
    component = {t: sum((-1) ** (len(u) - len(t)) * ms[u] for u in subsets if set(t) <= set(u))
                 / math.prod(grid.shape[a] for a in range(k) if a not in t) for t in subsets}
    kept = {t for t in subsets if component[t] > 0}
    coef = {u: sum((-1) ** (len(u) - len(t)) for t in kept if set(t) <= set(u)) / n for u in subsets}
    v = max(0.0, sum(coef[u] * ms[u] for u in subsets))
    terms = sum((coef[u] * ms[u]) ** 2 / df[u] for u in subsets if coef[u] != 0.0)
    nu = v * v / terms if terms > 0 else math.inf
    se = math.sqrt(v)
    satt = (value - _t(confidence, nu) * se, value + _t(confidence, nu) * se)
    comps = {effect_name(t, factors): max(0.0, float(component[t])) for t in subsets}
    out = CrossedInterval(value, nan, nan, confidence, se, float(nu), satt, _parts(ms, grid.shape, factors), comps,
                          levels, dropped)
    low, high = out.bounds(confidence)
    return dataclasses.replace(out, low=low, high=high)


def folded_interval(d: object, repeats: object, *, confidence: float = 0.95) -> CrossedInterval:
    """The mean of cross-validated paired differences ``d`` [draws, cases] (NaN where a draw did not score a case:
    each draw scores its fold) with the per-part interval of the module docstring; ``repeats`` [draws]: the repeat
    of each draw (its folds are the draws of that repeat). ``levels``: {"draw": G, "case": C, "repeat": R}.
    ``d`` [pretraining runs, draws, cases]: replicated pretraining, one more part first, the spread of the runs'
    means (``s² / P``, P − 1 df, as a crossed factor's), the rest read on the runs' mean per cell."""
    d = np.asarray(d, dtype=float)
    if d.ndim == 3:
        runs = d[~np.isnan(d).all(axis=(1, 2))]
        cells = ~np.isnan(runs).any(axis=0)  # cells every run scored
        inner = folded_interval(np.where(cells, runs.mean(axis=0) if runs.size else np.nan, np.nan), repeats,
                                confidence=confidence)
        if len(runs) < 2 or not inner.parts:
            return dataclasses.replace(inner, low=math.nan, high=math.nan, parts=(),
                                       levels={"pretraining": len(runs), **inner.levels})
        means = np.array([run[cells].mean() for run in runs])
        part = ("pretraining", float(means.var(ddof=1)) / len(runs), float(len(runs) - 1))
        out = dataclasses.replace(inner, parts=(part, *inner.parts), levels={"pretraining": len(runs), **inner.levels},
                                  se=math.sqrt(inner.se ** 2 + part[1]))
        low, high = out.bounds(confidence)
        return dataclasses.replace(out, low=low, high=high)
    reps = np.asarray(repeats)
    if d.ndim != 2 or reps.shape != (d.shape[0],):
        raise ValueError(f"d must be [draws, cases] and repeats [draws], got shapes {d.shape} and {reps.shape}")
    ran = ~np.isnan(d).all(axis=1)  # a draw that did not finish
    d, reps = d[ran], reps[ran]
    names = sorted(set(reps.tolist()))
    # every case once per repeat: the repeat × case table, cases scored in every repeat only
    scored = ~np.isnan(d)
    with np.errstate(invalid="ignore", divide="ignore"):  # a case no draw of a repeat scored: NaN, left out below
        table = np.stack([np.where(scored[reps == r], d[reps == r], 0.0).sum(0) / scored[reps == r].sum(0)
                          for r in names]) if names else np.zeros((0, d.shape[1]))
    keep = ~np.isnan(table).any(axis=0) if table.size else np.zeros(d.shape[1], bool)
    table = table[:, keep]
    nan = math.nan
    folds = [int((reps == r).sum()) for r in names]
    levels = {"draw": int(sum(folds)), "case": int(table.shape[1]), "repeat": len(names)}
    if table.size == 0:
        return CrossedInterval(nan, nan, nan, confidence, nan, nan, levels=levels, dropped=int((~keep).sum()))
    value = float(table.mean())
    if min(folds) < 2:  # one draw in a repeat: the spread between draws is not measured
        return CrossedInterval(value, nan, nan, confidence, nan, nan, levels=levels, dropped=int((~keep).sum()))
    d = d[:, keep]
    means = np.array([np.nanmean(row) for row in d])
    within = sum(float(((means[reps == r] - means[reps == r].mean()) ** 2).sum()) for r in names)
    df_w = sum(k - 1 for k in folds)
    n_rep, n_case = len(names), table.shape[1]
    parts = [("draw", within / df_w / levels["draw"], float(df_w))]
    if n_rep >= 2:
        ms, _ = mean_squares(table)
        sigma_case = max(0.0, ms[(1,)] - ms[(0, 1)]) / n_rep
        parts.append(("case", sigma_case * (n_rep - 1) / (n_rep * n_case), float(n_case - 1)))
    v = sum(p[1] for p in parts)
    out = CrossedInterval(value, nan, nan, confidence, math.sqrt(v), nan, parts=tuple(parts), levels=levels,
                          dropped=int((~keep).sum()))
    low, high = out.bounds(confidence)
    return dataclasses.replace(out, low=low, high=high)
