"""One optimiser step from ``accum_steps`` micro-batches: autocast forward, scaled backward, then
either the update (frozen groups dropped, unscale, clip, step) or, after a non-finite loss or
gradient, a skip."""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from .precision import resolve_amp

__all__ = ["Accumulated", "OptimizerStep", "StepValues"]

StepFn = Callable[[nn.Module, object], "tuple[torch.Tensor, Mapping[str, float | torch.Tensor]]"]


@dataclass(frozen=True)
class Accumulated:
    """What the micro-batches of one step gave, left on the device: nothing is read to the host yet."""

    losses: tuple[torch.Tensor, ...]  # each micro-batch's loss, detached
    logs: tuple[dict[str, float | torch.Tensor], ...]  # each micro-batch's logs, a tensor as its mean (`scalar`)


@dataclass(frozen=True)
class StepValues:
    """A step's values on the host, as the log takes them."""

    loss: float  # the mean of the micro-batches' losses, a non-finite one counted as 0
    logs: dict[str, float]  # the mean of each micro-batch log
    nonfinite: int  # 1 when a micro-batch's loss was NaN/inf on some rank (0 otherwise)
    grad_norm: float | None  # the gradient norm before clipping; None: the step was skipped (non-finite)


def read_values(acc: Accumulated, accum_steps: int, grad_norm: torch.Tensor | None = None) -> StepValues:
    """``acc`` (and ``grad_norm``) read to the host in one transfer; the means are summed on the host in the
    micro-batches' order, each value exactly as a float of its tensor, so the logged numbers are those of one read
    per value. ``nonfinite`` is this rank's."""
    device = acc.losses[0].device
    tensors = [(m, k) for m, logs in enumerate(acc.logs) for k, v in logs.items() if isinstance(v, torch.Tensor)]
    parts = [*acc.losses, *(acc.logs[m][k] for m, k in tensors), *([] if grad_norm is None else [grad_norm])]
    read = torch.stack([t.detach().to(device, torch.float64).reshape(()) for t in parts]).tolist()  # exact: ≤ 64 bits
    losses, rest = read[:len(acc.losses)], read[len(acc.losses):]
    fetched = dict(zip(tensors, rest))
    loss_sum, logs_sum = 0.0, {}
    for loss in losses:
        loss_sum += loss / accum_steps if math.isfinite(loss) else 0.0
    for m, logs in enumerate(acc.logs):
        for k, v in logs.items():
            logs_sum[k] = logs_sum.get(k, 0.0) + (fetched[m, k] if (m, k) in fetched else float(v)) / accum_steps
    return StepValues(loss_sum, logs_sum, int(not all(math.isfinite(v) for v in losses)),
                      None if grad_norm is None else rest[-1])


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

    def apply(self, epoch: int, acc: Accumulated, *, agree: Callable[[int], int] = int) -> StepValues:
        """Update the weights from the accumulated gradients, or skip the step after a NaN/inf loss on any rank
        (``agree`` takes this rank's 0/1 and returns every rank's largest) or a NaN/inf gradient norm (a finite loss
        can still back-propagate to one; one such update would make every weight NaN). Returns the step's values,
        ``grad_norm`` None for a skipped step. Under DDP every rank holds the same all-reduced gradients, so all
        ranks take the same decision.

        The step reads the device once (`read_values`): the loss's and the norm's finiteness decide on the host
        whether the optimiser steps, and the loss, logs and norm come in the same transfer. The decision stays on
        the host because the skip is more than the update: the engine counts it, stops after
        ``trainer.max_nonfinite`` in a row and writes no checkpoint inside a streak, and a skipped first step of
        fused SGD would leave its momentum buffers uninitialised (``torch.empty_like``) if the kernel skipped it.

        The GradScaler of fp16 handles steps with a NaN/inf gradient itself (it skips them and lowers its scale);
        its ``unscale_`` may only run on a step that updates (its record resets in ``update``), so on that path the
        loss is read before the gradients are touched."""
        if self.scaler.is_enabled():
            values = read_values(acc, self.accum_steps)
            nonfinite = agree(values.nonfinite)
            if nonfinite:
                self.skip()
                return StepValues(values.loss, values.logs, nonfinite, None)
            grad_norm = float(self._unscale_and_clip(epoch))
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            return StepValues(values.loss, values.logs, 0, grad_norm)
        # the clip runs before the decision, on the device; a skipped step discards the clipped gradients
        values = read_values(acc, self.accum_steps, self._unscale_and_clip(epoch))
        nonfinite = agree(values.nonfinite)
        if nonfinite or not math.isfinite(values.grad_norm):
            self.skip()
            return StepValues(values.loss, values.logs, nonfinite, None)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return values

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
