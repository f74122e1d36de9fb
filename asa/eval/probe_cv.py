"""Cross-validated frozen-encoder probes with bootstrap intervals (``asa-probe``).

The cases are dealt to k folds with every subject in one fold (`asa.eval.folds.grouped_folds`;
classes spread over the folds for class targets). Each fold is predicted by probes fitted on the
other folds, so every case gets one out-of-fold prediction; the metrics are computed on all
out-of-fold predictions at once, with percentile bootstrap intervals over the cases
(`asa.eval.bootstrap`, as ``asa-evaluate`` reports case heads).

- **Case targets** (`case_probes`), on pooled features [n, D] (the mean of each case's brain
  tokens): continuous targets by ridge regression (`asa.eval.probe.ridge_predict`) and k-NN
  regression (the mean target of the k most cosine-similar fitted cases): MAE, RMSE, R², Pearson r;
  class targets by multinomial logistic regression (`asa.eval.logistic`) and k-NN (vote shares as
  class scores): balanced accuracy, AUROC, macro-F1 (`asa.eval.case_metrics`).
- **Voxel labels** (`token_probes`), on the tokens of each case's brain patches: per-patch class
  fractions by ridge (R² per class and their mean, pooled over the held-out patches) and the
  patch's majority class by k-NN (accuracy) — the pretraining probes (`asa.eval.probe`) under
  cross-validation; bootstrap resamples cases (all patches of a case together).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from asa.eval.bootstrap import bootstrap_ci
from asa.eval.case_metrics import classification_summary, regression_summary
from asa.eval.folds import grouped_folds
from asa.eval.logistic import logistic_probabilities
from asa.eval.probe import ProbeSet, knn_neighbours, knn_votes, r2_columns, ridge_predict

__all__ = ["TABLE_METRICS", "case_probes", "token_probes"]

# the columns of the asa-probe table per kind of target (every metric is in probe.json)
TABLE_METRICS: dict[str, tuple[str, ...]] = {
    "continuous": ("ridge/r2", "ridge/mae", "knn/r2", "knn/mae"),
    "classes": ("logistic/balanced_accuracy", "logistic/auroc", "knn/balanced_accuracy", "knn/auroc"),
    "voxel": ("ridge/r2_mean", "knn/accuracy"),
}


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
    fold = grouped_folds(groups, folds, seed=seed, strata=None if continuous else y)
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
                                                             max_iter=logistic_steps).numpy()
            votes = knn_votes(xf, cf, xt, k=knn_k, num_classes=k_classes).double()
            preds["knn"][test] = (votes / votes.sum(1, keepdim=True)).numpy()
    metrics: dict[str, dict] = {}
    details: dict[str, dict] = {}
    for probe, p in preds.items():
        summary = (regression_summary(y, p, n_resamples=n_resamples, confidence=confidence, seed=seed) if continuous
                   else classification_summary(y, p, names=names, n_resamples=n_resamples, confidence=confidence,
                                               seed=seed))
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
    fold = grouped_folds(groups, folds, seed=seed)
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
    ci = dict(n_resamples=n_resamples, confidence=confidence, seed=seed)
    metrics = {f"ridge/r2_{name}": bootstrap_ci(lambda idx, c=c: float(r2_of(idx)[c]), cases, **ci).to_dict()
               for c, name in enumerate(probe.names)}
    metrics["ridge/r2_mean"] = bootstrap_ci(r2_mean, cases, **ci).to_dict()
    metrics["knn/accuracy"] = bootstrap_ci(accuracy, cases, **ci).to_dict()
    return {"kind": "voxel", "n": n, "folds": int(fold.max()) + 1, "patches": int(sum(len(t) for t in truth)),
            "classes": list(probe.names), "metrics": metrics, "fold": fold.tolist()}
