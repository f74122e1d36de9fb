"""Learning-rate schedules as pure functions of the optimisation step (nanoGPT style)."""
from __future__ import annotations

import math

__all__ = ["SCHEDULES", "lr_at"]

SCHEDULES = ("cosine", "poly", "constant")


def lr_at(
    step: int,
    *,
    total_steps: int,
    warmup_steps: int,
    base_lr: float,
    schedule: str = "cosine",
    min_lr: float = 0.0,
    power: float = 0.9,
) -> float:
    """Learning rate for optimisation step `step` (0-based).

    Linear warm-up from base_lr/warmup_steps to base_lr over the first `warmup_steps` steps, then
    - cosine: min_lr + (base_lr − min_lr)·½(1 + cos(π·t)),
    - poly:   min_lr + (base_lr − min_lr)·(1 − t)^power (nnU-Net style, fine-tuning),
    - constant: base_lr,
    with t = (step − warmup) / (total − warmup) clamped to [0, 1].
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule={schedule!r}: expected one of {sorted(SCHEDULES)}")
    if total_steps < 1:
        raise ValueError(f"total_steps={total_steps}: expected >= 1")
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps={warmup_steps}: expected >= 0")
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return base_lr
    span = max(total_steps - warmup_steps, 1)
    t = min(max((step - warmup_steps) / span, 0.0), 1.0)
    if schedule == "cosine":
        factor = 0.5 * (1.0 + math.cos(math.pi * t))
    else:
        factor = (1.0 - t) ** power
    return min_lr + (base_lr - min_lr) * factor
