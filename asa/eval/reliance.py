"""Encoder reliance: does a fine-tuned segmenter use its transformer encoder at all?

Each case is segmented twice, normally and with every encoder hidden state the decoder receives
replaced by zeros (:meth:`asa.models.ASASegmenter.zero_encoder_states`). The Dice drop per class
is what the encoder contributes; a drop near 0 means the decoder's convolutional path on the raw
image does the work and pretraining the encoder cannot matter. With ``hd95=True`` the normal
prediction is also scored by HD95 per class, exactly as ``asa-evaluate`` scores it
(:func:`asa.eval.evaluate.evaluate_arrays`: mm from the label's voxel spacing, BraTS empty-set
conventions, ``max_directed`` by default).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from asa.eval.evaluate import evaluate_arrays, ignore_mask_for
from asa.eval.metrics import dice
from asa.eval.progress import CaseProgress
from asa.io import atomic_write_json, atomic_write_text, load_volume
from asa.models import capabilities

__all__ = ["case_dice", "encoder_reliance", "format_reliance", "units_reliance", "write_reliance", "RELIANCE_CSV",
           "RELIANCE_JSON"]

RELIANCE_CSV = "reliance_per_case.csv"
RELIANCE_JSON = "reliance.json"


def case_dice(pred_label: np.ndarray, ref_label: np.ndarray, task: Any) -> dict[str, float]:
    """Dice per output region/class of raw label maps on one grid (the task's ignore voxels left out)."""
    if pred_label.shape != ref_label.shape:
        raise ValueError(f"prediction shape {pred_label.shape} differs from the label's {ref_label.shape}")
    pred, ref = task.region_masks(pred_label), task.region_masks(ref_label)
    ignore = ignore_mask_for(task, ref_label)
    return {name: dice(np.asarray(pred[name], bool), np.asarray(ref[name], bool), ignore=ignore)
            for name in task.output_names}


def encoder_reliance(predictor, cases: Sequence, *, overlap: float = 0.5, sw_batch_size: int = 2,
                     progress: bool = False, hd95: bool = False,
                     hd95_convention: str = "max_directed", zeroed: bool = True) -> dict[str, Any]:
    """Dice per class with the encoder's hidden states as trained and replaced by zeros.

    ``predictor``: an :class:`asa.eval.predict.Predictor` whose model has ``zero_encoder_states()``
    (ASASegmenter); ``cases``: labeled cases. Returns ``{"names", "n_cases", "per_case": [{"id",
    "Dice_<n>", "Dice_<n>_zeroed"}], "summary": {<n>: {"normal", "zeroed", "drop"}, "mean": {...}}}``
    (means over cases; drop = normal − zeroed). ``hd95``: every row also holds ``HD95_<n>`` (mm) of
    the normal prediction, scored as ``asa-evaluate`` does (``hd95_convention``: max_directed | pooled), and
    ``NSD_<n>`` (normalised surface Dice at asa-evaluate's default tolerance).
    ``zeroed=False`` scores the normal prediction only (the zeroed columns are NaN): any segmentation
    network, e.g. a CNN baseline without an encoder. `units_reliance` scores several networks as one.
    """
    return units_reliance(predictor, cases, overlap=overlap, sw_batch_size=sw_batch_size, progress=progress,
                          hd95=hd95, hd95_convention=hd95_convention, zeroed=zeroed)[0]


def units_reliance(predictor, cases: Sequence, *, overlap: float = 0.5, sw_batch_size: int = 2,
                   progress: bool = False, hd95: bool = False, hd95_convention: str = "max_directed",
                   zeroed: bool = True) -> list[dict[str, Any]]:
    """`encoder_reliance` of each of the ``predictor.units`` networks a predictor runs as one
    (`asa.eval.predict.Predictor.of_units`), in order: each case is read, preprocessed and predicted once for all of
    them, and each network's prediction scored as its own."""
    model, task, units = predictor.model, predictor.task, predictor.units
    if zeroed and not capabilities(model).zero_encoder:
        raise ValueError(f"encoder reliance needs an ASASegmenter (model arch swvit_unetr); got {type(model).__name__}")
    rows: list[list[dict[str, Any]]] = [[] for _ in range(units)]
    with CaseProgress(len(cases), desc="reliance", verb="reliance scored", enabled=progress) as shown:
        for case in cases:
            if case.label is None:
                raise ValueError(f"case {case.id}: no label file; encoder reliance needs labeled cases")
            image, _ = predictor.preprocess(case)  # as the network trained (its run's data.percentiles)
            ref_volume = load_volume(case.label, label=True)
            ref = ref_volume.array.astype(np.int64)
            # a network with region attention also takes the case's region map
            extra = {} if getattr(predictor, "regions", None) is None else {"regions": predictor.regions_of(case)}
            probs = predictor(image, overlap=overlap, sw_batch_size=sw_batch_size, **extra).chunk(units)
            without = [{name: float("nan") for name in task.output_names}] * units
            if zeroed:
                with model.zero_encoder_states():
                    zero = predictor(image, overlap=overlap, sw_batch_size=sw_batch_size, **extra).chunk(units)
                without = [case_dice(task.prediction_to_label(p), ref, task) for p in zero]
            for own, unit, rest in zip(rows, probs, without):
                pred = task.prediction_to_label(unit)
                normal = case_dice(pred, ref, task)
                distances = {} if not hd95 else evaluate_arrays(pred, ref, task, tuple(ref_volume.spacing),
                                                                ref_path=case.label, hd95_convention=hd95_convention)
                row: dict[str, Any] = {"id": case.id}
                for name in task.output_names:
                    row[f"Dice_{name}"], row[f"Dice_{name}_zeroed"] = normal[name], rest[name]
                    if hd95:  # the same surface distances give the NSD (asa-evaluate's tolerance)
                        row[f"HD95_{name}"], row[f"NSD_{name}"] = distances[f"HD95_{name}"], distances[f"NSD_{name}"]
                own.append(row)
            shown.advance(case.id)
    return [_reliance(task, own) for own in rows]


def _reliance(task: Any, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """`encoder_reliance`'s result of one network's rows."""
    summary: dict[str, dict[str, float]] = {}
    for name in task.output_names:
        n, z = (float(np.mean([r[k] for r in rows])) for k in (f"Dice_{name}", f"Dice_{name}_zeroed"))
        summary[name] = {"normal": n, "zeroed": z, "drop": n - z}
    summary["mean"] = {k: float(np.mean([summary[n][k] for n in task.output_names])) for k in ("normal", "zeroed", "drop")}
    return {"names": list(task.output_names), "n_cases": len(rows), "per_case": rows, "summary": summary}


def write_reliance(result: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``reliance_per_case.csv`` and ``reliance.json`` under ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cols = ["id"] + [c for n in result["names"] for c in (f"Dice_{n}", f"Dice_{n}_zeroed")]
    lines = [",".join(cols)] + [",".join(str(r["id"]) if c == "id" else f"{r[c]:.6f}" for c in cols)
                                for r in result["per_case"]]
    atomic_write_text(out / RELIANCE_CSV, "\n".join(lines) + "\n")
    atomic_write_json(out / RELIANCE_JSON, {k: v for k, v in result.items() if k != "per_case"})
    return out / RELIANCE_CSV, out / RELIANCE_JSON


def format_reliance(result: dict[str, Any]) -> str:
    """A few printable lines: Dice normal / zeroed encoder / drop per class."""
    lines = [f"encoder reliance over {result['n_cases']} case(s): Dice with the encoder as trained vs its hidden states zeroed"]
    for name in [*result["names"], "mean"]:
        s = result["summary"][name]
        lines.append(f"  {name:>6}: {s['normal']:.4f} -> {s['zeroed']:.4f} (drop {s['drop']:+.4f})")
    return "\n".join(lines)

