"""Numeric precision and CPU threads: what ``amp`` and ``threads`` options resolve to on this machine."""

from __future__ import annotations

import functools
import warnings

import torch
from torch import nn

__all__ = ["AMP_CHOICES", "amp_name", "cpu_has_native_bf16", "guard_cpu_bf16_convolutions", "resolve_amp",
           "set_threads"]

AMP_CHOICES = ("auto", "fp16", "bf16", "off")
_CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # x86 instructions that compute bf16 dot products natively


@functools.lru_cache(maxsize=4)
def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True when this CPU multiplies bf16 natively (x86 ``avx512_bf16`` or ``amx_bf16`` in
    ``cpuinfo``'s flags, ARM ``bf16`` in its features) and torch's oneDNN backend is there to use
    it. Without them oneDNN emulates bf16 through fp32 and autocast only adds conversions."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        with open(cpuinfo) as f:
            flags = {word for line in f if line.lower().startswith(("flags", "features")) for word in line.split()}
    except OSError:
        return False
    return any(flag in flags for flag in _CPU_BF16_FLAGS) or "bf16" in flags


def resolve_amp(amp: str, device: torch.device, *, option: str = "trainer.amp") -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device`` (None = fp32).

    ``auto``: fp16 on CUDA (with a GradScaler when training), bf16 on a CPU with native bf16
    matmul, fp32 otherwise. ``fp16`` needs CUDA; ``bf16`` works on both, and warns on a CPU
    without native bf16 matmul, where it is emulated and slower than fp32.
    """
    if amp not in AMP_CHOICES:
        raise ValueError(f"{option}={amp!r}: expected one of {', '.join(AMP_CHOICES)}")
    if amp == "off":
        return None
    if amp == "bf16":
        if device.type == "cpu" and not cpu_has_native_bf16():
            warnings.warn(f"{option}=bf16 on a CPU without native bf16 matmul (its flags list none of "
                          f"{', '.join(_CPU_BF16_FLAGS)}, ARM bf16): bf16 is emulated through fp32 and usually runs "
                          f"slower than fp32; {option}=auto uses fp32 here", UserWarning, stacklevel=2)
        return torch.bfloat16
    if device.type == "cuda":
        return torch.float16
    if amp == "fp16":
        raise ValueError(f"{option}=fp16 needs a CUDA device (running on {device}); use bf16, off or auto")
    return torch.bfloat16 if cpu_has_native_bf16() else None


def amp_name(dtype: torch.dtype | None) -> str:
    """'fp32', 'bf16' or 'fp16' for log lines and result files."""
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def set_threads(threads: int | None, *, option: str = "trainer.threads") -> int:
    """Set torch's intra-op thread count (None: leave torch's choice); returns the count in use."""
    if threads is not None:
        if int(threads) < 1:
            raise ValueError(f"{option}={threads}: expected a positive thread count or null (torch's default)")
        torch.set_num_threads(int(threads))
    return torch.get_num_threads()


class _DepthGuardedConv3d(nn.Conv3d):
    """An ``nn.Conv3d`` that leaves CPU bf16 autocast for inputs shallower than its kernel's depth.

    On the CPU, oneDNN's bf16 weight gradient of a 3×3×3 convolution is wrong (non-deterministic,
    at times NaN) when the input's first spatial side is 2, as at the 2³ bottleneck of SwinUNETR on
    64³ crops or the decoder of a patch-16 segmenter on 32³ crops; the forward pass and the input
    gradient are right, and so is every other side tested (1, 3–16). Such inputs are tiny, so fp32
    costs nothing there."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and x.shape[2] < self.kernel_size[0] and torch.is_autocast_enabled("cpu"):
            with torch.autocast("cpu", enabled=False):
                return super().forward(x.float())
        return super().forward(x)


def guard_cpu_bf16_convolutions(model: nn.Module) -> int:
    """Make every plain ``nn.Conv3d`` of ``model`` a :class:`_DepthGuardedConv3d` (same parameters,
    buffers and state-dict keys) for training under CPU bf16 autocast; returns how many."""
    count = 0
    for module in model.modules():
        if type(module) is nn.Conv3d:
            module.__class__ = _DepthGuardedConv3d
            count += 1
    return count
