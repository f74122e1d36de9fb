"""Evaluation: Dice and HD95 per region/class, per-case CSV and summary JSON (docs/method.md §3); case-level
classification and regression metrics with bootstrap intervals."""

from __future__ import annotations

from asa.eval.bootstrap import (Estimate, bootstrap_ci, bootstrap_indices, bootstrap_p, seed_case_bootstrap,
                                seed_case_means)
from asa.eval.case_metrics import (
    CLASSIFICATION_METRICS,
    HIGHER_IS_BETTER,
    REGRESSION_METRICS,
    case_metric,
    classification_summary,
    predicted_classes,
    regression_summary,
)
from asa.eval.classification import auroc, balanced_accuracy, confusion_matrix, macro_f1, per_class_auroc
from asa.eval.evaluate import (
    METRICS,
    PER_CASE_CSV,
    SUMMARY_JSON,
    TaskLike,
    evaluate_arrays,
    evaluate_cases,
    evaluate_pair,
    ignore_mask_for,
    match_predictions,
    per_case_columns,
    summarize,
    write_results,
)
from asa.eval.metrics import EMPTY_HD95, HD95_CONVENTIONS, HD_PERCENTILE, NSD_EMPTY, dice, hd95, normalized_surface_dice
from asa.eval.regression import mae, pearson_r, r2, rmse

__all__ = [
    "CLASSIFICATION_METRICS",
    "EMPTY_HD95",
    "Estimate",
    "HIGHER_IS_BETTER",
    "HD95_CONVENTIONS",
    "NSD_EMPTY",
    "HD_PERCENTILE",
    "METRICS",
    "PER_CASE_CSV",
    "REGRESSION_METRICS",
    "SUMMARY_JSON",
    "TaskLike",
    "auroc",
    "balanced_accuracy",
    "bootstrap_ci",
    "bootstrap_indices",
    "bootstrap_p",
    "case_metric",
    "classification_summary",
    "confusion_matrix",
    "dice",
    "evaluate_arrays",
    "evaluate_cases",
    "evaluate_pair",
    "hd95",
    "normalized_surface_dice",
    "ignore_mask_for",
    "macro_f1",
    "mae",
    "match_predictions",
    "pearson_r",
    "per_case_columns",
    "per_class_auroc",
    "predicted_classes",
    "r2",
    "regression_summary",
    "rmse",
    "seed_case_bootstrap",
    "seed_case_means",
    "summarize",
    "write_results",
]
