"""asa: Attentive Symmetric Autoencoder for 3D brain MRI (pretraining and segmentation fine-tuning).

``asa.load_encoder(path)`` returns the pretrained encoder of an export or checkpoint as a plain
module; ``asa.export_for_monai(path, out)`` writes an SA-Swin export in ``SwinUNETR.load_from``'s
layout (from :mod:`asa.models.portable` and :mod:`asa.formats.monai`, imported on first use so that ``import asa``
stays light).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {"load_encoder": "asa.models.portable", "export_for_monai": "asa.formats.monai"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'asa' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
