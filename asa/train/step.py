"""One optimiser step from ``accum_steps`` micro-batches: autocast forward, scaled backward, then
either the update (frozen groups dropped, unscale, clip, step) or, after a non-finite loss or
gradient, a skip."""
from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

from .precision import resolve_amp

__all__ = ["Accumulated", "OptimizerStep", "StepValues", "apply_steps"]

StepFn = Callable[[nn.Module, object], "tuple[torch.Tensor, Mapping[str, float | torch.Tensor]]"]


@dataclasses.dataclass(frozen=True)
class Accumulated:
    """What the micro-batches of one step gave, left on the device: nothing is read to the host yet."""

    losses: tuple[torch.Tensor, ...]  # each micro-batch's loss, detached
    logs: tuple[dict[str, float | torch.Tensor], ...]  # each micro-batch's logs, a tensor as its mean (`scalar`)


@dataclasses.dataclass(frozen=True)
class StepValues:
    """A step's values on the host, as the log takes them."""

    loss: float  # the mean of the micro-batches' losses, a non-finite one counted as 0
    logs: dict[str, float]  # the mean of each micro-batch log
    nonfinite: int  # 1 when a micro-batch's loss was NaN/inf on some rank (0 otherwise)
    grad_norm: float | None  # the gradient norm before clipping; None: the step was skipped (non-finite)


def read_values(accs: Sequence[tuple[Accumulated, int, torch.Tensor | None]]) -> list[StepValues]:
    """Each ``(acc, accum_steps, grad_norm)`` read to the host, all of them in one transfer; the means are summed on
    the host in the micro-batches' order, each value exactly as a float of its tensor, so the logged numbers are
    those of one read per value. ``nonfinite`` is this rank's."""
    parts, keys = [], []
    for acc, _, grad_norm in accs:
        tensors = [(m, k) for m, logs in enumerate(acc.logs) for k, v in logs.items() if isinstance(v, torch.Tensor)]
        parts += [*acc.losses, *(acc.logs[m][k] for m, k in tensors), *([] if grad_norm is None else [grad_norm])]
        keys.append(tensors)
    device = accs[0][0].losses[0].device
    read = iter(torch.stack([t.detach().to(device, torch.float64).reshape(()) for t in parts]).tolist())  # exact
    values = []
    for (acc, accum_steps, grad_norm), tensors in zip(accs, keys):
        losses = [next(read) for _ in acc.losses]
        fetched = {key: next(read) for key in tensors}
        loss_sum, logs_sum = 0.0, {}
        for loss in losses:
            loss_sum += loss / accum_steps if math.isfinite(loss) else 0.0
        for m, logs in enumerate(acc.logs):
            for k, v in logs.items():
                logs_sum[k] = logs_sum.get(k, 0.0) + (fetched[m, k] if (m, k) in fetched else float(v)) / accum_steps
        values.append(StepValues(loss_sum, logs_sum, int(not all(math.isfinite(v) for v in losses)),
                                 None if grad_norm is None else next(read)))
    return values


def apply_steps(updates: Sequence[tuple[OptimizerStep, int, Accumulated]], *,
                agree: Callable[[list[int]], list[int]] = list) -> list[StepValues]:
    """Each ``(step, epoch, acc)``'s update (`OptimizerStep.apply`), the device read once for all of them (twice
    where a GradScaler runs: the losses, then the norms of the updating units): units trained as one
    (`asa.train.fused`) wait for the device once a step, not once a unit. ``agree`` takes this rank's 0/1 of every
    unit and returns every rank's largest."""
    scaled = [step.scaler.is_enabled() for step, _, _ in updates]
    # the clip runs before the decision, on the device; a skipped step discards the clipped gradients. Under a
    # GradScaler the losses are read before the gradients are touched (`OptimizerStep.apply`)
    norms = [None if s else step._unscale_and_clip(epoch) for (step, epoch, _), s in zip(updates, scaled)]
    values = read_values([(acc, step.accum_steps, norm) for (step, _, acc), norm in zip(updates, norms)])
    bad = agree([v.nonfinite for v in values])
    late = [k for k, s in enumerate(scaled) if s and not bad[k]]  # a GradScaler's units that update: their norms
    if late:
        norms = torch.stack([updates[k][0]._unscale_and_clip(updates[k][1]).double() for k in late]).tolist()
        for k, norm in zip(late, norms):
            values[k] = dataclasses.replace(values[k], grad_norm=norm)
    taken = []
    for (step, _, _), v, nonfinite in zip(updates, values, bad):
        scaler = step.scaler
        if nonfinite or not (scaler.is_enabled() or math.isfinite(v.grad_norm)):
            step.skip()
            taken.append(StepValues(v.loss, v.logs, nonfinite, None))
            continue
        if scaler.is_enabled():  # it skips a step with a NaN/inf gradient itself, and lowers its scale
            scaler.step(step.optimizer)
            scaler.update()
        else:
            step.optimizer.step()
        step.optimizer.zero_grad(set_to_none=True)
        taken.append(v)
    return taken


class OptimizerStep:
    """Precision (autocast dtype and, for fp16 on CUDA, a GradScaler), accumulation and the update."""

    def __init__(self, optimizer: torch.optim.Optimizer, *, amp: str, device: torch.device, accum_steps: int,
                 clip_grad: float | None) -> None:
        self.optimizer, self.accum_steps, self.clip_grad = optimizer, int(accum_steps), clip_grad
        self.amp_dtype = resolve_amp(amp, device)
        self.device_type = device.type
        use_scaler = self.amp_dtype == torch.float16 and device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.amp_dtype)

    def set_lr(self, lr: float) -> None:
        """Every group at ``lr`` × its ``lr_scale`` (layer-wise decay, encoder lr factor)."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)

    def accumulate(self, net: nn.Module, step_fn: StepFn, batches: Iterable, *, distributed: bool) -> Accumulated:
        """Forward and backward over ``accum_steps`` micro-batches; under DDP only the last one all-reduces. No host
        sync: the losses and logs stay on the device until `apply` reads them.

        The backward runs even for a non-finite loss: under DDP every rank must join the all-reduce."""
        losses, logs_all = [], []
        for micro, batch in enumerate(batches):
            sync = micro == self.accum_steps - 1
            ctx = net.no_sync() if (distributed and not sync) else contextlib.nullcontext()
            with ctx:
                with self.autocast():
                    loss, logs = step_fn(net, batch)
                self.scaler.scale(loss / self.accum_steps).backward()
            losses.append(loss.detach())
            logs_all.append({k: v.detach().float().mean() if isinstance(v, torch.Tensor) else v
                             for k, v in logs.items()})
        return Accumulated(tuple(losses), tuple(logs_all))

    def apply(self, epoch: int, acc: Accumulated, *,
              agree: Callable[[list[int]], list[int]] = list) -> StepValues:
        """Update the weights from the accumulated gradients, or skip the step after a NaN/inf loss on any rank
        (``agree`` takes this rank's 0/1, in a list, and returns every rank's largest) or a NaN/inf gradient norm (a
        finite loss can still back-propagate to one; one such update would make every weight NaN). Returns the
        step's values, ``grad_norm`` None for a skipped step. Under DDP every rank holds the same all-reduced
        gradients, so all ranks take the same decision.

        The step reads the device once (`apply_steps`): the loss's and the norm's finiteness decide on the host
        whether the optimiser steps, and the loss, logs and norm come in the same transfer. The decision stays on
        the host because the skip is more than the update: the engine counts it, stops after
        ``trainer.max_nonfinite`` in a row and writes no checkpoint inside a streak, and a skipped first step of
        fused SGD would leave its momentum buffers uninitialised (``torch.empty_like``) if the kernel skipped it.

        The GradScaler of fp16 handles steps with a NaN/inf gradient itself (it skips them and lowers its scale);
        its ``unscale_`` may only run on a step that updates (its record resets in ``update``), so on that path the
        loss is read before the gradients are touched."""
        return apply_steps([(self, epoch, acc)], agree=agree)[0]

    def _unscale_and_clip(self, epoch: int) -> torch.Tensor:
        """Frozen groups' gradients dropped, the rest unscaled and clipped; returns their norm before clipping (on
        the device)."""
        self._drop_frozen_grads(epoch)
        self.scaler.unscale_(self.optimizer)
        max_norm = self.clip_grad if self.clip_grad else float("inf")
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        return torch.nn.utils.clip_grad_norm_(params, max_norm)

    def skip(self) -> None:
        """Discard the accumulated gradients (a non-finite step)."""
        self.optimizer.zero_grad(set_to_none=True)

    def _drop_frozen_grads(self, epoch: int) -> None:
        """Param groups with "freeze_epochs" = K (encoder freeze) get no update before epoch K: their
        gradients are dropped after the backward pass (all-reduced already under DDP), so neither
        the step, nor momentum, nor weight decay touches them and they stay bit-identical."""
        for group in self.optimizer.param_groups:
            if epoch < group.get("freeze_epochs", 0):
                for p in group["params"]:
                    p.grad = None
