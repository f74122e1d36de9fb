"""The SwinViT family: MONAI's SwinViT under SA-Swin's pretraining head, SA-Swin, SwinUNETR and the Swin case
network (`asa.models.family`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from asa.models.blocks.sizes import to_3tuple
from asa.models.face import EncoderFace, Geometry
from asa.models.family import Family, register_family

__all__ = ["SWIN", "SWIN_PROBE_STAGE", "SWIN_PROBE_STRIDE", "SwinTokens", "swin_tokens"]

SWIN_PROBE_STAGE = 2  # MONAI SwinViT's stage outputs: k = 0..4 at stride 2^(k+1)
SWIN_PROBE_STRIDE = 2 ** (SWIN_PROBE_STAGE + 1)


def swin_tokens(swin: nn.Module, x: torch.Tensor, stage: int = SWIN_PROBE_STAGE) -> torch.Tensor:
    """MONAI SwinViT's (normalised) stage-``stage`` output as tokens: x [B, C, D, H, W] ->
    [B, N, C'] with N = (D·H·W) / stride³, stride 2^(stage+1), raster order."""
    return swin(x, normalize=True)[stage].flatten(2).transpose(1, 2)


class SwinTokens(EncoderFace):
    """The stage output at stride 8 (`SWIN_PROBE_STAGE`, after two Swin stages, ``4·feature_size`` channels): the
    grid of SW-ViT's default patch size, so both families are probed at one resolution."""

    def tokens(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return swin_tokens(module, x)

    def geometry(self, module: nn.Module, spec: Mapping[str, Any], state: Mapping | None, crop: int | None,
                 where: str) -> Geometry:
        data = ((state or {}).get("config") or {}).get("data") or {}
        recorded = spec.get("kwargs", {}).get("img_size") or data.get("crop") or data.get("size")  # size: older runs
        edge = crop if crop is not None else recorded
        if edge is None:
            raise ValueError(f"{where}: a {spec.get('arch')!r} encoder that records no input size (an SA-Swin "
                             "pretraining export); pass crop=N (a multiple of 32, its pretraining data.crop)")
        size = to_3tuple(edge, "crop")
        if any(s % 32 for s in size):
            raise ValueError(f"crop={list(size)}: a SwinViT needs sides divisible by 32 ({where})")
        return size, SWIN_PROBE_STRIDE, int(module.patch_embed.proj.in_channels)


SWIN = register_family(Family("swin", face=SwinTokens()))
