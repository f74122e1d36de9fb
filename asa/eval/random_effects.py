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
- **The per-factor interval** (``low``, ``high``: the one a study's verdicts read): V split into independent parts
  that do not overlap, each with its own degrees of freedom (`crossed_parts`). Seeds × cases: the seed means'
  spread ``MS_seed / N`` (``σ²_seed/S + σ²_e/N`` exactly, S − 1 df) and the cases' ``(MS_case − MS_residual)⁺ / N``
  (``σ²_case/C``, C − 1 df), their half-widths added in quadrature (the MOVER of Zou & Donner 2008), so with 2
  seeds the seed part carries ``t_1`` whatever its mean square. Pretraining runs × seeds × cases: the run
  component alone, ``(MS_p − MS_ps − MS_pc + MS_psc)⁺ / N = σ̂²_p / P`` (0 in expectation where runs do not
  differ), then the seed and case parts of the table averaged over runs (``MS_seed / N``, ``(MS_case −
  MS_seed×case)⁺ / N``, at S − 1 and C − 1 df; the run part's df Satterthwaite's for its four mean squares, within
  [1, P − 1]). From 3 runs and 3 seeds the parts share one t (`shared_df`: Welch–Satterthwaite over the parts at
  their upper 75 % bounds, or with the draws' part at its 95 % one, whichever df is smaller), since small-df parts
  in quadrature ignore that their sum is better known than either;
  with 2 runs the run part, a one-df difference, is negative as often as not where it dominates, so it is the runs'
  whole spread ``MS_p / N`` at ``t_1`` (overlapping, as the interval was) and the parts add in quadrature.
  Coverage and power against an oracle: docs/studies.md (`benchmarks/interval_power.py`,
  `benchmarks/interval_coverage.py`). The minimum detectable effect (`mde`): a noncentral t at the interval's df.

Cross-validation (`folded_interval`): R repeats of K folds are G = R·K labeled draws, each scoring its own fold
of the C cases, every case once per repeat, so draws and cases are not crossed. With ``d = μ + a_draw + b_case + e``
the mean's variance is ``σ²_a / G + σ²_b / C + σ²_e / (R·C)``; its parts: the draw means' spread within each repeat
(pooled, R·(K − 1) df: ``σ²_a / G + (σ²_b + σ²_e) / (R·C)``) and, with R ≥ 2, the rest of the cases' share,
``σ²_b (R − 1) / (R·C)``, σ²_b read off the repeat × case table (``(MS_case − MS_repeat×case) / R``, C − 1 df).
With 3 or more pretraining runs the run component alone comes first (`folded_parts`), with 2 the runs' whole spread.

Why not the seed × case bootstrap (`asa.eval.seed_case_bootstrap`): it resamples the 2–3 seeds as if they were the
population, so its interval is too narrow where the labeled draws carry the spread (the same benchmark).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from scipy import optimize, stats

__all__ = ["CrossedInterval", "complete_grid", "components", "crossed_half_width", "crossed_interval", "crossed_parts",
           "folded_interval", "folded_parts", "half_width", "mde", "mean_squares", "part_coefficients", "pooled_df",
           "satterthwaite", "shared_df"]

ArrayLike = float | np.ndarray  # a float, or an array of them over a batch of tables
UPPER = 0.75  # the one-sided level of the parts' upper bounds that `pooled_df` reads (docs/studies.md)
DRAWS_UPPER = 0.95  # the draws' part's, for `shared_df`


@dataclass(frozen=True)
class CrossedInterval:
    """The mean of ``d`` (``value``) with its per-factor ``confidence`` interval [``low``, ``high``] (module
    docstring): ``parts``, its independent parts, (name, variance, df) each, ``se`` = the square root of their sum,
    and ``parts_df``, the df of the one t they share (with pretraining runs, `pooled_df`; NaN: each part at its own
    t, their half-widths in quadrature: seeds × cases, cross-validated draws); ``df``: Satterthwaite's ν over the mean
    squares, whose t interval is ``satterthwaite``; ``components``: each effect's variance component (truncated at
    0: "seed", "case", "seed×case", ...); ``levels``: each factor's levels used; ``dropped``: cases left out for a
    missing pair. NaN bounds where a factor has one level (its spread is not measured)."""

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
    parts_df: float = math.nan

    def half_width(self, confidence: float) -> float:
        """The per-factor interval's half-width at ``confidence``: ``t_{parts_df} · se``, or without ``parts_df``
        ``sqrt(Σ t²_{df_q} · variance_q)``."""
        if not self.parts:
            return math.nan
        if not math.isnan(self.parts_df):
            return _t(confidence, self.parts_df) * math.sqrt(sum(v for _, v, _ in self.parts))
        return float(half_width(self.parts, confidence))

    def interval_df(self, confidence: float | None = None) -> float:
        """The degrees of freedom of the per-factor interval: ``parts_df``, or for parts in quadrature the ν whose
        ``t_ν · sqrt(Σ variance_q)`` is its half-width at ``confidence`` (default its own; a part's own df where the
        others are 0); inf where every part is 0, NaN without parts."""
        if not self.parts:
            return math.nan
        if not math.isnan(self.parts_df):
            return self.parts_df
        live = [(v, df) for _, v, df in self.parts if v > 0]
        if not live:
            return math.inf
        if len({df for _, df in live}) == 1:
            return live[0][1]
        c = self.confidence if confidence is None else confidence
        ratio = self.half_width(c) / math.sqrt(sum(v for v, _ in live))
        gap = lambda log_nu: _t(c, math.exp(log_nu)) - ratio  # noqa: E731  decreasing in ν
        lo, hi = math.log(min(df for _, df in live)), math.log(max(df for _, df in live))
        if gap(lo) <= 0:  # rounding at the ends: the interval is the widest (or narrowest) part's own
            return math.exp(lo)
        return math.exp(hi) if gap(hi) >= 0 else math.exp(optimize.brentq(gap, lo, hi, xtol=1e-12))

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
        if not math.isnan(self.parts_df):
            return float(2 * stats.t.sf(abs(self.value) / self.se, self.parts_df))
        gap = lambda c: self.half_width(c) - abs(self.value)  # noqa: E731  increasing in c
        lo, hi = 1e-12, 1.0 - 1e-12
        if gap(lo) >= 0:
            return 1.0
        if gap(hi) <= 0:
            return 1e-12
        return float(1.0 - optimize.brentq(gap, lo, hi, xtol=1e-12))

    def mde(self, *, power: float = 0.8, alpha: float = 0.05, levels: dict[str, int] | None = None) -> float:
        """The smallest true mean the two-sided level-``alpha`` interval lies above 0 for with probability ``power``
        (`mde`: a noncentral t at the interval's df, `interval_df`, and ``se`` = sqrt of the parts' sum).
        ``levels``: another design (e.g. twice the seeds: ``{"seed": 6}``), its parts from the same variance
        components (their expected mean squares)."""
        interval = self if levels is None else self.projected({**self.levels, **levels})
        if not interval.parts:
            return math.nan
        se = math.sqrt(sum(v for _, v, _ in interval.parts))
        return mde(se, interval.interval_df(1 - alpha), alpha=alpha, power=power)

    def projected(self, levels: dict[str, int]) -> CrossedInterval:
        """The interval this study's variance components would give with other numbers of ``levels`` (same factors,
        expected mean squares in place of the observed ones; value and bounds not recomputed). A cross-validated
        interval projects to more repeats of its folds alone (`_more_repeats`)."""
        if "repeat" in self.levels:
            return self._more_repeats(levels)
        factors = tuple(self.levels)
        shape = tuple(int(levels[f]) for f in factors)
        subsets = _subsets(len(factors))
        sigma = {t: self.components.get(effect_name(t, factors), 0.0) for t in subsets}
        ms = {u: sum(sigma[t] * math.prod(shape[a] for a in range(len(factors)) if a not in t)
                     for t in subsets if set(u) <= set(t)) for u in subsets}
        df = {u: math.prod(shape[a] - 1 for a in u) for u in subsets}
        parts = tuple((name, float(v), float(d)) for name, v, d in crossed_parts(ms, df, shape, factors))
        return dataclasses.replace(self, parts=parts, levels=dict(zip(factors, shape)),
                                   parts_df=_shared_df(parts, shape), se=math.sqrt(sum(v for _, v, _ in parts)))

    def _more_repeats(self, levels: dict[str, int]) -> CrossedInterval:
        """The cross-validated interval with R' repeats of the same folds of the same C cases in place of R, from the
        components its parts hold (module docstring): the case part ``σ²_b (R − 1) / (R·C)`` gives ``Q = σ²_b / C``,
        the draw part less ``Q / R`` gives ``S = σ²_a / G + σ²_e / (R·C)`` (cut off at 0); at R' the draw part is
        ``S·R / R' + Q / R'`` at R' / R times its df, the case part ``Q (R' − 1) / R'``, and the run part stays (with
        2 runs it also holds a share of the draws' spread, which more repeats would shrink: the projection then errs
        wide). Other cases or folds are not projected: draws and cases are not crossed, so the case and draw
        components such a projection needs are not estimated; with one repeat Q is not separated."""
        n_rep, new = self.levels["repeat"], int(levels["repeat"])
        other = sorted(k for k, v in levels.items() if k not in ("repeat", "draw") and v != self.levels.get(k))
        if other or n_rep < 2 or new < 1:
            why = f"other {', '.join(other)}" if other else f"{new} repeats from {n_rep}"
            raise ValueError(f"a cross-validated interval projects to 1 or more repeats of its folds from 2 or more "
                             f"alone, got {why}")
        variance = {name: v for name, v, _ in self.parts}
        cases = variance["case"] * n_rep / (n_rep - 1)  # Q
        rest = max(variance["draw"] - cases / n_rep, 0.0)  # S
        parts = []
        for name, v, df in self.parts:
            if name == "draw":
                v, df = rest * n_rep / new + cases / new, df * new / n_rep
            elif name == "case":
                v = cases * (new - 1) / new
            parts.append((name, v, df))
        parts = tuple(parts)
        return dataclasses.replace(self, parts=parts, se=math.sqrt(sum(v for _, v, _ in parts)),
                                   levels={**self.levels, "draw": round(self.levels["draw"] * new / n_rep),
                                           "repeat": new})

    def to_dict(self) -> dict:
        """JSON-friendly (NaN written as None)."""
        def num(x: float) -> float | None:
            return None if math.isnan(x) or math.isinf(x) else float(x)

        return {"value": num(self.value), "ci_low": num(self.low), "ci_high": num(self.high),
                "confidence": self.confidence, "se": num(self.se), "df": num(self.df),
                "satterthwaite": [num(x) for x in self.satterthwaite],
                "parts": [[name, float(v), float(df)] for name, v, df in self.parts], "parts_df": num(self.parts_df),
                "components": {k: float(v) for k, v in self.components.items()}, "levels": dict(self.levels),
                "dropped": self.dropped}


def _t(confidence: float, df: ArrayLike) -> ArrayLike:
    t = stats.t.ppf((1 + confidence) / 2, df)  # the normal quantile at inf df
    return float(t) if np.ndim(t) == 0 else t


def _subsets(k: int) -> list[tuple[int, ...]]:
    return [s for r in range(1, k + 1) for s in itertools.combinations(range(k), r)]


def effect_name(subset: tuple[int, ...], factors: tuple[str, ...]) -> str:
    """"seed", "case", "seed×case", ...: the name of the effect of the factors ``subset``."""
    return "×".join(factors[i] for i in subset)


def components(ms: Mapping[tuple[int, ...], ArrayLike], shape: tuple[int, ...]) -> dict[tuple[int, ...], ArrayLike]:
    """Each effect's variance component from the mean squares, untruncated (unbiased; negative by chance):
    ``σ²_T = Σ_{U⊇T} (−1)^{|U|−|T|} MS_U / Π_{f∉T} n_f``. ``ms`` values may be arrays (a batch of tables)."""
    k = len(shape)
    subsets = _subsets(k)
    return {t: sum((-1) ** (len(u) - len(t)) * ms[u] for u in subsets if set(t) <= set(u))
            / math.prod(shape[a] for a in range(k) if a not in t) for t in subsets}


def part_coefficients(k: int, two: frozenset[int] = frozenset()) -> list[dict[tuple[int, ...], int]]:
    """The mean squares each part of a k-factor crossed design adds up, ``{effect: ±1}`` (× 1 / N): every draw
    factor f but the last, its main effect in the table averaged over the factors before it, ``Σ_{B ⊆ {0..f−1}}
    σ̂²_{f∪B} / Π_{f∪B} n``, which sums to ``(−1)^{|U|−1} MS_U`` over the effects U ∋ f of the factors f..k−1
    (``two``: the factors with two levels, whose part is their means' whole spread ``MS_f`` instead); the last draw
    factor's own mean square; the cases', less the last draw factor × case."""
    if k == 1:
        return [{(0,): 1}]
    own = [{(f,): 1} if f in two else {u: (-1) ** (len(u) - 1) for u in _subsets(k) if u[0] == f}
           for f in range(k - 2)]
    return [*own, {(k - 2,): 1}, {(k - 1,): 1, (k - 2, k - 1): -1}]


def crossed_parts(ms: Mapping[tuple[int, ...], ArrayLike], df: Mapping[tuple[int, ...], int], shape: tuple[int, ...],
                  factors: tuple[str, ...]) -> tuple[tuple[str, ArrayLike, ArrayLike], ...]:
    """The per-factor interval's independent parts (name, variance, df), which add up to an estimate of V (module
    docstring): every draw factor f but the last, its own component in the table averaged over the factors before
    it, ``σ̂²_f / n_f`` (with pretraining runs first: ``(MS_p − MS_ps − MS_pc + MS_psc) / N``; with two levels, a
    difference at one df that a dominant component makes negative as often as not, its means' whole spread ``MS_f /
    N`` at ``t_1``, which overlaps the others' and holds its level); the last draw factor's ``MS_f / N``; the cases'
    ``(MS_case − MS_f×case) / N`` (`part_coefficients`); one factor alone: its ``MS / N``. A negative part is 0. Its df: n_f − 1 for the last two (the draws' mean square, exactly; the cases', whose
    subtracted interaction has more df), Satterthwaite's for the mean squares of the others, ``(Σ c MS)² / Σ (c MS)²
    / df`` within [1, n_f − 1] (the run part is a difference of four, often mostly noise: at P − 1 df it would lift
    the pooled df, `pooled_df`). ``ms`` values may be arrays (a batch of tables)."""
    k, n = len(shape), math.prod(shape)
    out = []
    for f, coef in enumerate(part_coefficients(k, frozenset(f for f in range(k - 2) if shape[f] == 2))):
        if len(coef) > 1 and f < k - 2:
            out.append((factors[f], *_difference(ms, df, coef, n, shape[f] - 1)))
        else:
            out.append((factors[f], np.maximum(sum(c * ms[u] for u, c in coef.items()) / n, 0.0), float(shape[f] - 1)))
    return tuple(out)


def _difference(ms: Mapping[tuple[int, ...], ArrayLike], df: Mapping[tuple[int, ...], int],
                coef: Mapping[tuple[int, ...], int], n: int, nominal: int) -> tuple[ArrayLike, ArrayLike]:
    """(variance, df) of the part ``Σ c · MS_U / n`` (0 where negative): its df Satterthwaite's for those mean squares
    within [1, nominal] (``nominal`` where the part is 0)."""
    v = sum(c * ms[u] for u, c in coef.items()) / n
    terms = sum((c * ms[u] / n) ** 2 / df[u] for u, c in coef.items())
    with np.errstate(divide="ignore", invalid="ignore"):
        nu = np.clip(np.where((v > 0) & (terms > 0), v * v / np.where(terms > 0, terms, 1.0), nominal), 1.0, nominal)
    return np.maximum(v, 0.0), (nu if np.ndim(nu) else float(nu))


def pooled_df(parts: tuple[tuple[str, ArrayLike, ArrayLike], ...], *,
              upper: float | tuple[float, ...] | None = UPPER) -> ArrayLike:
    """The df of the one t the parts share (Welch 1947, Satterthwaite 1946): ``(Σ w)² / Σ w² / df`` with each part
    taken at its upper ``upper`` confidence bound (one level, or one per part), ``w = variance · df / χ²_{1−upper,
    df}`` (None: the variance itself, the plain plug-in), so that a part small by chance does not lift the df to the
    others' (docs/studies.md: the plug-in covers down to 0.94 where 2–3 labeled draws dominate); one part: its own df;
    inf where every part is 0."""
    levels = upper if isinstance(upper, tuple) else (upper,) * len(parts)
    w = [(v * (1.0 if u is None else df / stats.chi2.ppf(1 - u, df)), df) for (_, v, df), u in zip(parts, levels)]
    total = sum(x for x, _ in w)
    terms = sum(x * x / df for x, df in w)
    with np.errstate(divide="ignore", invalid="ignore"):
        nu = np.where(terms > 0, total * total / np.where(terms > 0, terms, 1.0), np.inf)
    return nu if np.ndim(nu) else float(nu)


def shared_df(parts: tuple[tuple[str, ArrayLike, ArrayLike], ...]) -> ArrayLike:
    """The df of the t a crossed design's parts share: the smaller of `pooled_df` and `pooled_df` with the draws'
    part (the last draw factor's, at exactly S − 1 df) at its upper ``DRAWS_UPPER`` bound. At 3 draws their mean
    square is small by chance often enough that the 75 % bound lets the df jump to the cases' (coverage 0.94 where
    the draws dominate, `benchmarks/interval_power.py`); raising every part's level instead collapses the df to the
    run part's 1 where that part is mostly noise."""
    levels = tuple(DRAWS_UPPER if q == len(parts) - 2 else UPPER for q in range(len(parts)))
    return np.minimum(pooled_df(parts), pooled_df(parts, upper=levels))


def satterthwaite(ms: Mapping[tuple[int, ...], ArrayLike], df: Mapping[tuple[int, ...], int], shape: tuple[int, ...]
                  ) -> tuple[ArrayLike, ArrayLike]:
    """(V, ν): the grand mean's variance from the mean squares with negative component estimates set to 0 (their
    mean squares drop out) and Satterthwaite's ``ν = V² / Σ (c_U MS_U)² / df_U`` (inf where V has no spread);
    ``ms`` values may be arrays (a batch of tables)."""
    k, n = len(shape), math.prod(shape)
    subsets = _subsets(k)
    kept = {t: np.asarray(c) > 0 for t, c in components(ms, shape).items()}
    coef = {u: sum((-1) ** (len(u) - len(t)) * kept[t] for t in subsets if set(t) <= set(u)) / n for u in subsets}
    v = np.maximum(0.0, sum(coef[u] * ms[u] for u in subsets))
    terms = sum((coef[u] * ms[u]) ** 2 / df[u] for u in subsets)
    with np.errstate(divide="ignore", invalid="ignore"):
        nu = np.where(terms > 0, v * v / np.where(terms > 0, terms, 1.0), np.inf)
    return v, nu


def _pooled(shape: tuple[int, ...]) -> bool:
    """Whether a crossed design's parts share one t (`pooled_df`): two or more draw factors (pretraining runs ×
    draws × cases) of three or more levels each. Else they add in quadrature: one draw factor, or one of two levels
    (a one-df part that may dominate, which no plug-in df sees)."""
    return len(shape) >= 3 and min(shape[:-1]) >= 3


def _shared_df(parts: tuple[tuple[str, float, float], ...], shape: tuple[int, ...]) -> float:
    return float(shared_df(parts)) if _pooled(shape) else math.nan


def crossed_half_width(parts: tuple[tuple[str, ArrayLike, ArrayLike], ...], shape: tuple[int, ...],
                       confidence: float) -> ArrayLike:
    """The per-factor interval's half-width for the parts (`crossed_parts`) of a crossed design of ``shape``:
    ``t_ν · sqrt(Σ variance)`` at `shared_df`'s ν, or the parts' own t in quadrature (`half_width`); the parts'
    variances and df may be arrays (a batch of tables)."""
    if _pooled(shape):
        return _t(confidence, shared_df(parts)) * np.sqrt(sum(v for _, v, _ in parts))
    return half_width(parts, confidence)


def half_width(parts: tuple[tuple[str, ArrayLike, float], ...], confidence: float) -> ArrayLike:
    """The per-factor interval's half-width at ``confidence``: ``sqrt(Σ t²_{df_q} · variance_q)`` (the parts'
    variances may be arrays)."""
    return np.sqrt(sum(_t(confidence, df) ** 2 * v for _, v, df in parts))


def mde(se: float, df: float, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """The minimum detectable effect of a two-sided level-``alpha`` t interval ``mean ± t_{1−α/2, df} · ŝe``: the
    smallest true mean δ whose interval lies above 0 with probability ``power``, ``δ = λ · se`` where the
    noncentral t with ``df`` degrees of freedom and noncentrality λ exceeds ``t_{1−α/2, df}`` with that
    probability. Infinite ``df``: ``(z_{1−α/2} + z_power) · se`` (2.80 · se at the defaults); at few df it exceeds
    ``(t_{1−α/2} + t_power) · se``, which ignores that ŝe is estimated (73 % power at 1 df, not 80 %)."""
    if not (0.0 < alpha < 1.0 and 0.0 < power < 1.0):
        raise ValueError(f"alpha and power must lie in (0, 1), got alpha={alpha}, power={power}")
    if math.isnan(se) or math.isnan(df) or df <= 0:
        return math.nan
    if se == 0.0:
        return 0.0
    if not math.isfinite(df) or df > 1e7:
        return float((stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)) * se)
    crit = float(stats.t.ppf(1 - alpha / 2, df))
    gap = lambda lam: float(stats.nct.sf(crit, df, lam)) - power  # noqa: E731  increasing in lam
    hi = crit + float(stats.norm.ppf(power)) + 1.0
    while gap(hi) < 0:
        hi *= 2
    return float(optimize.brentq(gap, 0.0, hi, xtol=1e-10) * se)  # at λ = 0 the power is α / 2


def complete_grid(d: np.ndarray) -> tuple[np.ndarray, int]:
    """The balanced part of ``d`` [..., draws, cases]: levels of every axis but the last that hold no value at all
    are left out (a run that did not finish), then every draw some run lacks entirely (a run's draw that did not
    finish: left out of every run, not every case with it), then every case (last axis) with a missing pair.
    -> (grid, cases dropped)."""
    d = np.asarray(d, dtype=float)
    for axis in range(d.ndim - 1):
        other = tuple(a for a in range(d.ndim) if a != axis)
        d = np.compress(~np.isnan(d).all(axis=other), d, axis=axis)
    if d.ndim > 2:
        d = np.compress(~np.isnan(d).all(axis=-1).any(axis=tuple(range(d.ndim - 2))), d, axis=-2)
    keep = ~np.isnan(d).any(axis=tuple(range(d.ndim - 1))) if d.ndim > 1 else ~np.isnan(d)
    return d[..., keep], int((~keep).sum())


def mean_squares(grid: np.ndarray, *, factors: int | None = None
                 ) -> tuple[dict[tuple[int, ...], ArrayLike], dict[tuple[int, ...], int]]:
    """The ANOVA mean square and df of every effect (a non-empty set of factor axes) of a complete grid: the effect
    is the inclusion–exclusion of the marginal means over the subsets of its axes (``ȳ_s. − ȳ..``, ``y_sc − ȳ_s. −
    ȳ.c + ȳ..``), its sum of squares taken over every cell, its df ``Π (n_f − 1)``. ``factors``: the number of
    trailing axes that are factors (default all); the leading ones index independent tables, and each mean square
    is then an array over them (factor axes numbered from 0 after them)."""
    k = grid.ndim if factors is None else factors
    lead = grid.ndim - k
    shape = grid.shape[lead:]
    subsets = _subsets(k)
    marginal = {s: grid.mean(axis=tuple(lead + a for a in range(k) if a not in s), keepdims=True)
                for s in [(), *subsets]}
    ms, df = {}, {}
    for t in subsets:
        effect = sum((-1) ** (len(t) - len(u)) * marginal[u] for r in range(len(t) + 1)
                     for u in itertools.combinations(t, r))
        df[t] = math.prod(shape[a] - 1 for a in t)
        repeats = math.prod(shape[a] for a in range(k) if a not in t)  # cells sharing one value of the effect
        ss = (effect ** 2).sum(axis=tuple(range(lead, grid.ndim))) * repeats
        ms[t] = float(ss) / df[t] if lead == 0 else ss / df[t]
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
    ms, df = mean_squares(grid)
    v, nu = (float(x) for x in satterthwaite(ms, df, grid.shape))
    satt = (value - _t(confidence, nu) * math.sqrt(v), value + _t(confidence, nu) * math.sqrt(v))
    comps = {effect_name(t, factors): max(0.0, float(c)) for t, c in components(ms, grid.shape).items()}
    parts = tuple((name, float(p), float(df_q)) for name, p, df_q in crossed_parts(ms, df, grid.shape, factors))
    out = CrossedInterval(value, nan, nan, confidence, math.sqrt(sum(p for _, p, _ in parts)), nu, satt, parts, comps,
                          levels, dropped, parts_df=_shared_df(parts, grid.shape))
    low, high = out.bounds(confidence)
    return dataclasses.replace(out, low=low, high=high)


def folded_parts(grid: np.ndarray, fold: np.ndarray) -> tuple[tuple[str, ArrayLike, ArrayLike], ...]:
    """The cross-validated interval's independent parts (name, variance, df; module docstring) of ``grid`` [...,
    P, R, C]: the paired differences of P pretraining runs (1: none) in R repeats over C cases; ``fold`` [R, C]: the
    draw of its repeat that scored each case. From 3 runs the run component alone first, ``σ̂²_p / P`` at P − 1 df:
    over runs × repeats × cases the crossed one, ``(MS_p − MS_pr − MS_pc + MS_prc) / N`` (its expectation is σ²_p / P
    whatever the folds), with one repeat the runs × draws table's ``(MS_p − MS_p×draw) / (P·G)`` (at its
    Satterthwaite df, clipped at 1, the part in quadrature is ``t_1`` where it is mostly noise: MDE 1.9× the
    oracle's, not 1.4×, `benchmarks/interval_power.py`); with 2 runs their whole spread ``MS_p / N`` at 1 df, as
    `crossed_parts`. Then the draw and case parts of the runs' mean. Leading axes: a batch of studies."""
    n_run, n_rep, n_case = grid.shape[-3:]
    draws = [(q, k) for q in range(n_rep) for k in np.unique(fold[q])]
    table = grid.mean(axis=-3)  # [..., R, C]: the runs' mean
    means = np.stack([table[..., q, fold[q] == k].mean(axis=-1) for q, k in draws], axis=-1)  # [..., G]
    parts = []
    if n_run == 2:  # as `crossed_parts`: a one-df difference, the runs' whole spread instead (covers 0.945 alone)
        parts.append(("pretraining", grid.mean(axis=(-2, -1)).var(axis=-1, ddof=1) / n_run, 1.0))
    elif n_run >= 3:
        if n_rep >= 2:
            ms, _ = mean_squares(grid, factors=3)
            v = (ms[(0,)] - ms[(0, 1)] - ms[(0, 2)] + ms[(0, 1, 2)]) / math.prod(grid.shape[-3:])
        else:
            by_draw = np.stack([grid[..., 0, fold[0] == k].mean(axis=-1) for _, k in draws], axis=-1)  # [..., P, G]
            ms, _ = mean_squares(by_draw, factors=2)
            v = (ms[(0,)] - ms[(0, 1)]) / math.prod(by_draw.shape[-2:])
        parts.append(("pretraining", np.maximum(v, 0.0), float(n_run - 1)))
    within = 0.0
    for q in range(n_rep):
        mine = means[..., [g for g, (r, _) in enumerate(draws) if r == q]]
        within = within + ((mine - mine.mean(axis=-1, keepdims=True)) ** 2).sum(axis=-1)
    df_w = len(draws) - n_rep
    parts.append(("draw", within / df_w / len(draws), float(df_w)))
    if n_rep >= 2:
        ms, _ = mean_squares(table, factors=2)
        sigma_case = np.maximum(ms[(1,)] - ms[(0, 1)], 0.0) / n_rep
        parts.append(("case", sigma_case * (n_rep - 1) / (n_rep * n_case), float(n_case - 1)))
    return tuple(parts)


def folded_interval(d: object, repeats: object, *, confidence: float = 0.95) -> CrossedInterval:
    """The mean of cross-validated paired differences ``d`` [draws, cases] (NaN where a draw did not score a case:
    each draw scores its fold) with the per-part interval of the module docstring (`folded_parts`, in quadrature);
    ``repeats`` [draws]: the repeat of each draw (its folds are the draws of that repeat). ``d`` [pretraining runs,
    draws, cases]: replicated pretraining, the run component a part of its own. Cases some run or repeat did not
    score are left out (``dropped``). ``levels``: {"pretraining": P (with runs), "draw": G, "case": C, "repeat": R}."""
    d = np.asarray(d, dtype=float)
    reps = np.asarray(repeats)
    runs = d if d.ndim == 3 else d[None]
    if runs.ndim != 3 or reps.shape != (runs.shape[1],):
        raise ValueError(f"d must be [draws, cases] or [pretraining runs, draws, cases] and repeats [draws], got "
                         f"shapes {d.shape} and {reps.shape}")
    runs = runs[~np.isnan(runs).all(axis=(1, 2))]  # a run that did not finish
    ran = ~np.isnan(runs).all(axis=(0, 2))  # a draw that did not finish
    runs, reps = runs[:, ran], reps[ran]
    names = sorted(set(reps.tolist()))
    # every case once per repeat: the [run, repeat, case] grid and the draw of its repeat that scored each case
    grid = np.full((len(runs), len(names), runs.shape[2]), np.nan)
    fold = np.zeros((len(names), runs.shape[2]), dtype=int)
    for q, r in enumerate(names):
        mine = runs[:, reps == r]  # [P, draws of repeat r, C]
        scored = ~np.isnan(mine).all(axis=0)  # [draws, C]
        one = scored.sum(axis=0) == 1
        fold[q] = scored.argmax(axis=0)
        grid[:, q, one] = np.take_along_axis(mine, fold[q][None, None], axis=1)[:, 0, one]
    keep = ~np.isnan(grid).any(axis=(0, 1)) if grid.size else np.zeros(runs.shape[2], bool)
    grid, fold = grid[..., keep], fold[:, keep]
    nan = math.nan
    folds = [len(np.unique(f)) for f in fold]
    levels = {**({"pretraining": len(runs)} if d.ndim == 3 else {}), "draw": int(sum(folds)),
              "case": int(keep.sum()), "repeat": len(names)}
    if grid.size == 0:
        return CrossedInterval(nan, nan, nan, confidence, nan, nan, levels=levels, dropped=int((~keep).sum()))
    value = float(grid.mean())
    if min(folds) < 2 or (d.ndim == 3 and len(runs) < 2):  # a spread not measured: between draws, or runs
        return CrossedInterval(value, nan, nan, confidence, nan, nan, levels=levels, dropped=int((~keep).sum()))
    parts = tuple((name, float(v), float(df)) for name, v, df in folded_parts(grid, fold))
    out = CrossedInterval(value, nan, nan, confidence, math.sqrt(sum(v for _, v, _ in parts)), nan, parts=parts,
                          levels=levels, dropped=int((~keep).sum()))
    low, high = out.bounds(confidence)
    return dataclasses.replace(out, low=low, high=high)
