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
from .reporting import scalar

__all__ = ["Accumulated", "OptimizerStep"]

StepFn = Callable[[nn.Module, object], "tuple[torch.Tensor, Mapping[str, float | torch.Tensor]]"]


@dataclass
class Accumulated:
    """What the micro-batches of one step gave: the mean finite loss, the mean logs, and whether any loss was non-finite."""

    loss: float
    logs: dict[str, float]
    nonfinite: int  # 1 when a micro-batch's loss was NaN/inf (0 otherwise)


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
        """Forward and backward over ``accum_steps`` micro-batches; under DDP only the last one all-reduces.

        The backward runs even for a non-finite loss: under DDP every rank must join the all-reduce."""
        bad, loss_sum, logs_sum = 0, 0.0, {}
        for micro, batch in enumerate(batches):
            sync = micro == self.accum_steps - 1
            ctx = net.no_sync() if (distributed and not sync) else contextlib.nullcontext()
            with ctx:
                with self.autocast():
                    loss, logs = step_fn(net, batch)
                finite = bool(torch.isfinite(loss.detach()).all())
                bad |= int(not finite)
                self.scaler.scale(loss / self.accum_steps).backward()
            loss_sum += float(loss.detach()) / self.accum_steps if finite else 0.0
            for k, v in logs.items():
                logs_sum[k] = logs_sum.get(k, 0.0) + scalar(v) / self.accum_steps
        return Accumulated(loss_sum, logs_sum, bad)

    def apply(self, epoch: int) -> float | None:
        """Update the weights from the accumulated gradients; returns the gradient norm before clipping,
        or None when that norm is NaN/inf (a finite loss can still back-propagate to one): the step is
        then skipped, since one such update would make every weight NaN. The GradScaler of fp16 handles
        those steps itself (it skips them and lowers its scale). Under DDP every rank holds the same
        all-reduced gradients, so all ranks take the same decision."""
        self._drop_frozen_grads(epoch)
        self.scaler.unscale_(self.optimizer)
        max_norm = self.clip_grad if self.clip_grad else float("inf")
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
        if not math.isfinite(grad_norm) and not self.scaler.is_enabled():
            self.skip()
            return None
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm

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
