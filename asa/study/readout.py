"""What asa-study reads off finished units: the pilot's curve and budget, each pretraining run's held-out loss."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from asa.io import load_checkpoint
from asa.study import tables
from asa.study.plan import Pretraining, Scale
from asa.train.schedule import lr_at

# relative drop (and rise from its best) of the held-out masked loss over the last quarter of the optimiser's progress
# under which a pretraining run has levelled (each level a median over an eighth of the progress: `loss_plateau`); 5 %
# let a falling one by
PLATEAU_TOL = 0.02


PILOT_FLOOR = 0.1  # the pilot's best validation Dice (and the lesion classes', when named) under which it did not learn


def pilot_budget(scores: Path, scale: Scale, cap: int | None, *, lesion_classes: Sequence[str]) -> dict[str, Any]:
    """The pilot's curve (its run's ``scores``), whether it learned (best Dice at least `PILOT_FLOOR`: else no
    budget) and its budget."""
    record = json.loads(scores.read_text())
    curve = record["budget"].get("val_curve") or []
    lesion = pilot_lesion_curve(scores.parent, lesion_classes)
    best, best_lesion = max((d for _, d in curve), default=0.0), max((d for _, d in lesion), default=math.nan)
    learned = best >= PILOT_FLOOR and (not lesion_classes or best_lesion >= PILOT_FLOOR)
    found = tables.converged_budget(curve)
    found["converged"] = found["converged"] and learned
    steps = max(int(10 * math.ceil(found["budget"] / 10)) if found["converged"] else int(scale.pilot_steps), 10)
    capped = cap is not None and cap < steps
    rows = record.get("scores") or []
    test = {name: float(np.mean([float(r[f"Dice_{name}"]) for r in rows]))
            for name in record.get("names", []) if rows and f"Dice_{name}" in rows[0]}
    return {**found, "steps": cap if capped else steps, "capped": capped, "asked": steps,
            "pilot_steps": scale.pilot_steps, "curve": curve, "test": test, "test_cases": len(rows),
            "learned": learned, "floor": PILOT_FLOOR, "best_dice": best, "lesion_classes": list(lesion_classes),
            "lesion_curve": lesion, "best_lesion_dice": best_lesion}


def pilot_lesion_curve(run_dir: Path, classes: Sequence[str]) -> list[list[float]]:
    """[step, mean validation Dice of ``classes``] per round of the pilot (empty without classes)."""
    if not classes:
        return []
    rounds = [dict(s) for s in tables.logged_series(run_dir, [f"val/dice_{c}" for c in classes]).values()]
    return [[step, float(np.mean([r[step] for r in rounds]))] for step in sorted(set.intersection(*map(set, rounds)))]


def pilot_reading(pilot: Mapping[str, Any]) -> str:
    """What the pilot's curve says, in words: its best validation Dice (and the lesions'), against the floor."""
    said = f"best validation Dice {pilot['best_dice']:.3f}"
    if pilot.get("lesion_classes"):
        said += f", lesion Dice ({', '.join(pilot['lesion_classes'])}) {pilot['best_lesion_dice']:.3f}"
    return said + f" over {pilot['pilot_steps']} steps (the floor: {pilot['floor']})"


def pretraining_summary(run: Pretraining, seconds: float) -> dict[str, Any]:
    """Steps, wall time, the held-out masked loss curve and its `loss_plateau`, and the loss weights' spread."""
    state = load_checkpoint(run.run_dir / "checkpoints" / "last.pt")
    curve = [(int(h.get("step", i)), float(h["val/loss"])) for i, h in enumerate(state.get("history", []))
             if "val/loss" in h]
    optim = (state.get("config") or {}).get("optim") or {}
    progress = optimiser_progress([s for s, _ in curve], state["scheduler"], min_lr=float(optim.get("min_lr", 0.0)),
                                  power=float(optim.get("power", 0.9)))
    spread = tables.logged_series(run.run_dir, ("train/weights/cv", "train/weights/effective_share"))
    mean = lambda tag: float(np.mean([v for _, v in spread[tag]])) if spread[tag] else math.nan  # noqa: E731
    return {"run": run.name, "arm": run.arm, "cohort": run.cohort, "steps": int(state["step"]), "seconds": seconds,
            "val_curve": curve, **loss_plateau([v for _, v in curve], progress=progress),
            "weights_cv": mean("train/weights/cv"), "weights_share": mean("train/weights/effective_share")}


def optimiser_progress(steps: Sequence[int], scheduler: Mapping[str, Any], *, min_lr: float = 0.0,
                       power: float = 0.9) -> list[float]:
    """The summed lr before each of ``steps`` over the whole schedule's: a cosine decay leaves the last quarter of the
    steps a twentieth of it, so a loss flat there had no lr to fall with; it has not levelled."""
    total = int(scheduler["total_steps"])
    lrs = np.array([lr_at(t, total_steps=total, warmup_steps=int(scheduler.get("warmup_steps", 0)),
                          base_lr=float(scheduler.get("base_lr", 1.0)), schedule=str(scheduler.get("name", "constant")),
                          min_lr=min_lr, power=power) for t in range(total)])
    summed = np.concatenate([[0.0], np.cumsum(lrs)])
    return [float(summed[min(max(int(s), 0), total)] / summed[-1]) if summed[-1] > 0 else 0.0 for s in steps]


def loss_plateau(losses: Sequence[float], *, tol: float = PLATEAU_TOL,
                 progress: Sequence[float] | None = None) -> dict[str, Any]:
    """Whether a held-out loss levelled off: its drop over the last quarter of ``progress`` (None: even) under
    ``tol``; < 4 points: unchecked. Its rise from its lowest (an encoder memorising its training volumes climbs back)
    is measured, not failed: the encoder a study fine-tunes is the lowest round's (asa-pretrain exports best.pt).

    Each level is the median of the losses in an eighth of the progress (the eighth before the last quarter, the last
    eighth, the lowest eighth), not one point: at a high lr the held-out loss moves a few percent from one evaluation
    to the next, and one point against the lowest of many reads a flat curve as falling."""
    if len(losses) < 4:
        return {"plateau": None, "loss_drop": math.nan, "loss_rise": math.nan, "tol": tol}
    n, loss = len(losses), np.asarray(losses, dtype=float)
    at = np.asarray(progress if progress is not None else [(i + 1) / n for i in range(n)], dtype=float)
    eighth = np.clip(np.ceil(np.round(8 * at / at[-1], 9)) - 1, 0, 7) if at[-1] > 0 else np.zeros(n)
    levels = {int(k): float(np.median(loss[eighth == k])) for k in np.unique(eighth)}
    # the eighth before the last quarter (5/8 to 6/8), else the last point before 3/4; the last eighth holds the end
    start = levels.get(5, float(loss[max(int(np.searchsorted(at, 0.75 * at[-1], "right")) - 1, 0)]))
    last = levels[7] if 7 in levels else float(loss[-1])
    drop = (start - last) / abs(start) if start else 0.0
    best = min(levels.values())
    rise = (last - best) / abs(best) if best else 0.0
    return {"plateau": bool(drop < tol), "loss_drop": float(drop), "loss_rise": float(rise), "tol": tol}
