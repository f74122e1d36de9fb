"""Cross-validated frozen-encoder probes: folds, logistic regression, ridge / k-NN against scikit-learn or
hand-computed values, bootstrap intervals over the out-of-fold predictions."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from asa.eval.bootstrap import bootstrap_ci
from asa.eval.probe import ProbeSet, ridge_predict, standardize
from asa.eval.probe_cv import case_probes, logistic_probabilities, subject_folds, token_probes
from asa.eval.regression import mae, r2


def test_folds_never_split_a_subject_and_spread_the_classes():
    groups = [f"sub-{i // 3}" for i in range(30)]  # 10 subjects, 3 sessions each
    classes = [(i // 3) % 2 for i in range(30)]
    fold = subject_folds(groups, 5, seed=3, strata=classes)
    for g in set(groups):
        assert len({fold[i] for i in range(30) if groups[i] == g}) == 1
    assert sorted(np.bincount(fold).tolist()) == [6] * 5  # 2 subjects per fold
    for f in range(5):  # one subject of each class per fold
        assert sorted(classes[i] for i in range(30) if fold[i] == f) == [0, 0, 0, 1, 1, 1]
    assert subject_folds(["a", "b", "c"], 10).max() == 2  # k lowered to the number of subjects
    with pytest.raises(ValueError, match="at least 2 subjects"):
        subject_folds(["a", "a"], 2)
    with pytest.raises(ValueError, match="folds=1"):
        subject_folds(["a", "b"], 1)


@pytest.mark.parametrize("num_classes", [2, 3])
def test_logistic_probe_is_scikit_learn_at_the_documented_penalty(num_classes):
    # C = 1/logistic for two classes as for more: a softmax over two classes fitted with λ/2 ‖W‖²
    # would be scikit-learn's binary model at C = 2/logistic (half the penalty)
    g = torch.Generator().manual_seed(num_classes)
    x = torch.randn(60, 5, generator=g, dtype=torch.float64) * torch.tensor([1.0, 3.0, 0.5, 2.0, 1.0], dtype=torch.float64)
    y = (x[:, 0] + torch.randn(60, generator=g, dtype=torch.float64) > 0).long() if num_classes == 2 else \
        torch.randint(0, 3, (60,), generator=g)
    lam = 2.0
    p = logistic_probabilities(x[:45], y[:45], x[45:], num_classes, lam=lam)
    z_fit, z_test = (t.numpy() for t in standardize(x[:45], x[45:]))
    ref = LogisticRegression(C=1 / lam, tol=1e-10, max_iter=10000).fit(z_fit, y[:45].numpy())
    assert p.shape == (15, num_classes) and np.abs(ref.predict_proba(z_test) - p).max() < 1e-4
    # at the optimum of Σ log-loss + λ/2 ‖w‖² the gradient Zᵀ(P − Y) + λW vanishes (binary: one w)
    onehot = np.eye(num_classes)[y[:45].numpy()]
    model = LogisticRegression(C=1 / lam, tol=1e-10, max_iter=10000).fit(z_fit, y[:45].numpy())
    resid = model.predict_proba(z_fit) - onehot
    w = model.coef_.T
    grad = z_fit.T @ resid[:, 1:] + lam * w if num_classes == 2 else z_fit.T @ resid + lam * w
    assert np.abs(grad).max() < 1e-4
    absent = logistic_probabilities(x[:45], torch.where(y[:45] == 2, 0, y[:45]), x[45:], 3, lam=lam)
    assert np.all(absent[:, 2] == 0) and np.allclose(absent.sum(1), 1.0)  # a class not fitted: probability 0
    with pytest.raises(ValueError, match="logistic=0.0"):
        logistic_probabilities(x, y, x, num_classes, lam=0.0)


def test_ridge_is_the_closed_form_on_standardised_features():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, 8, generator=g, dtype=torch.float64)
    y = torch.cat([x[:, :1] * 2, -x[:, 1:2]], 1) + 0.3 * torch.randn(40, 2, generator=g, dtype=torch.float64) + 5
    pred = ridge_predict(x[:30], y[:30], x[30:], lam=3.0)
    mu, sd = x[:30].mean(0), x[:30].std(0)
    a, b = (x[:30] - mu) / sd, (x[30:] - mu) / sd
    w = torch.linalg.solve(a.T @ a + 3.0 * torch.eye(8, dtype=torch.float64), a.T @ (y[:30] - y[:30].mean(0)))
    assert pred.shape == (10, 2) and torch.allclose(pred, b @ w + y[:30].mean(0), atol=1e-8)


def _case_data(n: int = 40, informative: bool = True):
    g = torch.Generator().manual_seed(2)
    y = torch.rand(n, generator=g, dtype=torch.float64) * 40 + 50  # ages 50..90
    x = torch.randn(n, 6, generator=g, dtype=torch.float64)
    if informative:
        x[:, 0] = (y - 70) / 10 + 0.05 * torch.randn(n, generator=g, dtype=torch.float64)
    return x, y.numpy()


def test_continuous_case_probe_out_of_fold_predictions_and_intervals():
    x, y = _case_data()
    groups = [f"s{i // 2}" for i in range(40)]  # two sessions per subject
    out = case_probes(x, y, kind="continuous", groups=groups, folds=4, seed=0, ridge=1.0, knn_k=3, n_resamples=200)
    assert out["folds"] == 4 and len(set(zip(groups, out["fold"]))) == 20  # a subject's cases share a fold
    pred = np.asarray(out["predictions"]["ridge"])
    fold = np.asarray(out["fold"])
    for f in range(4):  # each fold predicted by a ridge fitted on the other folds only
        fit, test = fold != f, fold == f
        ref = ridge_predict(x[fit], torch.from_numpy(y[fit])[:, None], x[test], lam=1.0)[:, 0].numpy()
        assert np.allclose(pred[test], ref)
    assert out["metrics"]["ridge/mae"]["value"] == pytest.approx(mae(y, pred))
    assert out["metrics"]["ridge/r2"]["value"] == pytest.approx(r2(y, pred)) and r2(y, pred) > 0.95
    est = bootstrap_ci(r2, y, pred, n_resamples=200, seed=0, groups=groups)  # resampling subjects, not sessions
    assert (out["metrics"]["ridge/r2"]["ci_low"], out["metrics"]["ridge/r2"]["ci_high"]) == pytest.approx((est.low, est.high))
    assert out["details"]["ridge"]["bootstrap"]["resampled"] == "subjects"
    knn = np.asarray(out["predictions"]["knn"])
    assert out["metrics"]["knn/mae"]["value"] == pytest.approx(mae(y, knn))
    noise = case_probes(_case_data(informative=False)[0], y, kind="continuous", groups=groups, folds=4, n_resamples=50)
    assert noise["metrics"]["ridge/r2"]["value"] < 0.2


@pytest.mark.slow
def test_class_case_probe_balanced_accuracy_and_auroc():
    g = torch.Generator().manual_seed(4)
    labels = np.arange(45) % 3
    centres = 3 * torch.randn(3, 10, generator=g, dtype=torch.float64)
    x = centres[labels] + torch.randn(45, 10, generator=g, dtype=torch.float64)
    out = case_probes(x, labels, kind="multiclass", names=("AD", "CN", "MCI"), groups=[str(i) for i in range(45)],
                      folds=5, n_resamples=100, knn_k=5)
    for probe in ("logistic", "knn"):
        scores = np.asarray(out["predictions"][probe])
        assert scores.shape == (45, 3) and np.allclose(scores.sum(1), 1.0)
        assert out["metrics"][f"{probe}/balanced_accuracy"]["value"] > 0.9
        assert out["metrics"][f"{probe}/auroc"]["value"] > 0.9
    sk = pytest.importorskip("sklearn.metrics")
    scores = np.asarray(out["predictions"]["logistic"])
    assert out["metrics"]["logistic/balanced_accuracy"]["value"] == pytest.approx(
        sk.balanced_accuracy_score(labels, scores.argmax(1)))
    assert out["metrics"]["logistic/auroc"]["value"] == pytest.approx(sk.roc_auc_score(labels, scores, multi_class="ovr"))
    knn = np.asarray(out["predictions"]["knn"])
    assert set(np.round(knn * 5).ravel().tolist()) <= set(range(6))  # vote shares of 5 neighbours


def test_token_probe_scores_held_out_cases_and_resamples_cases():
    g = torch.Generator().manual_seed(5)
    n, tokens_per_case = 6, 50
    fractions = torch.rand(n, tokens_per_case, 2, generator=g) / 2
    tokens = torch.cat([fractions * 4, torch.randn(n, tokens_per_case, 3, generator=g) * 0.01], 2)  # linear in the fractions
    brain = torch.ones(n, tokens_per_case, dtype=torch.bool)
    brain[:, :5] = False
    classes = torch.cat([(1 - fractions.sum(2, keepdim=True)), fractions], 2).argmax(2)
    probe_set = ProbeSet(torch.zeros(n, 1, 8, 8, 8), fractions, classes, brain, ("A", "B"))
    out = token_probes(tokens, probe_set, groups=["s0", "s0", "s1", "s2", "s3", "s3"], folds=3, n_resamples=100,
                       knn_k=3, ridge=1e-3)
    assert out["patches"] == n * 45 and out["folds"] == 3
    assert out["metrics"]["ridge/r2_A"]["value"] > 0.99 and out["metrics"]["ridge/r2_mean"]["value"] > 0.99
    assert 0.0 <= out["metrics"]["knn/accuracy"]["value"] <= 1.0
    assert out["metrics"]["ridge/r2_mean"]["n_resamples"] == 100
    fold = out["fold"]
    assert fold[0] == fold[1] and fold[4] == fold[5]


def test_binary_case_probe_is_scikit_learn_logistic_regression_per_fold():
    g = torch.Generator().manual_seed(6)
    labels = np.arange(36) % 2
    x = torch.randn(36, 4, generator=g, dtype=torch.float64)
    x[:, 0] += torch.from_numpy(labels * 1.5)
    groups = [f"s{i // 2}" for i in range(36)]
    out = case_probes(x, labels, kind="binary", names=("CN", "AD"), groups=groups, folds=3, logistic=0.5,
                      n_resamples=20)
    p, fold = np.asarray(out["predictions"]["logistic"]), np.asarray(out["fold"])
    for f in range(3):
        fit, test = fold != f, fold == f
        z_fit, z_test = (t.numpy() for t in standardize(x[fit], x[test]))
        ref = LogisticRegression(C=1 / 0.5, tol=1e-10, max_iter=10000).fit(z_fit, labels[fit]).predict_proba(z_test)
        assert np.abs(ref - p[test]).max() < 1e-4


def test_k_is_lowered_to_the_largest_class_instead_of_scikit_learns_error():
    # 6 subjects, 3 classes of 2 cases: 5 folds cannot each hold a case of a class; 2 can
    groups, classes = ["a", "b", "c", "d", "e", "f"], [0, 0, 1, 1, 2, 2]
    fold = subject_folds(groups, 5, seed=0, strata=classes)
    assert fold.max() + 1 == 2
    assert all(sorted(fold[[i, i + 1]].tolist()) == [0, 1] for i in (0, 2, 4))  # each class in both folds
    torch.manual_seed(0)
    result = case_probes(torch.randn(6, 4), classes, kind="classes", groups=groups, names=["x", "y", "z"], folds=5,
                         n_resamples=10, knn_k=1)
    assert result["folds"] == 2
    with pytest.raises(ValueError, match="each of its own class: cross-validation with the classes spread"):
        subject_folds(["a", "b", "c"], 3, strata=[0, 1, 2])
