"""The SW-ViT family: asa-pretrain's default ``model`` (the sizes ``model=tiny|small|base``), its masked
autoencoder ``asa_pretrain`` and every network on its encoder (`asa.models.family`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from asa.models.family import DEFAULT_FAMILY, EncoderFace, Family, Geometry, register_family
from asa.models.presets import PRESETS
from asa.models.swvit.mae import PretrainModelConfig
from asa.models.swvit.volume import VolumeEncoder

__all__ = ["SWVIT", "SWViTTokens"]


class SWViTTokens(EncoderFace):
    """The SW-ViT's final normed tokens at its patch size, through a `VolumeEncoder` on the network's frame."""

    def module(self, encoder: nn.Module, net: nn.Module) -> nn.Module:
        return VolumeEncoder(encoder, spe_frame=getattr(net, "spe_frame", "brain"))

    def tokens(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return module(x)

    def geometry(self, module: nn.Module, spec: Mapping[str, Any], state: Mapping | None, crop: int | None,
                 where: str) -> Geometry:
        if module.encoder.uses_regions:
            raise ValueError(f"{where}: this SW-ViT has region attention, which needs a region map per case; the "
                             "frozen-encoder probes do not feed one (probe it during pretraining, probe.every)")
        size = tuple(module.img_size)
        if crop is not None and (crop,) * 3 != size:
            raise ValueError(f"crop={crop}: {where} holds an SW-ViT of input {list(size)} (its position code is "
                             "that grid's); leave crop=null")
        return size, int(module.patch_size), int(module.in_channels)  # type: ignore[return-value]


SWVIT = register_family(Family(
    DEFAULT_FAMILY, face=SWViTTokens(), masked="asa_pretrain", pretrain_settings=PretrainModelConfig,
    segmenter="swvit_unetr",
    presets={size: {**sizes, "patch_size": 8} for size, sizes in PRESETS.items()}))
