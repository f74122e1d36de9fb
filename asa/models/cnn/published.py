"""Published residual-encoder U-Nets (nnssl / OpenMind ResEnc-L, nnU-Net v2, AMAES ResEnc-B) as the resenc family
reads them (`asa.models.family.NNUNetForm.read`, `asa.models.published`).

The state dict of an nnssl or nnU-Net file is dynamic-network-architectures' ``ResidualEncoderUNet``'s
(``encoder.stem.*``, ``encoder.stages.*``, ``decoder.*``): asa's ``resenc`` keys, taken as they are; a ``ResEncL``
plan without ``arch_kwargs`` (the released files) has the preset's strides. nnssl's SparK3D trainers save a
convolution's ``conv`` and ``all_modules.0`` (one module here) as two, training only the latter: for their files the
``all_modules`` twin is taken and the report says so. An AMAES file is gardening_tools' ``ResidualEncoderUNet``
(``gardening_tools/modules/networks/resunet.py``; encoder ``components/encoders.py``, blocks ``components/blocks.py``)
as ``resenc_unet_b`` builds it (``asparagus/modules/networks/resenc_unet.py``: features 32..320, blocks
(1, 3, 4, 6, 6, 6), stride 2, 3³ kernels, average-pool shortcuts): the same tensors as nnU-Net's ResEnc-L under
other names, renamed here (stem ``conv1`` -> ``convs.0``, a convolution's norm ``norm_op`` -> ``norm``; ``conv``,
``all_modules.i``, ``skip.1`` and the block numbering are the same); its decoder is gardening_tools' own and is left
out. The topology (features and blocks per stage, the input channels) is read off the encoder tensors.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from asa.models.keys import EncoderKeys
from asa.models.published import FileEncoder

__all__ = ["RESENC_KEYS", "read_resenc"]

# as dynamic-network-architectures' ResidualEncoderUNet declares them on its instances (tested equal)
RESENC_KEYS = EncoderKeys("encoder.stages", "encoder.stem", ("encoder.stem.convs.0.conv",
                                                             "encoder.stem.convs.0.all_modules.0"))
ENCODER = "encoder."  # the residual encoder: its stem and stages
STEM = RESENC_KEYS.in_proj_weights[0]
AMAES_STEM = "encoder.stem.conv1.conv.weight"  # gardening_tools' name of the stem's convolution
_BLOCK = re.compile(r"^encoder\.stages\.(\d+)\.blocks\.(\d+)\.conv1\.conv\.weight$")
# one module under two names in dynamic-network-architectures' ConvDropoutNormReLU (``all_modules`` is
# [conv, norm, nonlin] without dropout); nnssl's SparK3D conversion (src/nnssl/architectures/spark_utils.py,
# convert_to_spark_cnn) rebuilds each name as its own module, and only the ``all_modules`` copy is trained
_ALIASES = ((".conv.", ".all_modules.0."), (".norm.", ".all_modules.1."))


def _amaes_key(key: str) -> str:
    """A gardening_tools residual-encoder key in dynamic-network-architectures' naming."""
    key = key.replace("encoder.stem.conv1.", "encoder.stem.convs.0.", 1)
    return key.replace(".norm_op.", ".norm.")


def _topology(weights: Mapping[str, torch.Tensor], path: Path) -> dict[str, Any]:
    """features / blocks per stage, read off the encoder tensors."""
    stages: dict[int, dict[int, torch.Tensor]] = {}
    for key, value in weights.items():
        if (m := _BLOCK.match(key)) is not None:
            stages.setdefault(int(m[1]), {})[int(m[2])] = value
    if STEM not in weights or not stages:
        raise ValueError(f"{path}: no residual-encoder stem ({STEM}) or stages (encoder.stages.<s>.blocks.<b>.*): "
                         "not a residual-encoder U-Net checkpoint")
    if sorted(stages) != list(range(len(stages))):
        raise ValueError(f"{path}: encoder stages {sorted(stages)} are not numbered 0..{len(stages) - 1}")
    kernels = {tuple(v.shape[2:]) for blocks in stages.values() for v in blocks.values()}
    if kernels != {(3, 3, 3)}:
        raise ValueError(f"{path}: encoder kernels {sorted(kernels)}; asa's resenc has 3x3x3 convolutions")
    return {"features": [int(stages[s][0].shape[0]) for s in sorted(stages)],
            "blocks": [len(stages[s]) for s in sorted(stages)]}


def _resolve_aliases(weights: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """``weights`` with every ``conv`` / ``norm`` tensor that differs from its ``all_modules`` twin replaced by
    the twin (the trained copy of a SparK3D file; nnU-Net's loader ends with it too), and the keys replaced.
    Applied to files of nnssl's Spark trainers only (``trainer_name``): elsewhere twins that differ mean a
    damaged file, which the transfer refuses."""
    replaced = []
    for key in sorted(weights):
        for own, twin in _ALIASES:
            if own in key:
                other = key.replace(own, twin, 1)
                value, trained = weights[key], weights.get(other)
                if (isinstance(trained, torch.Tensor) and trained.shape == value.shape
                        and not torch.equal(trained, value)):
                    weights[key] = trained
                    replaced.append(key)
    return weights, replaced


def read_resenc(weights: dict[str, torch.Tensor], info: Mapping[str, Any], path: Path) -> FileEncoder:
    """The residual encoder of a published file (see the module): its tensors under ``encoder.`` (an AMAES file's
    renamed), the network in nnU-Net's terms (the topology off the tensors, the strides and decoder convolutions
    from the plan when it states them, else 2 per stage after the first and one convolution per decoder stage)."""
    if info["layout"] == "amaes":
        if AMAES_STEM not in weights:
            raise ValueError(f"{path}: an AMAES (Lightning) checkpoint without its stem {info['prefix']}{AMAES_STEM}")
        encoder = {_amaes_key(k): v for k, v in weights.items() if k.startswith(ENCODER)}
    else:
        encoder = {k: v for k, v in weights.items() if k.startswith(ENCODER)}
    left_out = [info["prefix"] + k for k in weights if not k.startswith(ENCODER)]
    aliased: list[str] = []
    if "spark" in str(info.get("trainer_name") or "").lower():  # only nnssl's SparK3D trainers train one twin
        encoder, aliased = _resolve_aliases(encoder)
    topo = _topology(encoder, path)
    stages = len(topo["features"])
    stated = info.get("arch_kwargs") or {}
    strides = [int(s[0]) if isinstance(s, (list, tuple)) else int(s) for s in stated.get("strides") or ()]
    strides = strides or [1] + [2] * (stages - 1)
    decoder_convs = [int(c) for c in stated.get("n_conv_per_stage_decoder") or ()] or [1] * (stages - 1)
    if len(strides) != stages or len(decoder_convs) != stages - 1:
        raise ValueError(f"{path}: the plan's strides {strides} / decoder convs {decoder_convs} do not fit the "
                         f"{stages} encoder stages of the tensors")
    arch_kwargs = {"n_stages": stages, "features_per_stage": topo["features"], "strides": strides,
                   "n_blocks_per_stage": topo["blocks"], "n_conv_per_stage_decoder": decoder_convs}
    return FileEncoder(weights=encoder, left_out=left_out, arch_kwargs=arch_kwargs, in_proj=STEM,
                       stride=math.prod(strides),
                       architecture="gardening_tools ResidualEncoderUNet (resenc_unet_b)"
                       if info["layout"] == "amaes" else None, aliases_resolved=aliased)
