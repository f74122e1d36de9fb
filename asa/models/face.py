"""How asa reads a family's encoder after training (`asa.models.family.Family`'s ``face``): the encoder as
`asa.load_encoder` returns it, the tokens the frozen-encoder probes read and the geometry they feed."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from asa.models.declared import crop_edges
from asa.models.keys import encoder_keys
from asa.models.registry import network_spec

__all__ = ["EncoderFace", "Geometry", "StageTokens"]

Geometry = tuple[tuple[int, int, int], int, int]  # (input size, token stride, input channels)


class EncoderFace:
    """How asa reads a family's encoder after training (the frozen-encoder probes, `asa.load_encoder`).

    :meth:`module` is the encoder as `asa.load_encoder` returns it (the submodule itself unless the family wraps
    it); :meth:`tokens` turns a volume [B, C, *size] into tokens [B, N, E] on a grid of ``stride`` voxels, raster
    order (axis 2 fastest); :meth:`geometry` is (input size, token stride, input channels) of an encoder, and
    refuses, naming ``where``, one the probes cannot feed."""

    def module(self, encoder: nn.Module, net: nn.Module) -> nn.Module:
        """The encoder submodule ``encoder`` of ``net`` as a module on volumes."""
        return encoder

    def tokens(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__}.tokens")

    def inputs(self, spec: Mapping[str, Any], x: torch.Tensor) -> torch.Tensor:
        """What the encoder of network ``spec`` reads of the image channels x [B, C, *size]: x itself, unless the
        family adds inputs of its own (the residual encoder's coordinate channel)."""
        return x

    def geometry(self, module: nn.Module, spec: Mapping[str, Any], state: Mapping | None, crop: int | None,
                 where: str) -> Geometry:
        raise NotImplementedError(f"{type(self).__name__}.geometry")

    def twin_tokens(self, twin: nn.Module, x: torch.Tensor, regions: torch.Tensor | None = None) -> torch.Tensor:
        """The tokens [B, N, E] of the masked twin ``twin``'s encoder on the whole volume x [B, C, *size], for the
        probes during pretraining (``regions`` [B, N]: patch regions, for an encoder with region attention)."""
        if regions is not None:
            raise ValueError(f"{type(self).__name__}: the encoder reads no region map")
        return self.tokens(self.module(twin.get_submodule(encoder_keys(twin).module), twin), x)

    def twin_stride(self, twin: nn.Module) -> int:
        """The token stride (voxels) of :meth:`twin_tokens` on the masked twin ``twin``: the edge of the patches the
        probes score during pretraining, read off the twin's encoder as :meth:`geometry` reads a file's."""
        spec = network_spec(twin) or {}
        module = self.module(twin.get_submodule(encoder_keys(twin).module), twin)
        return self.geometry(module, spec, None, None, f"the masked twin {spec.get('arch', type(twin).__name__)}")[1]


class StageTokens(EncoderFace):
    """A dynamic-network-architectures encoder (nnU-Net's U-Nets: it returns its stages' outputs, finest first,
    and declares its stage ``strides``): the bottleneck stage's voxels as tokens, at the encoder's total stride
    (its feature map of the crop, pooled as the transformers' tokens are)."""

    def tokens(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return module(x)[-1].flatten(2).transpose(1, 2)  # the bottleneck [B, C, d, h, w] -> [B, d·h·w, C]

    def geometry(self, module: nn.Module, spec: Mapping[str, Any], state: Mapping | None, crop: int | None,
                 where: str) -> Geometry:
        kwargs = spec.get("kwargs", {})
        stride = math.prod(crop_edges(s)[0] for s in module.strides)
        size = crop_edges(crop if crop is not None else kwargs["img_size"])
        if any(s % stride for s in size):
            raise ValueError(f"crop={list(size)}: {where} holds a CNN encoder of total stride {stride}; take a "
                             f"crop that is a multiple of it")
        return size, stride, int(kwargs.get("in_channels", 1))
