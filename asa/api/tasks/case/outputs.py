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

from asa.api.tasks.case.crops import DEFAULT_CASE_CROPS
from asa.api.tasks.case.dataset import build_case_crops_dataset
from asa.data import Case, Targets
from asa.eval.case_metrics import classification_summary, regression_summary
from asa.io import atomic_write_text
from asa.models import capabilities, input_size

__all__ = ["PREDICTIONS_CSV", "CROP_BATCH", "case_crop_lattice", "case_output", "case_row", "write_case_predictions", "read_case_predictions",
           "case_summary"]

PREDICTIONS_CSV = "predictions.csv"


CROP_BATCH = 8  # crops per forward pass: validation and asa-predict share it, so their numbers agree


def case_crop_lattice(model: nn.Module) -> int:
    """The voxel lattice a case network's test-time crops keep to, as it declares it
    (``Capabilities.crop_lattice``: the patch size of a ViT, the total stride of a SwinViT), so
    shifted crops see whole patches / windows."""
    lattice = capabilities(model).crop_lattice
    if lattice is None:
        raise ValueError(f"{type(model).__name__} is no case network (it declares no crop_lattice)")
    return int(lattice)


@torch.no_grad()
def case_output(model: nn.Module, crops: torch.Tensor, offsets: torch.Tensor, *, kind: str,
                device: torch.device) -> torch.Tensor:
    """A case's output averaged over its test-time crops: crops [K, C, *img_size] with their patch
    offsets [K, 3] (`asa.data.build_case_crops_dataset`) -> class probabilities [num_classes] (the
    mean of each crop's softmax) or the value [] (the mean of each crop's value, in the target's
    units). A network that takes offsets (`asa.models.capabilities`: the brain frame) gets each
    crop's, so each patch keeps its pretraining position code (docs/method.md §1.2). The crops pass in
    batches of `CROP_BATCH`."""
    brain_frame = capabilities(model).offsets
    outputs = []
    for i in range(0, crops.shape[0], CROP_BATCH):
        x = crops[i:i + CROP_BATCH].to(device).float()
        out = model(x, offsets[i:i + CROP_BATCH].to(device)) if brain_frame else model(x)
        out = out.float()
        outputs.append(out.view(-1) if kind == "continuous" else out.softmax(1))
    return torch.cat(outputs).mean(0).cpu()


@torch.no_grad()
def case_row(model: nn.Module, case: Case, task: Mapping[str, Any], *, device: torch.device,
             crops: str = DEFAULT_CASE_CROPS) -> dict[str, Any]:
    """The case's row: ``case_id``, ``prediction`` (class name, or value in the target's units) and, for
    classes, ``p_<class>`` (probabilities). Its output is `case_output` over its test-time ``crops``
    (``centre``: the brain-centred crop at the network's grid that fine-tuning trained on; ``grid``: also the
    shifted crops where the volume is larger), no augmentation; ``model`` is on ``device``, in eval mode."""
    item = build_case_crops_dataset([case], crop=input_size(model), lattice=case_crop_lattice(model), crops=crops)[0]
    out = case_output(model, item["image"], item["offset"], kind=task["kind"], device=device)
    if task["kind"] == "continuous":
        return {"case_id": item["id"], "prediction": float(out)}
    classes, probs = list(task.get("classes") or []), out.tolist()
    return {"case_id": item["id"], "prediction": classes[int(np.argmax(probs))],
            **{f"p_{name}": p for name, p in zip(classes, probs)}}


def write_case_predictions(rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Write ``rows`` (from `case_row`) as a CSV with a header, atomically."""
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
                 seed: int = 0, groups: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Metrics with bootstrap intervals over the cases that have both a prediction and a target
    (`classification_summary` on the ``p_<class>`` columns in ``targets.names`` order, or
    `regression_summary` on ``prediction``), plus ``cases`` (the ids scored). ``groups``: case id
    -> subject (`asa.data.subject_groups`); the intervals then resample subjects with all their
    sessions (a case without an entry is its own subject)."""
    ids = sorted(i for i in predictions if i in targets.values)
    if not ids:
        raise ValueError(f"no predicted case has a target in {targets.source} column {targets.column!r}")
    truth = [targets.values[i] for i in ids]
    subjects = [groups.get(i, f"case:{i}") for i in ids] if groups else None
    ci = dict(n_resamples=n_resamples, seed=seed, groups=subjects)
    if targets.kind == "continuous":
        values = [float(predictions[i]["prediction"]) for i in ids]
        summary = regression_summary(truth, values, **ci)
    else:
        missing = [f"p_{n}" for n in targets.names if f"p_{n}" not in predictions[ids[0]]]
        if missing:
            raise ValueError(f"the predictions have no column(s) {missing} for the classes {list(targets.names)} "
                             "of the targets: were they predicted for another target?")
        scores = [[float(predictions[i][f"p_{n}"]) for n in targets.names] for i in ids]
        summary = classification_summary(truth, scores, names=list(targets.names), **ci)
    return {**summary, "target": targets.column, "target_kind": targets.kind, "cases": ids,
            "skipped": {k: v for k, v in targets.skipped.items() if k in predictions}}
