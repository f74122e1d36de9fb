"""`asa.eval.seed_case_bootstrap`: the two-level (seeds × test cases) percentile bootstrap of the transfer studies."""
from __future__ import annotations

import numpy as np
import pytest

from asa.eval import bootstrap_ci, seed_case_bootstrap


def test_the_case_only_bootstrap_covers_a_known_mean_difference():
    rng = np.random.default_rng(1)
    diffs = 0.05 + rng.normal(0, 0.03, size=30)
    est = bootstrap_ci(np.mean, diffs, n_resamples=4000)
    assert est.low < 0.05 < est.high and est.low < est.value < est.high
    assert est.high - est.low < 0.05  # ~ ±1.96 · 0.03/√30
    same = bootstrap_ci(np.mean, np.full(5, 0.1), n_resamples=200)
    assert (same.value, same.low, same.high) == pytest.approx((0.1, 0.1, 0.1))


def test_hand_computed_value_and_missing_pairs():
    d = np.array([[0.1, 0.3], [0.2, np.nan]])
    est = seed_case_bootstrap(d, n_resamples=2000)
    assert est.value == pytest.approx(0.2)  # (0.1 + 0.3 + 0.2) / 3 pairs
    assert 0.1 <= est.low <= est.value <= est.high <= 0.3
    assert 1500 < est.n_valid < 2000  # a resample of seed 1 twice and case 1 twice holds no pair (1 in 16)
    none = seed_case_bootstrap(np.full((2, 2), np.nan))
    assert np.isnan([none.value, none.low, none.high]).all() and none.n_valid == 0


def test_the_seed_level_widens_the_interval_and_the_seed_changes_it():
    cases = np.random.default_rng(0).normal(0, 0.01, size=16)
    agree = np.tile(cases, (3, 1)) + 0.05
    spread = cases[None, :] + np.array([[0.274], [-0.019], [-0.148]])
    narrow, wide = seed_case_bootstrap(agree, n_resamples=2000), seed_case_bootstrap(spread, n_resamples=2000)
    assert wide.high - wide.low > 10 * (narrow.high - narrow.low)
    assert wide.value == pytest.approx(np.mean([0.274, -0.019, -0.148]) + cases.mean())
    assert seed_case_bootstrap(spread, n_resamples=2000, seed=1).low != wide.low
    assert seed_case_bootstrap(spread, n_resamples=2000) == wide  # same seed, same interval


@pytest.mark.parametrize("args,match", [
    ((np.zeros(3),), "seeds, test cases"),
    ((np.zeros((2, 2)),), "n_resamples"),
])
def test_bad_arguments_are_named(args, match):
    kwargs = {"n_resamples": -1} if match == "n_resamples" else {}
    with pytest.raises(ValueError, match=match):
        seed_case_bootstrap(*args, **kwargs)


def test_no_resamples_gives_the_value_alone():
    est = seed_case_bootstrap(np.array([[0.1, 0.2]]), n_resamples=0)
    assert est.value == pytest.approx(0.15) and np.isnan(est.low) and np.isnan(est.high)


def test_the_resampled_means_are_the_intervals_and_the_p_is_its_dual():
    from asa.eval import bootstrap_indices, bootstrap_p, seed_case_means
    d = np.array([[-1.0, 1.0, 1.0]])  # one seed: only the cases are drawn
    means = seed_case_means(d, n_resamples=500, seed=3)
    by_hand = np.array([d[0, idx].mean() for idx in bootstrap_indices(3, n_resamples=500, seed=3)])
    assert means == pytest.approx(by_hand)
    est = seed_case_bootstrap(d, n_resamples=500, seed=3)
    assert (est.low, est.high) == pytest.approx(tuple(np.percentile(by_hand, [2.5, 97.5])))
    k = min(int((by_hand <= 0).sum()), int((by_hand >= 0).sum()))
    assert bootstrap_p(means) == pytest.approx(min(1.0, 2 * (k + 1) / 501))
    # by hand: every resample above 0 -> 2 / (B + 1); a difference of 0 everywhere -> 1; symmetric in the sign
    assert bootstrap_p([0.1, 0.2, 0.3]) == pytest.approx(0.5) and bootstrap_p(np.full(999, 0.2)) == pytest.approx(0.002)
    assert bootstrap_p(np.zeros(10)) == 1.0 and bootstrap_p([-0.1, 0.2, 0.3, 0.4]) == pytest.approx(2 * 2 / 5)
    assert bootstrap_p(-means) == bootstrap_p(means) and np.isnan(bootstrap_p([]))
    assert seed_case_means(np.full((2, 2), np.nan)).size == 0
