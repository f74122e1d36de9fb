"""torchvision imported where its C library does not load: timm (dynamic-network-architectures' Primus imports it)
imports torchvision, and a torchvision built for another torch (the pinned 0.28.0 is CUDA torch 2.13's pair, not
``torch==2.13.0+cpu``'s) raises registering fake kernels of C ops that are not there (``operator torchvision::nms does
not exist``). `import_torchvision` skips those, so that the Python parts, all timm reads, import. It can go when timm
no longer imports torchvision, or when ``python -c "import torchvision"`` passes beside the torch the tests pin."""

from __future__ import annotations

import functools
from typing import Any

import torch

__all__ = ["import_torchvision"]


@functools.cache
def import_torchvision() -> None:
    """Import torchvision, its fake kernels of C ops that did not load skipped (see the module); an import that still
    fails is left to timm's own import to report."""
    real = torch.library.register_fake

    def lenient(op: Any, func: Any = None, /, **kwargs: Any) -> Any:
        def apply(fn: Any) -> Any:
            try:
                return real(op, fn, **kwargs)
            except RuntimeError:  # the op is not there: torchvision's C library did not load
                return fn
        return apply if func is None else apply(func)

    torch.library.register_fake = lenient
    try:
        import torchvision  # noqa: F401
    except (ImportError, RuntimeError):
        pass  # timm's own import says what is wrong
    finally:
        torch.library.register_fake = real
