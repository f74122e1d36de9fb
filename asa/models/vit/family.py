"""The ViT family: MONAI's ViT under UNETR and the ViT case network (`asa.models.family`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from asa.models.blocks.sizes import to_3tuple
from asa.models.face import EncoderFace, Geometry
from asa.models.family import Family, register_family

__all__ = ["VIT", "ViTTokens"]


class ViTTokens(EncoderFace):
    """MONAI ViT's final tokens (its forward returns them with the hidden states) at its patch size."""

    def tokens(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return module(x)[0]

    def geometry(self, module: nn.Module, spec: Mapping[str, Any], state: Mapping | None, crop: int | None,
                 where: str) -> Geometry:
        kwargs = spec.get("kwargs", {})
        patch = tuple(getattr(module, "patch_size", None) or to_3tuple(16, "patch_size"))
        if len(set(patch)) != 1:
            raise ValueError(f"{where}: the probes need cubic patches, got {list(patch)}")
        size = to_3tuple(kwargs["img_size"], "img_size")
        if crop is not None and (crop,) * 3 != size:
            raise ValueError(f"crop={crop}: {where} holds a ViT of input {list(size)}; leave crop=null")
        return size, int(patch[0]), int(kwargs.get("in_channels", 1))


VIT = register_family(Family("vit", face=ViTTokens()))
