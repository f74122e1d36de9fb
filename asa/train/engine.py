"""One generic training loop (pretraining and fine-tuning): DDP, AMP, accumulation, exact resume."""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from asa.models.zoo import network_spec

from .checkpoint import FORMAT, VERSION, check_compatible, load_checkpoint, prune_step_checkpoints, save_checkpoint
from .data import build_loader, move_to
from .distributed import DistEnv, all_gather_objects, all_reduce_max_ints, all_reduce_mean, barrier
from .precision import AMP_CHOICES, amp_name, resolve_amp, set_threads
from .rng import capture_rng, fork_rng, item_seed, restore_rng, seed_everything
from .schedule import lr_at

__all__ = ["TrainConfig", "TrainerSettings", "FitResult", "Engine", "fit", "NonFiniteLossError"]

StepFn = Callable[[nn.Module, object], "tuple[torch.Tensor, Mapping[str, float | torch.Tensor]]"]


class NonFiniteLossError(RuntimeError):
    """Too many consecutive optimisation steps had a NaN/inf loss."""


@dataclass
class TrainerSettings:
    """Training-loop settings of the `trainer` config group (it maps 1:1 onto these fields)."""

    epochs: int = 100  # the lr schedule spans epochs × steps_per_epoch
    max_steps: int | None = None  # stop after this many optimiser steps; the schedule still spans `epochs`
    batch_size: int = 2  # per device
    accum_steps: int = 1  # micro-batches per optimiser step (no all-reduce on the others)
    warmup_epochs: float = 0.0
    warmup_steps: int | None = None  # overrides warmup_epochs when set
    amp: str = "auto"  # auto (fp16 on CUDA, bf16 on a CPU with native bf16, else off) | fp16 | bf16 | off
    threads: int | None = None  # torch intra-op threads (None: torch's default)
    compile: bool = False  # torch.compile the model's blocks (see asa.models.compile_blocks)
    clip_grad: float | None = None  # max global grad norm; the norm is logged either way
    log_every: int = 10  # steps
    ckpt_every: int = 100  # steps between last.pt writes (also written at the end and every epoch)
    keep_last: int = 0  # >0: also keep the newest k step_XXXXXXXX.pt files
    val_every: int = 1  # epochs
    monitor: str = "val/loss"
    mode: str = "min"  # min | max
    patience: int | None = None  # validation rounds without improvement before stopping
    max_nonfinite: int = 5  # consecutive non-finite losses before aborting
    panel_every: int = 0  # epochs between image panels (0 = never)
    progress: bool = True
    deterministic: bool = True  # deterministic kernels (honoured on CPU; warn-only on CUDA)
    find_unused_parameters: bool = False

    @classmethod
    def from_dict(cls, values: Mapping, *, where: str = "trainer") -> "TrainConfig":
        """Build from a config mapping; unknown keys are an error naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"{where}: unknown option(s) {unknown}; expected a subset of {sorted(names)}")
        return cls(**dict(values))

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # e.g. trainer.epochs=ten: name the key, not int()'s message
            kind = str(f.type).replace(" | None", "")
            value = getattr(self, f.name)
            if value is None and "None" in str(f.type) or kind not in _KINDS:
                continue
            try:
                setattr(self, f.name, _KINDS[kind](value))
            except (TypeError, ValueError):
                raise ValueError(f"trainer.{f.name}={value!r}: expected {_KIND_WORDS[kind]}") from None
        if self.amp not in AMP_CHOICES:
            raise ValueError(f"trainer.amp={self.amp!r}: expected one of {', '.join(AMP_CHOICES)}")
        if self.threads is not None and int(self.threads) < 1:
            raise ValueError(f"trainer.threads={self.threads}: expected a positive thread count or null")
        if self.mode not in {"min", "max"}:
            raise ValueError(f"trainer.mode={self.mode!r}: expected 'min' or 'max'")
        for name in ("epochs", "batch_size", "accum_steps", "log_every", "val_every", "max_nonfinite"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"trainer.{name}={getattr(self, name)}: expected >= 1")



@dataclass
class TrainConfig(TrainerSettings):
    """Everything the Engine reads: the trainer settings plus what the data and optim groups set."""

    num_workers: int = 0  # DataLoader workers per rank (data.num_workers)
    schedule: str = "cosine"  # cosine | poly | constant (optim.schedule)
    min_lr: float = 0.0  # (optim.min_lr)
    power: float = 0.9  # poly exponent (optim.power)

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
    preempted: bool = False  # stopped by SIGTERM/SIGUSR1 after saving last.pt (resume to continue)
    signal: int | None = None  # the stopping signal's number when preempted (0: a peer rank's, number unknown)


class _Tracker:
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


def _as_int(value: object) -> int:
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError(value)
    return int(value)  # type: ignore[arg-type]


def _as_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError(value)


_KINDS: dict[str, Callable[[object], object]] = {"int": _as_int, "float": float, "bool": _as_bool}
_KIND_WORDS = {"int": "an integer", "float": "a number", "bool": "true or false"}


def _scalar(v: object) -> float:
    return float(v.detach().float().mean().item()) if isinstance(v, torch.Tensor) else float(v)


class Engine:
    """Generic trainer. Construct with the model, an optimiser over its parameters, a
    `step_fn(model, batch) -> (loss, logs)` and the settings, then call `fit(train_dataset)`.

    Files (rank 0 only): `out_dir/checkpoints/{last,best,step_XXXXXXXX}.pt`, TensorBoard under
    `out_dir/tb`. `validate(model) -> dict` runs every `val_every` epochs on every rank (shard the
    validation data by `env.rank` if you like; metrics are averaged across ranks). `panel_fn(model, step)
    -> {tag: image [C,H,W] in [0,1]}` runs on rank 0 every `panel_every` epochs. Validation and panels
    run under a forked, fixed-seed RNG so they never change the training trajectory.
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
        compat_keys: Sequence[str] = ("model",),
        resume: bool | str | os.PathLike = False,
        collate_fn: Callable | None = None,
        extra_state: Callable[[], Mapping] | None = None,
    ) -> None:
        self.model, self.optimizer, self.step_fn = model, optimizer, step_fn
        self.cfg, self.lr, self.seed = config, float(lr), int(seed)
        self.env = env or DistEnv(device=next(model.parameters()).device)
        self.out_dir = Path(out_dir)
        self.ckpt_dir = self.out_dir / "checkpoints"
        self.validate, self.panel_fn = validate, panel_fn
        self.run_config = dict(run_config or {})
        self.compat_keys, self.resume, self.collate_fn = tuple(compat_keys), resume, collate_fn
        self.extra_state = extra_state
        self.amp_dtype = resolve_amp(config.amp, self.env.device)
        use_scaler = self.amp_dtype == torch.float16 and self.env.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
        self.tracker = _Tracker(config.mode)
        self.step = self.epoch = self.batch_in_epoch = 0
        self.nonfinite_total = self.nonfinite_run = 0
        self.history: list[dict] = []
        self.writer = None

    # ----------------------------------------------------------------------------------------- helpers
    def _install_signal_handlers(self) -> dict:
        """SIGTERM/SIGUSR1 (SLURM preemption, torchrun shutdown) -> save last.pt at the next step and stop."""
        self._signal = None
        if threading.current_thread() is not threading.main_thread():
            return {}

        def handler(signum, frame):
            self._signal = int(signum)

        previous = {}
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            previous[sig] = signal.getsignal(sig)
            signal.signal(sig, handler)
        return previous

    def _say(self, msg: str) -> None:
        if self.env.is_main:
            tqdm.write(msg, file=sys.stderr)
            sys.stderr.flush()

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.env.device.type, dtype=self.amp_dtype)

    def _resume_path(self) -> Path | None:
        r = self.resume
        if r is False or r is None or (isinstance(r, str) and r.lower() in {"false", "no", ""}):
            return None
        last = self.ckpt_dir / "last.pt"
        if r is True or (isinstance(r, str) and r.lower() in {"true", "yes"}):
            if not last.is_file():
                raise FileNotFoundError(
                    f"resume=true but {last} does not exist; start without resume, or use resume=auto"
                )
            return last
        if isinstance(r, str) and r.lower() == "auto":
            return last if last.is_file() else None
        return Path(r)

    def _state(self) -> dict | None:
        """Full training state; collective (gathers every rank's RNG), returns None off rank 0."""
        rngs = all_gather_objects(capture_rng(), self.env)
        if not self.env.is_main:
            return None
        state = {
            "format": FORMAT, "version": VERSION,
            "model": self._unwrapped().state_dict(),
            "network": network_spec(self._unwrapped()),  # rebuilds the network without the run config
            "optimizer": self.optimizer.state_dict(),
            "scheduler": {"name": self.cfg.schedule, "step": self.step, "total_steps": self.total_steps,
                          "warmup_steps": self.warmup_steps, "base_lr": self.lr},
            "scaler": self.scaler.state_dict(),
            "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
            "world_size": self.env.world_size, "rng": rngs, "tracker": self.tracker.state(),
            "nonfinite_total": self.nonfinite_total, "history": self.history, "config": self.run_config,
        }
        if self.extra_state is not None:
            state["extra"] = dict(self.extra_state())
        return state

    def save(self, *names: str) -> None:
        """Write the current state to checkpoints/<name> for each name (rank 0; collective call)."""
        state = self._state()
        if state is not None:
            for name in names:
                save_checkpoint(self.ckpt_dir / name, state)
            if self.cfg.keep_last > 0:
                prune_step_checkpoints(self.ckpt_dir, self.cfg.keep_last)
            if self.writer is not None:
                self.writer.flush()  # what the checkpoint holds, TensorBoard shows (also after SIGKILL)
        barrier(self.env)

    def _unwrapped(self) -> nn.Module:
        return self.model

    def _load(self, path: Path) -> None:
        state = load_checkpoint(path, map_location="cpu")
        if state.get("format") != FORMAT:
            raise ValueError(f"checkpoint {path}: not an asa training checkpoint (format={state.get('format')!r})")
        check_compatible(state.get("config", {}), self.run_config, self.compat_keys, source=str(path))
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError as err:
            raise ValueError(f"checkpoint {path}: model weights do not fit this model: {err}") from err
        self.optimizer.load_state_dict(state["optimizer"])
        if state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.step, self.epoch = int(state["step"]), int(state["epoch"])
        self.batch_in_epoch = int(state["batch_in_epoch"])
        self.tracker.load(state["tracker"])
        self.nonfinite_total = int(state["nonfinite_total"])
        self.history = list(state.get("history", []))
        rngs = state["rng"]
        if int(state["world_size"]) == self.env.world_size and len(rngs) == self.env.world_size:
            restore_rng(rngs[self.env.rank])
        else:
            self._say(f"warning: {path} was written with world_size={state['world_size']}, now "
                      f"{self.env.world_size}; RNG streams are re-seeded (the run continues, not bit-exactly)")
            seed_everything(item_seed(self.seed, self.step, self.env.rank))
        self._say(f"resumed from {path} at step {self.step} (epoch {self.epoch}, batch {self.batch_in_epoch})")

    def _set_lr(self) -> float:
        lr = lr_at(self.step, total_steps=self.total_steps, warmup_steps=self.warmup_steps, base_lr=self.lr,
                   schedule=self.cfg.schedule, min_lr=self.cfg.min_lr, power=self.cfg.power)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        return lr

    def _drop_frozen_grads(self) -> None:
        """Param groups with "freeze_epochs" = K (encoder freeze) get no update before epoch K: their
        gradients are dropped after the backward pass (all-reduced already under DDP), so neither
        the step, nor momentum, nor weight decay touches them and they stay bit-identical."""
        for group in self.optimizer.param_groups:
            if self.epoch < group.get("freeze_epochs", 0):
                for p in group["params"]:
                    p.grad = None

    def _write_scalars(self, values: Mapping[str, float]) -> None:
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(k, v, self.step)

    # ------------------------------------------------------------------------------------- validation
    def _validate(self, *, count_patience: bool) -> bool:
        """Run validation, update best.pt / patience; returns True when early stopping triggers."""
        if self.validate is None:
            return False
        model = self._unwrapped()
        model.eval()
        with fork_rng(self.seed + 1_000_003), torch.no_grad(), self._autocast():
            raw = self.validate(model)
        model.train()
        metrics = {(k if "/" in k else f"val/{k}"): _scalar(v) for k, v in raw.items()}
        metrics = all_reduce_mean(metrics, self.env)
        if self.cfg.monitor not in metrics:
            raise KeyError(f"trainer.monitor={self.cfg.monitor!r} is not among the validation metrics "
                           f"{sorted(metrics)}")
        self.history.append({"step": self.step, "epoch": self.epoch, **metrics})
        self._write_scalars(metrics)
        value = metrics[self.cfg.monitor]
        self._say(f"step {self.step} epoch {self.epoch}: " + ", ".join(f"{k}={v:.5g}" for k, v in metrics.items()))
        if self.tracker.improved(value):
            self.tracker.best, self.tracker.best_step, self.tracker.bad_rounds = value, self.step, 0
            self.save("best.pt")
            return False
        if count_patience:
            self.tracker.bad_rounds += 1
        patience = self.cfg.patience
        if patience is not None and self.tracker.bad_rounds >= patience:
            self._say(f"early stopping: {self.cfg.monitor} has not improved for {patience} validation rounds "
                      f"(best {self.tracker.best:.5g} at step {self.tracker.best_step})")
            return True
        return False

    def _panels(self) -> None:
        if self.panel_fn is None or not self.env.is_main or self.writer is None:
            return
        model = self._unwrapped()
        model.eval()
        with fork_rng(self.seed + 2_000_003), torch.no_grad():
            images = self.panel_fn(model, self.step)
        model.train()
        for tag, img in images.items():
            self.writer.add_image(tag, img.detach().float().cpu().clamp(0, 1), self.step)
        self.writer.flush()

    # ------------------------------------------------------------------------------------------- fit
    def fit(self, train_data: Dataset) -> FitResult:
        """Train until `epochs` / `max_steps` / early stopping; returns a FitResult."""
        env = self.env
        det = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
        handlers = self._install_signal_handlers()
        try:
            return self._fit(train_data)
        except Exception as err:
            if env.distributed:  # which rank failed; the entry point prints the error itself
                lines = str(err).strip().splitlines() or [""]
                print(f"[asa] rank {env.rank}/{env.world_size} failed: {type(err).__name__}: {lines[-1]}",
                      file=sys.stderr, flush=True)
            raise
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            torch.use_deterministic_algorithms(det[0], warn_only=det[1])  # leave the process as found
            if self.writer is not None:
                self.writer.close()
                self.writer = None

    def _fit(self, train_data: Dataset) -> FitResult:
        env, cfg = self.env, self.cfg
        set_threads(cfg.threads)
        self.model.to(env.device)
        if cfg.compile and not getattr(self, "_compiled", False):
            from asa.models import compile_blocks

            self._say(f"torch.compile: {compile_blocks(self.model)} blocks (compiled on first use)")
            self._compiled = True
        loader, sampler, seeded, generator = build_loader(
            train_data, batch_size=cfg.batch_size, rank=env.rank, world_size=env.world_size, seed=self.seed,
            num_workers=cfg.num_workers, collate_fn=self.collate_fn, pin_memory=env.device.type == "cuda",
        )
        micro_per_epoch = sampler.full_length() // cfg.batch_size
        self.steps_per_epoch = micro_per_epoch // cfg.accum_steps
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"training set too small: {len(train_data)} samples give {sampler.full_length()} per rank "  # type: ignore[arg-type]
                f"(world_size={env.world_size}), fewer than trainer.batch_size × trainer.accum_steps = "
                f"{cfg.batch_size * cfg.accum_steps}"
            )
        self.total_steps = cfg.epochs * self.steps_per_epoch
        self.warmup_steps = (cfg.warmup_steps if cfg.warmup_steps is not None
                             else round(cfg.warmup_epochs * self.steps_per_epoch))
        stop_step = self.total_steps if cfg.max_steps is None else min(cfg.max_steps, self.total_steps)

        resume_from = self._resume_path()
        if resume_from is not None:
            self._load(resume_from)
        else:
            seed_everything(self.seed + env.rank, deterministic=cfg.deterministic and env.device.type == "cpu")
        if cfg.deterministic and env.device.type == "cpu":
            torch.use_deterministic_algorithms(True, warn_only=True)

        net: nn.Module = self.model
        if env.distributed:
            net = DDP(self.model, device_ids=[env.device] if env.device.type == "cuda" else None,
                      find_unused_parameters=cfg.find_unused_parameters)
        if env.is_main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.out_dir / "tb"), purge_step=self.step if resume_from else None)

        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        samples_per_step = cfg.batch_size * cfg.accum_steps * env.world_size
        # a bar only on a terminal; under a scheduler (stderr to a file) or progress=false: plain lines
        self._use_bar = env.is_main and cfg.progress and sys.stderr.isatty()
        bar = tqdm(total=stop_step, initial=self.step, disable=not self._use_bar,
                   desc="train", dynamic_ncols=True, file=sys.stderr)
        self._stop_step, self._t_start, self._step_start = stop_step, time.perf_counter(), self.step
        window: dict[str, float] = {}
        window_steps, t0, stopped, preempted = 0, time.perf_counter(), False, False
        self._say(f"training: {self.steps_per_epoch} steps/epoch, schedule over {self.total_steps} steps "
                  f"(warm-up {self.warmup_steps}), stopping at step {stop_step}; global batch {samples_per_step}; "
                  f"device {env.device}, world size {env.world_size}, precision {amp_name(self.amp_dtype)} "
                  f"(trainer.amp={cfg.amp}), {torch.get_num_threads()} CPU threads")
        if stop_step < self.total_steps:
            end_lr = lr_at(stop_step - 1, total_steps=self.total_steps, warmup_steps=self.warmup_steps,
                           base_lr=self.lr, schedule=cfg.schedule, min_lr=cfg.min_lr, power=cfg.power)
            self._say(f"note: trainer.max_steps={cfg.max_steps} stops the run at step {stop_step} of a schedule "
                      f"that spans trainer.epochs={cfg.epochs} ({self.total_steps} steps): the lr there is still "
                      f"{end_lr:.3g}; lower trainer.epochs to shorten the schedule itself")
        frozen = max((g.get("freeze_epochs", 0) for g in self.optimizer.param_groups), default=0)
        if frozen:
            self._say(f"encoder frozen for the first {frozen} epoch(s) (optim.freeze_encoder_epochs)")
        self.model.train()
        while self.step < stop_step and not stopped:
            seeded.epoch = self.epoch
            sampler.set_position(self.epoch, self.batch_in_epoch * cfg.batch_size)
            generator.manual_seed(item_seed(self.seed, self.epoch, env.rank))
            batches = iter(loader)
            while self.batch_in_epoch < self.steps_per_epoch * cfg.accum_steps and self.step < stop_step:
                lr = self._set_lr()
                bad, loss_sum, logs_sum = 0, 0.0, {}
                for micro in range(cfg.accum_steps):
                    batch = move_to(next(batches), env.device)
                    self.batch_in_epoch += 1
                    sync = micro == cfg.accum_steps - 1
                    ctx = net.no_sync() if (env.distributed and not sync) else contextlib.nullcontext()
                    with ctx:
                        with self._autocast():
                            loss, logs = self.step_fn(net, batch)
                        finite = bool(torch.isfinite(loss.detach()).all())
                        bad |= int(not finite)
                        # backward even when non-finite: under DDP every rank must join the all-reduce
                        self.scaler.scale(loss / cfg.accum_steps).backward()
                    loss_sum += float(loss.detach()) / cfg.accum_steps if finite else 0.0
                    for k, v in logs.items():
                        logs_sum[k] = logs_sum.get(k, 0.0) + _scalar(v) / cfg.accum_steps
                bad, stop_signal = all_reduce_max_ints([bad, -1 if self._signal is None else self._signal], env)
                stop_signal = None if stop_signal < 0 else stop_signal
                if bad:
                    self.optimizer.zero_grad(set_to_none=True)
                    self.nonfinite_total += 1
                    self.nonfinite_run += 1
                    if self.nonfinite_run >= cfg.max_nonfinite:
                        last = self.ckpt_dir / "last.pt"
                        raise NonFiniteLossError(
                            f"{self.nonfinite_run} consecutive non-finite losses (NaN/inf) up to step {self.step}; "
                            f"stopping (trainer.max_nonfinite={cfg.max_nonfinite}). Last good checkpoint: "
                            f"{last if last.is_file() else 'none written yet'}. Lower the learning rate, enable "
                            f"trainer.clip_grad, or check the data."
                        )
                    self._say(f"warning: non-finite loss at step {self.step}: step skipped "
                              f"({self.nonfinite_run} in a row, {self.nonfinite_total} in total)")
                    grad_norm = float("nan")
                else:
                    self.nonfinite_run = 0
                    self._drop_frozen_grads()
                    self.scaler.unscale_(self.optimizer)
                    max_norm = cfg.clip_grad if cfg.clip_grad else float("inf")
                    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                    self.optimizer.zero_grad(set_to_none=True)
                self.step += 1
                window_steps += 1
                entry = {"train/loss": loss_sum, "train/lr": lr, **{f"train/{k}": v for k, v in logs_sum.items()}}
                if not bad:
                    entry["train/grad_norm"] = grad_norm
                for k, v in entry.items():
                    window[k] = window.get(k, 0.0) + v
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == stop_step:
                    self._log_window(window, window_steps, t0, samples_per_step, bar)
                    window, window_steps, t0 = {}, 0, time.perf_counter()
                healthy = self.nonfinite_run == 0  # never checkpoint in the middle of a non-finite streak
                if stop_signal is not None:
                    name = signal.Signals(stop_signal).name if stop_signal else "a stop signal on another rank"
                    self._say(f"received {name}: saving last.pt at step {self.step} and stopping")
                    preempted = True
                    break
                if cfg.ckpt_every and self.step % cfg.ckpt_every == 0 and self.step < stop_step and healthy:
                    names = ["last.pt"] + ([f"step_{self.step:08d}.pt"] if cfg.keep_last > 0 else [])
                    self.save(*names)
            if preempted:
                break
            if self.batch_in_epoch >= self.steps_per_epoch * cfg.accum_steps:  # epoch complete
                self.epoch += 1
                self.batch_in_epoch = 0
                if self.epoch % cfg.val_every == 0:
                    stopped = self._validate(count_patience=True)
                    self._last_val_step = self.step
                if cfg.panel_every and self.epoch % cfg.panel_every == 0:
                    self._panels()
                    self._last_panel_step = self.step
                if self.step < stop_step and not stopped and self.nonfinite_run == 0:
                    self.save("last.pt")
        bar.close()
        if preempted:
            self.save("last.pt")
            return self._result(stopped=False, preempted=True, signum=stop_signal)
        if self.validate is not None and getattr(self, "_last_val_step", None) != self.step:
            self._validate(count_patience=False)
        if cfg.panel_every and getattr(self, "_last_panel_step", None) != self.step:
            self._panels()  # a final panel, also for runs shorter than panel_every epochs
        self.save("last.pt")
        if env.is_main and self.writer is not None:
            self.writer.flush()
        self._say(f"done at step {self.step}: checkpoints in {self.ckpt_dir}, TensorBoard logs in {self.out_dir / 'tb'}")
        return self._result(stopped=stopped, preempted=False)

    def _result(self, *, stopped: bool, preempted: bool, signum: int | None = None) -> FitResult:
        return FitResult(step=self.step, epoch=self.epoch, best_metric=self.tracker.best,
                         best_step=self.tracker.best_step, stopped_early=stopped,
                         nonfinite_steps=self.nonfinite_total, history=list(self.history),
                         checkpoint_dir=self.ckpt_dir, preempted=preempted, signal=signum)

    def _log_window(self, window: dict, steps: int, t0: float, samples_per_step: int, bar) -> None:
        elapsed = max(time.perf_counter() - t0, 1e-9)
        means = {k: v / steps for k, v in window.items()}
        means = all_reduce_mean(means, self.env) if self.env.distributed else means
        means["train/samples_per_s"] = samples_per_step * steps / elapsed
        if self.env.device.type == "cuda":
            means["sys/cuda_max_mem_gb"] = torch.cuda.max_memory_allocated(self.env.device) / 2**30
        means["train/nonfinite_steps"] = float(self.nonfinite_total)
        self._write_scalars(means)
        loss, lr, sps = means.get("train/loss", float("nan")), means["train/lr"], means["train/samples_per_s"]
        if self._use_bar:
            bar.set_postfix(loss=f"{loss:.4g}", lr=f"{lr:.3g}", sps=f"{sps:.3g}", refresh=False)
            return
        done = self.step - self._step_start
        rate = done / max(time.perf_counter() - self._t_start, 1e-9)
        eta = (self._stop_step - self.step) / rate if rate > 0 else float("inf")
        eta_text = str(datetime.timedelta(seconds=round(eta))) if math.isfinite(eta) else "?"
        self._say(f"step {self.step}/{self._stop_step} epoch {self.epoch}: loss {loss:.4g}, lr {lr:.3g}, "
                  f"{sps:.3g} samples/s, ETA {eta_text}")


def fit(model: nn.Module, train_data: Dataset, optimizer: torch.optim.Optimizer, step_fn: StepFn, **kwargs) -> FitResult:
    """Functional form: `Engine(model, optimizer, step_fn, **kwargs).fit(train_data)`."""
    return Engine(model, optimizer, step_fn, **kwargs).fit(train_data)
