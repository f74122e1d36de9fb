"""Cross-validated frozen-encoder probes with bootstrap intervals (``asa-probe``).

The cases are dealt to k folds with every subject in one fold (`subject_folds`: scikit-learn's
``StratifiedGroupKFold``; classes spread over the folds for class targets). Each fold is predicted
by probes fitted on the other folds, so every case gets one out-of-fold prediction; the metrics
are computed on all out-of-fold predictions at once, with percentile bootstrap intervals that
resample subjects with all their sessions (`asa.eval.bootstrap`, as ``asa-evaluate`` reports case
heads; a subject with one case is the case bootstrap).

- **Case targets** (`case_probes`), on pooled features [n, D] (the mean of each case's brain
  tokens): continuous targets by ridge regression (`asa.eval.probe.ridge_predict`) and k-NN
  regression (the mean target of the k most cosine-similar fitted cases): MAE, RMSE, R², Pearson r;
  class targets by logistic regression (scikit-learn's ``LogisticRegression``, lbfgs, L2 penalty
  ``C = 1/logistic``, on the same standardised features) and k-NN (vote shares as class scores):
  balanced accuracy, AUROC, macro-F1 (`asa.eval.case_metrics`).
- **Voxel labels** (`token_probes`), on the tokens of each case's brain patches: per-patch class
  fractions by ridge (R² per class and their mean, pooled over the held-out patches) and the
  patch's majority class by k-NN (accuracy) — the pretraining probes (`asa.eval.probe`) under
  cross-validation; bootstrap resamples subjects (all patches of all their cases together).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold

from asa.eval.bootstrap import bootstrap_ci
from asa.eval.case_metrics import classification_summary, regression_summary
from asa.eval.probe import ProbeSet, knn_neighbours, knn_votes, r2_columns, ridge_predict, standardize

__all__ = ["TABLE_METRICS", "case_probes", "logistic_probabilities", "subject_folds", "token_probes"]

# the columns of the asa-probe table per kind of target (every metric is in probe.json)
TABLE_METRICS: dict[str, tuple[str, ...]] = {
    "continuous": ("ridge/r2", "ridge/mae", "knn/r2", "knn/mae"),
    "classes": ("logistic/balanced_accuracy", "logistic/auroc", "knn/balanced_accuracy", "knn/auroc"),
    "voxel": ("ridge/r2_mean", "knn/accuracy"),
}


def subject_folds(groups: Sequence[str], k: int, *, seed: int = 0, strata: Sequence[object] | None = None
                  ) -> np.ndarray:
    """Fold index [N] in ``[0, k)`` of each case, given its subject ``groups`` [N]: scikit-learn's
    ``StratifiedGroupKFold`` (subjects shuffled with ``seed``; ``strata``, e.g. each case's class,
    spread over the folds; without strata the folds balance their sizes), so the sessions of a
    subject are never in two folds. ``k`` is lowered to the number of subjects, and with ``strata`` to
    the cases of the largest class (a class of fewer cases than folds is spread as far as it goes);
    fewer than 2 subjects, or k < 2, is an error (nothing to hold out)."""
    g = np.asarray([str(x) for x in groups])
    n_subjects = np.unique(g).size
    if k < 2:
        raise ValueError(f"folds={k}: cross-validation needs at least 2 folds")
    if n_subjects < 2:
        raise ValueError(f"{g.size} case(s) of {n_subjects} subject(s): cross-validation needs at least 2 subjects")
    if strata is not None and len(strata) != g.size:
        raise ValueError(f"strata must have one entry per case ({g.size}), got {len(strata)}")
    y = np.zeros(g.size, dtype=np.int64) if strata is None else \
        np.unique(np.asarray([str(v) for v in strata]), return_inverse=True)[1]
    # scikit-learn deals a class to at most as many folds as it has cases, and refuses k above every class's count
    k = min(k, n_subjects, int(np.bincount(y).max()))
    if k < 2:
        raise ValueError(f"{g.size} case(s), each of its own class: cross-validation with the classes spread over "
                         "the folds needs a class with at least 2 cases")
    fold = np.empty(g.size, dtype=np.int64)
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # fewer cases of a class than folds: it is spread as far as it goes
        warnings.filterwarnings("ignore", message="The least populated class")
        for f, (_, test) in enumerate(splitter.split(np.zeros(g.size), y, g)):
            fold[test] = f
    return np.unique(fold, return_inverse=True)[1].astype(np.int64)  # no empty fold in the numbering


def logistic_probabilities(x_fit: torch.Tensor, y_fit: torch.Tensor, x_test: torch.Tensor, num_classes: int, *,
                           lam: float = 1.0, max_iter: int = 300) -> np.ndarray:
    """Class probabilities [m, K] of x_test [m, D] from scikit-learn's ``LogisticRegression(C=1/lam)``
    (lbfgs, L2 penalty on the weights, intercept unpenalised) fitted on rows x_fit [n, D] with classes
    y_fit [n] in ``[0, num_classes)``, features standardised on the fitted rows (`standardize`). A
    class absent from the fitted rows gets probability 0; a single fitted class gets 1."""
    if not lam > 0:
        raise ValueError(f"logistic={lam}: logistic regression needs an L2 penalty > 0")
    a, b = (t.numpy() for t in standardize(x_fit.double(), x_test.double()))
    y = y_fit.numpy()
    out = np.zeros((b.shape[0], num_classes))
    seen = np.unique(y)
    if seen.size == 1:
        out[:, seen[0]] = 1.0
        return out
    model = LogisticRegression(C=1.0 / lam, tol=1e-8, max_iter=max_iter).fit(a, y)
    out[:, model.classes_] = model.predict_proba(b)
    return out


def case_probes(features: torch.Tensor, values: Sequence[float], *, kind: str, groups: Sequence[str],
                names: Sequence[str] = (), folds: int = 5, seed: int = 0, ridge: float = 1.0, logistic: float = 1.0,
                logistic_steps: int = 300, knn_k: int = 5, n_resamples: int = 1000, confidence: float = 0.95) -> dict:
    """Cross-validated probes of case targets (module docstring). features [n, D]; ``values`` [n]:
    floats (``kind="continuous"``) or class indices into ``names``; ``groups`` [n]: each case's
    subject. Returns ``{"kind", "n", "folds", "metrics": {"<probe>/<metric>": estimate dict},
    "predictions": {"<probe>": per-case out-of-fold predictions}, "fold": per-case fold}``."""
    x = features.double()
    n = x.shape[0]
    continuous = kind == "continuous"
    y = np.asarray(values, dtype=np.float64 if continuous else np.int64)
    if y.shape != (n,):
        raise ValueError(f"{n} feature rows but {y.shape} target values")
    fold = subject_folds(groups, folds, seed=seed, strata=None if continuous else y)
    k_classes = len(names)
    preds = {"ridge": np.zeros(n), "knn": np.zeros(n)} if continuous else \
        {"logistic": np.zeros((n, k_classes)), "knn": np.zeros((n, k_classes))}
    for f in range(int(fold.max()) + 1):
        test, fit = fold == f, fold != f
        xf, xt = x[torch.from_numpy(fit)], x[torch.from_numpy(test)]
        if continuous:
            yf = torch.from_numpy(y[fit])
            preds["ridge"][test] = ridge_predict(xf, yf[:, None], xt, lam=ridge)[:, 0].numpy()
            preds["knn"][test] = yf[knn_neighbours(xf, xt, k=knn_k)].mean(1).numpy()
        else:
            cf = torch.from_numpy(y[fit])
            preds["logistic"][test] = logistic_probabilities(xf, cf, xt, k_classes, lam=logistic,
                                                             max_iter=logistic_steps)
            votes = knn_votes(xf, cf, xt, k=knn_k, num_classes=k_classes).double()
            preds["knn"][test] = (votes / votes.sum(1, keepdim=True)).numpy()
    metrics: dict[str, dict] = {}
    details: dict[str, dict] = {}
    for probe, p in preds.items():
        ci = dict(n_resamples=n_resamples, confidence=confidence, seed=seed, groups=list(groups))
        summary = (regression_summary(y, p, **ci) if continuous else classification_summary(y, p, names=names, **ci))
        metrics.update({f"{probe}/{m}": est for m, est in summary["metrics"].items()})
        details[probe] = {k: v for k, v in summary.items() if k not in ("metrics", "kind", "n")}
    return {"kind": kind, "n": n, "folds": int(fold.max()) + 1, "metrics": metrics, "details": details,
            "predictions": {probe: p.tolist() for probe, p in preds.items()}, "fold": fold.tolist()}


def token_probes(tokens: torch.Tensor, probe: ProbeSet, *, groups: Sequence[str], folds: int = 5, seed: int = 0,
                 ridge: float = 1.0, knn_k: int = 5, n_resamples: int = 1000, confidence: float = 0.95) -> dict:
    """Cross-validated per-patch probes of voxel labels (module docstring). tokens [n, N, D] of the
    probe set's images; ``groups`` [n]: each case's subject. Returns ``{"kind": "voxel", "n",
    "folds", "metrics": {"ridge/r2_<class>", "ridge/r2_mean", "knn/accuracy"}: estimate dicts}``."""
    n = tokens.shape[0]
    fold = subject_folds(groups, folds, seed=seed)
    num_classes = probe.fractions.shape[2] + 1  # background + one per column
    truth = [probe.fractions[i][probe.brain[i]].double() for i in range(n)]
    classes = [probe.classes[i][probe.brain[i]] for i in range(n)]
    ridge_pred: list[torch.Tensor] = [torch.empty(0)] * n
    knn_pred: list[torch.Tensor] = [torch.empty(0)] * n
    for f in range(int(fold.max()) + 1):
        fit = [i for i in range(n) if fold[i] != f]
        held = [i for i in range(n) if fold[i] == f]
        xf = torch.cat([tokens[i][probe.brain[i]] for i in fit]).double()
        xt = [tokens[i][probe.brain[i]].double() for i in held]
        yf = torch.cat([truth[i] for i in fit])
        cf = torch.cat([classes[i] for i in fit])
        sizes = [len(t) for t in xt]
        r = ridge_predict(xf, yf, torch.cat(xt), lam=ridge).split(sizes)
        v = knn_votes(xf, cf, torch.cat(xt), k=knn_k, num_classes=num_classes).argmax(1).split(sizes)
        for j, i in enumerate(held):
            ridge_pred[i], knn_pred[i] = r[j], v[j]

    def r2_of(idx: np.ndarray) -> torch.Tensor:
        return r2_columns(torch.cat([truth[i] for i in idx]), torch.cat([ridge_pred[i] for i in idx]))

    def r2_mean(idx: np.ndarray) -> float:
        r2 = r2_of(idx)
        finite = r2[torch.isfinite(r2)]
        return float(finite.mean()) if finite.numel() else float("nan")

    def accuracy(idx: np.ndarray) -> float:
        return float((torch.cat([knn_pred[i] for i in idx]) == torch.cat([classes[i] for i in idx])).double().mean())

    cases = np.arange(n)
    ci = dict(n_resamples=n_resamples, confidence=confidence, seed=seed, groups=[str(g) for g in groups])
    metrics = {f"ridge/r2_{name}": bootstrap_ci(lambda idx, c=c: float(r2_of(idx)[c]), cases, **ci).to_dict()
               for c, name in enumerate(probe.names)}
    metrics["ridge/r2_mean"] = bootstrap_ci(r2_mean, cases, **ci).to_dict()
    metrics["knn/accuracy"] = bootstrap_ci(accuracy, cases, **ci).to_dict()
    return {"kind": "voxel", "n": n, "folds": int(fold.max()) + 1, "patches": int(sum(len(t) for t in truth)),
            "classes": list(probe.names), "metrics": metrics, "fold": fold.tolist()}
