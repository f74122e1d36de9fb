"""The Primus family (`asa.models.family`): dynamic-network-architectures' Primus as the segmenter ``primus``, its
masked twin ``primus_pretrain`` (asa-pretrain ``model=primus``, ``method=mae|asa``); the encoder's keys are the ones
Primus declares (``eva``, its stem ``down_projection``), read off the network.

nnU-Net builds the same class (``dynamic_network_architectures.architectures.primus.Primus``) from its plans'
``arch_kwargs`` (`PRIMUS_NNUNET`), so the family has both exports; a Primus with asa's symmetric position code
(``pos_mode=mirror``), which nnU-Net's class has not, is refused. A Primus file of nnssl is read back: an nnssl plan
names either this class with its ``arch_kwargs`` (asa's export) or one of nnssl's presets ``PrimusS`` / ``PrimusB`` /
``PrimusM`` / ``PrimusL`` without them (``src/nnssl/architectures/get_network_by_name.py``: dynamic-network-
architectures' ``PrimusS`` ... ``PrimusL`` at patch 8³ on the pretraining plan's patch, whose constructors default to
layer scale ``init_values=0.1`` and ``scale_attn_inner=True``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from asa.models.blocks.sizes import to_3tuple
from asa.models.face import EncoderFace, Geometry
from asa.models.family import Family, NNUNetForm, register_family
from asa.models.keys import EncoderKeys
from asa.models.primus.masked import PrimusPretrainModel
from asa.models.primus.network import DEFAULT_SIZE, PRIMUS_SIZES, TOPOLOGY
from asa.models.published import FileEncoder

__all__ = ["PRIMUS", "PRIMUS_KEYS", "PRIMUS_NNUNET", "PrimusTokens"]


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


# as dynamic-network-architectures' Primus declares them on its instances (tested equal), for reading a published file
# before a network is built
PRIMUS_KEYS = EncoderKeys("eva", "down_projection", ("down_projection.proj",))
# nnssl's Primus presets (arch_class_name, no arch_kwargs) -> their size; patch 8³, layer scale as their defaults
NNSSL_PRESETS = {f"Primus{size}": size for size in ("S", "B", "M", "L")}
NNSSL_PRESET_PATCH, NNSSL_LAYER_SCALE = 8, {"init_values": 0.1, "scale_attn_inner": True}


def _topology(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Primus's arguments of a primus spec's kwargs: its size's, and a published file's topology over them."""
    return {**PRIMUS_SIZES[kwargs.get("size", DEFAULT_SIZE)], "init_values": None, "scale_attn_inner": False,
            **{k: kwargs[k] for k in TOPOLOGY if k in kwargs}}


def _export_check(form: str, spec: Mapping[str, Any]) -> str | None:
    """nnU-Net's and nnssl's Primus has Primus's own position codes only: asa's symmetric code is refused."""
    if (spec.get("kwargs") or {}).get("pos_mode", "none") != "none":
        return ("a Primus with asa's symmetric position code (model.pos_mode=mirror), which nnU-Net's Primus has not "
                "(its learned code and RoPE only); export one pretrained with model.pos_mode=none")
    return None


def _arch_kwargs(spec: Mapping[str, Any], source: str) -> dict[str, Any]:
    """nnU-Net's ``arch_kwargs`` of the primus network ``spec``: Primus's arguments (its __init__'s names)."""
    kwargs = spec.get("kwargs") or {}
    if "img_size" not in kwargs or "patch_size" not in kwargs:
        raise ValueError(f"{source}: the network spec records no img_size / patch_size; re-save it with this asa")
    return {**_topology(kwargs), "patch_embed_size": [int(kwargs["patch_size"])] * 3,
            "input_shape": [int(e) for e in to_3tuple(kwargs["img_size"], "img_size")]}


def _spec(arch_kwargs: Mapping[str, Any], in_channels: int, crop: int) -> dict[str, Any]:
    """The ``primus`` spec of a file of dynamic-network-architectures' Primus (``arch_kwargs``), at its
    ``input_shape`` (the grid its learned position code is of), its topology recorded beyond the size."""
    patch = {int(p) for p in arch_kwargs["patch_embed_size"]}
    shape = [int(e) for e in arch_kwargs["input_shape"]]
    topology = {k: arch_kwargs[k] for k in TOPOLOGY if k in arch_kwargs}
    size = next((name for name, dims in PRIMUS_SIZES.items() if all(topology.get(k) == v for k, v in dims.items())),
                DEFAULT_SIZE)
    return {"arch": "primus", "kwargs": {
        "img_size": shape, "in_channels": int(in_channels), "out_channels": int(in_channels), "size": size,
        "patch_size": patch.pop(), "pos_mode": "none", "lr_axis": 0, **topology}}


def _read(weights: dict[str, torch.Tensor], info: Mapping[str, Any], path: Path) -> FileEncoder:
    """A published Primus: its ``eva`` and ``down_projection`` tensors, the network as the plan states it or, for
    one of nnssl's presets, as the preset builds it on the pretraining plan's patch."""
    named = str(info.get("architecture")).rsplit(".", 1)[-1]
    kwargs = dict(info.get("arch_kwargs") or {})
    if not kwargs:
        patch = info.get("pretrain_patch")
        if named not in NNSSL_PRESETS or not patch:
            raise ValueError(f"{path}: a Primus plan ({named}) without arch_kwargs and without the pretraining "
                             "configuration's patch_size, which nnssl's presets are built on")
        kwargs = {**PRIMUS_SIZES[NNSSL_PRESETS[named]], **NNSSL_LAYER_SCALE,
                  "patch_embed_size": [NNSSL_PRESET_PATCH] * 3, "input_shape": [int(p) for p in patch]}
    patch, shape = {int(p) for p in kwargs["patch_embed_size"]}, [int(e) for e in kwargs["input_shape"]]
    if len(patch) != 1 or len(set(shape)) != 1:
        raise ValueError(f"{path}: a Primus of patch {kwargs['patch_embed_size']} on {shape}; asa's Primus takes a "
                         "cubic patch on a cubic crop")
    prefixes = PRIMUS_KEYS.prefixes
    return FileEncoder(weights={k: v for k, v in weights.items() if k.startswith(prefixes)},
                       left_out=[info["prefix"] + k for k in weights if not k.startswith(prefixes)],
                       arch_kwargs=kwargs, in_proj=PRIMUS_KEYS.in_proj_weights[0], stride=patch.pop(),
                       crop=(shape[0], f"the file's Primus input_shape {shape}, the grid of its learned position "
                                       "code"))


PRIMUS_NNUNET = NNUNetForm(
    "dynamic_network_architectures.architectures.primus.Primus", _arch_kwargs, _spec, requires_import=(),
    keys=PRIMUS_KEYS, read=_read, presets=tuple(NNSSL_PRESETS), deep_supervision=None,
    # nnU-Net's PretrainedTrainer_Primusx (nnunetv2/training/nnUNetTrainer/pretraining/thrp_primusx_finetuning.py)
    nnssl_names={"encoder_eva_depth": "eva_depth", "encoder_eva_numheads": "eva_numheads"})
PRIMUS = register_family(Family(
    "primus", face=PrimusTokens(), masked="primus_pretrain", pretrain_settings=PrimusPretrainModel,
    segmenter="primus", nnunet=PRIMUS_NNUNET, export_check=_export_check,
    presets={size: {"size": size} for size in PRIMUS_SIZES}))
