"""One generic training loop (pretraining and fine-tuning): DDP, AMP, accumulation, exact resume.

The loop reads top to bottom: `Engine.fit` → `_prepare` and `_start` → `_run_epoch` → `_train_step`
→ `_end_epoch` → `_finish`. Its collaborators do one thing each: `OptimizerStep` (precision,
accumulation, the update), `TrainLog` (messages, progress, TensorBoard), `ResumePoint` (the checked
checkpoint a run continues from) and `StopSignals` (preemption).

A stop signal (SIGTERM, SIGUSR1, a user's SIGINT) is acted on at the end of the step it arrives in: the run
saves last.pt there and stops, with no validation and no further step, so that it fits a scheduler's grace
period. One that arrives during a validation round ends the round at once (one process; under DDP the
round finishes first) and last.pt is saved as of before it: the resumed run validates again.
"""
from __future__ import annotations

import math
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, Dataset

from asa.io import CheckpointWriter
from asa.models import compile_blocks
from asa.models.zoo import network_spec

from .checkpoint import FORMAT, RESUME_ONLY, VERSION, prune_step_checkpoints
from .data import build_loader, close_loader, move_to
from .distributed import DistEnv, all_gather_objects, all_reduce_max_ints, all_reduce_mean, barrier
from .environment import environment, environment_warnings, record_warnings
from .folder import RunFolderError, folder_fault
from .optim import load_optimizer_state
from .precision import amp_name, guard_cpu_bf16_convolutions, set_threads
from .preemption import StopRequested, StopSignals
from .reporting import TrainLog, scalar
from .resume import ResumePoint, Tracker
from .rng import capture_rng, fork_rng, item_seed, kernel_determinism, restore_rng, seed_everything
from .schedule import lr_at
from .settings import TrainConfig, TrainerSettings
from .step import Accumulated, OptimizerStep, StepFn, StepValues
from .updates import RelativeUpdate, update_gap_note

__all__ = ["TrainConfig", "TrainerSettings", "FitResult", "Engine", "fit", "NonFiniteLossError"]


class NonFiniteLossError(RuntimeError):
    """Too many consecutive optimisation steps had a NaN/inf loss."""


@dataclass
class FitResult:
    step: int
    epoch: int
    best_metric: float | None
    best_step: int | None
    stopped_early: bool
    nonfinite_steps: int
    history: list[dict] = field(default_factory=list)  # one dict of validation metrics per round
    checkpoint_dir: Path | None = None
    preempted: bool = False  # stopped by SIGTERM/SIGUSR1/SIGINT after saving last.pt (resume to continue)
    signal: int | None = None  # the stopping signal's number when preempted (0: a peer rank's, number unknown)


@dataclass
class _Run:
    """What one `fit` call iterates over: the loader and its seeding, the (DDP-wrapped) network, the last step."""

    loader: DataLoader
    sampler: object  # asa.train.data's resumable distributed sampler (its (epoch, index) pairs seed each item)
    seeded: object  # the dataset wrapper that seeds each item's augmentation
    generator: torch.Generator
    stop_step: int
    samples_per_step: int
    net: nn.Module | None = None


class Engine:
    """Generic trainer. Construct with the model, an optimiser over its parameters, a
    `step_fn(model, batch) -> (loss, logs)` and the settings, then call `fit(train_dataset)`.

    Files (rank 0 only): `out_dir/checkpoints/{last,best,step_XXXXXXXX}.pt`, TensorBoard under
    `out_dir/tb`. `validate(model) -> dict` runs every `val_every` epochs, at most every `val_min_steps` optimiser
    steps (or every `val_every_steps` optimiser steps, when set) and at the run's end on every rank (shard the
    validation data by `env.rank` if you like; metrics are averaged across ranks). `panel_fn(model, step)
    -> {tag: image [C,H,W] in [0,1]}` runs on rank 0 every `panel_every` epochs. Validation and panels
    run under a forked, fixed-seed RNG so they never change the training trajectory. `resume`: the
    checked checkpoint to continue from (a `ResumePoint`; None starts fresh from `seed`).
    `on_device(batch) -> batch` runs on each batch once it is on the device, before `step_fn`
    (e.g. `asa.data.augmentation.apply_deferred_augmentation`: augmentation drawn by the loader).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        step_fn: StepFn,
        *,
        config: TrainConfig,
        lr: float,
        out_dir: str | os.PathLike,
        env: DistEnv | None = None,
        seed: int = 0,
        validate: Callable[[nn.Module], Mapping[str, float]] | None = None,
        panel_fn: Callable[[nn.Module, int], Mapping[str, torch.Tensor]] | None = None,
        run_config: Mapping | None = None,
        resume: ResumePoint | None = None,
        collate_fn: Callable | None = None,
        extra_state: Callable[[], Mapping] | None = None,
        on_device: Callable[[Mapping], Mapping] | None = None,
    ) -> None:
        self.model, self.optimizer, self.step_fn = model, optimizer, step_fn
        self.cfg, self.lr, self.seed = config, float(lr), int(seed)
        self.env = env or DistEnv(device=next(model.parameters()).device)
        self.out_dir = Path(out_dir)
        self.ckpt_dir = self.out_dir / "checkpoints"
        self.validate, self.panel_fn = validate, panel_fn
        self.run_config = dict(run_config or {})
        self.resume, self.collate_fn = resume, collate_fn
        self.extra_state = extra_state
        self.on_device = on_device
        self.optim_step = OptimizerStep(optimizer, amp=config.amp, device=self.env.device,
                                        accum_steps=config.accum_steps, clip_grad=config.clip_grad)
        if self.optim_step.amp_dtype == torch.bfloat16 and self.env.device.type == "cpu":
            guard_cpu_bf16_convolutions(model)
        self.log = TrainLog(self.env, self.out_dir / "tb")
        self.updates = RelativeUpdate.of(model)  # encoder vs decoder ‖Δw‖/‖w‖ (None: no registered encoder)
        self._gap_noted = False
        self.tracker = Tracker(config.mode)
        self.step = self.epoch = self.batch_in_epoch = 0
        self.nonfinite_total = self.nonfinite_run = 0
        self.history: list[dict] = []
        self._stop = StopSignals()
        self._compiled = False
        self._last_val_step: int | None = None
        self._last_panel_step: int | None = None
        self._step_files: list[str] = []  # the step files (`_step_files`) due at an epoch's last step
        self._saved_step = 0  # the step of the last last.pt write (or of the resumed checkpoint)
        self._on_disk: int | None = None  # the step of checkpoints/last.pt once written (or resumed from)
        self._saved_at = time.monotonic()  # when last.pt was last written (or training started)
        self._wrote_last = False  # last.pt written since this start: else the first epoch's end writes it
        self._overdue = False  # trainer.ckpt_minutes passed at an epoch's last step: `_end_epoch` saves
        self._stopped_early = False  # early stopping at a validation round inside an epoch (trainer.val_every_steps)
        self._ended = False  # `_finish` done: the run's final validation and panel are in its last.pt
        self._window: dict | None = None  # the logging window a resumed run stopped in (`TrainLog.open`)
        self._writer = CheckpointWriter()  # checkpoints are written while training goes on

    # ------------------------------------------------------------------------------------------- fit
    def fit(self, train_data: Dataset) -> FitResult:
        """Train until `epochs` / `max_steps` / early stopping; returns a FitResult."""
        env = self.env
        failing = True
        try:
            # kernel settings for the run only: the process is left as found
            with self._stop, kernel_determinism(self.cfg.deterministic, env.device):
                result = self._fit(train_data)  # every way out writes last.pt with wait: all written
            failing = False
            return result
        except Exception as err:
            failed = self._writer.close()  # a write under way ends first; the run's own error is raised
            raised: Exception = err
            if (fault := folder_fault(err, self.out_dir) or folder_fault(failed, self.out_dir)) is not None:
                raised = RunFolderError(self.out_dir, fault, step=self.step, saved_step=self._on_disk,
                                        last=self.ckpt_dir / "last.pt")  # one line says it all
            elif failed is not None:
                self.log.say(f"warning: a checkpoint was not written ({failed}); the one before stays")
            if env.distributed:  # which rank failed; the entry point prints the error itself
                lines = str(raised).strip().splitlines() or [""]
                print(f"[asa] rank {env.rank}/{env.world_size} failed: {type(raised).__name__}: {lines[-1]}",
                      file=sys.stderr, flush=True)
            if raised is err:
                raise
            raise raised from err
        finally:
            self.log.close(failing=failing)

    def _fit(self, train_data: Dataset) -> FitResult:
        run = self._prepare(train_data)
        stopped, stop_signal = False, None
        try:
            self._start(run)
            self._saved_at = time.monotonic()  # the time bound counts from the first step
            while self.step < run.stop_step and not stopped:
                stop_signal = self._run_epoch(run)
                if stop_signal is not None:
                    break
                if self._stopped_early:  # at a validation round inside the epoch (trainer.val_every_steps)
                    stopped = True
                    break
                if self.batch_in_epoch >= self.steps_per_epoch * self.cfg.accum_steps:  # epoch complete
                    stopped = self._end_epoch(run)
        except StopRequested as stop:  # during the validation at an epoch's end
            stop_signal = stop.signum
        finally:
            close_loader(run.loader)  # its persistent workers end with the training, not at garbage collection
        self.log.close_bar()
        if stop_signal is None:
            try:
                return self._finish(stopped)
            except StopRequested as stop:  # during the final validation: resumed, the run validates again
                stop_signal = stop.signum
        # a stop at a kept step (during it, or during the validation at its epoch's end) keeps it too: the resumed
        # run starts after it and would never write it
        self._save_last(*self._step_files_at(False))
        return self._result(stopped=False, preempted=True, signum=stop_signal)

    def _prepare(self, train_data: Dataset) -> _Run:
        """Threads, device, compiled blocks, the resumable loader and the schedule's length."""
        env, cfg = self.env, self.cfg
        set_threads(cfg.threads)
        self.model.to(env.device)
        if cfg.compile and not self._compiled:
            self.log.say(f"torch.compile: {compile_blocks(self.model)} blocks (compiled on first use)")
            self._compiled = True
        loader, sampler, seeded, generator = build_loader(
            train_data, batch_size=cfg.batch_size, rank=env.rank, world_size=env.world_size, seed=self.seed,
            num_workers=cfg.num_workers, collate_fn=self.collate_fn, pin_memory=env.device.type == "cuda",
        )
        if loader.num_workers < cfg.num_workers:
            self.log.say(f"data.num_workers={cfg.num_workers} capped to the {loader.num_workers} CPU(s) available")
        micro_per_epoch = sampler.full_length() // cfg.batch_size
        self.steps_per_epoch = micro_per_epoch // cfg.accum_steps
        if (fault := epoch_fault(len(train_data), cfg, env.world_size)) is not None:  # type: ignore[arg-type]
            raise ValueError(fault)
        self.total_steps = cfg.epochs * self.steps_per_epoch
        if cfg.warmup_steps is not None:
            self.warmup_steps = cfg.warmup_steps
        elif cfg.warmup_fraction > 0:  # the recipe's warm-up, whatever the schedule's length
            self.warmup_steps = max(1, round(cfg.warmup_fraction * self.total_steps))
        else:
            self.warmup_steps = round(cfg.warmup_epochs * self.steps_per_epoch)
        stop_step = self.total_steps if cfg.max_steps is None else min(cfg.max_steps, self.total_steps)
        if (fault := kept_fault(len(train_data), cfg, env.world_size)) is not None:  # type: ignore[arg-type]
            raise ValueError(fault)
        return _Run(loader, sampler, seeded, generator, stop_step,
                    samples_per_step=cfg.batch_size * cfg.accum_steps * env.world_size)

    def _start(self, run: _Run) -> None:
        """Resume or seed, the DDP wrapper, logging and the start-up lines."""
        env, cfg = self.env, self.cfg
        if self.resume is not None:
            self._load(self.resume)
        else:
            seed_everything(self.seed + env.rank)
        run.net = self.model
        if env.distributed:
            run.net = DDP(self.model, device_ids=[env.device] if env.device.type == "cuda" else None,
                          find_unused_parameters=cfg.find_unused_parameters)
        self.log.open(start_step=self.step, stop_step=run.stop_step, progress=cfg.progress,
                      resumed=self.resume is not None, window=self._window)
        self.log.say(f"training: {self.steps_per_epoch} steps/epoch, schedule over {self.total_steps} steps "
                     f"(warm-up {self.warmup_steps}), stopping at step {run.stop_step}; global batch "
                     f"{run.samples_per_step}; device {env.device}, world size {env.world_size}"
                     f"{f' ({env.backend})' if env.backend else ''}, precision "
                     f"{amp_name(self.optim_step.amp_dtype)} (trainer.amp={cfg.amp}), {torch.get_num_threads()} "
                     f"CPU threads")
        if env.is_main and env.device.type == "cuda":  # known-bad torch / cuDNN versions, each with its fix
            lines = environment_warnings(environment(), device=env.device, amp=self.optim_step.amp_dtype)
            for line in lines:
                self.log.say(f"warning: {line}")
            if lines:
                record_warnings(self.out_dir, lines)
        if run.stop_step < self.total_steps:
            self.log.say(f"note: trainer.max_steps={cfg.max_steps} stops the run at step {run.stop_step} of a "
                         f"schedule that spans trainer.epochs={cfg.epochs} ({self.total_steps} steps): the lr there "
                         f"is still {self._lr_at(run.stop_step - 1):.3g}; lower trainer.epochs to shorten the "
                         f"schedule itself")
        frozen = max((g.get("freeze_epochs", 0) for g in self.optimizer.param_groups), default=0)
        if frozen:
            self.log.say(f"encoder frozen for the first {frozen} epoch(s) (optim.freeze_encoder_epochs)")
        self.model.train()

    def _run_epoch(self, run: _Run) -> int | None:
        """Optimiser steps until the epoch or the run ends; returns a stop signal's number when one arrived
        (checked before the epoch's first step, for one that came during the last epoch's end or the start,
        and after every step)."""
        cfg = self.cfg
        full = self.steps_per_epoch * cfg.accum_steps
        stop_signal, _ = self._agreed()
        if stop_signal is not None:
            return self._stopping(stop_signal)
        if self.batch_in_epoch >= full:  # resumed from a stop before this epoch's end: `_end_epoch` is next
            return None
        if self._step_validation_due() and self.step < run.stop_step:  # resumed from a stop before it
            stop_signal = self._step_validation()
            if stop_signal is not None or self._stopped_early:
                return stop_signal
        run.sampler.set_position(self.epoch, self.batch_in_epoch * cfg.batch_size)
        run.generator.manual_seed(item_seed(self.seed, self.epoch, self.env.rank))
        batches = iter(run.loader)
        while self.batch_in_epoch < full and self.step < run.stop_step:
            self._train_step(run, batches)
            stop_signal, overdue = self._agreed()
            if stop_signal is not None:
                return self._stopping(stop_signal)
            if self._step_validation_due() and self.batch_in_epoch < full and self.step < run.stop_step:
                # (at an epoch's last step `_end_epoch` validates, at the run's last `_finish`)
                stop_signal = self._step_validation()
                if stop_signal is not None or self._stopped_early:
                    return stop_signal
            step_due = bool(cfg.ckpt_every) and self.step % cfg.ckpt_every == 0
            files = self._step_files_at(step_due)
            if (step_due or overdue or files) and self.step < run.stop_step:  # in a non-finite streak: `_save_last`
                if self.batch_in_epoch >= full:
                    # the epoch ends at this step: `_end_epoch` saves after its validation, so that a
                    # checkpoint follows everything logged at its step (a resume re-logs nothing twice)
                    self._step_files = files
                    self._overdue = overdue
                else:
                    self._save_last(*files, wait=False)
        return None

    def _step_files_at(self, step_due: bool) -> list[str]:
        """The files this step's state is written to beside last.pt: step_XXXXXXXX.pt at a ``ckpt_every`` step
        with ``keep_last``, kept_XXXXXXXX.pt at a ``keep_steps`` step. Listed before last.pt, so that a last.pt at
        this step (the resume point) never exists without them."""
        files = [f"step_{self.step:08d}.pt"] if step_due and self.cfg.keep_last > 0 else []
        if self.step in self.cfg.keep_steps:
            files.append(f"kept_{self.step:08d}.pt")
        return files

    def _step_validation_due(self) -> bool:
        """Whether a validation round of the ``trainer.val_every_steps`` cadence falls due at this step and has not
        run (False under the epoch cadence, ``trainer.val_every``)."""
        every = self.cfg.val_every_steps
        return bool(every) and self.step > 0 and self.step % every == 0 and self._last_val_step != self.step

    def _step_validation(self) -> int | None:
        """The validation round at a step inside an epoch (``trainer.val_every_steps``); early stopping sets
        ``_stopped_early``; returns a stop signal's number when one arrived during the round (dropped: last.pt is
        saved as of before it, and the resumed run validates at this step first)."""
        try:
            self._stopped_early = self._validate(count_patience=True)
        except StopRequested as stop:
            return self._stopping(stop.signum, " during validation")
        self._last_val_step = self.step
        return None

    def _spaced(self) -> bool:
        """Whether ``trainer.val_min_steps`` have passed since the last validation round (or none ran yet): the
        epoch cadence's floor. Read off the rounds' history, which last.pt carries, so that a resumed run validates
        at the steps an uninterrupted one does."""
        gap = self.cfg.val_min_steps
        return not gap or not self.history or self.step - int(self.history[-1]["step"]) >= gap

    def _agreed(self) -> tuple[int | None, bool]:
        """(the stop signal received, or None; whether ``trainer.ckpt_minutes`` have passed since last.pt was
        written), the same on every rank (one collective under DDP: the largest signal number any rank
        received), so that all ranks stop or save at the same step."""
        received = -1 if self._stop.received is None else self._stop.received
        minutes = self.cfg.ckpt_minutes
        overdue = bool(minutes) and time.monotonic() - self._saved_at >= 60.0 * minutes
        received, overdue = all_reduce_max_ints([received, int(overdue)], self.env)
        return (None if received < 0 else received), bool(overdue)

    def _stopping(self, stop_signal: int, during: str = "") -> int:
        """Say that the run saves last.pt at this step and stops; returns ``stop_signal``."""
        name = signal.Signals(stop_signal).name if stop_signal else "a stop signal on another rank"
        self.log.say(f"received {name}{during}: saving last.pt at step {self.step} and stopping")
        return stop_signal

    def _train_step(self, run: _Run, batches: Iterator) -> None:
        """One optimiser step (or a skipped non-finite one) and its logs."""
        lr = self._set_lr()
        acc = self.optim_step.accumulate(run.net, self.step_fn, self._micro_batches(batches),
                                         distributed=self.env.distributed)
        self._take_step(run, acc, lr)

    def _take_step(self, run: _Run, acc: Accumulated, lr: float) -> None:
        """The update from the step's accumulated gradients (or its skip), the step counted and logged at ``lr``."""
        measure = self._before_update(run)
        values = self.optim_step.apply(self.epoch, acc, agree=lambda bad: all_reduce_max_ints(bad, self.env))
        self._count_step(run, values, lr, measure=measure)

    def _before_update(self, run: _Run) -> bool:
        """Whether the coming step logs its relative update (its parameters copied now, before the update)."""
        # a copy of every parameter: logging steps only
        measure = self._logs_at(run, self.step + 1) and self.updates is not None
        if measure:
            self.updates.before()
        return measure

    def _logs_at(self, run: _Run, step: int) -> bool:
        """Whether the step that ends at ``step`` writes the window's means (``trainer.log_every``, the last)."""
        return step % self.cfg.log_every == 0 or step == run.stop_step

    def _count_step(self, run: _Run, values: StepValues, lr: float, *, measure: bool) -> None:
        """The step taken (or skipped) with ``values`` counted and logged at ``lr``."""
        bad, grad_norm = values.nonfinite, values.grad_norm
        if grad_norm is None:
            self._skip_nonfinite("loss" if bad else "gradient")
        else:
            self.nonfinite_run = 0
        self.step += 1
        entry = {"train/lr": lr, **{f"train/{k}": v for k, v in values.logs.items()}}
        if not bad:  # a skipped step's loss (0 where non-finite) stays out of the window's mean
            entry["train/loss"] = values.loss
        if grad_norm is not None and math.isfinite(grad_norm):
            entry["train/grad_norm"] = grad_norm
        if measure and grad_norm is not None:
            entry.update(self.updates.after())  # the logging step's own relative update, not a window mean
        elif measure:
            self.updates.forget()
        scaler = self.optim_step.scaler
        if scaler.is_enabled() and grad_norm is not None:  # fp16: steps the GradScaler skipped (overflow)
            entry["train/amp_overflow"] = float(not math.isfinite(grad_norm))
            entry["train/loss_scale"] = float(scaler.get_scale())
        self.log.add_step(entry)
        if self._logs_at(run, self.step):
            means = self.log.take_window(samples_per_step=run.samples_per_step, nonfinite_total=self.nonfinite_total)
            self._write_scalars(means)
            self.log.progress(means, step=self.step, epoch=self.epoch)
            note = update_gap_note(means)
            if note is not None and not self._gap_noted:  # once per run; the progress line keeps the figures
                self.log.say(f"note: {note}")
                self._gap_noted = True

    def _micro_batches(self, batches: Iterator) -> Iterator:
        """The next `accum_steps` batches on the device, counted into the epoch's position."""
        for _ in range(self.cfg.accum_steps):
            batch = move_to(next(batches), self.env.device)
            if self.on_device is not None:
                batch = self.on_device(batch)
            self.batch_in_epoch += 1
            yield batch

    def _skip_nonfinite(self, what: str) -> None:
        """Drop a step whose loss (on some rank) or gradient was NaN/inf; abort after `max_nonfinite` in a row."""
        self.optim_step.skip()
        self.nonfinite_total += 1
        self.nonfinite_run += 1
        if self.nonfinite_run >= self.cfg.max_nonfinite:
            self._writer.wait()  # the message names what is on disk
            last = self.ckpt_dir / "last.pt"
            raise NonFiniteLossError(
                f"{self.nonfinite_run} consecutive non-finite steps (NaN/inf loss or gradient) up to step "
                f"{self.step}; stopping (trainer.max_nonfinite={self.cfg.max_nonfinite}). Last good checkpoint: "
                f"{last if last.is_file() else 'none written yet'}. Lower the learning rate, enable "
                f"trainer.clip_grad, try trainer.amp=off, or check the data."
            )
        self.log.say(f"warning: non-finite {what} at step {self.step}: step skipped "
                     f"({self.nonfinite_run} in a row, {self.nonfinite_total} in total)")

    def _end_epoch(self, run: _Run) -> bool:
        """Validation, panels and last.pt at an epoch's end; returns True when early stopping triggers. A stop
        signal during the validation raises `StopRequested` with the epoch's end undone (resumed, it runs again)."""
        cfg = self.cfg
        self.epoch += 1
        self.batch_in_epoch = 0
        stopped = False
        if self._step_validation_due() if cfg.val_every_steps else self.epoch % cfg.val_every == 0 and self._spaced():
            try:
                stopped = self._validate(count_patience=True)
            except StopRequested as stop:
                self.epoch -= 1
                self.batch_in_epoch = self.steps_per_epoch * cfg.accum_steps
                self._stopping(stop.signum, " during validation")
                raise
            self._last_val_step = self.step
        if cfg.panel_every and self.epoch % cfg.panel_every == 0:
            self._panels()
            self._last_panel_step = self.step
        # last.pt at an epoch's end when `ckpt_every` steps or `ckpt_minutes` have passed since it was last
        # written (or a step checkpoint fell due here), and at the first epoch's end of a start, so that a run
        # killed before `ckpt_every` steps keeps its first epoch: epochs of a step or a few (a small cohort or
        # labeled set) would otherwise write the whole training state at nearly every step
        due = (self._step_files or self._overdue or not self._wrote_last or not cfg.ckpt_every
               or self.step - self._saved_step >= cfg.ckpt_every)
        if self.step < run.stop_step and not stopped and due:
            self._save_last(*self._step_files, wait=False)
        self._step_files, self._overdue = [], False
        return stopped

    def _finish(self, stopped: bool) -> FitResult:
        """A last validation and panel unless the final step just had them, then last.pt."""
        if self.validate is not None and self._last_val_step != self.step:
            try:
                self._validate(count_patience=False)
            except StopRequested as stop:
                self._stopping(stop.signum, " during the final validation")
                raise
        if self.cfg.panel_every and self._last_panel_step != self.step:
            self._panels()  # a final panel, also for runs shorter than panel_every epochs
        self._ended = True
        self._save_last(*self._step_files_at(False))  # a kept step at the run's end (`_step_files_at`)
        if self.env.is_main:
            self.log.flush()
        self.log.say(f"done at step {self.step}: checkpoints in {self.ckpt_dir}, TensorBoard logs in "
                     f"{self.out_dir / 'tb'}")
        return self._result(stopped=stopped, preempted=False)

    def _result(self, *, stopped: bool, preempted: bool, signum: int | None = None) -> FitResult:
        return FitResult(step=self.step, epoch=self.epoch, best_metric=self.tracker.best,
                         best_step=self.tracker.best_step, stopped_early=stopped,
                         nonfinite_steps=self.nonfinite_total, history=list(self.history),
                         checkpoint_dir=self.ckpt_dir, preempted=preempted, signal=signum)

    # ------------------------------------------------------------------------------------ schedule
    def _lr_at(self, step: int) -> float:
        cfg = self.cfg
        return lr_at(step, total_steps=self.total_steps, warmup_steps=self.warmup_steps, base_lr=self.lr,
                     schedule=cfg.schedule, min_lr=cfg.min_lr, power=cfg.power)

    def _set_lr(self) -> float:
        lr = self._lr_at(self.step)
        self.optim_step.set_lr(lr)
        return lr

    # --------------------------------------------------------------------------------- state and resume
    def _state(self, *, weights_only: bool = False) -> dict | None:
        """Full training state; collective (gathers every rank's RNG and open logging window), returns None off
        rank 0. ``weights_only`` (best.pt): without what only a resumed run reads (the optimiser's state, the
        GradScaler's, every rank's RNG and logging window); the weights, the network spec and the run config
        (what asa-predict, asa-export, asa-finetune's model.pretrained and encoder.pt read) and the counters
        stay."""
        ranks = [] if weights_only else all_gather_objects((capture_rng(), self.log.window_state()), self.env)
        if not self.env.is_main:
            return None
        state = {
            "format": FORMAT, "version": VERSION,
            "model": self.model.state_dict(),
            "network": network_spec(self.model),  # rebuilds the network without the run config
            "optimizer": self.optimizer.state_dict(),
            "scheduler": {"name": self.cfg.schedule, "step": self.step, "total_steps": self.total_steps,
                          "warmup_steps": self.warmup_steps, "base_lr": self.lr},
            "scaler": self.optim_step.scaler.state_dict(),
            "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
            "world_size": self.env.world_size, "rng": [rng for rng, _ in ranks], "tracker": self.tracker.state(),
            "nonfinite_total": self.nonfinite_total, "history": self.history, "config": self.run_config,
        }
        if weights_only:
            for key in RESUME_ONLY:
                del state[key]
            state["weights_only"] = True
        else:  # what a resume takes back where it finds it (a last.pt of an older asa has neither)
            state["log_window"] = [window for _, window in ranks]
            # False at the last step while a stop left the final validation to the resumed run (`finished`)
            state["ended"] = self._ended
        if self.extra_state is not None:
            state["extra"] = dict(self.extra_state())
        return state

    def save(self, *names: str, weights_only: bool = False, wait: bool = True) -> None:
        """Write the current state to checkpoints/<name> for each name (rank 0; collective call); ``weights_only``:
        the state without what only a resume reads (`_state`). ``wait=False`` (the writes while training goes on:
        best.pt, last.pt at its cadence): the state is copied to the CPU and written on a thread (`CheckpointWriter`,
        in order); a stop and the run's end write with ``wait``, after every queued write is on disk."""
        state = self._state(weights_only=weights_only)
        if "last.pt" in names:
            self._saved_step, self._wrote_last = self.step, True
        if state is not None:
            paths = [self.ckpt_dir / name for name in names]
            keep, step = self.cfg.keep_last, self.step

            def written() -> None:  # on the writer's thread, once the files are on disk
                if "last.pt" in names:
                    self._on_disk = step
                if keep > 0:
                    prune_step_checkpoints(self.ckpt_dir, keep)

            (self._writer.write if wait else self._writer.submit)(paths, state, then=written)
            self.log.flush()  # what the checkpoint holds, TensorBoard shows (also after SIGKILL)
        barrier(self.env)
        if "last.pt" in names:
            self._saved_at = time.monotonic()  # the time bound counts from the write's start (or end, waited for)

    def _save_last(self, *step_files: str, wait: bool = True) -> None:
        """The loop's checkpoint: ``step_files`` and last.pt (`save`), the resume point; best.pt is `_validate`'s.
        At the cadence (``wait=False``) inside a non-finite streak, no last.pt: the kept steps' files alone
        (`_save_kept`)."""
        if not wait and self.nonfinite_run:
            self._save_kept(step_files)
        else:
            self.save(*step_files, "last.pt", wait=wait)

    def _save_kept(self, step_files: Sequence[str]) -> None:
        """The kept steps' files of ``step_files`` inside a non-finite streak. Their weights are the last finite
        update's (the streak's steps skipped theirs), and a run resumed from before the streak would skip the step
        again and never keep it: its scoring at that step would fail."""
        if kept := [name for name in step_files if name.startswith("kept_")]:
            self.save(*kept, wait=False)

    def _load(self, resume: ResumePoint) -> None:
        path, state = resume.path, resume.read()
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError as err:
            raise ValueError(f"checkpoint {path}: model weights do not fit this model: {err}") from err
        load_optimizer_state(self.optimizer, state["optimizer"], self.model)
        if state["scaler"]:
            self.optim_step.scaler.load_state_dict(state["scaler"])
        self.step, self.epoch = int(state["step"]), int(state["epoch"])
        self._saved_step = self.step
        if Path(path) == self.ckpt_dir / "last.pt":
            self._on_disk = self.step
        self.batch_in_epoch = int(state["batch_in_epoch"])
        self.tracker.load(state["tracker"])
        self.nonfinite_total = int(state["nonfinite_total"])
        self.history = list(state.get("history", []))
        if self.history and int(self.history[-1]["step"]) == self.step:
            self._last_val_step = self.step  # validated at this step before the checkpoint: not again
        rngs = state["rng"]
        if int(state["world_size"]) == self.env.world_size and len(rngs) == self.env.world_size:
            restore_rng(rngs[self.env.rank])
            windows = state.get("log_window")
            if windows:
                self._window = windows[self.env.rank]
        else:
            self.log.say(f"warning: {path} was written with world_size={state['world_size']}, now "
                         f"{self.env.world_size}; RNG streams are re-seeded (the run continues, not bit-exactly)")
            seed_everything(item_seed(self.seed, self.step, self.env.rank))
        self.log.say(f"resumed from {path} at step {self.step} (epoch {self.epoch}, batch {self.batch_in_epoch})")

    # ------------------------------------------------------------------------ validation and panels
    def _write_scalars(self, values: Mapping[str, float]) -> None:
        self.log.scalars(values, self.step)

    def _validate(self, *, count_patience: bool) -> bool:
        """Run validation, update best.pt / patience; returns True when early stopping triggers."""
        if self.validate is None:
            return False
        return self._record_round(self._validation_round(self.model, self.validate), count_patience=count_patience)

    def _validation_round(self, model: nn.Module, validate: Callable[[nn.Module], Any]) -> Any:
        """``validate(model)``, ``model`` in eval mode, without gradients, in the training's precision and its own
        RNG stream; a stop signal drops the round (one process: every rank must finish it under DDP)."""
        model.eval()
        try:
            with (fork_rng(self.seed + 1_000_003), torch.no_grad(), self.optim_step.autocast(),
                  self._stop.interruptible(not self.env.distributed)):  # innermost: the RNG is put back whole
                return validate(model)
        finally:
            model.train()

    def _record_round(self, raw: Mapping[str, float], *, count_patience: bool) -> bool:
        """A validation round's metrics ``raw`` logged and followed: best.pt, patience (True: stop early)."""
        metrics = {(k if "/" in k else f"val/{k}"): scalar(v) for k, v in raw.items()}
        metrics = all_reduce_mean(metrics, self.env)
        if self.cfg.monitor not in metrics:
            raise KeyError(f"trainer.monitor={self.cfg.monitor!r} is not among the validation metrics "
                           f"{sorted(metrics)}")
        self.history.append({"step": self.step, "epoch": self.epoch, **metrics})
        self._write_scalars(metrics)
        value = metrics[self.cfg.monitor]
        self.log.say(f"step {self.step} epoch {self.epoch}: " + ", ".join(f"{k}={v:.5g}" for k, v in metrics.items()))
        if self.tracker.improved(value):
            self.tracker.best, self.tracker.best_step, self.tracker.bad_rounds = value, self.step, 0
            self.save("best.pt", weights_only=True, wait=False)  # the optimiser's state is last.pt's: not resumed
            return False
        if count_patience:
            self.tracker.bad_rounds += 1
        patience = self.cfg.patience
        if patience is not None and self.tracker.bad_rounds >= patience:
            self.log.say(f"early stopping: {self.cfg.monitor} has not improved for {patience} validation rounds "
                         f"(best {self.tracker.best:.5g} at step {self.tracker.best_step})")
            return True
        return False

    def _panels(self) -> None:
        if self.panel_fn is None or not self.env.is_main or self.log.writer is None:
            return
        self.model.eval()
        with fork_rng(self.seed + 2_000_003), torch.no_grad(), self.optim_step.autocast():  # as validation
            images = self.panel_fn(self.model, self.step)
        self.model.train()
        self.log.images(images, self.step)


def epoch_fault(num_samples: int, cfg: TrainConfig, world_size: int) -> str | None:
    """Why ``num_samples`` training samples make no optimisation step per epoch on ``world_size`` ranks (each
    rank takes ``num_samples // world_size``, the rest dropped), or None; a job asks before writing its folder."""
    per_rank = num_samples // world_size
    if per_rank // cfg.batch_size // cfg.accum_steps >= 1:
        return None
    return (f"training set too small: {num_samples} samples give {per_rank} per rank (world_size={world_size}), "
            f"fewer than trainer.batch_size × trainer.accum_steps = {cfg.batch_size * cfg.accum_steps}")


def kept_fault(num_samples: int, cfg: TrainConfig, world_size: int) -> str | None:
    """Why a ``trainer.keep_steps`` step is never reached by the run (its last step: ``trainer.epochs`` × the steps
    of an epoch, or ``trainer.max_steps``), or None; a job asks before writing its folder, as for `epoch_fault`."""
    per_epoch = num_samples // world_size // cfg.batch_size // cfg.accum_steps
    last = cfg.epochs * per_epoch
    if cfg.max_steps is not None:
        last = min(cfg.max_steps, last)
    if not (late := sorted(k for k in cfg.keep_steps if k > last)):
        return None
    return (f"kept step(s) {late} (trainer.keep_steps, or asa-pretrain's export_step) after the run's last step "
            f"{last} (trainer.epochs {cfg.epochs} × {per_epoch} steps an epoch"
            + (f", trainer.max_steps {cfg.max_steps}" if cfg.max_steps is not None else "") + ")")


def fit(model: nn.Module, train_data: Dataset, optimizer: torch.optim.Optimizer, step_fn: StepFn, **kwargs) -> FitResult:
    """Functional form: `Engine(model, optimizer, step_fn, **kwargs).fit(train_data)`."""
    return Engine(model, optimizer, step_fn, **kwargs).fit(train_data)
