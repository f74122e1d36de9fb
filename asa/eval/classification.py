"""Case-level classification metrics: confusion matrix, balanced accuracy, macro-F1, AUROC
(`sklearn.metrics`, with the conventions below where scikit-learn leaves a case open).

Inputs are numpy-compatible: ``y_true`` / ``y_pred`` class indices ``[N]`` in ``[0, K)``; ``scores``
``[N]`` (binary: any score that rises with the positive class) or ``[N, K]`` (class probabilities,
or logits: scores whose rows are not all probability distributions — an entry outside [0, 1], or a
row sum off 1 by more than 1e-4 — are taken as logits and turned into probabilities by softmax).

- **Confusion matrix**: rows are the true class, columns the predicted class.
- **Balanced accuracy**: mean recall over the classes present in ``y_true``; a class absent from
  the truth has no recall and is left out (predicting it still counts as an error for the true
  class).
- **Macro-F1**: ``F1_k = 2 TP / (2 TP + FP + FN)``, averaged over the classes present in the truth
  *or* the predictions; a class never true but predicted has F1 = 0 and counts.
- **AUROC**: the probability that a random positive scores above a random negative, ties counting
  one half (the trapezoidal area under the ROC curve). Binary: ``scores`` ``[N]``, or the
  probability of class 1 of ``[N, 2]`` (from logits: ``softmax``, i.e. ``sigmoid(z1 − z0)``; column 1
  of logits alone is not a score of class 1). More classes: one-vs-rest per class on its
  probability, then the unweighted mean over the classes present in ``y_true`` (scikit-learn
  refuses a class missing from the truth; here it is left out). NaN when it is undefined: fewer
  than two classes in ``y_true``.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.special import softmax
from sklearn import metrics

__all__ = ["confusion_matrix", "balanced_accuracy", "macro_f1", "auroc", "per_class_auroc", "probabilities"]


def _labels(y: object, name: str) -> np.ndarray:
    a = np.asarray(y)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array of class indices, got shape {a.shape}")
    if a.dtype.kind == "f" and np.all(np.isfinite(a)) and np.all(a == np.round(a)):
        a = a.astype(np.int64)
    if a.dtype.kind not in "iub":
        raise ValueError(f"{name} must hold integer class indices, got dtype {a.dtype}")
    a = a.astype(np.int64)
    if a.min() < 0:
        raise ValueError(f"{name} holds a negative class index ({a.min()})")
    return a


def _pair(y_true: object, y_pred: object, num_classes: int | None) -> tuple[np.ndarray, np.ndarray, int]:
    t, p = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.size} and {p.size}")
    k = int(max(t.max(), p.max())) + 1 if num_classes is None else int(num_classes)
    if max(t.max(), p.max()) >= k:
        raise ValueError(f"class index {int(max(t.max(), p.max()))} outside num_classes={k}")
    return t, p, k


def confusion_matrix(y_true: object, y_pred: object, num_classes: int | None = None) -> np.ndarray:
    """``[K, K]`` counts, ``[i, j]`` = cases of true class i predicted as j (K = ``num_classes`` or
    one more than the largest index seen)."""
    t, p, k = _pair(y_true, y_pred, num_classes)
    return metrics.confusion_matrix(t, p, labels=np.arange(k))


def balanced_accuracy(y_true: object, y_pred: object, num_classes: int | None = None) -> float:
    """Mean recall over the classes present in ``y_true`` (module docstring)."""
    t, p, _ = _pair(y_true, y_pred, num_classes)
    with warnings.catch_warnings():  # a predicted class absent from the truth: left out, as documented
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        return float(metrics.balanced_accuracy_score(t, p))


def macro_f1(y_true: object, y_pred: object, num_classes: int | None = None) -> float:
    """Unweighted mean of per-class F1 over the classes true or predicted at least once (module docstring)."""
    t, p, _ = _pair(y_true, y_pred, num_classes)
    return float(metrics.f1_score(t, p, average="macro"))


def probabilities(scores: object) -> np.ndarray:
    """Class scores [N, K] as probabilities: unchanged when every row is a distribution, else (logits)
    softmax of every row (module docstring)."""
    s = np.asarray(scores, dtype=np.float64)
    if np.all((s >= 0) & (s <= 1)) and np.allclose(s.sum(1), 1.0, rtol=0.0, atol=1e-4):
        return s
    return softmax(s, axis=1)


def _scores(y_true: object, scores: object) -> tuple[np.ndarray, np.ndarray]:
    t = _labels(y_true, "y_true")
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim not in (1, 2) or s.shape[0] != t.size:
        raise ValueError(f"scores must be [N] or [N, K] with N = len(y_true) = {t.size}, got shape {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores hold NaN or Inf")
    k = 2 if s.ndim == 1 else s.shape[1]
    if s.ndim == 2 and k < 2:
        raise ValueError(f"scores [N, K] need K >= 2 columns, got {k}")
    if t.max() >= k:
        raise ValueError(f"class index {int(t.max())} in y_true but scores have {k} classes")
    return t, s if s.ndim == 1 else probabilities(s)


def _binary_auroc(positive: np.ndarray, score: np.ndarray) -> float:
    if positive.all() or not positive.any():
        return float("nan")
    return float(metrics.roc_auc_score(positive, score))


def per_class_auroc(y_true: object, scores: object) -> np.ndarray:
    """One-vs-rest AUROC of each class k (its probability, module docstring) -> [K]; NaN where
    class k is absent from ``y_true`` or is every case."""
    t, s = _scores(y_true, scores)
    if s.ndim == 1:
        s = np.stack([-s, s], axis=1)  # class 0's one-vs-rest score is the negated positive score
    return np.array([_binary_auroc(t == k, s[:, k]) for k in range(s.shape[1])])


def auroc(y_true: object, scores: object) -> float:
    """Binary AUROC, or the macro one-vs-rest AUROC over the classes present in ``y_true`` (module docstring)."""
    t, s = _scores(y_true, scores)
    if s.ndim == 1 or s.shape[1] == 2:  # y_true in {0, 1}: checked by _scores
        return _binary_auroc(t == 1, s if s.ndim == 1 else s[:, 1])
    present = np.bincount(t, minlength=s.shape[1]) > 0
    if present.sum() < 2:
        return float("nan")
    return float(np.mean(per_class_auroc(t, s)[present]))
