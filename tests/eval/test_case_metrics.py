"""Case-level metrics against hand-computed values and independent formulas; bootstrap intervals."""
from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from scipy import special, stats

from asa.eval import (HIGHER_IS_BETTER, auroc, balanced_accuracy, bootstrap_ci, case_metric, classification_summary,
                      confusion_matrix, macro_f1, mae, pearson_r, per_class_auroc, r2, regression_summary, rmse)

# three classes, by hand: truth 0 0 0 1 1 2, prediction 0 1 0 1 1 0
Y3 = np.array([0, 0, 0, 1, 1, 2])
P3 = np.array([0, 1, 0, 1, 1, 0])


def _pairwise_auroc(positive, score) -> float:
    """Independent AUROC: over all (positive, negative) pairs, 1 if the positive scores higher, 1/2 if tied."""
    pos, neg = score[positive], score[~positive]
    wins = sum(1.0 if p > q else 0.5 if p == q else 0.0 for p, q in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def _trapezoid_auroc(positive, score) -> float:
    """Independent AUROC: area under the ROC curve, one point per distinct threshold, trapezoids between."""
    thresholds = np.unique(score)[::-1]
    tpr = [0.0] + [float((score[positive] >= t).mean()) for t in thresholds]
    fpr = [0.0] + [float((score[~positive] >= t).mean()) for t in thresholds]
    return float(sum((fpr[i + 1] - fpr[i]) * (tpr[i + 1] + tpr[i]) / 2 for i in range(len(tpr) - 1)))


def test_confusion_balanced_accuracy_and_macro_f1_by_hand():
    np.testing.assert_array_equal(confusion_matrix(Y3, P3), [[2, 1, 0], [0, 2, 0], [1, 0, 0]])  # rows true
    assert balanced_accuracy(Y3, P3) == pytest.approx((2 / 3 + 2 / 2 + 0 / 1) / 3)  # 5/9
    # F1 = 2TP / (2TP + FP + FN): class 0 4/6, class 1 4/5, class 2 0/1
    assert macro_f1(Y3, P3) == pytest.approx((4 / 6 + 4 / 5 + 0) / 3)  # 22/45
    # a class never true but predicted: F1 0 and counted; left out of balanced accuracy (no recall)
    y, p = np.array([0, 0, 1, 1]), np.array([0, 2, 1, 1])
    assert macro_f1(y, p, 3) == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert balanced_accuracy(y, p, 3) == pytest.approx((1 / 2 + 1) / 2)
    # a class neither true nor predicted (0/0) is left out of macro-F1 too
    assert macro_f1([0, 1, 1], [0, 1, 0], 4) == pytest.approx((2 / 3 + 2 / 3) / 2)
    assert confusion_matrix([1, 0], [1, 1], 3).shape == (3, 3)


def test_auroc_binary_with_ties_by_hand():
    y = np.array([0, 0, 1, 1, 0, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8, 0.4, 0.4])
    # positives 0.35, 0.8, 0.4 against negatives 0.1, 0.4, 0.4: 1 + 3 + (1 + 1/2 + 1/2) = 6 of 9 pairs
    assert auroc(y, s) == pytest.approx(6 / 9)
    assert auroc(y, np.stack([1 - s, s], axis=1)) == pytest.approx(6 / 9)  # [N, 2]: column 1
    assert auroc(y, np.full(6, 0.5)) == pytest.approx(0.5)  # all tied
    assert auroc(1 - y, s) == pytest.approx(1 - 6 / 9)
    assert math.isnan(auroc([1, 1, 1], [0.2, 0.5, 0.9]))  # one class: undefined
    rng = np.random.default_rng(0)
    for _ in range(20):  # integer scores: many ties
        y = rng.integers(0, 2, 40)
        y[:2] = [0, 1]
        s = rng.integers(0, 6, 40).astype(float)
        expected = _pairwise_auroc(y == 1, s)
        assert auroc(y, s) == pytest.approx(expected) and _trapezoid_auroc(y == 1, s) == pytest.approx(expected)


def test_auroc_one_vs_rest_macro_and_absent_classes():
    y = np.array([0, 1, 2, 2, 1, 0, 2])
    s = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.2, 0.7], [0.3, 0.3, 0.4],
                  [0.5, 0.4, 0.1], [0.4, 0.4, 0.2], [0.2, 0.5, 0.3]])
    per = [_pairwise_auroc(y == k, s[:, k]) for k in range(3)]
    np.testing.assert_allclose(per_class_auroc(y, s), per)
    assert auroc(y, s) == pytest.approx(np.mean(per))
    # class 2 absent from the truth: the mean runs over classes 0 and 1 only
    y2, s2 = y[y != 2], s[y != 2]
    got = per_class_auroc(y2, s2)
    assert math.isnan(got[2]) and auroc(y2, s2) == pytest.approx(np.mean(got[:2]))
    assert math.isnan(auroc([1, 1], s[:2]))


def test_regression_metrics_by_hand():
    y, p = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.5, 2.0, 2.5, 5.0])
    assert mae(y, p) == pytest.approx(0.5)  # |0.5| + 0 + |-0.5| + 1 over 4
    assert rmse(y, p) == pytest.approx(math.sqrt(1.5 / 4))
    assert r2(y, p) == pytest.approx(1 - 1.5 / 5.0)  # SS_res 1.5, SS_tot 5
    assert pearson_r(y, p) == pytest.approx(5.5 / math.sqrt(5.0 * 7.25))
    assert pearson_r(y, p) == pytest.approx(stats.pearsonr(y, p)[0])
    assert pearson_r(y, 2 * y + 5) == pytest.approx(1.0) and r2(y, 2 * y + 5) < 0  # r ignores bias and scale
    assert r2(y, np.full(4, y.mean())) == pytest.approx(0.0)
    assert math.isnan(r2([0.1, 0.1, 0.1], [0.1, 0.2, 0.3])) and math.isnan(pearson_r(y, np.ones(4)))
    with pytest.raises(ValueError, match="differ in shape"):
        mae(y, p[:3])
    with pytest.raises(ValueError, match="NaN or Inf"):
        rmse(y, [1.0, np.nan, 2.0, 3.0])


def test_bad_class_inputs_are_refused():
    with pytest.raises(ValueError, match="differ in length"):
        balanced_accuracy([0, 1], [0])
    with pytest.raises(ValueError, match="outside num_classes=2"):
        confusion_matrix([0, 2], [0, 1], 2)
    with pytest.raises(ValueError, match="integer class indices"):
        macro_f1([0.5, 1.0], [0, 1])
    with pytest.raises(ValueError, match=r"scores must be \[N\] or \[N, K\]"):
        auroc([0, 1, 1], [0.2, 0.3])
    with pytest.raises(ValueError, match="class index 2 in y_true but scores have 2 classes"):
        auroc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="unknown case metric 'accuracy'"):
        case_metric("accuracy", [0, 1], [[1, 0], [0, 1]])


def test_bootstrap_is_the_stated_percentile_method():
    rng = np.random.default_rng(1)
    x = rng.normal(10.0, 2.0, size=50)
    est = bootstrap_ci(np.mean, x, n_resamples=200, confidence=0.9, seed=3)
    # the method, re-done by hand: 200 draws of 50 indices from default_rng(3), percentiles 5 and 95
    draws = np.random.default_rng(3)
    means = [x[draws.integers(0, 50, size=50)].mean() for _ in range(200)]
    assert est.value == pytest.approx(x.mean())
    assert (est.low, est.high) == pytest.approx(tuple(np.percentile(means, [5, 95])))
    assert (est.n_resamples, est.n_valid, est.confidence) == (200, 200, 0.9)
    assert bootstrap_ci(np.mean, x, n_resamples=200, confidence=0.9, seed=3) == est  # seeded
    assert bootstrap_ci(np.mean, x, n_resamples=200, confidence=0.9, seed=4) != est
    # width close to the normal theory: 2 * 1.645 * s / sqrt(n)
    width = 2 * 1.645 * x.std(ddof=1) / math.sqrt(50)
    assert est.high - est.low == pytest.approx(width, rel=0.2)


def test_bootstrap_strata_keep_counts_and_undefined_resamples_are_dropped():
    y = np.array([0] * 8 + [1] * 2)
    s = np.linspace(0, 1, 10)
    counts = bootstrap_ci(lambda t: float((t == 1).sum()), y, n_resamples=50, strata=y)
    assert counts.low == counts.high == 2.0
    plain = bootstrap_ci(auroc, y, s, n_resamples=300, seed=0)  # some resamples hold no positive
    assert 0 < plain.n_valid < 300 and plain.value == pytest.approx(1.0)
    stratified = bootstrap_ci(auroc, y, s, n_resamples=300, seed=0, strata=y)
    assert stratified.n_valid == 300
    assert math.isnan(bootstrap_ci(np.mean, np.ones(3), n_resamples=0).low)
    with pytest.raises(ValueError, match="share a non-empty first axis"):
        bootstrap_ci(auroc, y, s[:5])


def test_summaries_hold_every_metric_with_an_interval_and_write_as_json():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 10)
    logits = rng.normal(size=(30, 3)) + 2.0 * np.eye(3)[y]
    out = classification_summary(y, logits, names=["CN", "MCI", "AD"], n_resamples=100, seed=1)
    json.dumps(out, allow_nan=False)  # strict JSON: undefined values are None, not NaN
    assert out["names"] == ["CN", "MCI", "AD"] and out["n"] == 30
    pred = logits.argmax(axis=1)
    assert out["confusion_matrix"] == confusion_matrix(y, pred, 3).tolist()
    for name in ("balanced_accuracy", "auroc", "macro_f1"):
        m = out["metrics"][name]
        assert m["value"] == pytest.approx(case_metric(name, y, logits))
        assert m["ci_low"] <= m["value"] <= m["ci_high"] and m["n_resamples"] == 100
    assert out["metrics"]["balanced_accuracy"]["value"] == pytest.approx(balanced_accuracy(y, pred))
    assert out["per_class"]["AD"]["n"] == 10 and out["per_class"]["AD"]["auroc"] == pytest.approx(
        _pairwise_auroc(y == 2, special.softmax(logits, axis=1)[:, 2]))  # on the class's probability
    assert out["bootstrap"]["resampled"] == "cases, within each true class"
    age = rng.uniform(55, 90, 40)
    guess = age + rng.normal(0, 3, 40)
    reg = regression_summary(age, guess, n_resamples=100)
    json.dumps(reg, allow_nan=False)
    for name in ("mae", "rmse", "r2", "pearson_r"):
        m = reg["metrics"][name]
        assert m["value"] == pytest.approx(case_metric(name, age, guess)) and m["ci_low"] <= m["value"] <= m["ci_high"]
    assert not HIGHER_IS_BETTER["mae"] and HIGHER_IS_BETTER["auroc"]
    with pytest.raises(ValueError, match="2 class names for scores of 3 classes"):
        classification_summary(y, logits, names=["a", "b"])


def test_against_scikit_learn_when_it_is_installed():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, 60)
    s = rng.integers(0, 5, (60, 3)).astype(float)  # tied scores
    p = s.argmax(axis=1)
    assert balanced_accuracy(y, p) == pytest.approx(metrics.balanced_accuracy_score(y, p))
    assert macro_f1(y, p) == pytest.approx(metrics.f1_score(y, p, average="macro"))
    np.testing.assert_array_equal(confusion_matrix(y, p, 3), metrics.confusion_matrix(y, p, labels=[0, 1, 2]))
    prob = np.exp(s) / np.exp(s).sum(axis=1, keepdims=True)
    assert auroc(y, prob) == pytest.approx(metrics.roc_auc_score(y, prob, multi_class="ovr", average="macro"))
    assert auroc(y == 1, s[:, 1]) == pytest.approx(metrics.roc_auc_score(y == 1, s[:, 1]))
    t, q = rng.normal(size=30), rng.normal(size=30)
    assert r2(t, q) == pytest.approx(metrics.r2_score(t, q))
    assert mae(t, q) == pytest.approx(metrics.mean_absolute_error(t, q))
    assert rmse(t, q) == pytest.approx(math.sqrt(metrics.mean_squared_error(t, q)))


def test_auroc_of_logits_reads_their_probabilities():
    # two classes as logits [z0, z1]: the score of class 1 is p1 = sigmoid(z1 − z0), not z1 alone
    y = np.array([0, 0, 0, 1, 1, 1])
    z = np.array([[0.0, 1.0], [3.0, 2.5], [2.0, 0.5], [0.0, 2.0], [4.0, 1.5], [-1.0, 0.0]])
    # by hand, on z1 − z0 = 1, −0.5, −1.5 (negatives) and 2, −2.5, 1 (positives): 5 of 9 pairs won, 1 tied
    assert auroc(y, z) == pytest.approx(5.5 / 9)
    assert auroc(y, special.softmax(z, axis=1)) == pytest.approx(5.5 / 9)
    assert auroc(y, z[:, 1]) == pytest.approx(4 / 9)  # column 1 alone (2, 1.5, 0 vs 1, 2.5, 0.5) ranks otherwise
    assert case_metric("auroc", y, z) == pytest.approx(5.5 / 9)
    np.testing.assert_allclose(per_class_auroc(y, z), [5.5 / 9, 5.5 / 9])
    rng = np.random.default_rng(2)
    y3, z3 = rng.integers(0, 3, 40), rng.normal(size=(40, 3)) * 3
    metrics = pytest.importorskip("sklearn.metrics")
    assert auroc(y3, z3) == pytest.approx(metrics.roc_auc_score(y3, special.softmax(z3, axis=1), multi_class="ovr"))

