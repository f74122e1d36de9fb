"""Evaluate predicted label maps against references: per-case CSV and summary JSON (docs/method.md §3).

Both files are loaded with :func:`asa.data.load_volume` (canonical RAS+), converted to boolean
region/class masks with the task (``task.region_masks``), and scored with :func:`dice`, :func:`hd95`
and :func:`normalized_surface_dice` (NSD, tolerance in mm per region/class, ``nsd_tolerance``); the
voxel spacing comes from the reference label. The task may be an
:class:`asa.data.Task` or any object with ``name``, ``output_names``, ``region_masks(label)`` and
``ignore_mask(label)`` or ``ignore_label``.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import os
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from itertools import repeat
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from asa.eval.metrics import (EMPTY_HD95, HD95_CONVENTIONS, HD_PERCENTILE, NSD_EMPTY, dice, hd95,
                              normalized_surface_dice)
from asa.eval.progress import CaseProgress
from asa.io import NIFTI_SUFFIXES, atomic_write_text, find_nifti, load_volume

METRICS: tuple[str, ...] = ("Dice", "HD95", "NSD")
DEFAULT_NSD_TOLERANCE: float = 1.0
"""NSD tolerance in mm when none is given: one voxel at the 1 mm grid of BraTS, IBSR and the pretraining data."""
PER_CASE_CSV = "per_case.csv"
SUMMARY_JSON = "summary.json"

PathLike = str | os.PathLike[str]
Pair = tuple[str, PathLike, PathLike]


class TaskLike(Protocol):
    """What evaluation needs from a task (satisfied by :class:`asa.data.Task`)."""

    name: str
    output_names: tuple[str, ...]

    def region_masks(self, label: np.ndarray) -> dict[str, np.ndarray]: ...


def _default_loader() -> Callable[[Any], Any]:
    """``asa.data.load_volume`` reading both files as label maps (integer values, empty allowed)."""
    return functools.partial(load_volume, label=True)


def ignore_mask_for(task: Any, label: np.ndarray) -> np.ndarray | None:
    """Boolean mask of reference voxels excluded from all metrics, or None (no ignore label)."""
    if hasattr(task, "ignore_mask"):
        mask = task.ignore_mask(label)
        return None if mask is None else np.asarray(mask, dtype=bool)
    ignore_label = getattr(task, "ignore_label", None)
    return None if ignore_label is None else np.asarray(label) == ignore_label


def _as_label_map(array: np.ndarray, path: Any, role: str) -> np.ndarray:
    """Integer label map; float files are accepted only when they hold whole numbers."""
    array = np.asarray(array)
    if np.issubdtype(array.dtype, np.integer) or array.dtype == bool:
        return array.astype(np.int64, copy=False)
    if not np.all(np.isfinite(array)) or not np.array_equal(array, np.round(array)):
        raise ValueError(
            f"{role} file {path} holds non-integer values (dtype {array.dtype}); "
            "expected a label map with the dataset's own label values, not probabilities"
        )
    return np.round(array).astype(np.int64)


def _check_label_values(task: Any, label: np.ndarray, path: Any) -> None:
    """A prediction holding label values the task does not have (e.g. 3 and 7 for BraTS' 0/1/2/4) was
    not written for this dataset, or is corrupt: its regions would be scored wrongly without a word."""
    allowed = getattr(task, "label_values", None)
    if allowed is None:
        return
    extra = sorted(set(np.unique(label).tolist()) - set(int(v) for v in allowed))
    if extra:
        raise ValueError(f"prediction file {path} holds label values {extra} that task {task.name} does not have "
                         f"(expected {', '.join(map(str, allowed))}): was it written for another dataset?")


Tolerance = float | Sequence[float] | Mapping[str, float]


def nsd_tolerances(tolerance: Tolerance, names: Sequence[str], *, option: str = "nsd_tolerance") -> dict[str, float]:
    """``{name: τ in mm}``: one number for every region/class, one per name in ``names`` order, or a
    mapping naming each of them. ``option`` names the setting in errors."""
    names = list(names)
    if isinstance(tolerance, Mapping):
        missing = [n for n in names if n not in tolerance]
        extra = [k for k in tolerance if k not in names]
        if missing or extra:
            raise ValueError(f"{option}: expected a tolerance in mm for each of {names}, got {dict(tolerance)}")
        values = {n: tolerance[n] for n in names}
    elif isinstance(tolerance, (str, bytes)) or not isinstance(tolerance, Sequence):
        values = {n: tolerance for n in names}
    else:
        if len(tolerance) != len(names):
            raise ValueError(f"{option}: {len(tolerance)} tolerance(s) {list(tolerance)} for {len(names)} "
                             f"regions/classes {names}; give one number (mm) for all or one per name")
        values = dict(zip(names, tolerance))
    out = {}
    for n, v in values.items():
        try:
            out[n] = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"{option}: tolerance for {n} must be a number of mm, got {v!r}") from None
        if not np.isfinite(out[n]) or out[n] < 0:
            raise ValueError(f"{option}: tolerance for {n} must be a finite number of mm >= 0, got {v!r}")
    return out


def _region_masks(task: Any, label: np.ndarray, path: Any, role: str) -> dict[str, np.ndarray]:
    masks = task.region_masks(label)
    missing = [n for n in task.output_names if n not in masks]
    if missing:
        raise ValueError(f"task {task.name!r} gave no mask for {missing} when reading {role} file {path}")
    return {n: np.asarray(masks[n], dtype=bool) for n in task.output_names}


def evaluate_arrays(
    pred_label: np.ndarray,
    ref_label: np.ndarray,
    task: Any,
    spacing: Sequence[float] | None = None,
    *,
    pred_path: Any = "<pred>",
    ref_path: Any = "<label>",
    hd95_convention: str = "max_directed",
    nsd_tolerance: Tolerance = DEFAULT_NSD_TOLERANCE,
) -> dict[str, float]:
    """Score one case given its raw label maps [D, H, W] (same grid).

    Returns ``{"Dice_<name>": float, "HD95_<name>": float, "NSD_<name>": float, ...}`` in
    ``task.output_names`` order; voxels in the task's ignore mask (from the reference) are removed
    from both masks. HD95 uses ``hd95_convention`` (``max_directed`` | ``pooled``, see
    `asa.eval.metrics`); NSD the tolerance in mm of each name (:func:`nsd_tolerances`).
    """
    tolerances = nsd_tolerances(nsd_tolerance, task.output_names)
    pred_label = _as_label_map(pred_label, pred_path, "prediction")
    ref_label = _as_label_map(ref_label, ref_path, "label")
    _check_label_values(task, pred_label, pred_path)
    if pred_label.shape != ref_label.shape:
        raise ValueError(
            f"shape mismatch: prediction {pred_path} has shape {pred_label.shape}, "
            f"label {ref_path} has shape {ref_label.shape} (both in canonical RAS orientation)"
        )
    pred_masks = _region_masks(task, pred_label, pred_path, "prediction")
    ref_masks = _region_masks(task, ref_label, ref_path, "label")
    ignore = ignore_mask_for(task, ref_label)
    row: dict[str, float] = {}
    for name in task.output_names:
        row[f"Dice_{name}"] = dice(pred_masks[name], ref_masks[name], ignore=ignore)
        row[f"HD95_{name}"] = hd95(pred_masks[name], ref_masks[name], spacing, ignore=ignore,
                                   convention=hd95_convention)
        row[f"NSD_{name}"] = normalized_surface_dice(pred_masks[name], ref_masks[name], spacing,
                                                     tolerance=tolerances[name], ignore=ignore)
    return row


def evaluate_pair(
    case_id: str,
    pred_path: PathLike,
    label_path: PathLike,
    task: Any,
    loader: Callable[[Any], Any] | None = None,
    hd95_convention: str = "max_directed",
    nsd_tolerance: Tolerance = DEFAULT_NSD_TOLERANCE,
) -> dict[str, Any]:
    """Load one prediction/label pair and score it: ``{"case_id": ..., "Dice_<name>": ..., ...}``."""
    load = loader or _default_loader()
    pred, ref = load(pred_path), load(label_path)
    if pred.array.shape == ref.array.shape and not np.allclose(pred.affine, ref.affine, atol=1e-3):
        warnings.warn(
            f"case {case_id}: prediction {pred_path} and label {label_path} have different affines "
            "(after reorientation to RAS); scoring them voxel by voxel anyway",
            stacklevel=2,
        )
    row = evaluate_arrays(
        pred.array, ref.array, task, tuple(ref.spacing), pred_path=pred_path, ref_path=label_path,
        hd95_convention=hd95_convention, nsd_tolerance=nsd_tolerance,
    )
    return {"case_id": str(case_id), **row}


def _stats(values: Sequence[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=np.float64)
    # Population std (ddof=0), so a single case gives 0 rather than NaN.
    return {"mean": float(arr.mean()), "median": float(np.median(arr)), "std": float(arr.std())}


HD95_DESCRIPTIONS = {
    "max_directed": "max over both directions of the directed 95th-percentile surface distance (MONAI, BraTS), mm",
    "pooled": "95th percentile of both directions' surface distances pooled (medpy, the ASA paper's tables), mm",
}


def summarize(
    rows: Sequence[dict[str, Any]], names: Sequence[str], *, task_name: str = "", hd95_convention: str = "max_directed",
    nsd_tolerance: Tolerance = DEFAULT_NSD_TOLERANCE,
) -> dict[str, Any]:
    """Summary dict: per name ``{"Dice": {mean, median, std}, "HD95": {...}, "NSD": {...}}`` over the cases.

    Also holds ``n_cases``, ``names``, ``foreground_mean`` (mean over names of the per-name
    means), ``conventions`` (the HD95 convention and the NSD tolerances in mm used, among others)
    and ``per_case`` (the rows).
    Standard deviations are population (ddof=0).
    """
    if not rows:
        raise ValueError("cannot summarize zero cases")
    summary: dict[str, Any] = {"task": task_name, "n_cases": len(rows), "names": list(names)}
    for name in names:
        summary[name] = {m: _stats([r[f"{m}_{name}"] for r in rows]) for m in METRICS}
    summary["foreground_mean"] = {
        m: float(np.mean([summary[n][m]["mean"] for n in names])) for m in METRICS
    }
    summary["conventions"] = {
        "hd_percentile": HD_PERCENTILE,
        "hd95_convention": hd95_convention,
        "hd95": HD95_DESCRIPTIONS[hd95_convention],
        "nsd_tolerance_mm": nsd_tolerances(nsd_tolerance, names),
        "both_empty": {"Dice": 1.0, "HD95": 0.0, "NSD": NSD_EMPTY["both_empty"]},
        "one_empty": {"Dice": 0.0, "HD95": EMPTY_HD95, "NSD": NSD_EMPTY["one_empty"]},
        "std_ddof": 0,
    }
    summary["per_case"] = [dict(r) for r in rows]
    return summary


def per_case_columns(names: Sequence[str]) -> list[str]:
    """CSV header: ``case_id`` then ``Dice_<name>, HD95_<name>, NSD_<name>`` for each name."""
    return ["case_id"] + [f"{m}_{n}" for n in names for m in METRICS]


def write_results(summary: dict[str, Any], out_dir: PathLike) -> tuple[Path, Path]:
    """Write ``per_case.csv`` and ``summary.json`` into ``out_dir`` (atomically); return both paths."""
    out_dir = Path(out_dir)
    columns = per_case_columns(summary["names"])
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in summary["per_case"]:
        writer.writerow({c: row[c] for c in columns})
    csv_path, json_path = out_dir / PER_CASE_CSV, out_dir / SUMMARY_JSON
    atomic_write_text(csv_path, buf.getvalue())
    atomic_write_text(json_path, json.dumps(summary, indent=2) + "\n")
    return csv_path, json_path


def evaluate_cases(
    pairs: Iterable[Pair],
    task: Any,
    *,
    out_dir: PathLike | None = None,
    num_workers: int = 0,
    progress: bool = False,
    loader: Callable[[Any], Any] | None = None,
    hd95_convention: str = "max_directed",
    nsd_tolerance: Tolerance = DEFAULT_NSD_TOLERANCE,
) -> dict[str, Any]:
    """Score every ``(case_id, pred_path, label_path)`` and summarize (see :func:`summarize`).

    Args:
        pairs: cases to score; ids must be unique.
        task: an :class:`asa.data.Task` (or any :class:`TaskLike`) giving the output names.
        out_dir: if given, ``per_case.csv`` and ``summary.json`` are written there.
        num_workers: >0 scores cases in that many processes (task and loader must pickle).
        progress: show progress on stderr (`CaseProgress`: a bar on a terminal, else one line per case).
        loader: ``path -> Volume`` (default :func:`asa.data.load_volume`).
        hd95_convention: ``max_directed`` (default) or ``pooled`` (see :mod:`asa.eval.metrics`).
        nsd_tolerance: NSD tolerance in mm: one number, one per output name, or ``{name: mm}``.

    Returns:
        the summary dict, exactly as written to ``summary.json``.
    """
    pairs = [(str(c), p, l) for c, p, l in pairs]
    if not pairs:
        raise ValueError("evaluate_cases: no (case_id, pred_path, label_path) pairs given")
    dupes = sorted(c for c, n in Counter(c for c, _, _ in pairs).items() if n > 1)
    if dupes:
        raise ValueError(f"evaluate_cases: duplicate case ids {dupes}")
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    if hd95_convention not in HD95_CONVENTIONS:
        raise ValueError(f"hd95={hd95_convention!r}: expected one of {', '.join(HD95_CONVENTIONS)}")
    nsd_tolerance = nsd_tolerances(nsd_tolerance, task.output_names)  # bad values refused before any case is read
    args = ([c for c, _, _ in pairs], [p for _, p, _ in pairs], [l for _, _, l in pairs])
    if num_workers > 0:
        with ProcessPoolExecutor(max_workers=num_workers) as pool:
            results = pool.map(evaluate_pair, *args, repeat(task), repeat(loader), repeat(hd95_convention),
                               repeat(nsd_tolerance))
            rows = _shown(results, len(pairs), progress)
    else:
        results = map(evaluate_pair, *args, repeat(task), repeat(loader), repeat(hd95_convention),
                      repeat(nsd_tolerance))
        rows = _shown(results, len(pairs), progress)
    summary = summarize(rows, tuple(task.output_names), task_name=str(getattr(task, "name", "")),
                        hd95_convention=hd95_convention, nsd_tolerance=nsd_tolerance)
    if out_dir is not None:
        write_results(summary, out_dir)
    return summary


def _shown(rows: Iterable[dict[str, Any]], total: int, enabled: bool) -> list[dict[str, Any]]:
    """The scored ``rows``, each said as it comes when ``enabled`` (`CaseProgress`: a bar on a terminal, else a
    line per case)."""
    scored = []
    with CaseProgress(total, desc="evaluate", verb="scored", enabled=enabled) as progress:
        for row in rows:
            scored.append(row)
            progress.advance(row["case_id"])
    return scored


def match_predictions(
    pred_dir: PathLike,
    cases: Iterable[Any],
    *,
    suffixes: Sequence[str] = NIFTI_SUFFIXES,
    on_missing: str = "error",
    missing: list[str] | None = None,
) -> list[tuple[str, Path, Path]]:
    """Pair each labelled case (``.id``, ``.label``) with ``<pred_dir>/<id><suffix>``.

    ``on_missing``: "error" raises listing every case without a prediction; "skip" drops them (their
    ids are appended to ``missing``). Cases without a label are an error (nothing to score against).
    """
    if on_missing not in ("error", "skip"):
        raise ValueError(f"on_missing must be 'error' or 'skip', got {on_missing!r}")
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise FileNotFoundError(f"prediction folder {pred_dir} does not exist")
    pairs = []
    missing = [] if missing is None else missing
    for case in cases:
        if case.label is None:
            raise ValueError(f"case {case.id} has no label file to evaluate against")
        found = find_nifti(pred_dir, case.id, suffixes)
        if found is None:
            missing.append(case.id)
        else:
            pairs.append((case.id, found, Path(case.label)))
    if missing and on_missing == "error":
        raise FileNotFoundError(
            f"no prediction in {pred_dir} for {len(missing)} case(s): {missing[:10]}"
            f"{' ...' if len(missing) > 10 else ''} (expected <case_id>{' or '.join(suffixes)})"
        )
    return pairs

