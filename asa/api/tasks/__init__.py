"""Fine-tuning tasks as plug-ins: what `asa-finetune`, `asa-predict`, `asa-evaluate` and `asa-probe` do for
one kind of target, registered by name as pretraining methods are (`asa.methods.register_method`).

A task is chosen by ``data.task`` (of a fine-tuning, evaluation or probe config) or, in `asa-predict`,
by the task a fine-tuning checkpoint records (``outputs.name``): the registered task that
`FinetuneTask.claims` the name. Its own settings are the ``task`` section of a fine-tuning config,
typed by its `TaskSettings` subclass (``Settings``; the config group ``task``). Built in:
``segmentation`` (`asa.api.tasks.segmentation`: voxel labels of ``brats``, ``ibsr``, ``wmh``, ``msd``,
`asa.data.get_task`) and ``case`` (`asa.api.tasks.case`: one target per case, classification or regression).
Another one is a class with the four jobs, registered with :func:`register_finetune_task` in the process
or declared in the ``asa.finetune_tasks`` entry-point group of an installed package; its training is
the skeleton `FinetuneTask.finetune` with the hooks it overrides.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from asa.api.machinery.cohort import check_pretraining_overlap, write_overlap
from asa.api.machinery.job import JobRun, TrainingJob
from asa.api.machinery.prediction import PredictionJob, PredictSetup
from asa.api.configuration.schema import EvaluateConfig, FrozenProbeConfig
from asa.api.configuration.tasks import FINETUNE_TASKS, TaskSettings, add_task, task_class
from asa.api.machinery.training import report_fine_tuning
from asa.train import FitResult

__all__ = ["FINETUNE_TASKS", "FinetuneRun", "FinetuneTask", "PredictSetup", "ProbeTargets", "TaskSettings",
           "finetune_task", "register_finetune_task", "task_class"]

APP = "asa-finetune"


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


FinetuneRun = JobRun  # what the hooks of one fine-tuning run share (``run.cfg`` is a FinetuneConfig)


class FinetuneTask(TrainingJob, PredictionJob):
    """One kind of fine-tuning target: how a run trains it, how its checkpoints predict, how predictions
    are scored against the data, and what the frozen-encoder probes fit. Training and prediction each run one
    skeleton (`asa.api.machinery.job.TrainingJob.train`, `asa.api.machinery.prediction.PredictionJob.predict`) with the hooks a
    task overrides.

    Class attributes: ``name`` (the task's name, which checkpoints record), ``Settings`` (its
    `TaskSettings` subclass: the ``task`` section of a fine-tuning config), and those of
    `asa.api.machinery.job.TrainingJob` (``by_subject``, ``network_from_split``). A task instance serves one job
    (`finetune_task` makes a new one), so its hooks may keep on it what they read for later hooks."""

    app = APP
    name: ClassVar[str]
    data_tasks: ClassVar[tuple[str, ...]] = ()  # the data.task names it claims, as a refusal lists them (none: its name)
    Settings: ClassVar[type[TaskSettings]] = TaskSettings

    @classmethod
    @abstractmethod
    def claims(cls, data_task: str) -> bool:
        """Whether ``data.task=<data_task>`` (or the task name a checkpoint records) is this task's."""

    # Train as configured (a checked config whose ``task`` section is this task's ``Settings``); returns the
    # engine's FitResult. The order is every training job's; a task builds its network and the record of
    # what it predicts (`build_network`; saved as ``outputs``), validates with `validator` and names what
    # ``best.pt`` follows (`best_metric`).
    finetune = TrainingJob.train

    # --- the hooks of `finetune` -------------------------------------------------------------------
    @abstractmethod
    def build_network(self, run: FinetuneRun,
                      splits: Mapping[str, list] | None) -> tuple[nn.Module, dict[str, Any]]:
        """(the network, the record of what it predicts), the run's geometry recorded in
        ``run.resolved`` and ``run.crop`` set (`asa.api.machinery.training.record_geometry`). ``splits``: the
        train / val / test cases with ``network_from_split``, else None."""

    @abstractmethod
    def validator(self, run: FinetuneRun, dataset: Any) -> Callable[[nn.Module], dict[str, float]]:
        """The validation of ``dataset``: model -> metrics (``trainer.monitor`` among them)."""

    def best_metric(self, run: FinetuneRun) -> str:
        """What ``best.pt`` follows, as the closing report says it."""
        return f"{run.config.monitor}, {run.config.mode}"

    def check_split(self, run: FinetuneRun, splits: Mapping[str, list]) -> None:
        """With ``model.pretrained``: one line on how many validation and test cases were in the encoder's
        pretraining cohort, and a refusal when a test case was (unless ``data.accept_pretraining_overlap``)."""
        self.overlap = None
        if run.cfg.model.pretrained:
            self.overlap = check_pretraining_overlap(run.cfg.model.pretrained, splits, env=run.env,
                                                     accept=run.cfg.data.accept_pretraining_overlap,
                                                     workers=max(1, run.cfg.data.num_workers))

    def write_records(self, run: FinetuneRun) -> None:
        """The pretraining-overlap report beside ``splits.json`` (``pretraining_overlap.json``: asa-evaluate says
        it again), when the encoder file carried a cohort; a task's own records follow (call this first)."""
        if getattr(self, "overlap", None) is not None:
            write_overlap(run.out_dir, self.overlap)

    def network(self, run: FinetuneRun, splits: Mapping[str, list] | None) -> nn.Module:
        model, outputs = self.build_network(run, splits)
        run.resolved["outputs"] = outputs  # asa-predict, asa-evaluate and asa-export read it from the checkpoint
        return model

    def validation(self, run: FinetuneRun, dataset: Any | None) -> Callable[[nn.Module], dict[str, float]] | None:
        return None if dataset is None else self.validator(run, dataset)

    def finish(self, run: FinetuneRun, result: FitResult) -> None:
        report_fine_tuning(result, run.out_dir, self.best_metric(run))

    # --- the other jobs ----------------------------------------------------------------------------
    # Predict with a fine-tuning checkpoint of this task (`asa.api.machinery.prediction.PredictionJob.predict`: the output
    # folder, its manifest, resume and overwrite are every task's); a task writes each case's predictions
    # (`predict_case`) after reading the network and the cases (`load_predictor`, `prediction_cases`).
    @abstractmethod
    def evaluate(self, cfg: EvaluateConfig) -> dict:
        """Score ``cfg.pred`` against the data (and what else the task evaluates); returns the summary
        written to ``<output>/summary.json``."""

    @abstractmethod
    def probe_targets(self, cfg: FrozenProbeConfig, root: Path, layout: str) -> ProbeTargets:
        """What the frozen-encoder probes fit on the data under ``root`` (``layout``)."""


def register_finetune_task(cls: type[FinetuneTask]) -> type[FinetuneTask]:
    """Add ``cls`` to the registry under ``cls.name`` (usable as a class decorator); another task of the
    same name is an error, registering the same class again is a no-op."""
    if not (isinstance(cls, type) and issubclass(cls, FinetuneTask)) or not isinstance(getattr(cls, "name", None), str):
        raise TypeError(f"{cls!r}: a fine-tuning task subclasses asa.api.tasks.FinetuneTask and names itself (name)")
    return add_task(cls)


def finetune_task(data_task: str, *, option: str = "data.task") -> FinetuneTask:
    """A new instance of the task that claims ``data_task`` (`task_class`)."""
    return task_class(data_task, option=option)()
