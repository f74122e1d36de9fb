"""Case-level regression metrics: MAE, RMSE, R², Pearson r.

``y_true`` and ``y_pred`` are finite 1-D arrays of one length N >= 1 (e.g. ages in years; MAE and
RMSE are in the target's unit). Conventions:

- **MAE** ``mean |y - ŷ|``; **RMSE** ``sqrt(mean (y - ŷ)²)``.
- **R²** ``1 - Σ(y - ŷ)² / Σ(y - ȳ)²``, the coefficient of determination of the predictions as
  they are (no refit; negative when worse than predicting the mean). NaN when the truth is constant
  (Σ(y - ȳ)² = 0, which includes N = 1): scikit-learn returns 1.0 or 0.0 there, an arbitrary
  number we do not report.
- **Pearson r** of truth and prediction; NaN when either is constant. It ignores bias and scale
  (a prediction of ``2 y + 5`` has r = 1), which is why MAE and R² are reported beside it.
"""

from __future__ import annotations

import numpy as np

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
    t, p = _values(y_true, y_pred)
    return float(np.mean(np.abs(t - p)))


def rmse(y_true: object, y_pred: object) -> float:
    """Root mean squared error."""
    t, p = _values(y_true, y_pred)
    return float(np.sqrt(np.mean((t - p) ** 2)))


def r2(y_true: object, y_pred: object) -> float:
    """Coefficient of determination ``1 - SS_res / SS_tot``; NaN for a constant truth."""
    t, p = _values(y_true, y_pred)
    if np.ptp(t) == 0:  # not SS_tot == 0: the mean of equal floats can be off by an ulp
        return float("nan")
    return 1.0 - float(np.sum((t - p) ** 2)) / float(np.sum((t - t.mean()) ** 2))


def pearson_r(y_true: object, y_pred: object) -> float:
    """Pearson correlation of truth and prediction; NaN when either is constant."""
    t, p = _values(y_true, y_pred)
    if np.ptp(t) == 0 or np.ptp(p) == 0:
        return float("nan")
    dt, dp = t - t.mean(), p - p.mean()
    return float(np.clip(np.sum(dt * dp) / np.sqrt(np.sum(dt * dt) * np.sum(dp * dp)), -1.0, 1.0))
