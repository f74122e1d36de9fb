"""Units trained as one: K runs of one network architecture on the same batches, each its own weights and state.

`Stacked` runs the K networks' forward and backward as one: their parameters stacked on a leading axis and the
step one `torch.vmap` over the stack (each convolution one grouped convolution, HFTA, MLSys 2021), the batch
shared. `FusedEngine` is the loop of one of the runs (its loader, epochs, cadences and stop signals) driving the
others, its ``peers``, in lockstep: every unit keeps its own lr schedule, clipping, non-finite skip, optimiser
state, step count, validation history and checkpoints, as `Engine` keeps them. A validation that validates units
as one (`UnitsValidator`: the segmentation's Dice) reads, cuts and blends each case once for all of them, their
networks one vmapped forward (`Units`). Its numbers agree with a unit trained alone to float rounding (grouped
against dense kernels), not bit for bit.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Protocol, runtime_checkable

import torch
from torch import nn
from torch.func import functional_call

from asa.models.units import Units, functional_copy, stack

from .engine import Engine, FitResult, _Run
from .preemption import StopRequested
from .step import Accumulated, OptimizerStep, StepFn, apply_steps

__all__ = ["FusedEngine", "Stacked", "UnitsValidator"]


class _Stepper(nn.Module):
    """``step_fn(net, batch)`` as a module, so that `functional_call` swaps in one unit's parameters."""

    def __init__(self, net: nn.Module, step_fn: StepFn) -> None:
        super().__init__()
        self.net, self.step_fn = net, step_fn

    def forward(self, batch: Mapping) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss, logs = self.step_fn(self.net, batch)
        if odd := [k for k, v in logs.items() if not isinstance(v, torch.Tensor)]:
            raise TypeError(f"the training step's logs {odd} are not tensors: a fused step returns tensors alone")
        return loss, dict(logs)


@runtime_checkable
class UnitsValidator(Protocol):
    """A validation that can validate K units as one: ``of_units(model, K)`` -> each unit's metrics, in order,
    ``model``'s output the K units' outputs side by side on the channel axis (`Units`)."""

    def of_units(self, model: nn.Module, units: int) -> list[Mapping[str, float]]: ...


class Stacked:
    """The forward and backward of ``models`` (one architecture) as one vmapped step on a shared batch
    (`asa.models.units`); their forward alone as one network (`units`)."""

    def __init__(self, models: Sequence[nn.Module], step_fn: StepFn) -> None:
        self.models = list(models)
        self.stepper = _Stepper(functional_copy(self.models), step_fn)

    def units(self) -> Units:
        """The units as one network for inference (`asa.models.units.Units`), with their weights as they are now."""
        return Units(self.stepper.net, stack(self.models)[1], len(self.models))

    def accumulate(self, optim_steps: Sequence[OptimizerStep], batches: Iterable) -> list[Accumulated]:
        """Forward and backward over the step's micro-batches for every unit (``optim_steps``: each unit's, in the
        order of ``models``; they share their precision); each unit's gradients land in its own parameters' ``.grad``
        (views of the stacked gradient), its losses and logs in its `Accumulated`. The loss backpropagated is the
        units' sum, each unit's loss times its own GradScaler's scale (fp16 on CUDA; 1 otherwise, exactly): unit k's
        gradient is its own scaled loss's alone, and its scaler unscales and checks it as it would alone."""
        params, tensors = stack(self.models)
        named = {f"net.{name}": t for name, t in tensors.items()}  # the stepper's
        scales: torch.Tensor | None = None

        def one(tensors: dict, batch: Mapping) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            return functional_call(self.stepper, tensors, (batch,))

        # randomness "same": every unit draws the numbers it would draw alone (they share the seed)
        fused = torch.vmap(one, in_dims=(0, None), randomness="same")
        losses, logs = [], []
        for batch in batches:
            with optim_steps[0].autocast():
                loss, log = fused(named, batch)  # loss: [K]
            if scales is None:
                one = torch.ones((), device=loss.device)
                scales = torch.stack([s.scaler.scale(one) for s in optim_steps]).float()
            ((loss.float() * scales).sum() / optim_steps[0].accum_steps).backward()
            losses.append(loss.detach().unbind())
            logs.append({k: v.detach().float().reshape(len(self.models), -1).mean(1).unbind() for k, v in log.items()})
        # each unit's views of the stacked tensors: one unbind of each, not a select per unit (the ops a step
        # dispatches bound it on a GPU: benchmarks.fusion_host)
        grads = {name: (None,) * len(self.models) if p.grad is None else p.grad.unbind() for name, p in params.items()}
        for k, model in enumerate(self.models):
            for name, p in model.named_parameters():
                p.grad = grads[name][k]
        return [Accumulated(tuple(loss[k] for loss in losses),
                            tuple({name: v[k] for name, v in log.items()} for log in logs))
                for k in range(len(self.models))]


class FusedEngine(Engine):
    """An `Engine` whose loop trains ``peers`` with it, as one (`Stacked`): its loader's batches are theirs.

    Every unit shares this engine's settings (`TrainConfig`), seed and training set; each keeps its own lr,
    schedule, optimiser, counters, validation history and run folder. They share their validation too: with a
    `UnitsValidator` this unit's validates them as one (`Units`), else each unit's validates it, one after another;
    each unit's round is then logged and followed (best.pt) as its own. Early stopping is refused: a unit stopping
    alone would leave the group."""

    def __init__(self, *args, peers: Sequence[Engine], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.peers = list(peers)
        for peer in self.peers:
            if dataclasses.replace(peer.cfg, min_lr=self.cfg.min_lr) != self.cfg:  # each its own schedule's floor
                raise ValueError(f"{peer.out_dir}: its trainer settings differ from {self.out_dir}'s: fused units "
                                 "share every trainer setting")
            if peer.seed != self.seed:
                raise ValueError(f"{peer.out_dir}: seed {peer.seed}, {self.out_dir}: seed {self.seed}: fused units "
                                 "share their seed")
        if self.cfg.patience is not None:
            raise ValueError(f"trainer.patience={self.cfg.patience}: fused units cannot stop early one by one "
                             "(expected trainer.patience=null)")
        if self.env.distributed or self.cfg.compile:
            raise ValueError("fused units train in one process, uncompiled (expected one process and "
                             "trainer.compile=false)")
        self.units = [self, *self.peers]
        self.stacked = Stacked([u.model for u in self.units], self.step_fn)

    def fit(self, train_data) -> FitResult:
        """This unit's FitResult (`results`: every unit's); every unit's writes are on disk when it returns."""
        try:
            return super().fit(train_data)
        finally:
            for peer in self.peers:
                peer._writer.close()
                peer.log.close()

    def results(self, result: FitResult) -> list[FitResult]:
        """Every unit's FitResult after `fit` returned ``result`` (this unit's), in the order of `units`."""
        return [result, *(p._result(stopped=result.stopped_early, preempted=result.preempted, signum=result.signal)
                          for p in self.peers)]

    def _prepare(self, train_data) -> _Run:
        run = super()._prepare(train_data)
        for peer in self.peers:
            peer.model.to(self.env.device)
            peer.steps_per_epoch, peer.total_steps = self.steps_per_epoch, self.total_steps
            peer.warmup_steps = self.warmup_steps
        return run

    def _start(self, run: _Run) -> None:
        """Each peer resumed (or seeded) and its log opened, then this unit: the RNG state is this unit's (the
        units share their seed and draw alike). A group resumes together: every unit at one step."""
        for peer in self.peers:
            Engine._start(peer, run)
        super()._start(run)  # last: the loop's network is this unit's
        if odd := [str(p.out_dir) for p in self.peers
                   if (p.step, p.epoch, p.batch_in_epoch) != (self.step, self.epoch, self.batch_in_epoch)]:
            raise ValueError(f"{', '.join(odd)}: resumed at another step than {self.out_dir} (step {self.step}): "
                             "fused units resume together; resume these runs one by one")

    def _train_step(self, run: _Run, batches: Iterator) -> None:
        """Every unit's step: the forward and backward as one, then each unit's update, the device read once for all
        of them (`apply_steps`), then each unit's step counted and logged."""
        lrs = [unit._set_lr() for unit in self.units]
        accs = self.stacked.accumulate([unit.optim_step for unit in self.units], self._micro_batches(batches))
        measures = [unit._before_update(run) for unit in self.units]
        values = apply_steps([(unit.optim_step, unit.epoch, acc) for unit, acc in zip(self.units, accs)])
        for unit, taken, lr, measure in zip(self.units, values, lrs, measures):
            unit.batch_in_epoch = self.batch_in_epoch
            unit._count_step(run, taken, lr, measure=measure)

    def _validate(self, *, count_patience: bool) -> bool:
        if not isinstance(self.validate, UnitsValidator):
            for unit in self.units:
                Engine._validate(unit, count_patience=count_patience)
            return False  # trainer.patience is null (refused otherwise)
        rounds = self._validation_round(self.stacked.units(), lambda units: self.validate.of_units(units, units.count))
        for unit, raw in zip(self.units, rounds):
            unit._record_round(raw, count_patience=count_patience)
        return False

    def _end_epoch(self, run: _Run) -> bool:
        for peer in self.peers:
            peer.epoch, peer.batch_in_epoch = self.epoch + 1, 0
        try:
            return super()._end_epoch(run)
        except StopRequested:  # the epoch's end undone, as this unit's (`Engine._end_epoch`)
            for peer in self.peers:
                peer.epoch, peer.batch_in_epoch = self.epoch, self.batch_in_epoch
            raise

    def _panels(self) -> None:
        for unit in self.units:
            Engine._panels(unit)

    def _save_last(self, *step_files: str, wait: bool = True) -> None:
        """Every unit's last.pt, at one step: a group resumes together, so at the cadence (``wait=False``) no unit's
        inside any unit's non-finite streak, each unit's kept steps' files still (`Engine._save_kept`)."""
        streak = not wait and any(unit.nonfinite_run for unit in self.units)
        for unit in self.units:
            if streak:
                Engine._save_kept(unit, step_files)
            else:
                Engine._save_last(unit, *step_files, wait=wait)

    def _stopping(self, stop_signal: int, during: str = "") -> int:
        for peer in self.peers:
            peer._stopping(stop_signal, during)
        return super()._stopping(stop_signal, during)
