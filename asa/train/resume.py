"""What a resumed run reads back: the checked checkpoint it continues from, and the best-metric tracker."""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from asa.io import load_checkpoint
from asa.models import RENAMED_NETWORKS
from asa.models.family import family_of

from .checkpoint import FORMAT, RESUME_ONLY, IncompatibleCheckpointError, check_compatible

__all__ = ["GLOBAL_BATCH", "ResumePoint", "Tracker", "check_training_checkpoint", "written_by", "pretrained_family"]

# resume_must_match's name for the global batch, trainer.batch_size × processes × trainer.accum_steps (no config key:
# the number of processes is the launcher's), on which the steps per epoch, the schedule and the data order depend
GLOBAL_BATCH = "trainer.global_batch"


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


@dataclass
class ResumePoint:
    """The training checkpoint a run continues from, chosen and checked once before the run starts
    (`asa.api.machinery.rundir.prepare_run_dir` on rank 0, with :func:`check_training_checkpoint`). ``state``:
    the content that check read; None on the other ranks, which read the file themselves."""

    path: Path
    state: dict | None = None

    def read(self) -> dict:
        """The checkpoint's content (the checked copy, handed over once; else loaded now)."""
        state, self.state = self.state, None
        return state if state is not None else load_checkpoint(self.path, map_location="cpu")


def pretrained_family(state: Mapping) -> str | None:
    """The network family (asa-pretrain's ``model.arch``) of the masked network a checkpoint holds: the family
    that declared it its masked twin (`asa.models.family`); None: no masked-pretraining network."""
    network = state.get("network")
    arch = network.get("arch") if isinstance(network, Mapping) else None
    arch = RENAMED_NETWORKS.get(arch, arch) if isinstance(arch, str) else None
    family = family_of(arch) if arch is not None else None
    return family.name if family is not None and family.masked == arch else None


def written_by(state: Mapping) -> str | None:
    """The console script whose run wrote a training checkpoint, read off its run config: ``asa-pretrain`` (a
    pretraining method, or a masked network) or ``asa-finetune`` (a task); None: neither is recorded."""
    config = state.get("config")
    config = config if isinstance(config, Mapping) else {}
    if "method" in config or pretrained_family(state) is not None:
        return "asa-pretrain"
    if "task" in config:
        return "asa-finetune"
    return None


def _global_batch(config: Mapping, world_size: int) -> tuple[int, str] | None:
    """(the global batch, how it comes about) of a run config on ``world_size`` processes; None without a trainer."""
    trainer = config.get("trainer") if isinstance(config.get("trainer"), Mapping) else {}
    if trainer.get("batch_size") is None:
        return None
    batch, accum = int(trainer["batch_size"]), int(trainer.get("accum_steps") or 1)
    return batch * world_size * accum, f"trainer.batch_size={batch} × {world_size} process(es) × " \
                                       f"trainer.accum_steps={accum}"


def check_training_checkpoint(path: Path, run_config: Mapping, compat_keys: Sequence[str], *,
                              moved: Callable[[str], str | None] | None = None,
                              current: Callable[[Mapping], Mapping] | None = None,
                              removed: Callable[[str], str | None] | None = None,
                              added: Callable[[Mapping], Mapping] | None = None,
                              family: str | None = None, app: str | None = None,
                              world_size: int | None = None) -> ResumePoint:
    """Read ``path`` once and check that it is an asa training checkpoint whose run config matches
    ``run_config`` in ``compat_keys`` and holds no key that has moved since (``moved``; see
    `check_compatible`: `IncompatibleCheckpointError` listing the keys; another file: ``ValueError``; the
    saved config is compared as this version reads it, ``current``; keys removed since,
    ``removed``, are left out; settings added since, ``added``, are said); returns it as the run's resume point.
    ``family``: the network family a pretraining run trains (its ``model.arch``): a pretraining checkpoint of
    another family is refused saying which it is (`pretrained_family`). ``app``: the console script resuming; a
    checkpoint another one wrote (`written_by`: a pretraining run's given to asa-finetune) is refused saying so.
    ``world_size``: the processes of this start; with `GLOBAL_BATCH` among ``compat_keys`` a global batch other
    than the checkpoint's is refused (another number of processes, nodes × processes per node, is not)."""
    state = load_checkpoint(path, map_location="cpu")
    kind = written_by(state)
    if app in ("asa-pretrain", "asa-finetune") and kind is not None and kind != app:  # not every key that differs
        instead = {"asa-finetune": f"to fine-tune from that pretraining, give it as the encoder (model.pretrained="
                                   f"{path}, or the encoder.pt its run exported) and leave resume= out",
                   "asa-pretrain": "a fine-tuned network is not pretrained further; resume that run with asa-finetune"}
        raise IncompatibleCheckpointError(
            f"cannot resume from {path}: that file is a checkpoint of an {kind} run, and {app} resumes only its own "
            f"runs: {instead.get(app, f'resume it with {kind}')}. Nothing was changed.")
    saved = pretrained_family(state)
    if family is not None and saved is not None and saved != family:  # not a list of every key that differs
        raise IncompatibleCheckpointError(
            f"cannot resume from {path}: that file is a pretraining run of the {saved} family (model.arch={saved}), "
            f"not of {family}, which this command pretrains. Resume it with the model preset it was started with "
            f"(its run folder's config.yaml), or start the {family} run without resume=. Nothing was changed.")
    check_compatible(state.get("config", {}), run_config, compat_keys, source=str(path), moved=moved, current=current,
                     removed=removed, added=added)
    if state.get("format") != FORMAT:
        raise ValueError(f"checkpoint {path}: not an asa training checkpoint (format={state.get('format')!r})")
    if GLOBAL_BATCH in compat_keys and world_size is not None and state.get("world_size") is not None:
        saved_config = state.get("config") if isinstance(state.get("config"), Mapping) else {}
        was = _global_batch(current(saved_config) if current is not None else saved_config, int(state["world_size"]))
        now = _global_batch(run_config, world_size)
        if was is not None and now is not None and was[0] != now[0]:
            raise IncompatibleCheckpointError(
                f"cannot resume from {path}: its global batch was {was[0]} ({was[1]}), this start's is {now[0]} "
                f"({now[1]}); the steps per epoch, the schedule and the data order follow it. Continue it on as many "
                f"processes with its trainer settings, or leave {GLOBAL_BATCH} out of resume_must_match to go on "
                "with this batch. Nothing was changed.")
    if missing := [key for key in RESUME_ONLY if key not in state]:
        raise IncompatibleCheckpointError(
            f"cannot resume from {path}: it holds the weights only (no {', '.join(missing)}), as best.pt does; a run "
            f"resumes from last.pt (resume=true) or a step_XXXXXXXX.pt of its checkpoints folder. Nothing was changed.")
    return ResumePoint(Path(path), state)
