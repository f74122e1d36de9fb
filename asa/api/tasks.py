"""Fine-tuning tasks as plug-ins: what `asa-finetune`, `asa-predict`, `asa-evaluate` and `asa-probe` do for
one kind of target, registered by name as pretraining methods are (`asa.methods.register_method`).

A task is chosen by ``data.task`` (of a fine-tuning, evaluation or probe config) or, in `asa-predict`,
by the task a fine-tuning checkpoint records (``outputs.name``): the registered task that
`FinetuneTask.claims` the name. Its own settings are the ``task`` section of a fine-tuning config,
typed by its `TaskSettings` subclass (``Settings``; the config group ``task``). Built in:
``segmentation`` (`asa.api.segmentation`: voxel labels of ``brats``, ``ibsr``, ``wmh``, ``msd``,
`asa.data.get_task`) and ``case`` (`asa.api.case`: one target per case, classification or regression).
Another one is a class with the four jobs, registered with :func:`register_finetune_task` in the process
or declared in the ``asa.finetune_tasks`` entry-point group of an installed package; its training is
the skeleton `FinetuneTask.finetune` with the hooks it overrides.
"""

from __future__ import annotations

import dataclasses
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from asa.api.dataset import load_cases, split_cases, write_splits
from asa.api.run import TrainingRun
from asa.api.schema import EvaluateConfig, FinetuneConfig, FrozenProbeConfig, PredictConfig
from asa.api.task_registry import FINETUNE_TASKS, TaskSettings, add_task, task_class
from asa.api.training import optimizer_and_config, report_fine_tuning, trainer_config, training_ended
from asa.train import Engine, FitResult, TrainConfig
from asa.train.distributed import DistEnv

__all__ = ["FINETUNE_TASKS", "FinetuneRun", "FinetuneTask", "PredictSetup", "ProbeTargets", "TaskSettings",
           "finetune_task", "register_finetune_task", "task_class"]

APP = "asa-finetune"


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


@dataclass
class FinetuneRun:
    """What the hooks of one fine-tuning run share, filled in as the skeleton goes: the checked config
    (``cfg``; the task's settings are ``cfg.task``), the process group (``env``), the run config to save
    (``resolved``), then the network and its crop edge, the optimiser, its peak lr and the engine
    settings, and the run folder (``out_dir``)."""

    cfg: FinetuneConfig
    env: DistEnv
    resolved: dict[str, Any] = field(default_factory=dict)
    model: nn.Module | None = None
    crop: int | None = None
    optimizer: torch.optim.Optimizer | None = None
    lr: float = 0.0
    config: TrainConfig | None = None
    out_dir: Path | None = None


class FinetuneTask(ABC):
    """One kind of fine-tuning target: how a run trains it, how its checkpoints predict, how predictions
    are scored against the data, and what the frozen-encoder probes fit.

    Class attributes: ``name`` (the task's name, which checkpoints record), ``Settings`` (its
    `TaskSettings` subclass: the ``task`` section of a fine-tuning config), ``by_subject`` (splits keep
    a subject's sessions in one part) and ``network_from_split`` (the network depends on the training
    split, e.g. its number of classes: it is built once the cases are split, after the run folder was
    locked, instead of before). A task instance serves one job (`finetune_task` makes a new one), so
    its hooks may keep on it what they read for later hooks."""

    name: ClassVar[str]
    Settings: ClassVar[type[TaskSettings]] = TaskSettings
    by_subject: ClassVar[bool] = False
    network_from_split: ClassVar[bool] = False

    @classmethod
    @abstractmethod
    def claims(cls, data_task: str) -> bool:
        """Whether ``data.task=<data_task>`` (or the task name a checkpoint records) is this task's."""

    def finetune(self, cfg: FinetuneConfig) -> FitResult:
        """Train as configured (a checked config whose ``task`` section is this task's ``Settings``);
        returns the engine's FitResult. The one order of every task's training:

        1. `check` and the trainer settings: every option and input read before anything is written;
        2. the network (`build_network`, after seeding with ``cfg.seed``: identical initial weights on
           every rank), its record of what it predicts (saved as ``outputs``) and the optimiser — here,
           before the run folder is touched, unless the network depends on the training split
           (``network_from_split``: step 4);
        3. the run folder locked and checked against the run config (a resumed run's keys compared);
        4. the cases (`cases`: those the task can use) and their split (a resumed run's own);
        5. the datasets (`datasets`), whose checks end the checking;
        6. then the files, on rank 0 only: ``config.yaml`` (written once every check passed), the split
           and the task's own records (`write_records`);
        7. training with the task's step (`training_step`), validator (`validator`) and engine options,
           and the closing report naming what ``best.pt`` follows (`best_metric`).

        A failed check before step 3 refuses the run with nothing written; one after it leaves no
        config.yaml, so the folder holds no run to resume."""
        with TrainingRun(cfg, APP) as job:
            run = FinetuneRun(cfg, job.env)
            self.check(run)
            trainer_config(cfg)  # bad trainer values stop the run before its folder is touched
            run.resolved = dataclasses.asdict(cfg)
            if not self.network_from_split:
                self._network(run, None)
            run_dir = job.prepare_dir(run.resolved)
            run.out_dir = run_dir.path
            cases = self.cases(run, load_cases(cfg.data, run.out_dir if run.env.is_main else None, run.env))
            splits = split_cases(cases, cfg.data, run.out_dir, run.env, by_subject=self.by_subject)
            if self.network_from_split:
                self._network(run, splits)
            train_ds, val_ds = self.datasets(run, splits)
            run_dir.write_config(run.resolved)  # every check passed
            write_splits(cases, cfg.data, run.out_dir, run.env, by_subject=self.by_subject)
            if run.env.is_main:
                self.write_records(run)
            if val_ds is None:
                print(f"[asa] warning: data={cfg.data.name} has no validation cases: no best.pt, no early stopping",
                      file=sys.stderr)
            validate = None if val_ds is None else self.validator(run, val_ds)
            options = self.engine_options(run, val_ds)
            engine = Engine(run.model, run.optimizer, self.training_step(run), config=run.config, lr=run.lr,
                            out_dir=run.out_dir, env=run.env, seed=cfg.seed, validate=validate,
                            run_config=run.resolved, resume=run_dir.resume, **options)
            result = engine.fit(train_ds)
            if training_ended(result, run.env, APP) and run.env.is_main:
                report_fine_tuning(result, run.out_dir, self.best_metric(run))
        return result

    def _network(self, run: FinetuneRun, splits: Mapping[str, list] | None) -> None:
        torch.manual_seed(run.cfg.seed)  # identical initial weights on every rank
        run.model, outputs = self.build_network(run, splits)
        run.resolved["outputs"] = outputs  # asa-predict, asa-evaluate and asa-export read it from the checkpoint
        run.optimizer, run.lr, run.config = optimizer_and_config(run.cfg, run.model, run.env)

    # --- the hooks of `finetune` -------------------------------------------------------------------
    def check(self, run: FinetuneRun) -> None:
        """Refuse the options this task cannot train with (nothing is written yet); may read inputs
        (a targets table) and settle values the run config records (``run.cfg`` is saved after it)."""

    @abstractmethod
    def build_network(self, run: FinetuneRun,
                      splits: Mapping[str, list] | None) -> tuple[nn.Module, dict[str, Any]]:
        """(the network, the record of what it predicts), the run's geometry recorded in
        ``run.resolved`` and ``run.crop`` set (`asa.api.training.record_geometry`). ``splits``: the
        train / val / test cases with ``network_from_split``, else None."""

    def cases(self, run: FinetuneRun, cases: list) -> list:
        """The cases of ``data`` this task trains and validates on (all of them unless it says)."""
        return cases

    @abstractmethod
    def datasets(self, run: FinetuneRun, splits: Mapping[str, list]) -> tuple[Any, Any | None]:
        """(training dataset, validation dataset or None when the split has no validation cases)."""

    def write_records(self, run: FinetuneRun) -> None:
        """Rank 0 writes the task's own files to ``run.out_dir`` once every check passed (none unless it says)."""

    @abstractmethod
    def training_step(self, run: FinetuneRun) -> Callable[[nn.Module, Mapping], tuple[torch.Tensor, Mapping]]:
        """The engine's step: (model, batch) -> (loss, logs)."""

    @abstractmethod
    def validator(self, run: FinetuneRun, dataset: Any) -> Callable[[nn.Module], dict[str, float]]:
        """The validation of ``dataset``: model -> metrics (``trainer.monitor`` among them)."""

    def engine_options(self, run: FinetuneRun, val_dataset: Any | None) -> dict[str, Any]:
        """More keyword arguments of `asa.train.Engine` (e.g. ``collate_fn``, ``panel_fn``)."""
        return {}

    def best_metric(self, run: FinetuneRun) -> str:
        """What ``best.pt`` follows, as the closing report says it."""
        return f"{run.config.monitor}, {run.config.mode}"

    # --- the other jobs ----------------------------------------------------------------------------
    @abstractmethod
    def predict(self, cfg: PredictConfig, state: dict, checkpoint: Path, inputs: list[str] | str,
                setup: PredictSetup) -> list[Path]:
        """Predict with the fine-tuning checkpoint ``checkpoint`` (its content: ``state``, its run config
        as this version reads it) on ``inputs``; returns the files written."""

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
