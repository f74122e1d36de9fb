"""What a resumed run reads back: which checkpoint to resume from, the checked file, and the best-metric tracker."""
from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from asa.io import load_checkpoint

from .checkpoint import FORMAT, check_compatible

__all__ = ["Tracker", "resume_path", "read_training_checkpoint"]


class Tracker:
    """Best monitored value and patience counter."""

    def __init__(self, mode: str) -> None:
        self.mode, self.best, self.best_step, self.bad_rounds = mode, None, None, 0

    def improved(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        return self.best is None or (value < self.best if self.mode == "min" else value > self.best)

    def state(self) -> dict:
        return {"best": self.best, "best_step": self.best_step, "bad_rounds": self.bad_rounds}

    def load(self, state: Mapping) -> None:
        self.best, self.best_step, self.bad_rounds = state["best"], state["best_step"], int(state["bad_rounds"])


def resume_path(resume: bool | str | os.PathLike | None, ckpt_dir: Path) -> Path | None:
    """The checkpoint the ``resume`` option names: false/no -> None, true/yes -> ``ckpt_dir/last.pt``
    (which must exist), auto -> ``last.pt`` when it exists, anything else -> that path."""
    r = resume
    if r is False or r is None or (isinstance(r, str) and r.lower() in {"false", "no", ""}):
        return None
    last = ckpt_dir / "last.pt"
    if r is True or (isinstance(r, str) and r.lower() in {"true", "yes"}):
        if not last.is_file():
            raise FileNotFoundError(
                f"resume=true but {last} does not exist; start without resume, or use resume=auto"
            )
        return last
    if isinstance(r, str) and r.lower() == "auto":
        return last if last.is_file() else None
    return Path(r)


def read_training_checkpoint(path: Path, run_config: Mapping, compat_keys: Sequence[str]) -> dict:
    """Load an asa training checkpoint written by a run whose config matches ``run_config`` in ``compat_keys``."""
    state = load_checkpoint(path, map_location="cpu")
    if state.get("format") != FORMAT:
        raise ValueError(f"checkpoint {path}: not an asa training checkpoint (format={state.get('format')!r})")
    check_compatible(state.get("config", {}), run_config, compat_keys, source=str(path))
    return state
