"""Frozen encoders as feature extractors: any checkpoint or export asa writes, or a random-init twin.

A :class:`FrozenEncoder` turns a volume [B, C, *size] (its own input grid: the brain-centred crop
of pretraining) into tokens [B, N, E] on a patch grid of ``stride`` voxels, in raster order (axis 2
fastest), for the probes (`asa.eval.probe`, `asa.eval.probe_cv`):

- ASA family (``asa_pretrain``, ``swvit_unetr``, ``case_head``): the SW-ViT's final normed tokens at its
  patch size (`asa.models.VolumeEncoder`);
- SwinViT (``sa_swin_pretrain``, ``sa_swin``, ``swin_unetr``): the stage output at stride 8
  (`SWIN_PROBE_STAGE`, after two Swin stages, ``4·feature_size`` channels), the grid of SW-ViT's
  default patch size, so both families are probed at one resolution (`swin_tokens`; SA-Swin's
  pretraining probes read the same tokens);
- UNETR: the ViT's final tokens at its patch size (16);
- a dynamic-network-architectures encoder, read off its declared stage ``strides`` (the residual-encoder U-Net
  ``resenc`` and ``resenc_pretrain``, published nnssl / nnU-Net / AMAES files, a plug-in's U-Net): the
  bottleneck stage's voxels as tokens, at the encoder's total stride (its feature map of the crop, pooled as
  the transformers' tokens are).

Features are computed without gradients, in eval mode.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from asa.data.case import Case
from asa.data.preprocessing import PretrainPreprocess, case_to_item
from asa.io import load_weights
from asa.models import DEFAULT_CROP, PRESETS, VolumeEncoder, build_network, network_encoder
from asa.models.blocks.sizes import to_3tuple
from asa.models.portable import load_encoder
from asa.models.registry import ENCODER_MODULES, current_spec

__all__ = ["SWIN_PROBE_STAGE", "SWIN_PROBE_STRIDE", "FrozenEncoder", "CaseImages", "brain_tokens", "load_frozen",
           "prepare_cases", "pooled_features", "random_frozen", "swin_tokens"]

SWIN_PROBE_STAGE = 2  # MONAI SwinViT's stage outputs: k = 0..4 at stride 2^(k+1)
SWIN_PROBE_STRIDE = 2 ** (SWIN_PROBE_STAGE + 1)
RANDOM = "random"  # the `encoders` entry of a random-init encoder (random, random:<preset>)


def swin_tokens(swin: nn.Module, x: torch.Tensor, stage: int = SWIN_PROBE_STAGE) -> torch.Tensor:
    """MONAI SwinViT's (normalised) stage-``stage`` output as tokens: x [B, C, D, H, W] ->
    [B, N, C'] with N = (D·H·W) / stride³, stride 2^(stage+1), raster order."""
    return swin(x, normalize=True)[stage].flatten(2).transpose(1, 2)


@dataclass
class FrozenEncoder:
    """An encoder to probe: ``name`` (its table row), ``arch`` (network spec arch), ``spec`` (the
    network spec it was built from), ``module`` (eval mode), ``size`` (its input edge, 3 ints),
    ``stride`` (voxels per token along each axis), ``in_channels``, ``source`` (file or ``random``)."""

    name: str
    arch: str
    spec: dict
    module: nn.Module
    size: tuple[int, int, int]
    stride: int
    in_channels: int
    source: str

    @torch.no_grad()
    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, *size] -> tokens [B, N, E] (float32)."""
        module = self.module
        if isinstance(module, VolumeEncoder):
            out = module(x)
        elif ENCODER_MODULES.get(self.arch) == "swinViT":
            out = swin_tokens(module, x)
        elif isinstance(out := module(x), (list, tuple)) and out[0].ndim == 5:  # a CNN's stages, finest first
            out = out[-1].flatten(2).transpose(1, 2)  # the bottleneck [B, C, d, h, w] -> [B, d·h·w, C], raster order
        else:  # MONAI ViT (UNETR): (tokens, hidden states)
            out = out[0]
        return out.float()

    def describe(self) -> dict[str, Any]:
        """JSON-friendly: name, arch, source, input size, token stride."""
        return {"name": self.name, "arch": self.arch, "source": self.source, "size": list(self.size),
                "stride": self.stride}


def _geometry(arch: str, module: nn.Module, spec: Mapping, state: Mapping | None, crop: int | None,
              where: str) -> tuple[tuple[int, int, int], int, int]:
    """(input size, token stride, input channels) of an encoder; refuses what the probes cannot feed."""
    kwargs = spec.get("kwargs", {})
    if isinstance(module, VolumeEncoder):
        if module.encoder.uses_regions:
            raise ValueError(f"{where}: this SW-ViT has region attention, which needs a region map per case; the "
                             "frozen-encoder probes do not feed one (probe it during pretraining, probe.every)")
        size = tuple(module.img_size)
        if crop is not None and (crop,) * 3 != size:
            raise ValueError(f"crop={crop}: {where} holds an SW-ViT of input {list(size)} (its position code is "
                             "that grid's); leave crop=null")
        return size, int(module.patch_size), int(module.in_channels)
    if ENCODER_MODULES.get(arch) == "swinViT":
        data = ((state or {}).get("config") or {}).get("data") or {}
        recorded = kwargs.get("img_size") or data.get("crop") or data.get("size")  # size: runs before the rename
        edge = crop if crop is not None else recorded
        if edge is None:
            raise ValueError(f"{where}: a {arch!r} encoder that records no input size (an SA-Swin pretraining "
                             "export); pass crop=N (a multiple of 32, its pretraining data.crop)")
        size = to_3tuple(edge, "crop")
        if any(s % 32 for s in size):
            raise ValueError(f"crop={list(size)}: a SwinViT needs sides divisible by 32 ({where})")
        return size, SWIN_PROBE_STRIDE, int(module.patch_embed.proj.in_channels)
    if getattr(module, "strides", None) is not None:  # a dynamic-network-architectures encoder: its stages' strides
        if kwargs.get("coord_channel"):
            raise ValueError(f"{where}: a CNN encoder with the coordinate channel, which the frozen-encoder probes "
                             "do not feed (they give the image channels only); probe one pretrained without it")
        stride = math.prod(to_3tuple(s, "strides")[0] for s in module.strides)
        size = to_3tuple(crop if crop is not None else kwargs["img_size"], "crop")
        if any(s % stride for s in size):
            raise ValueError(f"crop={list(size)}: {where} holds a CNN encoder of total stride {stride}; take a "
                             f"crop that is a multiple of it")
        return size, stride, int(kwargs.get("in_channels", 1))
    patch = tuple(getattr(module, "patch_size", None) or to_3tuple(16, "patch_size"))
    if len(set(patch)) != 1:
        raise ValueError(f"{where}: the probes need cubic patches, got {list(patch)}")
    size = to_3tuple(kwargs["img_size"], "img_size")
    if crop is not None and (crop,) * 3 != size:
        raise ValueError(f"crop={crop}: {where} holds a ViT of input {list(size)}; leave crop=null")
    return size, int(patch[0]), int(kwargs.get("in_channels", 1))


def load_frozen(path: str | os.PathLike, *, name: str | None = None, crop: int | None = None,
                device: str | torch.device = "cpu") -> FrozenEncoder:
    """The encoder of a checkpoint or export (`asa.load_encoder`: pretraining, fine-tuning and case
    checkpoints, ``encoder.pt``, ``encoder.safetensors``, an asa-export model folder), frozen. ``crop``: the
    input edge for an encoder that records none (SA-Swin pretraining exports)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"encoders: {path}: no such file (a checkpoint, encoder export or model folder)")
    state = load_weights(path)
    module = load_encoder(path, state=state)
    spec = current_spec(state["network"])
    size, stride, channels = _geometry(spec["arch"], module, spec, state, crop, str(path))
    module.to(device).eval().requires_grad_(False)
    return FrozenEncoder(name or str(path), spec["arch"], spec, module, size, stride, channels, str(path))


def random_frozen(entry: str, *, like: FrozenEncoder | None, seed: int = 0, crop: int | None = None,
                  device: str | torch.device = "cpu") -> FrozenEncoder:
    """A randomly initialised encoder (seeded): ``random`` has the network spec of ``like`` (the
    first file given); ``random:<preset>`` is an ASA encoder of that size (`asa.models.PRESETS`),
    input ``crop`` (else ``like``'s input, else `asa.models.DEFAULT_CROP`), patch 8."""
    _, _, preset = entry.partition(":")
    if preset:
        if preset not in PRESETS:
            raise ValueError(f"encoders: {entry!r}: unknown preset {preset!r}; expected random (the first file's "
                             f"spec) or random:<{'|'.join(PRESETS)}>")
        edge = crop or (like.size[0] if like is not None else DEFAULT_CROP)
        spec = {"arch": "asa_pretrain", "kwargs": {**PRESETS[preset], "img_size": edge, "patch_size": 8}}
    else:
        if like is None:
            raise ValueError(f"encoders: {entry!r} takes the network spec of the first checkpoint or export given, "
                             "and none is given; list a file before it, or use random:<tiny|small|base>")
        spec = like.spec
        crop = crop if crop is not None else like.size[0]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_network(spec)
    module = network_encoder(net, spec["arch"])
    size, stride, channels = _geometry(spec["arch"], module, spec, None, crop, f"encoders: {entry}")
    module.to(device).eval().requires_grad_(False)
    name = f"random-init ({preset or spec['arch']})"
    return FrozenEncoder(name, spec["arch"], dict(spec), module, size, stride, channels, entry)


@dataclass
class CaseImages:
    """Cases preprocessed as pretraining crops: ``images`` [n, C, *size] (z-scored in brain,
    brain-centred), ``brain`` [n, 1, *size] bool, ``ids``."""

    images: torch.Tensor
    brain: torch.Tensor
    ids: list[str]


def prepare_cases(cases: Sequence[Case], *, size: Sequence[int], channels: Sequence[str]) -> CaseImages:
    """Each case as the pretraining crop (`asa.data.preprocessing.PretrainPreprocess`, no augmentation)."""
    pre = PretrainPreprocess(tuple(size))
    images, brains = [], []
    for case in cases:
        item = pre(case_to_item(case, channels))
        images.append(item["image"].float())
        brains.append(item["brain"].bool())
    return CaseImages(torch.stack(images), torch.stack(brains), [c.id for c in cases])


def brain_tokens(brain: torch.Tensor, stride: int) -> torch.Tensor:
    """brain [n, 1, *size] bool -> [n, N]: tokens whose patch holds a brain voxel."""
    return torch.nn.functional.max_pool3d(brain.float(), stride).flatten(1) > 0


@torch.no_grad()
def pooled_features(encoder: FrozenEncoder, data: CaseImages, *, batch_size: int = 2,
                    device: str | torch.device = "cpu") -> torch.Tensor:
    """Mean of each case's brain tokens (all tokens where the crop holds no brain) -> [n, E] (float64)."""
    keep = brain_tokens(data.brain, encoder.stride)
    out = []
    for i in range(0, data.images.shape[0], batch_size):
        tokens = encoder.tokens(data.images[i:i + batch_size].to(device)).cpu().double()  # [b, N, E]
        k = keep[i:i + batch_size]
        k = torch.where(k.any(1, keepdim=True), k, torch.ones_like(k)).double()[..., None]  # [b, N, 1]
        out.append((tokens * k).sum(1) / k.sum(1))
    return torch.cat(out)
