"""The Primus family (`asa.models.family`): dynamic-network-architectures' Primus as the segmenter ``primus``, its
masked twin ``primus_pretrain`` (asa-pretrain ``model=primus``, ``method=mae|asa``); the encoder's keys are the ones
Primus declares (``eva``, its stem ``down_projection``), read off the network."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from asa.models.blocks.sizes import to_3tuple
from asa.models.family import EncoderFace, EncoderKeys, Family, Geometry, register_family
from asa.models.primus.masked import PrimusPretrainModel
from asa.models.primus.network import PRIMUS_SIZES

__all__ = ["PRIMUS", "PRIMUS_KEYS", "PrimusTokens"]


class _Encoder(nn.Module):
    """Primus's encoder as a module on volumes: the patch embedding and EVA of ``net`` -> tokens [B, N, E]."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.encode(self.net.embed(x))


class PrimusTokens(EncoderFace):
    """EVA's normed tokens at the patch size, through the patch embedding (and the symmetric code) of the network."""

    def module(self, encoder: nn.Module, net: nn.Module) -> nn.Module:
        return _Encoder(net)

    def tokens(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return module(x)

    def geometry(self, module: nn.Module, spec: Mapping[str, Any], state: Mapping | None, crop: int | None,
                 where: str) -> Geometry:
        size = to_3tuple(spec.get("kwargs", {})["img_size"], "img_size")
        if crop is not None and (crop,) * 3 != size:
            raise ValueError(f"crop={crop}: {where} holds a Primus of input {list(size)} (its position codes are that "
                             "grid's); leave crop=null")
        return size, int(module.net.patch_size), int(module.net.in_channels)


# as Primus declares them on its instances (key_to_encoder, key_to_stem, keys_to_in_proj; tested equal), for what
# reads a file before a network is built (asa.load_encoder, the encoder export)
PRIMUS_KEYS = EncoderKeys("eva", "down_projection", ("down_projection.proj",))
PRIMUS = register_family(Family(
    "primus", face=PrimusTokens(), masked="primus_pretrain", pretrain_settings=PrimusPretrainModel,
    segmenter="primus", keys=PRIMUS_KEYS, presets={size: {"size": size} for size in PRIMUS_SIZES}))
