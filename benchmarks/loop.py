"""Loop profile of ``asa-pretrain``: where the wall time of a training step goes, on any device.

It runs the real job (`asa.api.pretrain` from the Hydra config ``configs/pretrain``, the real loader
from a store or a BIDS folder, `asa.train.Engine` with its logging, checkpoint and validation cadence)
with timing wrappers around the engine's own calls, installed for the run only (nothing in asa
changes, nothing costs anything outside a profile). Each step's wall time, from the start of one
``Engine._train_step`` to the next, is split into exclusive parts:

- ``data``: waiting in the training loader's ``next()`` (and ``iter()`` at an epoch's start);
- ``copy``: ``move_to`` (host → device; synchronized on CUDA, so the asynchronous copy is counted here);
- ``augment``: the engine's ``on_device`` (augmentation on the device, ``data.augment_on=device``);
- ``step``: `OptimizerStep.accumulate` and ``apply`` (forward, backward, the update), data and copy
  inside them subtracted; synchronized on CUDA;
- ``update_norms``: `RelativeUpdate` (the encoder/decoder relative update, measured on logging steps);
- ``logging``: `TrainLog` (window means, progress line or bar, TensorBoard scalars);
- ``checkpoint``: ``Engine.save``; ``validation``: ``Engine._validate`` and ``_panels`` (everything inside; of it,
  ``validation_loader_ms_per_step`` is the validation loader's wait, the device waited for before it);
- ``other``: the rest (lr, the non-finite check, the loop itself).

With ``--noop`` the step consumes its micro-batches (data and copy happen) and does nothing else: no
forward, no backward, no update. Host syncs are counted per step and part: calls of ``Tensor.item``,
``__float__``, ``__int__``, ``__bool__``, ``tolist`` and ``cpu`` on tensors of the run's device (on a
CPU every tensor, the loader's own work excepted since it is in ``data``), and on CUDA also the
synchronizing operations ``torch.cuda.set_sync_debug_mode("warn")`` reports.

    python -m benchmarks.loop --make-data /tmp/loopdata --model tiny --crop 32 --batch 2 --workers 0 \\
        --steps 8 --warmup 2 --device cpu --out /tmp/loop.json [--noop]
    python -m benchmarks.loop --gpu-suite OUT      # the GPU rows: SW-ViT base 128³ and ResEnc-L 160³, real and no-op

Steps ``warmup`` .. ``warmup + steps - 1`` are timed; the run stops one step later (the last step's
interval ends where the next one starts, so the final validation and checkpoint stay out).

``--cohort CASES`` models a cohort of that size from the cases at hand (the split's parts repeated: an epoch's steps
and a validation round's volumes are that cohort's), times one validation round and one last.pt write in the middle
of the timed steps, and reports loop / step at the configured cadence (``trainer.val_every``, ``val_min_steps``,
``val_every_steps``, ``ckpt_every``) for that cohort, and with a round at every epoch's end, from the parts measured
(a real run at the cadence would need hundreds of steps for one round)::

    python -m benchmarks.loop --make-data /tmp/loopdata --cases 8 --volume 32 --model tiny --crop 32 --batch 2 \\
        --workers 0 --steps 4 --warmup 1 --device cpu --cohort 2000 --out /tmp/loop2000.json
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks.gpu_parts import run_command

__all__ = ["LoopProfile", "PARTS", "SYNC_CALLS", "Repeated", "cadence_model", "cohort_of", "format_table", "main",
           "make_data", "pretrain_overrides", "profile_pretrain", "validation_spacing"]

PARTS = ("data", "copy", "augment", "step", "update_norms", "logging", "checkpoint", "validation", "other")
SYNC_CALLS = ("item", "__float__", "__int__", "__bool__", "tolist", "cpu")  # Tensor methods that wait for the device
_ABSORBING = ("checkpoint", "validation")  # their inner calls (loaders, steps, saves) count as theirs
VALIDATION_LOADER = "validation_loader"  # of the validation part: its loader's wait (the rest is the forward passes)
_INHERITED = object()


class _TimedIterator:
    """A loader's iterator whose ``next()`` is timed as ``data``."""

    def __init__(self, inner: Iterator, profile: LoopProfile) -> None:
        self._inner, self._next = inner, profile.timed("data", inner.__next__)

    def __iter__(self) -> _TimedIterator:
        return self

    def __next__(self) -> Any:
        return self._next()


class LoopProfile:
    """Exclusive wall time per part and host syncs per part, per training step (`profile_pretrain`)."""

    def __init__(self, device: torch.device, *, noop: bool = False) -> None:
        self.device, self.noop = torch.device(device), noop
        self.starts: list[float] = []  # perf_counter at each Engine._train_step's start
        self.parts: list[dict[str, float]] = []  # exclusive seconds per part, one dict per step
        self.syncs: list[dict[str, int]] = []  # host syncs per "part:call", one dict per step
        self.loader: dict[str, Any] = {}
        self.copy: dict[str, Any] = {}
        self.cadence: dict[str, Any] = {}
        self._stack: list[list] = []  # [part, start, child seconds]
        self._absorbed = 0
        self._in_copy = False

    # --- recording ---------------------------------------------------------------------------------
    def _part(self) -> str:
        return self._stack[-1][0] if self._stack else "other"

    def _add(self, part: str, seconds: float) -> None:
        if self.parts:  # before the first step: start-up, not a step's
            self.parts[-1][part] = self.parts[-1].get(part, 0.0) + seconds

    def count_sync(self, call: str) -> None:
        if self.syncs:
            key = f"{self._part()}:{call}"
            self.syncs[-1][key] = self.syncs[-1].get(key, 0) + 1

    def synchronize(self) -> None:
        """Wait for the device (CUDA), so that a part's time holds its kernels; not a sync it counts."""
        if self.device.type == "cuda":
            mode = torch.cuda.get_sync_debug_mode()
            torch.cuda.set_sync_debug_mode(0)
            torch.cuda.synchronize(self.device)
            torch.cuda.set_sync_debug_mode(mode)

    def timed(self, part: str, fn: Callable, *, sync: bool = False) -> Callable:
        """``fn`` with its exclusive wall time added to ``part`` (within checkpoint/validation: theirs)."""

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if self._absorbed and part == "data" and self._part() == "validation":
                return self._validation_loader(fn, *args, **kwargs)
            if self._absorbed:
                return fn(*args, **kwargs)
            frame = [part, time.perf_counter(), 0.0]
            self._stack.append(frame)
            self._absorbed += part in _ABSORBING
            try:
                out = fn(*args, **kwargs)
                if sync:
                    self.synchronize()
                return out
            finally:
                self._absorbed -= part in _ABSORBING
                self._stack.pop()
                elapsed = time.perf_counter() - frame[1]
                self._add(part, elapsed - frame[2])
                if self._stack:
                    self._stack[-1][2] += elapsed

        return wrapper

    def _validation_loader(self, fn: Callable, *args, **kwargs) -> Any:
        """The validation loader's wait, inside the validation part (``VALIDATION_LOADER``): the device is waited
        for first, so that the round's forward passes so far are not counted in it."""
        self.synchronize()
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self._add(VALIDATION_LOADER, time.perf_counter() - start)

    def step_started(self) -> None:
        self.synchronize()
        self.starts.append(time.perf_counter())
        self.parts.append({})
        self.syncs.append({})

    # --- the hooks ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """The timing wrappers (and, with ``noop``, the empty step) on the engine's classes, for the block."""
        from asa.train import engine as engine_module
        from asa.train.precision import amp_name
        from asa.train.data import StopSafeLoader
        from asa.train.reporting import TrainLog
        from asa.train.step import Accumulated, OptimizerStep, StepValues
        from asa.train.updates import RelativeUpdate

        Engine = engine_module.Engine
        saved: list[tuple[Any, str, Any]] = []  # (owner, name, its own attribute or _INHERITED)

        def patch(owner: Any, name: str, value: Any) -> None:
            own = owner.__dict__ if isinstance(owner, type) else vars(owner)
            saved.append((owner, name, own.get(name, _INHERITED)))
            setattr(owner, name, value)

        real_train_step, real_iter = Engine._train_step, StopSafeLoader.__iter__
        real_build, real_move = engine_module.build_loader, engine_module.move_to
        profile = self

        def train_step(engine, run, batches):
            profile.step_started()
            if engine.on_device is not None and not getattr(engine.on_device, "_profiled", False):
                engine.on_device = profile.timed("augment", engine.on_device, sync=True)
                engine.on_device._profiled = True
            profile.cadence.update(steps_per_epoch=engine.steps_per_epoch, log_every=engine.cfg.log_every,
                                   ckpt_every=engine.cfg.ckpt_every, val_every=engine.cfg.val_every,
                                   val_every_steps=engine.cfg.val_every_steps, val_min_steps=engine.cfg.val_min_steps,
                                   panel_every=engine.cfg.panel_every, validation=engine.validate is not None,
                                   progress_bar=engine.log.use_bar, amp=engine.cfg.amp,
                                   precision=amp_name(engine.optim_step.amp_dtype),
                                   deterministic=engine.cfg.deterministic, compile=engine.cfg.compile)
            return real_train_step(engine, run, batches)

        def build_loader(*args, **kwargs):
            out = real_build(*args, **kwargs)
            loader = out[0]
            profile.loader = {"batch_size": loader.batch_size, "num_workers": loader.num_workers,
                              "pin_memory": loader.pin_memory, "persistent_workers": loader.persistent_workers,
                              "prefetch_factor": loader.prefetch_factor if loader.num_workers else None,
                              "requested_workers": kwargs.get("num_workers")}
            return out

        def move_to(batch, device):
            if not profile.copy:
                first = next(iter(batch.values())) if isinstance(batch, dict) else batch
                if isinstance(first, torch.Tensor):
                    profile.copy.update(dtype=str(first.dtype).removeprefix("torch."), shape=list(first.shape),
                                        pinned=bool(first.is_pinned()) if device.type == "cuda" else None)
            profile._in_copy = True
            try:
                return real_move(batch, device)
            finally:
                profile._in_copy = False

        real_to = torch.Tensor.to

        def tensor_to(tensor, *args, **kwargs):
            if profile._in_copy and "non_blocking" not in profile.copy:
                profile.copy["non_blocking"] = bool(kwargs.get("non_blocking", False))
            return real_to(tensor, *args, **kwargs)

        def noop_accumulate(self, net, step_fn, batches, *, distributed):
            for _ in batches:  # data and copy as in a real step
                pass
            return Accumulated((), ())

        def noop_apply(self, epoch, acc, *, agree=list):
            self.optimizer.zero_grad(set_to_none=True)
            return StepValues(0.0, {}, 0, 0.0)

        accumulate = noop_accumulate if self.noop else OptimizerStep.accumulate
        apply = noop_apply if self.noop else OptimizerStep.apply
        patch(Engine, "_train_step", train_step)
        patch(StopSafeLoader, "__iter__", lambda loader: _TimedIterator(profile.timed("data", real_iter)(loader),
                                                                        profile))
        patch(engine_module, "build_loader", build_loader)
        patch(engine_module, "move_to", self.timed("copy", move_to, sync=True))
        patch(torch.Tensor, "to", tensor_to)
        patch(OptimizerStep, "accumulate", self.timed("step", accumulate, sync=True))
        patch(OptimizerStep, "apply", self.timed("step", apply, sync=True))
        for name in ("before", "after"):
            patch(RelativeUpdate, name, self.timed("update_norms", getattr(RelativeUpdate, name)))
        for name in ("add_step", "take_window", "progress", "scalars"):
            patch(TrainLog, name, self.timed("logging", getattr(TrainLog, name)))
        patch(Engine, "save", self.timed("checkpoint", Engine.save))
        for name in ("_validate", "_panels"):
            patch(Engine, name, self.timed("validation", getattr(Engine, name)))
        for call in SYNC_CALLS:
            patch(torch.Tensor, call, self._counting(call, getattr(torch.Tensor, call)))
        try:
            with self._cuda_sync_warnings():
                yield
        finally:
            for owner, name, value in reversed(saved):
                if value is _INHERITED:
                    delattr(owner, name)  # e.g. torch.Tensor.item: torch's C base class holds it
                else:
                    setattr(owner, name, value)

    def _counting(self, call: str, fn: Callable) -> Callable:
        device_type, loop = self.device.type, threading.get_ident()  # the loop's thread (not the checkpoint writer's)

        @functools.wraps(fn)
        def wrapper(tensor, *args, **kwargs):
            if (threading.get_ident() == loop and tensor.device.type == device_type
                    and (device_type != "cpu" or self._part() != "data")):
                self.count_sync(call)
            return fn(tensor, *args, **kwargs)

        return wrapper

    @contextlib.contextmanager
    def _cuda_sync_warnings(self) -> Iterator[None]:
        """On CUDA, count the synchronizing operations the sync debug mode reports (as ``part:cuda``)."""
        if self.device.type != "cuda":
            yield
            return
        with warnings.catch_warnings():
            warnings.filterwarnings("always", message=".*synchroniz.*")
            shown = warnings.showwarning

            def showwarning(message, category, filename, lineno, file=None, line=None):
                if "synchroniz" in str(message):
                    self.count_sync("cuda")
                else:
                    shown(message, category, filename, lineno, file, line)

            warnings.showwarning = showwarning
            torch.cuda.set_sync_debug_mode("warn")
            try:
                yield
            finally:
                torch.cuda.set_sync_debug_mode(0)

    # --- the result --------------------------------------------------------------------------------
    def summary(self, *, warmup: int, samples_per_step: int) -> dict[str, Any]:
        """Figures over the timed steps: ``warmup`` .. the last but one started (each step's wall time
        runs to the next step's start)."""
        timed = range(warmup, len(self.starts) - 1)
        if len(timed) < 1:
            raise ValueError(f"{len(self.starts)} steps started: none to time after {warmup} warm-up step(s) "
                             "(the run stops one step after the timed ones)")
        walls = [self.starts[i + 1] - self.starts[i] for i in timed]
        wall = sum(walls)
        parts = {p: sum(self.parts[i].get(p, 0.0) for i in timed) for p in PARTS if p != "other"}
        parts["other"] = wall - sum(parts.values())
        syncs: dict[str, int] = {}
        for i in timed:
            for key, n in self.syncs[i].items():
                syncs[key] = syncs.get(key, 0) + n
        n = len(timed)
        by_part: dict[str, float] = {}
        hooked = cuda = 0
        for key, count in syncs.items():
            part, call = key.split(":")
            if call == "cuda":
                cuda += count
                continue
            hooked += count
            by_part[part] = by_part.get(part, 0) + count / n
        step_s = parts["step"] / n
        return {
            "timed_steps": n, "warmup_steps": warmup, "samples_per_step": samples_per_step, "wall_s": wall,
            "part_s": parts, "part_ms_per_step": {p: 1e3 * s / n for p, s in parts.items()},
            "part_fraction": {p: s / wall for p, s in parts.items()},
            "step_wall_ms": {"min": 1e3 * min(walls), "median": 1e3 * sorted(walls)[n // 2], "max": 1e3 * max(walls)},
            "samples_per_s": samples_per_step * n / wall,
            # the same steps without the epoch ends' validation and checkpoints (what a long epoch approaches)
            "samples_per_s_between_epoch_ends": samples_per_step * n / (wall - parts["validation"] - parts["checkpoint"]),
            "step_samples_per_s": samples_per_step / step_s if step_s > 0 and not self.noop else None,
            "host_syncs_per_step": hooked / n, "host_syncs_per_step_by_part": by_part,
            "host_syncs_by_call": {k: v / n for k, v in sorted(syncs.items()) if not k.endswith(":cuda")},
            "cuda_sync_debug_per_step": cuda / n if self.device.type == "cuda" else None,
            "validations": sum(1 for i in timed if self.parts[i].get("validation")),
            "validation_loader_ms_per_step": 1e3 * sum(self.parts[i].get(VALIDATION_LOADER, 0.0) for i in timed) / n,
            "checkpoints": sum(1 for i in timed if self.parts[i].get("checkpoint")),
            "loader": self.loader, "copy": self.copy, "cadence": self.cadence,
        }


# --- the run -------------------------------------------------------------------------------------
def pretrain_overrides(*, model: str, size: str | None, crop: int, batch: int, workers: int, device: str,
                       data: str | None, store: str | None, steps: int, out_dir: str | os.PathLike,
                       extra: Sequence[str] = ()) -> list[str]:
    """asa-pretrain's overrides for a profile run of ``steps`` steps (``data``: a BIDS folder, or None for
    the demo phantoms; ``store``: its store, written by asa-preprocess)."""
    overrides = [f"model={model}", f"data.crop={crop}", f"trainer.batch_size={batch}", f"data.num_workers={workers}",
                 f"trainer.max_steps={steps}", "trainer.epochs=1000", "probe.every=0", f"device={device}",
                 f"output_dir={out_dir}", "overwrite=true"]
    if size is not None:
        overrides.append(f"model.size={size}")
    if data is not None:
        overrides += ["data=bids", f"data.root={data}"]
    if store is not None:
        overrides.append(f"data.store={store}")
    return overrides + list(extra)


class Repeated(torch.utils.data.Dataset):
    """``dataset``'s items cycled to ``length`` items: a larger cohort's split modelled by the cases at hand."""

    def __init__(self, dataset: Any, length: int) -> None:
        self.dataset, self.length = dataset, int(length)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Any:
        return self.dataset[index % len(self.dataset)]


@contextlib.contextmanager
def cohort_of(cases: int) -> Iterator[None]:
    """asa-pretrain's datasets as a cohort of ``cases`` would give them, for the block: each part of the split
    (training, validation) repeated ``cases`` / (the cases at hand) times, so that an epoch has the steps and a
    validation round the volumes of that cohort (the split's ratios are the data preset's)."""
    from asa.api.machinery.pretraining import PretrainJob

    real = PretrainJob.datasets

    def datasets(job, run, splits):
        train, val = real(job, run, splits)
        scale = cases / sum(len(part) for part in splits.values())
        return (Repeated(train, max(1, round(len(train) * scale))),
                None if val is None else Repeated(val, max(1, round(len(val) * scale))))

    PretrainJob.datasets = datasets
    try:
        yield
    finally:
        PretrainJob.datasets = real


def validation_spacing(steps_per_epoch: int, trainer: Any) -> int:
    """Optimiser steps between validation rounds under ``trainer``'s cadence, once a run is past its first round:
    every ``val_every_steps``, or every ``val_every`` epochs' end at least ``val_min_steps`` after the last round."""
    if trainer.val_every_steps:
        return int(trainer.val_every_steps)
    period = int(trainer.val_every) * steps_per_epoch
    return period * max(1, -(-int(trainer.val_min_steps) // period))


def cadence_model(r: dict[str, Any], trainer: Any, cases: int) -> dict[str, Any]:
    """loop / step at ``trainer``'s cadence for the run's cohort of ``cases`` (`cohort_of`), from the parts measured:
    the steps between rounds and writes at their measured wall time, one round's and one last.pt write's measured
    seconds spread over their spacing (`validation_spacing`; last.pt every ``ckpt_every`` steps, or every epoch's
    end at 0); ``loop_over_step_every_epoch``: the same with a round at every epoch's end (no floor)."""
    n, parts = r["timed_steps"], r["part_s"]
    if not r["validations"] or not r["checkpoints"]:
        raise ValueError(f"{r['validations']} validation round(s) and {r['checkpoints']} last.pt write(s) timed: "
                         "the cohort model needs one of each in the timed steps")
    per_round, per_write = parts["validation"] / r["validations"], parts["checkpoint"] / r["checkpoints"]
    between = (r["wall_s"] - parts["validation"] - parts["checkpoint"]) / n  # s per step, neither in it
    step = parts["step"] / n
    epoch = r["cadence"]["steps_per_epoch"]
    every_val, every_ckpt = validation_spacing(epoch, trainer), int(trainer.ckpt_every) or epoch

    def loop_over_step(val_spacing: int) -> float:
        return step / (between + per_round / val_spacing + per_write / every_ckpt)

    return {"cases": cases, "steps_per_epoch": epoch, "validation_every_steps": every_val,
            "checkpoint_every_steps": every_ckpt, "validation_s_per_round": per_round,
            "checkpoint_s_per_write": per_write, "ms_per_step_between": 1e3 * between,
            "loop_over_step": loop_over_step(every_val),
            "loop_over_step_every_epoch": loop_over_step(int(trainer.val_every) * epoch),
            "share_lost": 1 - between / (between + per_round / every_val + per_write / every_ckpt)}


def profile_pretrain(overrides: Sequence[str], *, warmup: int, steps: int, noop: bool = False,
                     cohort: int | None = None) -> dict[str, Any]:
    """``asa-pretrain`` with ``overrides`` under a `LoopProfile`; its summary plus the run's settings. With
    ``cohort``, the run trains as on a cohort of that many cases (`cohort_of`) with one validation round and one
    last.pt write placed in the middle of the timed steps, and ``"cohort"`` holds loop / step at the configured
    cadence for that cohort (`cadence_model`)."""
    from asa.api import pretrain
    from asa.api.config import compose_config

    cfg = compose_config("pretrain", list(overrides))
    trainer = cfg.trainer
    if cohort is not None:  # the measurement's cadence; the configured one is modelled
        at = warmup + steps // 2
        cfg = compose_config("pretrain", [*overrides, "trainer.val_every=1", f"trainer.val_every_steps={at}",
                                          f"trainer.ckpt_every={at}"])
    device = torch.device(str(cfg.device) if str(cfg.device) != "auto" else
                          ("cuda" if torch.cuda.is_available() else "cpu"))
    profile = LoopProfile(device, noop=noop)
    begin = time.perf_counter()
    with profile.installed(), (cohort_of(cohort) if cohort is not None else contextlib.nullcontext()):
        result = pretrain(cfg)
    if result.step != warmup + steps + 1:
        raise RuntimeError(f"the run stopped at step {result.step}, expected {warmup + steps + 1} "
                           "(trainer.max_steps / early stopping)")
    world = int(os.environ.get("WORLD_SIZE", 1))
    out = profile.summary(warmup=warmup, samples_per_step=int(cfg.trainer.batch_size) * int(cfg.trainer.accum_steps)
                          * world)
    out.update(noop=noop, overrides=list(overrides), device=str(device), run_s=time.perf_counter() - begin,
               torch=torch.__version__)
    if cohort is not None:
        out["cohort"] = cadence_model(out, trainer, cohort)
    if device.type == "cuda":
        out["device_name"] = torch.cuda.get_device_name(device)
    return out


def format_table(r: dict[str, Any]) -> str:
    """The profile as a short text table."""
    loader, copy, cadence = r["loader"], r["copy"], r["cadence"]
    lines = [f"asa-pretrain loop profile ({'no-op step' if r['noop'] else 'real step'}), {r['device']}"
             f"{' ' + r['device_name'] if r.get('device_name') else ''}: {r['timed_steps']} steps after "
             f"{r['warmup_steps']}, {r['samples_per_step']} samples/step, precision {cadence.get('precision')}, "
             f"deterministic {cadence.get('deterministic')}",
             f"  {'part':<13}{'ms/step':>10}{'share':>8}{'syncs/step':>12}"]
    for p in PARTS:
        lines.append(f"  {p:<13}{r['part_ms_per_step'][p]:>10.2f}{100 * r['part_fraction'][p]:>7.1f}%"
                     f"{r['host_syncs_per_step_by_part'].get(p, 0):>12.2f}")
    lines.append(f"  {'total':<13}{1e3 * r['wall_s'] / r['timed_steps']:>10.2f}{100.0:>7.1f}%"
                 f"{r['host_syncs_per_step']:>12.2f}")
    step_rate = r["step_samples_per_s"]
    lines.append(f"  end to end {r['samples_per_s']:.3g} samples/s ({r['samples_per_s_between_epoch_ends']:.3g} without "
                 f"validation and checkpoints); the step alone "
                 f"{'n/a' if step_rate is None else f'{step_rate:.3g}'} samples/s; step wall ms min/median/max "
                 f"{r['step_wall_ms']['min']:.1f}/{r['step_wall_ms']['median']:.1f}/{r['step_wall_ms']['max']:.1f}")
    if r.get("cuda_sync_debug_per_step") is not None:
        lines.append(f"  CUDA sync debug mode: {r['cuda_sync_debug_per_step']:.2f} synchronizing operations/step")
    lines.append(f"  loader: {loader.get('num_workers')} workers (asked {loader.get('requested_workers')}), "
                 f"pin_memory {loader.get('pin_memory')}, persistent {loader.get('persistent_workers')}, "
                 f"prefetch_factor {loader.get('prefetch_factor')}; copy non_blocking {copy.get('non_blocking')}, "
                 f"batch {copy.get('dtype')} {copy.get('shape')}, pinned {copy.get('pinned')}")
    lines.append(f"  cadence: {cadence.get('steps_per_epoch')} steps/epoch, log every {cadence.get('log_every')}, "
                 f"checkpoint every {cadence.get('ckpt_every') or 'epoch'}{' steps' if cadence.get('ckpt_every') else ''}, "
                 f"validation every "
                 + (f"{cadence['val_every_steps']} steps" if cadence.get("val_every_steps") else
                    f"{cadence.get('val_every')} epoch(s)")
                 + f" (panels every {cadence.get('panel_every')} epochs, timed as validation); in the "
                 f"timed steps {r['validations']} validation(s), "
                 f"{r['checkpoints']} checkpoint(s); of the validation, its loader's wait "
                 f"{r['validation_loader_ms_per_step']:.2f} ms/step"
                 + (f", at most every {cadence['val_min_steps']} steps" if cadence.get("val_min_steps") else ""))
    if "cohort" in r:
        c = r["cohort"]
        lines.append(f"  cohort of {c['cases']} cases ({c['steps_per_epoch']} steps/epoch), modelled at the configured "
                     f"cadence (a validation round every {c['validation_every_steps']} steps, "
                     f"{c['validation_s_per_round']:.3g} s each; last.pt every {c['checkpoint_every_steps']} steps, "
                     f"{c['checkpoint_s_per_write']:.3g} s each; {c['ms_per_step_between']:.1f} ms/step between): "
                     f"loop / step {c['loop_over_step']:.3f} ({100 * c['share_lost']:.1f} % lost); with a round at "
                     f"every epoch's end {c['loop_over_step_every_epoch']:.3f}")
    return "\n".join(lines)


# --- data ----------------------------------------------------------------------------------------
def make_data(folder: str | os.PathLike, *, cases: int, size: int, workers: int = 0,
              log: Callable[[str], None] = print) -> dict[str, Any]:
    """``cases`` synthetic brains of ``size``³ in ``folder/bids-…`` (`benchmarks.loader.write_synthetic_bids`: the
    loader benchmark's, 0.2 s a 160³ volume where a demo phantom takes 5) and their store ``folder/store-…``
    (``asa-preprocess`` with ``workers`` processes; it keeps whole volumes, so it serves every crop up to
    ``size``); both reused when already there."""
    from asa.api import preprocess
    from asa.api.config import compose_config
    from benchmarks.loader import write_synthetic_bids

    folder = Path(folder)
    bids, store = folder / f"bids-n{cases}-s{size}", folder / f"store-n{cases}-s{size}"
    begin = time.perf_counter()
    if not (bids / ".complete").is_file():
        write_synthetic_bids(bids, cases, (size,) * 3)
        (bids / ".complete").write_text("")
    out: dict[str, Any] = {"bids": str(bids), "store": str(store), "cases": cases, "size": size,
                           "bids_s": time.perf_counter() - begin}
    log(f"{cases} synthetic brains of {size}³ in {bids} ({out['bids_s']:.1f} s)")
    begin = time.perf_counter()
    preprocess(compose_config("preprocess", ["data=bids", f"data.root={bids}", f"data.crop={size}",
                                             f"data.store={store}", f"workers={workers}", "progress=false"]))
    out["store_s"] = time.perf_counter() - begin
    log(f"their store in {store} ({out['store_s']:.1f} s)")
    return out


# --- the known costs alone ----------------------------------------------------------------------
def known_costs(folder: str | os.PathLike, *, model: str = "base", crop: int = 64, repeats: int = 3,
                device: str = "cpu") -> dict[str, Any]:
    """What the loop's known costs take by themselves, before and after their change, alternated repeat by repeat
    (wall and process CPU seconds, medians): a ``best.pt`` write of the whole training state (weights and AdamW's
    moments, as before, and last.pt's) against the weights-only one, and what the loop waits for when a thread
    writes either (the copy to the CPU: `asa.io.CheckpointWriter`), for the SW-ViT ``model`` preset's pretraining
    network; and the encoder/decoder relative update (a snapshot and the norms of every parameter,
    `RelativeUpdate`) of its segmenter, which was taken at every step and now only on logging steps
    (``trainer.log_every``). All on ``device`` (a GPU: the copies to the CPU are the device's).
    ``python_rate_while_writing``: the main thread's pure-Python rate while the thread writes last.pt, over its
    rate alone (what the write's hold on the interpreter's lock leaves a loop that launches GPU kernels; 1: none)."""
    import statistics

    from asa.io import CheckpointWriter, save_checkpoint
    from asa.models import PRESETS, build_network
    from asa.models.zoo import network_spec
    from asa.train.updates import RelativeUpdate

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    net = build_network({"arch": "asa_pretrain", "kwargs": {"img_size": crop, **PRESETS[model]}}).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    for p in net.parameters():
        p.grad = torch.randn_like(p)
    opt.step()  # AdamW's two moments exist, as after any step
    weights = {"model": net.state_dict(), "network": network_spec(net), "step": 1}
    full = {**weights, "optimizer": opt.state_dict()}
    seg = build_network({"arch": "swvit_unetr", "kwargs": {"img_size": crop, "out_channels": 2,
                                                          **{k: v for k, v in PRESETS[model].items()
                                                             if not k.startswith("decoder")}}}).to(device)
    monitor = RelativeUpdate.of(seg)

    def update() -> None:
        monitor.before()
        with torch.no_grad():
            for p in seg.parameters():
                p.add_(1e-4)
        monitor.after()

    writer = CheckpointWriter()
    runs = {"best_pt_full_state": lambda: save_checkpoint(folder / "full.pt", full),
            "best_pt_weights_only": lambda: save_checkpoint(folder / "weights.pt", weights),
            # what the loop waits for now: the copy to the CPU (the write goes on on a thread, waited for after)
            "best_pt_weights_only_background": lambda: writer.submit([folder / "background.pt"], weights),
            "last_pt_background": lambda: writer.submit([folder / "background.pt"], full),  # the whole state
            "relative_update": update}
    wall: dict[str, list[float]] = {k: [] for k in runs}
    cpu: dict[str, list[float]] = {k: [] for k in runs}
    for i in range(repeats + 1):  # the first round warms up
        for name, run in runs.items():
            w, c = time.perf_counter(), time.process_time()
            run()
            if i:
                wall[name].append(time.perf_counter() - w)
                cpu[name].append(time.process_time() - c)
            writer.wait()

    def python_rate(until: Callable[[], bool]) -> float:  # pure Python: it needs the interpreter's lock throughout
        n, start = 0, time.perf_counter()
        while not until():
            for _ in range(1000):
                n += 1
        return n / (time.perf_counter() - start)

    share = []  # the main thread's Python rate while the thread writes last.pt, over its rate alone
    for _ in range(repeats):
        end, written = time.perf_counter() + 0.5, threading.Event()
        alone = python_rate(lambda: time.perf_counter() >= end)
        writer.submit([folder / "background.pt"], full, then=written.set)
        share.append(python_rate(written.is_set) / alone)
        writer.wait()
    out = {"model": model, "parameters_M": round(sum(p.numel() for p in net.parameters()) / 1e6, 2),
           "segmenter_parameters_M": round(sum(p.numel() for p in seg.parameters()) / 1e6, 2),
           "bytes": {"best_pt_full_state": (folder / "full.pt").stat().st_size,
                     "best_pt_weights_only": (folder / "weights.pt").stat().st_size},
           "wall_s": {k: round(statistics.median(v), 4) for k, v in wall.items()},
           "cpu_s": {k: round(statistics.median(v), 4) for k, v in cpu.items()}, "repeats": repeats,
           "python_rate_while_writing": round(statistics.median(share), 3), "device": str(device),
           "torch": torch.__version__, "threads": torch.get_num_threads()}
    for name in ("full.pt", "weights.pt", "background.pt"):
        (folder / name).unlink(missing_ok=True)
    return out


# --- command line --------------------------------------------------------------------------------
# The GPU rows: (name, model, model.size, crop, timed steps); batch 8 and 8 loader workers each.
GPU_SUITE = (("swvit_base_128", "base", None, 128, 30), ("resenc_L_160", "resenc", "L", 160, 15))


def _write(result: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    out.with_suffix(".txt").write_text(format_table(result) + "\n")


def gpu_suite(out: Path, work: Path, *, cases: int, batch: int, workers: int, warmup: int, timeout_s: float,
              rows: Sequence[tuple] = GPU_SUITE, device: str = "cuda", extra: Sequence[str] = ()) -> int:
    """Data (in ``work``, with the runs' folders: gigabytes of volumes and checkpoints), then each row
    (``GPU_SUITE``) with the real and the no-op step, each run in a process of its own (stopped after
    ``timeout_s``); results in ``out/<row>[_noop].json`` and ``.txt``, all tables in ``out/summary.txt``,
    each run's output in ``out/<row>[_noop].log``."""
    out.mkdir(parents=True, exist_ok=True)
    made = make_data(work / "data", cases=cases, size=max(crop for *_, crop, _ in rows))
    (out / "data.json").write_text(json.dumps(made, indent=2))
    failed = 0
    tables = []
    for name, model, size, crop, steps in rows:
        for noop in (False, True):
            tag = f"{name}{'_noop' if noop else ''}"
            cmd = [sys.executable, "-m", "benchmarks.loop", "--model", model, "--crop", str(crop), "--batch",
                   str(batch), "--workers", str(workers), "--steps", str(steps), "--warmup", str(warmup),
                   "--data", made["bids"], "--store", made["store"], "--device", device,
                   "--run-dir", str(work / "runs" / tag), "--out", str(out / f"{tag}.json"),
                   *(["--size", size] if size else []), *(["--noop"] if noop else []), *extra]
            print("$ " + " ".join(cmd), flush=True)
            status, code, seconds = run_command(cmd, timeout_s=timeout_s, log_path=out / f"{tag}.log",
                                                cwd=Path(__file__).resolve().parents[1])
            if status != "ok":
                failed += 1
                tables.append(f"{tag}: {status} (exit code {code}) after {seconds:.0f} s, see {out / f'{tag}.log'}")
            else:
                tables.append((out / f"{tag}.txt").read_text())
            print(tables[-1], flush=True)
    (out / "summary.txt").write_text("\n".join(tables) + "\n")
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loop", description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpu-suite", type=Path, metavar="OUT",
                        help="data, then SW-ViT base 128³ and ResEnc-L 160³ (batch, workers below), real and no-op")
    parser.add_argument("--out", type=Path, help="the JSON to write (a .txt table beside it)")
    parser.add_argument("--make-data", type=Path, metavar="DIR", help="write synthetic brains and a store for --crop here")
    parser.add_argument("--cases", type=int, default=64, help="volumes --make-data writes (default 64)")
    parser.add_argument("--volume", type=int, default=160, help="volume edge of --make-data (default 160, at least --crop)")
    parser.add_argument("--data", help="a BIDS folder to train on (default: asa's demo phantoms)")
    parser.add_argument("--store", help="a store of --data written by asa-preprocess for --crop")
    parser.add_argument("--model", default="tiny", help="model=: tiny | small | base | resenc (default tiny)")
    parser.add_argument("--size", default=None, help="model.size= of model=resenc (S | M | L)")
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--workers", type=int, default=8, help="loader workers (and --make-data's store writers)")
    parser.add_argument("--steps", type=int, default=60, help="timed steps")
    parser.add_argument("--warmup", type=int, default=5, help="steps before the timed ones")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--noop", action="store_true", help="a no-op step: loader, copy, logging and cadence only")
    parser.add_argument("--cohort", type=int, metavar="CASES",
                        help="train as on a cohort of CASES cases (the split's parts repeated), time one validation "
                             "round and one last.pt write, and model loop / step at the configured cadence")
    parser.add_argument("--timeout", type=float, default=130, help="seconds each --gpu-suite run may take (default 130)")
    parser.add_argument("--work", type=Path, help="data and run folders of --gpu-suite (default: a temporary folder)")
    parser.add_argument("--run-dir", type=Path, help="the run's output_dir (default: a temporary folder)")
    parser.add_argument("--known-costs", type=Path, metavar="DIR",
                        help="time a best.pt write with and without AdamW's state, and one relative update, of "
                             "--model (a SW-ViT preset) at --crop, alone (files written in DIR, then removed)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of --known-costs")
    parser.add_argument("overrides", nargs="*", help="more asa-pretrain overrides (key=value), also of each --gpu-suite run")
    args = parser.parse_args(argv)
    if args.gpu_suite is not None:
        with contextlib.ExitStack() as stack:
            work = args.work or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="asa-loop-")))
            return gpu_suite(args.gpu_suite, work, cases=args.cases, batch=args.batch, workers=args.workers,
                             warmup=args.warmup, timeout_s=args.timeout, extra=args.overrides)
    if args.known_costs is not None:
        device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
        result = known_costs(args.known_costs, model=args.model, crop=args.crop, repeats=args.repeats, device=device)
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result, indent=2))
        print(json.dumps(result, indent=2))
        return 0
    if args.out is None:
        parser.error("--out FILE is required (or --gpu-suite OUT)")
    if args.make_data is not None:
        if args.data or args.store:
            parser.error("--make-data writes its own data: leave out --data and --store")
        if args.volume < args.crop:
            parser.error(f"--volume {args.volume} is smaller than --crop {args.crop}")
        made = make_data(args.make_data, cases=args.cases, size=args.volume, workers=args.workers)
        args.data, args.store = made["bids"], made["store"]
    with contextlib.ExitStack() as stack:
        run_dir = args.run_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="asa-loop-")))
        overrides = pretrain_overrides(model=args.model, size=args.size, crop=args.crop, batch=args.batch,
                                       workers=args.workers, device=args.device, data=args.data, store=args.store,
                                       steps=args.warmup + args.steps + 1, out_dir=run_dir, extra=args.overrides)
        result = profile_pretrain(overrides, warmup=args.warmup, steps=args.steps, noop=args.noop, cohort=args.cohort)
    _write(result, args.out)
    print(format_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
