"""Case-level predictions of a case head (``asa-finetune data.task=case``): one CSV row per case, and
the summary with bootstrap intervals that ``asa-evaluate`` writes from it."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from asa.data import Case, Targets, build_pretrain_dataset
from asa.eval.case_metrics import classification_summary, regression_summary
from asa.io import atomic_write_text

__all__ = ["PREDICTIONS_CSV", "predict_case_rows", "write_case_predictions", "read_case_predictions",
           "case_summary"]

PREDICTIONS_CSV = "predictions.csv"


@torch.no_grad()
def predict_case_rows(model: nn.Module, cases: Sequence[Case], task: Mapping[str, Any], *,
                      device: torch.device) -> list[dict[str, Any]]:
    """One row per case: ``case_id``, ``prediction`` (class name, or value in the target's units)
    and, for classes, ``p_<class>`` (softmax probabilities). Each case is the brain-centred crop
    at the network's grid that fine-tuning trained on (no augmentation)."""
    data = build_pretrain_dataset(cases, size=tuple(model.img_size), augment=False)
    classes = list(task.get("classes") or [])
    model = model.to(device).eval()
    rows = []
    for i in range(len(data)):
        item = data[i]
        out = model(item["image"].unsqueeze(0).to(device).float())[0].float().cpu()
        if task["kind"] == "continuous":
            rows.append({"case_id": item["id"], "prediction": float(out.view(()))})
        else:
            probs = out.softmax(0).tolist()
            rows.append({"case_id": item["id"], "prediction": classes[int(np.argmax(probs))],
                         **{f"p_{name}": p for name, p in zip(classes, probs)}})
    return rows


def write_case_predictions(rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Write ``rows`` (from `predict_case_rows`) as a CSV with a header, atomically."""
    if not rows:
        raise ValueError(f"{path}: no case to write")
    fields = list(rows[0])
    lines = [",".join(fields)]
    for row in rows:
        lines.append(",".join(f"{row[k]:.6g}" if isinstance(row[k], float) else str(row[k]) for k in fields))
    atomic_write_text(Path(path), "\n".join(lines) + "\n")
    return Path(path)


def read_case_predictions(path: str | Path) -> dict[str, dict[str, str]]:
    """``case_id`` -> row of a predictions CSV written by `write_case_predictions`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pred={path.parent}: no {PREDICTIONS_CSV} (asa-predict of a case head writes it)")
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or "case_id" not in reader.fieldnames or "prediction" not in reader.fieldnames:
            raise ValueError(f"{path}: expected the columns case_id, prediction[, p_<class> ...]")
        return {row["case_id"]: row for row in reader}


def case_summary(predictions: Mapping[str, Mapping[str, str]], targets: Targets, *, n_resamples: int = 1000,
                 seed: int = 0) -> dict[str, Any]:
    """Metrics with bootstrap intervals over the cases that have both a prediction and a target
    (`classification_summary` on the ``p_<class>`` columns in ``targets.names`` order, or
    `regression_summary` on ``prediction``), plus ``cases`` (the ids scored)."""
    ids = sorted(i for i in predictions if i in targets.values)
    if not ids:
        raise ValueError(f"no predicted case has a target in {targets.source} column {targets.column!r}")
    truth = [targets.values[i] for i in ids]
    if targets.kind == "continuous":
        values = [float(predictions[i]["prediction"]) for i in ids]
        summary = regression_summary(truth, values, n_resamples=n_resamples, seed=seed)
    else:
        missing = [f"p_{n}" for n in targets.names if f"p_{n}" not in predictions[ids[0]]]
        if missing:
            raise ValueError(f"the predictions have no column(s) {missing} for the classes {list(targets.names)} "
                             "of the targets: were they predicted for another target?")
        scores = [[float(predictions[i][f"p_{n}"]) for n in targets.names] for i in ids]
        summary = classification_summary(truth, scores, names=list(targets.names), n_resamples=n_resamples, seed=seed)
    return {**summary, "target": targets.column, "target_kind": targets.kind, "cases": ids,
            "skipped": {k: v for k, v in targets.skipped.items() if k in predictions}}
