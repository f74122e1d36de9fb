"""Case-level regression metrics: MAE, RMSE, R², Pearson r (`sklearn.metrics`, `scipy.stats`).

``y_true`` and ``y_pred`` are finite 1-D arrays of one length N >= 1 (e.g. ages in years; MAE and
RMSE are in the target's unit). R² is the coefficient of determination of the predictions as they
are (no refit; negative when worse than predicting the mean). R² and Pearson r are NaN for a
constant truth (and r for a constant prediction), where scikit-learn would report 1.0 or 0.0, an
arbitrary number. Pearson r ignores bias and scale (``2 y + 5`` has r = 1), which is why MAE and
R² are reported beside it.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats
from sklearn import metrics

__all__ = ["mae", "rmse", "r2", "pearson_r"]


def _values(y_true: object, y_pred: object) -> tuple[np.ndarray, np.ndarray]:
    t, p = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
    if t.ndim != 1 or t.size == 0:
        raise ValueError(f"y_true must be a non-empty 1-D array, got shape {t.shape}")
    if p.shape != t.shape:
        raise ValueError(f"y_true and y_pred differ in shape: {t.shape} and {p.shape}")
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(p))):
        raise ValueError("y_true or y_pred hold NaN or Inf")
    return t, p


def mae(y_true: object, y_pred: object) -> float:
    """Mean absolute error."""
    return float(metrics.mean_absolute_error(*_values(y_true, y_pred)))


def rmse(y_true: object, y_pred: object) -> float:
    """Root mean squared error."""
    return math.sqrt(metrics.mean_squared_error(*_values(y_true, y_pred)))


def r2(y_true: object, y_pred: object) -> float:
    """Coefficient of determination ``1 - SS_res / SS_tot``; NaN for a constant truth."""
    t, p = _values(y_true, y_pred)
    return float("nan") if np.ptp(t) == 0 else float(metrics.r2_score(t, p))


def pearson_r(y_true: object, y_pred: object) -> float:
    """Pearson correlation of truth and prediction; NaN when either is constant."""
    t, p = _values(y_true, y_pred)
    return float("nan") if np.ptp(t) == 0 or np.ptp(p) == 0 else float(stats.pearsonr(t, p)[0])
