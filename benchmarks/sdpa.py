"""Which ``scaled_dot_product_attention`` kernel ran: the fused ones (flash, memory-efficient,
cuDNN) or the unfused math fallback, read off the ops that ``torch.profiler`` records.

The dispatcher picks a kernel per call from the inputs (device, dtype, head dim, mask, strides).
Flash attention takes no ``attn_mask``; the memory-efficient kernel (and cuDNN's, where enabled)
takes an additive float mask, which is how LW-MSA passes its relative-position bias and padding
mask. A call that none of the fused kernels accepts falls back to ``math``, which materialises the
B × heads × N × N scores.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import torch
from torch.profiler import ProfilerActivity, profile

__all__ = ["BACKENDS", "backend_of", "sdpa_backends"]

BACKENDS = ("flash", "efficient", "cudnn", "math", "other")
_OPS = {  # aten op (forward; backward ops end in _backward) -> backend
    "_scaled_dot_product_flash_attention": "flash",
    "_scaled_dot_product_flash_attention_for_cpu": "flash",
    "_scaled_dot_product_efficient_attention": "efficient",
    "_scaled_dot_product_cudnn_attention": "cudnn",
    "_scaled_dot_product_attention_math": "math",
    "_scaled_dot_product_attention_math_for_mps": "math",
    "_scaled_dot_product_fused_attention_overrideable": "other",
}


def backend_of(op_name: str) -> str | None:
    """The SDPA backend of a profiled op name (``aten::_scaled_dot_product_efficient_attention``,
    its ``_backward``), or None for any other op."""
    name = op_name.removeprefix("aten::")
    return _OPS.get(name.removesuffix("_backward"))


def sdpa_backends(fn: Callable[[], object]) -> dict[str, int]:
    """Run ``fn`` under the profiler; returns {backend: number of forward calls} of the SDPA kernels
    it used (backward ops are not counted again)."""
    activities = [ProfilerActivity.CPU]
    with profile(activities=activities) as prof:
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
    counts: Counter[str] = Counter()
    for event in prof.events():
        backend = backend_of(event.name)
        if backend is not None and not event.name.endswith("_backward"):
            counts[backend] += 1
    return dict(counts)
