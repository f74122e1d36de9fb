"""Fine-tuning tasks as plug-ins: what `asa-finetune`, `asa-predict`, `asa-evaluate` and `asa-probe` do for
one kind of target, registered by name as pretraining methods are (`asa.methods.register_method`).

A task is chosen by ``data.task`` (of a fine-tuning, evaluation or probe config) or, in `asa-predict`,
by the ``task`` a fine-tuning checkpoint records: the registered task that `FinetuneTask.claims` the
name. Built in (`asa.api.builtin_tasks`): ``segmentation`` (voxel labels: ``brats``, ``ibsr``,
``wmh``, ``msd``, `asa.data.get_task`) and ``case`` (one target per case, classification or
regression). Another one is a class with the four jobs, registered with :func:`register_finetune_task`
in the process or declared in the ``asa.finetune_tasks`` entry-point group of an installed package.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from asa.api.schema import EvaluateConfig, FinetuneConfig, FrozenProbeConfig, PredictConfig
from asa.plugins import Plugins

__all__ = ["FINETUNE_TASKS", "FinetuneTask", "PredictSetup", "ProbeTargets", "finetune_task", "register_finetune_task"]

ENTRY_POINT_GROUP = "asa.finetune_tasks"


@dataclass(frozen=True)
class PredictSetup:
    """What `asa-predict` resolved before it read which task a checkpoint holds: the device, the autocast
    precision (None: fp32), the CPU threads, the sliding-window batch and whether to compile."""

    device: torch.device
    amp_dtype: torch.dtype | None
    threads: int
    sw_batch_size: int
    compile: bool


@dataclass
class ProbeTargets:
    """What `asa-probe` scores the frozen encoders on for a task: ``cases`` (the usable ones, after the
    split file), ``target`` (what is probed, as ``probe.json`` records it), ``kind`` (the metrics table,
    `asa.eval.probe_cv.TABLE_METRICS`), ``note`` (said on stderr before probing, or None) and ``score``:
    (encoder, subject groups of ``cases``, the cross-validation settings) -> (probe result, features)."""

    cases: list
    target: dict[str, Any]
    kind: str
    score: Callable[[Any, Sequence[str], Mapping[str, Any]], tuple[dict, torch.Tensor]]
    note: str | None = None


class FinetuneTask(ABC):
    """One kind of fine-tuning target: how a run trains it, how its checkpoints predict, how predictions
    are scored against the data, and what the frozen-encoder probes fit. ``name``: the task's name
    (``task.name`` in what asa prints and records)."""

    name: ClassVar[str]

    @classmethod
    @abstractmethod
    def claims(cls, data_task: str) -> bool:
        """Whether ``data.task=<data_task>`` (or the task name a checkpoint records) is this task's."""

    @abstractmethod
    def finetune(self, cfg: FinetuneConfig) -> Any:
        """Train as configured (a checked config); returns the engine's FitResult. Every check runs
        before the run folder is written; rank 0 writes every file."""

    @abstractmethod
    def predict(self, cfg: PredictConfig, state: dict, checkpoint: Path, inputs: list[str] | str,
                setup: PredictSetup) -> list[Path]:
        """Predict with the fine-tuning checkpoint ``checkpoint`` (its content: ``state``) on ``inputs``;
        returns the files written."""

    @abstractmethod
    def evaluate(self, cfg: EvaluateConfig) -> dict:
        """Score ``cfg.pred`` against the data (and what else the task evaluates); returns the summary
        written to ``<output>/summary.json``."""

    @abstractmethod
    def probe_targets(self, cfg: FrozenProbeConfig, root: Path, layout: str) -> ProbeTargets:
        """What the frozen-encoder probes fit on the data under ``root`` (``layout``)."""


FINETUNE_TASKS = Plugins("fine-tuning task", ENTRY_POINT_GROUP)  # name -> FinetuneTask subclass


def register_finetune_task(cls: type[FinetuneTask]) -> type[FinetuneTask]:
    """Add ``cls`` to the registry under ``cls.name`` (usable as a class decorator); another task of the
    same name is an error, registering the same class again is a no-op."""
    if not (isinstance(cls, type) and issubclass(cls, FinetuneTask)) or not isinstance(getattr(cls, "name", None), str):
        raise TypeError(f"{cls!r}: a fine-tuning task subclasses asa.api.tasks.FinetuneTask and names itself (name)")
    return FINETUNE_TASKS.add(cls.name, cls)


def finetune_task(data_task: str, *, option: str = "data.task") -> FinetuneTask:
    """The registered task that claims ``data_task``; the ones registered last are asked first, so a
    plug-in may claim a name before the built-in ones. No task claiming it: ``ValueError`` naming
    ``option`` and the tasks known."""
    for cls in reversed(list(FINETUNE_TASKS.installed(register_finetune_task).values())):
        if cls.claims(str(data_task)):
            return cls()
    raise ValueError(f"{option}={data_task}: no fine-tuning task takes it (registered: "
                     f"{', '.join(FINETUNE_TASKS)})")
