"""What asa-study reads off finished units: the pilot's curve and budget, each pretraining run's held-out loss."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from asa.io import load_checkpoint
from asa.models import build_network
from asa.study import tables
from asa.study.runs import Pretraining, Scale
from asa.train.schedule import lr_at

# relative drop (and rise from its best) of the held-out masked loss over the last quarter of the optimiser's progress
# under which a pretraining run has levelled (each level a median over an eighth of the progress: `loss_plateau`); 5 %
# let a falling one by
PLATEAU_TOL = 0.02


PILOT_FLOOR = 0.1  # the pilot's best validation Dice (and the lesion classes', when named) under which it did not learn


# what `pilot_budget` reads afresh each call: every other key of its record is the budget rule's reading
PILOT_READ = ("steps", "capped", "asked", "pilot_steps", "curve", "test", "test_cases", "learned", "floor", "best_dice",
              "lesion_classes", "lesion_curve", "best_lesion_dice")


def pilot_budget(scores: Path, scale: Scale, cap: int | None, *, lesion_classes: Sequence[str], tol: float,
                 kept: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The pilot's curve (its run's ``scores``), whether it learned (best Dice at least `PILOT_FLOOR`: else no
    budget) and its budget: where the primary endpoint's curve (the lesion classes' mean Dice when named, else the
    mean Dice) levelled within ``tol`` (`asa.study.tables.converged_budget`), else its steps. ``kept``: the
    study's pilot.json of an earlier call; where it holds these curves, its reading of them stands, so that no later
    version of the rule (nor a later --min-effect) moves the budget of a study under way; --budget-cap still
    applies."""
    record = json.loads(scores.read_text())
    curve = record["budget"].get("val_curve") or []
    lesion = pilot_lesion_curve(scores.parent, lesion_classes)
    if not lesion and kept and kept.get("curve") == curve and kept.get("lesion_classes") == list(lesion_classes):
        # the run restored from a progress record (scripts/record_study.py): its TensorBoard logs stayed on the
        # machine that trained it, and the pilot.json read there holds its lesion curve
        lesion = kept.get("lesion_curve") or []
    best, best_lesion = max((d for _, d in curve), default=0.0), max((d for _, d in lesion), default=math.nan)
    learned = best >= PILOT_FLOOR and (not lesion_classes or best_lesion >= PILOT_FLOOR)
    if kept and kept.get("curve") == curve and kept.get("lesion_curve", []) == lesion:
        found = {k: v for k, v in kept.items() if k not in PILOT_READ}
    else:
        found = tables.converged_budget(lesion or curve, tol=tol)
    found["converged"] = found["converged"] and learned
    # a round's step, which the runs at the pilot's N train to exactly (`asa.study.transfer.cadence`); 10 at the
    # least, as --budget-cap (a pilot of a few steps: the plumbing check's)
    steps = max(int(found["budget"]) if found["converged"] else int(scale.pilot_steps), 10)
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
    """Steps, wall time, the held-out masked loss curve, the export (its step, the held-out loss of the round there,
    the encoder's weight norm over a fresh initialisation's) and the curve's `loss_plateau` up to the export, and
    the loss weights' spread."""
    state = load_checkpoint(run.run_dir / "checkpoints" / "last.pt")
    curve = [(int(h.get("step", i)), float(h["val/loss"])) for i, h in enumerate(state.get("history", []))
             if "val/loss" in h]
    optim = (state.get("config") or {}).get("optim") or {}
    export = load_checkpoint(run.encoder)
    step = int(export["step"])
    read = [(s, v) for s, v in curve if s <= step]  # the curve as far as the encoder every arm fine-tunes
    progress = optimiser_progress([s for s, _ in read] + [step], state["scheduler"],
                                  min_lr=float(optim.get("min_lr", 0.0)), power=float(optim.get("power", 0.9)))
    spread = tables.logged_series(run.run_dir, ("train/weights/cv", "train/weights/effective_share"))
    mean = lambda tag: float(np.mean([v for _, v in spread[tag]])) if spread[tag] else math.nan  # noqa: E731
    return {"run": run.name, "arm": run.arm, "cohort": run.cohort, "replicate": run.replicate,
            "steps": int(state["step"]), "seconds": seconds, "val_curve": curve, "export_step": step,
            "export_loss": read[-1][1] if read else math.nan, "export_progress": progress[-1],
            "norm_ratio": norm_ratio(export),
            **loss_plateau([v for _, v in read], progress=progress[:-1], exported_at=progress[-1]),
            "weights_cv": mean("train/weights/cv"), "weights_share": mean("train/weights/effective_share")}


def norm_ratio(export: Mapping[str, Any]) -> float:
    """‖w‖ of an encoder export's trained weights over the same weights' at a fresh initialisation of its network
    (seed 0): how far pretraining moved its scale, which fine-tuning inherits whatever was learned."""
    torch.manual_seed(0)
    fresh = dict(build_network(export["network"]).named_parameters())
    shared = [k for k in export["encoder"] if k in fresh]
    if not shared:
        return math.nan
    trained = math.sqrt(sum(float(export["encoder"][k].double().square().sum()) for k in shared))
    return trained / math.sqrt(sum(float(fresh[k].detach().double().square().sum()) for k in shared))


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


def loss_plateau(losses: Sequence[float], *, tol: float = PLATEAU_TOL, progress: Sequence[float] | None = None,
                 exported_at: float | None = None) -> dict[str, Any]:
    """Whether a held-out loss levelled off by its export: its drop over the last quarter of ``progress`` (None: even)
    under ``tol``; ``losses`` and ``progress`` end at the exported round (``exported_at``, the export's share of the
    summed lr). An export in the first eighth of the summed lr is flagged whatever its curve: the lowest round of a
    loss that climbs from the start (the noise control's) would otherwise pass as levelled. Under 4 points and not
    early: unchecked. Its rise from its lowest is measured, not failed.

    Each level is the median of the losses in an eighth of the progress (the eighth before the last quarter, the last
    eighth, the lowest eighth), not one point: at a high lr the held-out loss moves a few percent from one evaluation
    to the next, and one point against the lowest of many reads a flat curve as falling."""
    early = exported_at is not None and exported_at <= 1 / 8
    if len(losses) < 4:
        return {"plateau": False if early else None, "early": early, "loss_drop": math.nan, "loss_rise": math.nan,
                "tol": tol}
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
    return {"plateau": bool(drop < tol and not early), "early": early, "loss_drop": float(drop),
            "loss_rise": float(rise), "tol": tol}
