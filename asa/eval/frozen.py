"""Frozen encoders as feature extractors: any checkpoint or export asa writes, or a random-init twin.

A :class:`FrozenEncoder` turns a volume [B, C, *size] (its own input grid: the brain-centred crop
of pretraining) into tokens [B, N, E] on a patch grid of ``stride`` voxels, in raster order (axis 2
fastest), for the probes (`asa.eval.probe`, `asa.eval.probe_cv`), as the encoder's family declares its face
(`asa.models.face.EncoderFace`):

- the SW-ViT family (``asa_pretrain``, ``swvit_unetr``, ``case_head``): the final normed tokens at its
  patch size (`asa.models.VolumeEncoder`);
- the SwinViT family (``sa_swin_pretrain``, ``sa_swin``, ``swin_unetr``): the stage output at stride 8
  (`asa.models.swin.family.SWIN_PROBE_STAGE`, after two Swin stages, ``4·feature_size`` channels), the grid
  of SW-ViT's default patch size, so both families are probed at one resolution
  (`asa.models.swin.family.swin_tokens`; SA-Swin's pretraining probes read the same tokens);
- the ViT family (UNETR): the ViT's final tokens at its patch size (16);
- a dynamic-network-architectures encoder (the residual-encoder U-Net ``resenc`` and ``resenc_pretrain``,
  published nnssl / nnU-Net / AMAES files, a plug-in's U-Net that declares `asa.models.face.StageTokens`): the
  bottleneck stage's voxels as tokens, at the encoder's total stride (its feature map of the crop, pooled as
  the transformers' tokens are).

Features are computed without gradients, in eval mode.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from asa.data.case import Case
from asa.data.preprocessing import PretrainPreprocess, case_to_item
from asa.models import DEFAULT_CROP, build_network, load_weights, network_encoder
from asa.models.face import EncoderFace
from asa.models.family import DEFAULT_FAMILY, Family, families, family_of
from asa.models.portable import load_encoder
from asa.models.registry import current_spec

__all__ = ["FrozenEncoder", "CaseImages", "brain_tokens", "load_frozen", "prepare_cases", "pooled_features",
           "random_frozen"]

RANDOM = "random"  # the `encoders` entry of a random-init encoder (random, random:<preset>)


@dataclass
class FrozenEncoder:
    """An encoder to probe: ``name`` (its table row), ``arch`` (network spec arch), ``spec`` (the
    network spec it was built from), ``module`` (eval mode), ``size`` (its input edge, 3 ints),
    ``stride`` (voxels per token along each axis), ``in_channels``, ``source`` (file or ``random``), ``face``
    (how its family reads its tokens)."""

    name: str
    arch: str
    spec: dict
    module: nn.Module
    size: tuple[int, int, int]
    stride: int
    in_channels: int
    source: str
    face: EncoderFace

    @torch.no_grad()
    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, *size] (the image channels) -> tokens [B, N, E] (float32)."""
        return self.face.tokens(self.module, self.face.inputs(self.spec, x)).float()

    def describe(self) -> dict[str, Any]:
        """JSON-friendly: name, arch, source, input size, token stride."""
        return {"name": self.name, "arch": self.arch, "source": self.source, "size": list(self.size),
                "stride": self.stride}


def _face(arch: str, where: str) -> EncoderFace:
    """The encoder face of the family of ``arch``; a network whose family declares none is refused."""
    family = family_of(arch)
    if family is None or family.face is None:
        raise ValueError(f"{where}: a {arch!r} network, which names no family (asa.models.register_network's family=) "
                         "or whose family declares no encoder face the probes can read (asa.models.Family's face)")
    return family.face


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
    face = _face(spec["arch"], str(path))
    size, stride, channels = face.geometry(module, spec, state, crop, str(path))
    module.to(device).eval().requires_grad_(False)
    return FrozenEncoder(name or str(path), spec["arch"], spec, module, size, stride, channels, str(path), face)


def _random_family(entry: str, family: str, like: FrozenEncoder | None) -> Family:
    """The family of ``random:[<family>:]<size>``: the named one, else the first file's, else the default."""
    known = families()
    if family:
        if family not in known:
            raise ValueError(f"encoders: {entry!r}: unknown family {family!r}; expected one of {', '.join(known)}")
        return known[family]
    return (family_of(like.arch) if like is not None else None) or known[DEFAULT_FAMILY]


def random_frozen(entry: str, *, like: FrozenEncoder | None, seed: int = 0, crop: int | None = None,
                  device: str | torch.device = "cpu") -> FrozenEncoder:
    """A randomly initialised encoder (seeded): ``random`` has the network spec of ``like`` (the
    first file given); ``random:<size>`` is the masked twin of that size of ``like``'s family (else the SW-ViT's,
    patch 8: ``random:tiny|small|base``), ``random:<family>:<size>`` of the family named (`asa.models.family`'s
    ``presets``), input ``crop`` (else ``like``'s input, else `asa.models.DEFAULT_CROP`)."""
    _, _, preset = entry.partition(":")
    if preset:
        named, _, size = preset.rpartition(":")
        family = _random_family(entry, named, like)
        if size not in family.presets:
            raise ValueError(f"encoders: {entry!r}: unknown preset {size!r}; expected random (the first file's "
                             f"spec) or random:<{'|'.join(family.presets)}> (the {family.name} family's sizes) or "
                             "random:<family>:<size>")
        edge = crop or (like.size[0] if like is not None else DEFAULT_CROP)
        spec = family.random_spec(size, edge)
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
    face = _face(spec["arch"], f"encoders: {entry}")
    size, stride, channels = face.geometry(module, spec, None, crop, f"encoders: {entry}")
    module.to(device).eval().requires_grad_(False)
    name = f"random-init ({preset or spec['arch']})"
    return FrozenEncoder(name, spec["arch"], dict(spec), module, size, stride, channels, entry, face)


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
