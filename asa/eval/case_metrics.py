"""Case-level metrics by name, and the summaries with bootstrap intervals that ``summary.json`` holds.

Classification takes the truth as class indices ``[N]`` and the model's output as class scores
``[N, K]`` (probabilities or logits; AUROC reads probabilities, softmax of logits); the predicted
class is the arg-max (ties to the lower index; for two classes on probabilities: class 1 when
p1 > 0.5). Regression takes values ``[N]`` and predictions ``[N]``. Definitions and edge cases:
`asa.eval.classification`, `asa.eval.regression`; intervals: `asa.eval.bootstrap` (classification
resamples within each true class, so every resample keeps the class counts; regression resamples
all cases). With ``groups`` (each case's subject) the intervals resample subjects with all their
cases, as they must when a subject has several sessions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from asa.eval.bootstrap import bootstrap_ci, resampled_units
from asa.eval.classification import auroc, balanced_accuracy, confusion_matrix, macro_f1, per_class_auroc
from asa.eval.regression import mae, pearson_r, r2, rmse

__all__ = ["CLASSIFICATION_METRICS", "REGRESSION_METRICS", "HIGHER_IS_BETTER", "case_metric", "predicted_classes",
           "classification_summary", "regression_summary"]

CLASSIFICATION_METRICS: tuple[str, ...] = ("balanced_accuracy", "auroc", "macro_f1")
REGRESSION_METRICS: tuple[str, ...] = ("mae", "rmse", "r2", "pearson_r")
HIGHER_IS_BETTER: dict[str, bool] = {"balanced_accuracy": True, "auroc": True, "macro_f1": True,
                                     "mae": False, "rmse": False, "r2": True, "pearson_r": True}
"""Direction of each metric, for picking a best checkpoint by one of them."""


def predicted_classes(scores: object) -> np.ndarray:
    """Arg-max class of scores ``[N, K]`` (ties to the lower index)."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] < 2:
        raise ValueError(f"class scores must be [N, K] with K >= 2, got shape {s.shape}")
    return np.argmax(s, axis=1)


def _classification(name: str) -> Callable[[np.ndarray, np.ndarray], float]:
    if name == "auroc":
        return auroc
    by_label = {"balanced_accuracy": balanced_accuracy, "macro_f1": macro_f1}[name]
    return lambda y, s: by_label(y, predicted_classes(s), np.shape(s)[1])


_REGRESSION: dict[str, Callable[[object, object], float]] = {"mae": mae, "rmse": rmse, "r2": r2,
                                                              "pearson_r": pearson_r}


def case_metric(name: str, y_true: object, output: object) -> float:
    """Metric ``name`` (one of `CLASSIFICATION_METRICS` with class scores ``[N, K]``, or of
    `REGRESSION_METRICS` with predictions ``[N]``)."""
    if name in CLASSIFICATION_METRICS:
        return float(_classification(name)(np.asarray(y_true), np.asarray(output)))
    if name in _REGRESSION:
        return float(_REGRESSION[name](y_true, output))
    raise ValueError(f"unknown case metric {name!r}; expected one of {CLASSIFICATION_METRICS + REGRESSION_METRICS}")


def _num(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def _bootstrap_record(n_resamples: int, confidence: float, seed: int, strata: str | None, groups: object | None
                      ) -> dict:
    return {"method": "percentile", "n_resamples": n_resamples, "confidence": confidence, "seed": seed,
            "resampled": resampled_units(groups) + (f", within each {strata}" if strata else "")}


def _groups(groups: Sequence[str] | None, n: int) -> np.ndarray | None:
    if groups is None:
        return None
    g = np.asarray([str(x) for x in groups])
    if g.shape != (n,):
        raise ValueError(f"groups must name one subject per case ({n}), got {g.size}")
    return g


def classification_summary(y_true: object, scores: object, *, names: Sequence[str] | None = None,
                           n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0,
                           groups: Sequence[str] | None = None) -> dict:
    """Balanced accuracy, AUROC, macro-F1 with bootstrap intervals, the confusion matrix (rows true,
    columns predicted) and per-class support / recall / precision / F1 / AUROC; NaN (undefined) as None.
    ``groups`` [N]: each case's subject (intervals then resample subjects)."""
    s = np.asarray(scores, dtype=np.float64)
    y_pred = predicted_classes(s)
    k = s.shape[1]
    names = [str(i) for i in range(k)] if names is None else [str(x) for x in names]
    if len(names) != k:
        raise ValueError(f"{len(names)} class names for scores of {k} classes")
    cm = confusion_matrix(y_true, y_pred, k)
    y = np.asarray(y_true)
    g = _groups(groups, y.size)
    metrics = {m: bootstrap_ci(_classification(m), y, s, n_resamples=n_resamples, confidence=confidence, seed=seed,
                               strata=y, groups=g).to_dict() for m in CLASSIFICATION_METRICS}
    tp = np.diag(cm).astype(float)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)
    per_auc = per_class_auroc(y, s)
    per_class = {}
    for i, name in enumerate(names):
        f1_denom = support[i] + predicted[i]
        per_class[name] = {"n": int(support[i]), "recall": _num(tp[i] / support[i]) if support[i] else None,
                           "precision": _num(tp[i] / predicted[i]) if predicted[i] else None,
                           "f1": _num(2 * tp[i] / f1_denom) if f1_denom else None, "auroc": _num(per_auc[i])}
    return {"kind": "classification", "n": int(y.size), "names": names, "metrics": metrics,
            "confusion_matrix": cm.tolist(), "per_class": per_class,
            "bootstrap": _bootstrap_record(n_resamples, confidence, seed, "true class", g)}


def regression_summary(y_true: object, y_pred: object, *, n_resamples: int = 1000, confidence: float = 0.95,
                       seed: int = 0, groups: Sequence[str] | None = None) -> dict:
    """MAE, RMSE, R², Pearson r with bootstrap intervals; NaN (undefined) as None. ``groups`` [N]:
    each case's subject (intervals then resample subjects)."""
    y, p = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
    g = _groups(groups, y.size)
    metrics = {m: bootstrap_ci(_REGRESSION[m], y, p, n_resamples=n_resamples, confidence=confidence,
                               seed=seed, groups=g).to_dict() for m in REGRESSION_METRICS}
    return {"kind": "regression", "n": int(y.size), "metrics": metrics,
            "bootstrap": _bootstrap_record(n_resamples, confidence, seed, None, g)}
