"""Timing harness: workloads timed alternately round by round (so that a change of machine load hits
every compared workload alike), their peak memory (CPU: RSS, CUDA: allocated) and FLOPs."""

from __future__ import annotations

import ctypes
import gc
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

MIB = 2**20
# dense fp16 / bf16 tensor-core FLOP/s of the vendors' datasheets (no sparsity), first match of the device
# name wins; a CPU or an unlisted device has none
DATASHEET_PEAKS = (("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("A100", 312e12), ("V100", 125e12))


def datasheet_peak(device: torch.device, dtype: torch.dtype | None) -> float | None:
    """The datasheet's dense FLOP/s of ``device`` at reduced precision ``dtype`` (fp16 / bf16; V100: fp16
    only), or None (fp32, a CPU, an unlisted GPU): the denominator of the conventional MFU."""
    if device.type != "cuda" or dtype not in (torch.float16, torch.bfloat16):
        return None
    name = torch.cuda.get_device_name(device)
    for key, peak in DATASHEET_PEAKS:
        if key in name:
            return None if key == "V100" and dtype == torch.bfloat16 else peak
    return None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def backward_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: Any = None) -> None:
    """One training update from ``loss``: backward and ``optimizer.step()``, through the fp16 grad
    ``scaler`` when there is one (gradients are left for the caller to clear)."""
    if scaler is None:
        loss.backward()
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()


class PeakMemory:
    """Rise of memory over a block: on CUDA the peak allocated bytes, on CPU the process's peak
    RSS (``VmHWM``, reset through ``/proc/self/clear_refs``) over the RSS on entry. Freed heap is
    handed back to the OS first (``malloc_trim``) so that reuse of it is not missed."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.rise = 0
        self._libc = None
        if device.type == "cpu":
            try:
                self._libc = ctypes.CDLL("libc.so.6")
            except OSError:
                pass

    @staticmethod
    def _status_bytes(field_name: str) -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) * 1024
        raise OSError(f"/proc/self/status has no {field_name}")

    def __enter__(self) -> PeakMemory:  # noqa: PYI034
        sync(self.device)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
            return self
        if self._libc is not None:
            self._libc.malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as f:  # "5": reset the peak RSS to the current RSS
            f.write("5")
        self._start = self._status_bytes("VmRSS")
        return self

    def __exit__(self, *exc: object) -> None:
        sync(self.device)
        if self.device.type == "cuda":
            self.rise = torch.cuda.max_memory_allocated(self.device) - self._start
        else:
            self.rise = self._status_bytes("VmHWM") - self._start


def tensor_bytes(tensors: Any) -> int:
    """Bytes held by the tensors in (nested) dicts/lists/tuples or a module's parameters."""
    if isinstance(tensors, nn.Module):
        return sum(p.numel() * p.element_size() for p in tensors.parameters())
    if isinstance(tensors, torch.Tensor):
        return tensors.numel() * tensors.element_size()
    if isinstance(tensors, dict):
        return sum(tensor_bytes(v) for v in tensors.values())
    if isinstance(tensors, (list, tuple)):
        return sum(tensor_bytes(v) for v in tensors)
    return 0


@dataclass
class Workload:
    """One thing to time: ``run()`` does a full step; ``static()`` is the memory it holds between steps."""

    name: str
    run: Callable[[], None]
    static: Callable[[], int] = lambda: 0
    times: list[float] = field(default_factory=list)
    peak_rise: int = 0
    flops: int = 0

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def peak_mib(self) -> float:
        return (self.static() + self.peak_rise) / MIB


def _cpu_flash_flops() -> dict[Any, Callable[..., int]]:
    """FlopCounterMode has no formula for the fused CPU SDPA kernel; count it like the CUDA ones."""
    fwd = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    bwd = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)
    if fwd is None or bwd is None:
        return {}

    def flops(q, k, v, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(q, k, v)

    def backward_flops(grad_out, q, k, v, *args, out_shape=None, **kwargs) -> int:
        return sdpa_backward_flop_count(grad_out, q, k, v)

    return {fwd: flops, bwd: backward_flops}


def alternate(workloads: Sequence[Workload], device: torch.device, *, warmup: int, steps: int,
              count_flops: Sequence[str] = ()) -> None:
    """Warm up, then time ``steps`` rounds running each workload once per round, in turn.

    The first warm-up run of the workloads named in ``count_flops`` happens under
    ``FlopCounterMode`` (one such run is made even with ``warmup=0``). Peak memory is taken over
    the timed runs.
    """
    for w in workloads:
        for i in range(max(warmup, 1 if w.name in count_flops else 0)):
            if i == 0 and w.name in count_flops:
                with FlopCounterMode(display=False, custom_mapping=_cpu_flash_flops()) as counter:
                    w.run()
                w.flops = counter.get_total_flops()
            else:
                w.run()
    for _ in range(steps):
        for w in workloads:
            with PeakMemory(device) as mem:
                start = time.perf_counter()
                w.run()
                sync(device)
                w.times.append(time.perf_counter() - start)
            w.peak_rise = max(w.peak_rise, mem.rise)


def matmul_workload(device: torch.device, n: int, dtype: torch.dtype | None = None) -> Workload:
    """A dense n×n matmul in the run's precision: the machine's attainable FLOP/s."""
    dtype = dtype or torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    w = Workload("matmul", lambda: torch.mm(a, b))
    w.flops = 2 * n**3
    return w


def release_memory(device: torch.device) -> None:
    """Give freed tensors back: collect garbage and, on CUDA, empty the allocator's cache."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def fits(workload: Workload, device: torch.device, *, probe: bool | None = None) -> bool:
    """Whether one step of ``workload`` fits in memory: the step runs (so it also warms up), and
    running out of GPU memory returns False with the memory released. ``probe`` (default: on CUDA
    only) runs the step at all; without it there is no out-of-memory error to catch and the answer is True."""
    if not (device.type == "cuda" if probe is None else probe):
        return True
    try:
        workload.run()
        sync(device)
        return True
    except torch.OutOfMemoryError:
        pass  # outside the handler the traceback, and the step's tensors it holds, are gone
    release_memory(device)
    return False


def halvings(batch: int) -> list[int]:
    """``batch``, ``batch // 2``, ... down to 1: the batches tried for an out-of-memory point."""
    out = [int(batch)]
    while out[-1] > 1:
        out.append(out[-1] // 2)
    return out


def largest_fitting(build: Callable[[int], Workload], batch: int, device: torch.device, *,
                    probe: bool | None = None) -> tuple[Workload | None, int | None, int | None]:
    """The workload ``build(b)`` at the largest ``b`` of `halvings` (``batch``) whose step fits
    (`fits`): (workload, b, the smallest batch that did not fit or None). (None, None, 1) when not
    even one sample fits."""
    too_big = None
    for b in halvings(batch):
        workload = build(b)
        if fits(workload, device, probe=probe):
            return workload, b, too_big
        too_big = b
        del workload
        release_memory(device)
    return None, None, too_big
