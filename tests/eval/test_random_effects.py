"""The crossed random-effects interval of asa.eval.random_effects against a hand computation, its special cases (one
seed, missing pairs, no spread between seeds), the p it reads, a three-factor design's parts (which add up to the
variance of the mean, the pretraining run's vanishing where runs do not differ), its coverage in a small simulation
and the minimum detectable effect from a noncentral t."""
from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest
from scipy import stats

from asa.eval.random_effects import (CrossedInterval, crossed_interval, crossed_parts, folded_interval, folded_parts,
                                     mde, mean_squares, pooled_df, shared_df)

# 2 seeds × 4 test cases, worked by hand:
#   grand mean 28 / 8 = 3.5; seed means 3, 4; case means 1.5, 3, 3.5, 6
#   MS_seed = 4 · (0.5² + 0.5²) / 1 = 2
#   MS_case = 2 · ((−2)² + (−0.5)² + 0² + 2.5²) / 3 = 2 · 10.5 / 3 = 7
#   residuals d − seed − case + grand: [0, −0.5, 0, 0.5], [0, 0.5, 0, −0.5] -> SS 1, MS_e = 1 / 3
#   components: seed (2 − 1/3) / 4 = 5/12, case (7 − 1/3) / 2 = 10/3, seed×case 1/3
#   V = (2 + 7 − 1/3) / 8 = 13/12; Satterthwaite ν = (26/3)² / (2²/1 + 7²/3 + (1/3)²/3) = 3.6873
#   per-factor parts: seeds 2 / 8 = 0.25 at t_1, cases (7 − 1/3) / 8 = 5/6 at t_3, in quadrature
D = np.array([[1.0, 2.0, 3.0, 6.0], [2.0, 4.0, 4.0, 6.0]])


def test_the_interval_of_a_small_balanced_table_is_the_hand_computed_one():
    ms, df = mean_squares(D)
    assert ms[(0,)] == pytest.approx(2.0) and ms[(1,)] == pytest.approx(7.0) and ms[(0, 1)] == pytest.approx(1 / 3)
    assert (df[(0,)], df[(1,)], df[(0, 1)]) == (1, 3, 3)
    r = crossed_interval(D)
    assert r.value == pytest.approx(3.5)
    assert r.components == pytest.approx({"seed": 5 / 12, "case": 10 / 3, "seed×case": 1 / 3})
    assert r.se == pytest.approx(math.sqrt(13 / 12))
    nu = (26 / 3) ** 2 / (4 + 49 / 3 + (1 / 9) / 3)
    assert r.df == pytest.approx(nu) and r.df == pytest.approx(3.6873, abs=1e-4)
    half = stats.t.ppf(0.975, nu) * math.sqrt(13 / 12)
    assert r.satterthwaite == pytest.approx((3.5 - half, 3.5 + half))
    assert [(name, v, df) for name, v, df in r.parts] == [("seed", pytest.approx(0.25), 1.0),
                                                           ("case", pytest.approx(5 / 6), 3.0)]
    assert math.isnan(r.parts_df) and r.se ** 2 == pytest.approx(13 / 12)  # one draw factor: parts in quadrature
    half = math.sqrt(stats.t.ppf(0.975, 1) ** 2 * 0.25 + stats.t.ppf(0.975, 3) ** 2 * 5 / 6)  # 6.986
    assert (r.low, r.high) == pytest.approx((3.5 - half, 3.5 + half)) and half == pytest.approx(6.986, abs=1e-3)
    lo90, hi90 = r.bounds(0.90)  # the one-sided 95 % bounds: t_{0.95} of each part
    half90 = math.sqrt(stats.t.ppf(0.95, 1) ** 2 * 0.25 + stats.t.ppf(0.95, 3) ** 2 * 5 / 6)
    assert (lo90, hi90) == pytest.approx((3.5 - half90, 3.5 + half90))


def test_p_is_the_interval_s_dual_and_the_mde_is_the_noncentral_t_s():
    r = crossed_interval(D - 1.0)  # mean 2.5
    assert 0.0 < r.p < 1.0
    lo, _ = r.bounds(1.0 - r.p)  # the 1 − p interval just reaches 0
    assert lo == pytest.approx(0.0, abs=1e-8)
    # one part alone: the noncentral t at that part's df, above the textbook (t_{0.975} + t_{0.8}) · se
    one = crossed_interval(np.array([[0.1, 0.3, 0.2, 0.6], [0.1, 0.3, 0.2, 0.6]]))  # no seed spread
    se, df = math.sqrt(one.parts[1][1]), one.parts[1][2]
    assert one.parts[0][1] == 0.0 and one.interval_df() == df and one.mde() == pytest.approx(mde(se, df))
    assert one.mde() > (stats.t.ppf(0.975, df) + stats.t.ppf(0.8, df)) * se
    # twice the seeds: the same components, a smaller seed part
    same = r.projected({"seed": 2, "case": 4})  # no component truncated: the expected mean squares are the observed
    assert [v for _, v, _ in same.parts] == pytest.approx([v for _, v, _ in r.parts])
    assert r.mde(levels={"seed": 4}) < r.mde()


def test_without_spread_between_seeds_it_is_the_t_interval_of_the_case_means():
    cases = np.array([0.02, -0.01, 0.05, 0.00, 0.03, 0.04])
    r = crossed_interval(np.stack([cases, cases, cases]))
    t = stats.ttest_1samp(cases, 0.0).confidence_interval(0.95)
    assert (r.low, r.high) == pytest.approx((t.low, t.high))


def test_one_seed_measures_no_spread_between_draws_and_missing_pairs_are_dropped():
    one = crossed_interval(D[:1])
    assert one.value == pytest.approx(3.0) and math.isnan(one.low) and math.isnan(one.p)
    holed = D.copy()
    holed[1, 2] = np.nan
    r = crossed_interval(np.vstack([holed, np.full((1, 4), np.nan)]))  # a case lacks a pair; a seed never ran
    assert r.dropped == 1 and r.levels == {"seed": 2, "case": 3}
    assert r.value == pytest.approx(crossed_interval(D[:, [0, 1, 3]]).value)
    with pytest.raises(ValueError, match="one axis per factor"):
        crossed_interval(D, factors=("pretraining", "seed", "case"))


def test_three_crossed_factors_give_the_alternating_sum_of_mean_squares():
    rng = np.random.default_rng(0)  # every main effect and interaction, so that no component estimate is negative
    d = sum(rng.normal(size=shape) for shape in [(3, 1, 1), (1, 4, 1), (1, 1, 5), (3, 4, 1), (3, 1, 5), (1, 4, 5)])
    d = d + 0.3 * rng.normal(size=(3, 4, 5))
    r = crossed_interval(d, factors=("pretraining", "seed", "case"))
    ms, _ = mean_squares(d)
    c = r.components
    assert min(c.values()) > 0  # none truncated: V is the alternating sum of the seven mean squares
    subsets = [s for k in (1, 2, 3) for s in itertools.combinations(range(3), k)]
    assert r.se ** 2 == pytest.approx(sum((-1) ** (len(t) + 1) * ms[t] for t in subsets) / d.size)
    # E[MS_pretraining] = σ²_e + 5 σ²_ps + 4 σ²_pc + 20 σ²_p: the components give back the mean square
    expect = c["pretraining×seed×case"] + 5 * c["pretraining×seed"] + 4 * c["pretraining×case"] + 20 * c["pretraining"]
    assert ms[(0,)] == pytest.approx(expect)
    # the parts do not overlap: the run component alone, then the seeds' and the cases' of the run-averaged table
    n = d.size
    assert [(name, v) for name, v, _ in r.parts] == [
        ("pretraining", pytest.approx((ms[(0,)] - ms[(0, 1)] - ms[(0, 2)] + ms[(0, 1, 2)]) / n)),
        ("seed", pytest.approx(ms[(1,)] / n)), ("case", pytest.approx((ms[(2,)] - ms[(1, 2)]) / n))]
    assert sum(v for _, v, _ in r.parts) == pytest.approx(r.se ** 2)  # their sum is V
    assert r.parts[0][1] == pytest.approx(c["pretraining"] / 3)  # σ̂²_run / P
    # the run part's df: Satterthwaite's for its four mean squares, within [1, P − 1]; the others' n − 1
    terms = (ms[(0,)] ** 2 / 2 + ms[(0, 1)] ** 2 / 6 + ms[(0, 2)] ** 2 / 8 + ms[(0, 1, 2)] ** 2 / 24) / n ** 2
    assert r.parts[0][2] == pytest.approx(min(2.0, max(1.0, r.parts[0][1] ** 2 / terms)))
    assert [df for _, _, df in r.parts[1:]] == [3.0, 4.0]
    assert r.parts_df == pytest.approx(shared_df(r.parts)) and 1.0 <= r.parts_df <= pooled_df(r.parts)
    half = stats.t.ppf(0.975, r.parts_df) * r.se
    assert (r.low, r.high) == pytest.approx((r.value - half, r.value + half))
    assert r.p == pytest.approx(2 * stats.t.sf(abs(r.value) / r.se, r.parts_df))
    lo, _ = r.bounds(1.0 - r.p)
    assert lo == pytest.approx(0.0, abs=1e-9) or r.value < 0


def _planned(sd: dict[str, float], shape: tuple[int, int, int]) -> CrossedInterval:
    """The interval whose variance components are ``sd`` squared (the expected mean squares' parts)."""
    factors = ("pretraining", "seed", "case")
    planned = CrossedInterval(0.0, math.nan, math.nan, 0.95, math.nan, math.nan,
                              components={k: v * v for k, v in sd.items()}, levels=dict(zip(factors, shape)))
    return planned.projected(planned.levels)


SD = {"pretraining": 0.0, "seed": 0.05, "case": 0.04, "pretraining×seed": 0.03, "pretraining×case": 0.02,
      "seed×case": 0.03, "pretraining×seed×case": 0.06}


def test_the_parts_add_up_to_the_variance_of_the_mean_and_the_run_part_vanishes_without_run_spread():
    shape = (3, 4, 10)
    truth = sum(v * v / math.prod(n for n, f in zip(shape, ("pretraining", "seed", "case")) if f in k.split("×"))
                for k, v in SD.items())
    planned = _planned(SD, shape)  # expected mean squares: each part its exact share of V
    assert planned.parts[0][1] == pytest.approx(0.0, abs=1e-15)
    assert sum(v for _, v, _ in planned.parts) == pytest.approx(truth)
    assert _planned({**SD, "pretraining": 0.02}, shape).parts[0][1] == pytest.approx(0.02 ** 2 / 3)
    # simulated studies with no run spread: the run part's untruncated mean is 0, the whole run mean square's is not
    rng = np.random.default_rng(1)
    d = np.zeros((4000, *shape))
    for k, v in SD.items():
        axes = [f in k.split("×") for f in ("pretraining", "seed", "case")]
        d = d + rng.normal(0.0, v, (4000, *(n if a else 1 for n, a in zip(shape, axes))))
    ms, df = mean_squares(d, factors=3)
    n = math.prod(shape)
    raw = (ms[(0,)] - ms[(0, 1)] - ms[(0, 2)] + ms[(0, 1, 2)]) / n
    assert abs(raw.mean()) < 3 * raw.std() / math.sqrt(len(raw))
    assert (ms[(0,)] / n).mean() > 20 * abs(raw.mean())  # the run part before: MS_run / N at t_{P−1}
    parts = crossed_parts(ms, df, shape, ("pretraining", "seed", "case"))
    total = sum(v for _, v, _ in parts)
    assert total.mean() == pytest.approx(truth, rel=0.05)  # V, up to the truncation of the run part at 0
    assert (ms[(0,)] / n + ms[(1,)] / n + np.maximum(ms[(2,)] - ms[(0, 1, 2)], 0) / n).mean() > 1.1 * truth  # before


def test_the_pooled_interval_covers_near_its_level_in_a_small_simulation():
    shape, sd = (3, 3, 12), {**SD, "pretraining": 0.03}
    rng = np.random.default_rng(2)
    datasets = 4000
    d = np.zeros((datasets, *shape))
    for k, v in sd.items():
        axes = [f in k.split("×") for f in ("pretraining", "seed", "case")]
        d = d + rng.normal(0.0, v, (datasets, *(n if a else 1 for n, a in zip(shape, axes))))
    ms, df = mean_squares(d, factors=3)
    parts = crossed_parts(ms, df, shape, ("pretraining", "seed", "case"))
    half = stats.t.ppf(0.975, shared_df(parts)) * np.sqrt(sum(v for _, v, _ in parts))
    mean = d.mean(axis=(1, 2, 3))
    coverage = np.mean(np.abs(mean) <= half)
    assert 0.945 <= coverage <= 0.98  # ± 0.0035 at 0.95
    one = crossed_interval(d[7], factors=("pretraining", "seed", "case"))  # the batch is the interval, study by study
    assert (one.value, one.high) == pytest.approx((mean[7], mean[7] + half[7]))


def test_the_minimum_detectable_effect_is_the_noncentral_t_s():
    assert mde(1.0, math.inf) == pytest.approx(stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) == pytest.approx(2.8016,
                                                                                                             abs=1e-4)
    assert mde(0.5, 1e5) == pytest.approx(0.5 * 2.8016, abs=1e-3)
    textbook = stats.t.ppf(0.975, 1) + stats.t.ppf(0.8, 1)  # 14.08: 73 % power at 1 df, not 80 %
    assert stats.nct.sf(stats.t.ppf(0.975, 1), 1, textbook) == pytest.approx(0.731, abs=1e-3)
    assert mde(1.0, 1) > textbook and stats.nct.sf(stats.t.ppf(0.975, 1), 1, mde(1.0, 1)) == pytest.approx(0.8)
    # a one-sample t test of 10 cases: the mean that 80 % of studies detect, checked by simulating the studies
    se, rng = 1 / math.sqrt(10), np.random.default_rng(3)
    x = rng.normal(mde(se, 9), 1.0, (20000, 10))
    t = x.mean(axis=1) / (x.std(axis=1, ddof=1) / math.sqrt(10))
    assert np.mean(t > stats.t.ppf(0.975, 9)) == pytest.approx(0.8, abs=0.01)
    assert mde(se, 9) == pytest.approx(0.996, abs=1e-3) and mde(0.0, 3) == 0.0 and math.isnan(mde(1.0, math.nan))
    with pytest.raises(ValueError, match="power"):
        mde(1.0, 5, power=1.0)


def test_the_cross_validated_interval_of_a_small_design_is_the_hand_computed_one():
    # cases a b c d; repeat 0: draw 0 scores {a, b}, draw 1 {c, d}; repeat 1: draw 2 {a, c}, draw 3 {b, d}
    nan = np.nan
    d = np.array([[1, 3, nan, nan], [nan, nan, 2, 4], [2, nan, 4, nan], [nan, 5, nan, 5]], dtype=float)
    r = folded_interval(d, [0, 0, 1, 1])
    #   value: every case once per repeat, (1 + 3 + 2 + 4 + 2 + 5 + 4 + 5) / 8 = 3.25
    #   draw means 2, 3 | 3, 5: within-repeat SS 0.5 + 2 = 2.5 over 2 df -> 1.25; part 1.25 / 4 draws = 0.3125
    #   repeat × case table [[1, 3, 2, 4], [2, 5, 4, 5]]: MS_case = 2 · 5.25 / 3 = 3.5, MS_repeat×case = 0.5 / 3
    #   σ²_case = (3.5 − 1/6) / 2 = 5/3; its part 5/3 · (2 − 1) / (2 · 4) = 5/24
    assert r.value == pytest.approx(3.25) and r.levels == {"draw": 4, "case": 4, "repeat": 2}
    assert [(name, v, df) for name, v, df in r.parts] == [("draw", pytest.approx(0.3125), 2.0),
                                                           ("case", pytest.approx(5 / 24), 3.0)]
    half = math.sqrt(stats.t.ppf(0.975, 2) ** 2 * 0.3125 + stats.t.ppf(0.975, 3) ** 2 * 5 / 24)  # 2.810
    assert (r.low, r.high) == pytest.approx((3.25 - half, 3.25 + half)) and half == pytest.approx(2.810, abs=1e-3)
    one = folded_interval(d[:2], [0, 0])  # one repeat: the draw part alone, the case spread inside it
    assert one.value == pytest.approx(2.5) and [name for name, _, _ in one.parts] == ["draw"]
    assert math.isnan(folded_interval(d[:1], [0]).low)  # one draw: no spread between draws measured


def test_a_cross_validated_interval_projects_to_more_repeats_alone():
    nan = np.nan  # the small design above: draw part 0.3125 at 2 df, case part 5/24 at 3 df, 2 repeats
    d = np.array([[1, 3, nan, nan], [nan, nan, 2, 4], [2, nan, 4, nan], [nan, 5, nan, 5]], dtype=float)
    r = folded_interval(d, [0, 0, 1, 1])
    four = r.projected({"repeat": 4})
    #   draw part × 2 / 4 at 2 × its df; case part σ²_case (R − 1) / (R·C) from R = 2 to 4: × (3/4) / (1/2) = 1.5
    assert four.parts == (("draw", pytest.approx(0.15625), 4.0), ("case", pytest.approx(5 / 16), 3.0))
    assert four.levels == {"draw": 8, "case": 4, "repeat": 4} and four.se == pytest.approx(math.sqrt(0.46875))
    same = r.projected(r.levels)
    assert [v for _, v, _ in same.parts] == pytest.approx([v for _, v, _ in r.parts]) and same.levels == r.levels
    assert r.mde(levels={"repeat": 4}) < r.mde()
    # a draw part below the cases' share Q / R = 5/24 · 2 / 2: the rest of it is cut off at 0, so the design it
    # reads (R = 2) has the draw part Q / R, never a negative draw component
    low = dataclasses.replace(r, parts=(("draw", 0.1, 2.0), ("case", 5 / 24, 3.0)))
    assert low.projected(r.levels).parts == (("draw", pytest.approx(5 / 24), 2.0), ("case", pytest.approx(5 / 24), 3.0))
    for levels in ({"repeat": 4, "case": 8}, {"repeat": 0}):  # other cases: not estimated
        with pytest.raises(ValueError, match="projects to 1 or more repeats of its folds from 2 or more alone"):
            r.projected(levels)
    with pytest.raises(ValueError, match="2 repeats from 1"):  # one repeat: the cases' share is not separated
        folded_interval(d[:2], [0, 0]).projected({"repeat": 2})


def test_the_projected_parts_are_on_average_those_of_the_design_with_more_repeats():
    # d = a_draw + b_case + e over 30 cases in 3 folds; each part of 3 repeats projected to 6 has the mean the parts
    # of 6 repeats measure (the first 3 of them the same folds), and their sum the mean's variance at 6 repeats
    rng = np.random.default_rng(7)
    n_sim, n_case, n_fold, sd = 4000, 30, 3, (0.03, 0.05, 0.02)
    fold = np.stack([rng.permutation(np.arange(n_case) % n_fold) for _ in range(6)])  # [6 repeats, C]
    grid = (rng.normal(0, sd[0], (n_sim, 1, 6, n_fold))[..., np.arange(6)[:, None], fold]
            + rng.normal(0, sd[1], (n_sim, 1, 1, n_case)) + rng.normal(0, sd[2], (n_sim, 1, 6, n_case)))
    three, six = folded_parts(grid[..., :3, :], fold[:3]), folded_parts(grid, fold)
    nan, levels = math.nan, {"draw": 9, "case": n_case, "repeat": 3}
    projected = np.array([[v for _, v, _ in CrossedInterval(
        0.0, nan, nan, 0.95, nan, nan, parts=tuple((name, float(v[s]), df) for name, v, df in three),
        levels=levels).projected({"repeat": 6}).parts] for s in range(n_sim)])
    for k, (name, v, df) in enumerate(six):
        gap, se = projected[:, k].mean() - v.mean(), math.hypot(projected[:, k].std(), v.std()) / math.sqrt(n_sim)
        assert abs(gap) < 4 * se and (name, df) == (three[k][0], 2 * three[k][2] if name == "draw" else df)
    truth = sd[0] ** 2 / 18 + sd[1] ** 2 / n_case + sd[2] ** 2 / (6 * n_case)
    assert projected.sum(axis=1).mean() == pytest.approx(truth, rel=0.03)


def test_the_shared_df_holds_the_draws_part_at_its_upper_95_bound():
    # the draws' part small by chance: at its 75 % bound the df would go to the cases' 15
    parts = (("pretraining", 1e-4, 2.0), ("seed", 2e-4, 2.0), ("case", 4e-3, 15.0))
    w75 = [v * df / stats.chi2.ppf(0.25, df) for _, v, df in parts]
    w = [w75[0], 2e-4 * 2 / stats.chi2.ppf(0.05, 2), w75[2]]  # the draws' part at its upper 95 % bound
    by_hand = sum(w) ** 2 / sum(x * x / df for x, (_, _, df) in zip(w, parts))
    plain = sum(w75) ** 2 / sum(x * x / df for x, (_, _, df) in zip(w75, parts))
    assert by_hand < pooled_df(parts) == pytest.approx(plain)
    assert shared_df(parts) == pytest.approx(by_hand) and by_hand == pytest.approx(9.734, abs=1e-3)
    # a table whose draws' means are ∓0.005 apart: their part 3 · 16 · (2 · 0.005²) / 2 / 144 = 8.33e-6, small by
    # chance beside the cases' where their spread is what the study cannot know
    rng = np.random.default_rng(4)
    d = rng.normal(0.0, 0.05, (1, 1, 16)) + rng.normal(0.0, 0.01, (3, 3, 16))
    d = d - d.mean(axis=(0, 2), keepdims=True) + d.mean() + np.array([-0.005, 0.0, 0.005])[None, :, None]
    r = crossed_interval(d, factors=("pretraining", "seed", "case"))
    assert r.parts[1] == ("seed", pytest.approx(8.333e-6, rel=1e-3), 2.0)
    assert r.parts_df == pytest.approx(shared_df(r.parts)) and r.parts_df < pooled_df(r.parts) - 5


def test_the_cross_validated_run_part_is_the_run_component_alone():
    # 3 runs × 2 repeats of 2 folds × 4 cases: case c scored by fold c % 2 in repeat 0, (c // 2) % 2 in repeat 1
    rng = np.random.default_rng(5)
    grid = rng.normal(size=(3, 2, 4)) + np.array([0.0, 0.5, 1.5])[:, None, None]  # [run, repeat, case]
    fold = np.array([[0, 1, 0, 1], [0, 0, 1, 1]])
    d = np.full((3, 4, 4), np.nan)
    for q in range(2):
        for k in range(2):
            d[:, 2 * q + k, fold[q] == k] = grid[:, q, fold[q] == k]
    r = folded_interval(d, [0, 0, 1, 1])
    ms, _ = mean_squares(grid)
    run = (ms[(0,)] - ms[(0, 1)] - ms[(0, 2)] + ms[(0, 1, 2)]) / grid.size
    spread = grid.mean(axis=(1, 2)).var(ddof=1) / 3  # the part before: the runs' whole spread
    assert r.parts[0] == ("pretraining", pytest.approx(run), 2.0) and run < 0.9 * spread
    assert [name for name, _, _ in r.parts] == ["pretraining", "draw", "case"]
    assert r.levels == {"pretraining": 3, "draw": 4, "case": 4, "repeat": 2}
    assert r.value == pytest.approx(grid.mean())
    two = folded_interval(d[:2], [0, 0, 1, 1])  # two runs: their whole spread at one df, as `crossed_parts`
    assert two.parts[0] == ("pretraining", pytest.approx(grid[:2].mean(axis=(1, 2)).var(ddof=1) / 2), 1.0)


def test_a_draw_one_run_lacks_is_left_out_of_every_run_not_every_case():
    d = np.random.default_rng(3).normal(0.02, 0.01, size=(3, 4, 6))
    missing = d.copy()
    missing[1, 2, :] = np.nan  # run 1 did not finish draw 2
    got, want = crossed_interval(missing, factors=("pretraining", "seed", "case")), crossed_interval(
        np.delete(d, 2, axis=1), factors=("pretraining", "seed", "case"))
    assert got.levels == {"pretraining": 3, "seed": 3, "case": 6} and got.dropped == 0
    assert (got.value, got.low, got.high) == (want.value, want.low, want.high)
    missing[0, 0, 4] = np.nan  # a case one pair lacks: that case alone
    assert crossed_interval(missing, factors=("pretraining", "seed", "case")).dropped == 1
