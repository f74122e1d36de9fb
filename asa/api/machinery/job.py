"""The one order of a training job, `asa-pretrain`'s and every fine-tuning task's: `TrainingJob.train` runs
it, and a job (`asa.api.pretrain`, `asa.api.tasks.FinetuneTask`) overrides the hooks of what it changes."""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from asa.api.machinery.dataset import grid_affines, load_cases, split_cases, write_bad_cases, write_splits
from asa.api.machinery.run import OptionError, TrainingRun
from asa.api.configuration.schema import FinetuneConfig, PretrainConfig
from asa.api.machinery.training import optimizer_and_config, trainer_config, training_ended
from asa.data.geometry import grid_note
from asa.train import Engine, FitResult, TrainConfig
from asa.train.engine import epoch_fault, kept_fault
from asa.train.distributed import DistEnv

__all__ = ["JobRun", "Prepared", "TrainingJob"]


@dataclass
class JobRun:
    """What the hooks of one training run share, filled in as `TrainingJob.train` goes: the checked config
    (``cfg``), the process group (``env``), the run config to save (``resolved``), then the network and its
    crop edge, the optimiser, its peak lr and the engine settings, the run folder (``out_dir``), the cases
    and the training step."""

    cfg: PretrainConfig | FinetuneConfig
    env: DistEnv
    resolved: dict[str, Any] = field(default_factory=dict)
    model: nn.Module | None = None
    crop: int | None = None
    optimizer: torch.optim.Optimizer | None = None
    lr: float = 0.0
    config: TrainConfig | None = None
    out_dir: Path | None = None
    cases: list = field(default_factory=list)
    step: Callable | None = None


@dataclass(frozen=True)
class Prepared:
    """A run `TrainingJob.prepared` set up to its first step: its job, what its hooks share, its training set and
    the keyword arguments of its `asa.train.Engine` beside the network, optimiser and step."""

    job: TrainingJob
    run: JobRun
    train_data: Any
    options: Mapping[str, Any]

    def engine(self, cls: type[Engine] = Engine, **more: Any) -> Engine:
        """The run's engine, of class ``cls`` (``more``: its own keyword arguments)."""
        return cls(self.run.model, self.run.optimizer, self.run.step, **self.options, **more)

    def ended(self, result: FitResult) -> FitResult:
        """``result`` of the engine's fit, after rank 0's `TrainingJob.finish` unless a stop signal ended it."""
        if training_ended(result, self.run.env, self.job.app, unsaved=self.job.unsaved) and self.run.env.is_main:
            self.job.finish(self.run, result)
        return result


class TrainingJob(ABC):
    """A training job: ``app`` (the console script named in messages), ``by_subject`` (splits keep a
    subject's sessions in one part), ``network_from_split`` (the network depends on the training split, e.g.
    its number of classes: it is built once the cases are split, after the run folder was locked) and
    ``unsaved`` (what a run stopped by a signal did not write, said with the resume command). An instance
    serves one run, so its hooks may keep on it what they read for later hooks."""

    app: ClassVar[str]
    by_subject: ClassVar[bool] = False
    network_from_split: ClassVar[bool] = False
    unsaved: ClassVar[str] = ""

    def train(self, cfg: PretrainConfig | FinetuneConfig) -> FitResult:
        """Train as configured (a checked config); returns the engine's FitResult. The run is `prepared`, then
        trained (`Prepared.ended`)."""
        with self.prepared(cfg) as ready:
            return ready.ended(ready.engine().fit(ready.train_data))

    @contextlib.contextmanager
    def prepared(self, cfg: PretrainConfig | FinetuneConfig) -> Iterator[Prepared]:
        """The run set up to its first step, its folder locked while the context lasts (asa.cli.fused trains
        several at once). The one order:

        1. `check` and the trainer settings: every option and input read before anything is written;
        2. the network (`network`, after seeding with ``cfg.seed``: identical initial weights on every rank)
           and the optimiser — here, before the run folder is touched, unless the network depends on the
           training split (``network_from_split``: step 4);
        3. the run folder locked and checked against the run config (a resumed run's keys compared);
        4. the cases (`cases`: those the job can use) and their split (a resumed run's own), checked
           (`check_split`: e.g. held-out cases the pretrained encoder saw);
        5. the datasets (`datasets`) and the training step (`training_step`), whose checks end the checking;
        6. then the files, on rank 0 only: ``config.yaml`` (written once every check passed), the split, the
           cases skipped (``bad_cases.json``) and the job's own records (`write_records`);
        7. the job's validation (`validation`) and engine options; the caller trains, then `Prepared.ended`
           runs `finish` (rank 0: exports, the closing report) unless a stop signal ended it.

        A failed check before step 3 refuses the run with nothing written; one after it leaves no
        config.yaml, so the folder holds no run to resume."""
        with TrainingRun(cfg, self.app) as job:
            run = JobRun(cfg, job.env)
            self.check(run)
            trainer_config(cfg)  # bad trainer values stop the run before its folder is touched
            run.resolved = self.record(run)
            if not self.network_from_split:
                self._network(run, None)
            run_dir = job.prepare_dir(run.resolved)
            run.out_dir = run_dir.path
            cases, bad_cases = load_cases(cfg.data, run.out_dir if run.env.is_main else None, run.env)
            run.cases = self.cases(run, cases)
            if run.env.is_main and (note := grid_note(grid_affines(run.cases))) is not None:  # once per run
                print(f"[asa] note: {note}", file=sys.stderr, flush=True)
            splits = split_cases(run.cases, cfg.data, run.out_dir, run.env, by_subject=self.by_subject)
            self.check_split(run, splits)
            if self.network_from_split:
                self._network(run, splits)
            train_ds, val_ds = self.datasets(run, splits)
            if (fault := epoch_fault(len(train_ds), run.config, run.env.world_size)) is not None:
                raise OptionError(f"data: {fault}")  # before the run folder records anything
            if (fault := kept_fault(len(train_ds), run.config, run.env.world_size)) is not None:
                raise OptionError(fault)
            run.step = self.training_step(run)
            run_dir.write_config(run.resolved)  # every check passed
            write_splits(run.cases, cfg.data, run.out_dir, run.env, by_subject=self.by_subject)
            if run.env.is_main:
                write_bad_cases(run.out_dir, bad_cases)
                self.write_records(run)
            if val_ds is None and (warning := self.no_validation(run)) is not None:
                print(f"[asa] warning: data={cfg.data.name} has no validation cases: {warning}", file=sys.stderr)
            options = dict(config=run.config, lr=run.lr, out_dir=run.out_dir, env=run.env, seed=cfg.seed,
                           validate=self.validation(run, val_ds), run_config=run.resolved, resume=run_dir.resume,
                           **self.engine_options(run, train_ds, val_ds))
            yield Prepared(self, run, train_ds, options)

    def _network(self, run: JobRun, splits: Mapping[str, list] | None) -> None:
        torch.manual_seed(run.cfg.seed)  # identical initial weights on every rank
        run.model = self.network(run, splits)
        run.optimizer, run.lr, run.config = optimizer_and_config(run.cfg, run.model, run.env)

    # --- the hooks of `train` ----------------------------------------------------------------------
    def check(self, run: JobRun) -> None:
        """Refuse the options this job cannot train with (nothing is written yet); may read inputs and
        settle values the run config records (``run.cfg`` is recorded after it)."""

    def record(self, run: JobRun) -> dict[str, Any]:
        """The run config to save and compare on resume: the checked config (a job may leave out what does
        not configure it)."""
        return dataclasses.asdict(run.cfg)

    @abstractmethod
    def network(self, run: JobRun, splits: Mapping[str, list] | None) -> nn.Module:
        """The network to train; may record its geometry in ``run.resolved`` and set ``run.crop``.
        ``splits``: the train / val / test cases with ``network_from_split``, else None."""

    def cases(self, run: JobRun, cases: list) -> list:
        """The cases of ``data`` this job trains and validates on (all of them unless it says)."""
        return cases

    def check_split(self, run: JobRun, splits: Mapping[str, list]) -> None:
        """Refuse a split this job cannot train with (``splits``: the train / val / test cases); nothing but
        the locked run folder is written yet."""

    @abstractmethod
    def datasets(self, run: JobRun, splits: Mapping[str, list]) -> tuple[Any, Any | None]:
        """(training dataset, validation dataset or None when the split has no validation cases)."""

    @abstractmethod
    def training_step(self, run: JobRun) -> Callable[[nn.Module, Mapping], tuple[torch.Tensor, Mapping]]:
        """The engine's step: (model, batch) -> (loss, logs)."""

    def write_records(self, run: JobRun) -> None:
        """Rank 0 writes the job's own files to ``run.out_dir`` once every check passed (none unless it says)."""

    def no_validation(self, run: JobRun) -> str | None:
        """What a run without validation cases lacks, said as a warning (None: nothing to say)."""
        return "no best.pt, no early stopping"

    @abstractmethod
    def validation(self, run: JobRun, dataset: Any | None) -> Callable[[nn.Module], dict[str, float]] | None:
        """The validation (model -> metrics, ``trainer.monitor`` among them) of ``dataset`` (None: the split
        has no validation cases), or None for none."""

    def engine_options(self, run: JobRun, train_dataset: Any, val_dataset: Any | None) -> dict[str, Any]:
        """More keyword arguments of `asa.train.Engine` (e.g. ``collate_fn``, ``panel_fn``)."""
        return {}

    @abstractmethod
    def finish(self, run: JobRun, result: FitResult) -> None:
        """Rank 0, after training finished: exports and the closing report."""
