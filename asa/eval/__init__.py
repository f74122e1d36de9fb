"""Evaluation: Dice and HD95 per region/class, per-case CSV and summary JSON (DESIGN.md §3)."""

from __future__ import annotations

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
from asa.eval.metrics import EMPTY_HD95, HD95_CONVENTIONS, HD_PERCENTILE, dice, hd95

__all__ = [
    "EMPTY_HD95",
    "HD95_CONVENTIONS",
    "HD_PERCENTILE",
    "METRICS",
    "PER_CASE_CSV",
    "SUMMARY_JSON",
    "TaskLike",
    "dice",
    "evaluate_arrays",
    "evaluate_cases",
    "evaluate_pair",
    "hd95",
    "ignore_mask_for",
    "match_predictions",
    "per_case_columns",
    "summarize",
    "write_results",
]
