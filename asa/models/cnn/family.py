"""The convolutional families (`asa.models.family`): nnU-Net's residual-encoder U-Net (``resenc``), with its masked
twin ``resenc_pretrain``, the network nnU-Net builds of it (dynamic-network-architectures' ``ResidualEncoderUNet``)
and with it nnU-Net's and nnssl's file formats, and MONAI's DynUNet (``dynunet``: no encoder file, trained from
scratch)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from asa.models.cnn.masked import ResEncPretrainModel
from asa.models.cnn.published import RESENC_KEYS, read_resenc
from asa.models.cnn.resenc import RESENC_SIZES, coordinate_channel
from asa.models.face import StageTokens
from asa.models.keys import encoder_keys
from asa.models.family import Family, NNUNetForm, register_family

__all__ = ["DYNUNET", "RESENC", "RESENC_NNUNET"]

TOPOLOGY = ("features", "strides", "blocks", "decoder_convs")  # what a resenc spec records of its plan


class ResEncTokens(StageTokens):
    """The residual encoder's stage tokens; an encoder pretrained with the coordinate channel reads it beside the
    image channels, as in training: |x − x_mid| / (X/2) of the probe's brain-centred box along the spec's
    ``lr_axis`` (the box the masked twin's channel is drawn on when the crop is the whole box)."""

    def inputs(self, spec: Mapping[str, Any], x: torch.Tensor) -> torch.Tensor:
        kwargs = spec.get("kwargs") or {}
        if not kwargs.get("coord_channel"):
            return x
        code = coordinate_channel((x.shape[0], *x.shape[2:]), lr_axis=int(kwargs.get("lr_axis", 0)), device=x.device)
        return torch.cat([x, code.to(x.dtype)], dim=1)

    def twin_tokens(self, twin: nn.Module, x: torch.Tensor, regions: torch.Tensor | None = None) -> torch.Tensor:
        if regions is not None:
            raise ValueError(f"{type(self).__name__}: the encoder reads no region map")
        return self.tokens(twin.get_submodule(encoder_keys(twin).module), twin.with_coordinates(x))


def _resenc_export(form: str, spec: Mapping[str, Any]) -> str | None:
    """nnU-Net and nnssl build the network without the coordinate channel: an encoder pretrained with it is refused."""
    if (spec.get("kwargs") or {}).get("coord_channel"):
        return ("an encoder pretrained with the coordinate channel (model.coord_channel=true), which nnU-Net does "
                "not feed; export one pretrained without it")
    return None


def _arch_kwargs(spec: Mapping[str, Any], source: str) -> dict[str, Any]:
    """nnU-Net's ``arch_kwargs`` of the resenc network ``spec``: its resolved plan, asa's convolutions, norms and
    nonlinearity (3³ kernels, biases, affine instance norm, leaky ReLU of slope 0.01)."""
    kwargs = spec.get("kwargs") or {}
    if missing := [k for k in TOPOLOGY if k not in kwargs]:
        raise ValueError(f"{source}: the network spec records no {', '.join(missing)}; re-save it with this asa")
    features, strides, blocks, decoder_convs = ([int(v) for v in kwargs[k]] for k in TOPOLOGY)
    n = len(features)
    return {
        "n_stages": n, "features_per_stage": features, "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": [[3, 3, 3]] * n, "strides": [[s] * 3 for s in strides],
        "n_blocks_per_stage": blocks, "n_conv_per_stage_decoder": decoder_convs, "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d", "norm_op_kwargs": {"eps": 1e-5, "affine": True},
        "dropout_op": None, "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True},  # slope 0.01, asa's resenc's
    }


def _spec(arch_kwargs: Mapping[str, Any], in_channels: int, crop: int) -> dict[str, Any]:
    """The ``resenc`` spec of a file of nnU-Net's residual-encoder U-Net (``arch_kwargs``: its stages' features,
    strides, blocks and decoder convolutions), at the size of nnssl's ResEnc-L without deep supervision or the
    coordinate channel; its topology recorded, so the spec builds that network whatever the size says."""
    strides = [int(s[0]) if isinstance(s, (list, tuple)) else int(s) for s in arch_kwargs["strides"]]
    return {"arch": "resenc", "kwargs": {
        "img_size": [int(crop)] * 3, "in_channels": int(in_channels), "out_channels": int(in_channels),
        "size": "L", "deep_supervision": False, "coord_channel": False, "lr_axis": 0,
        "features": [int(f) for f in arch_kwargs["features_per_stage"]], "strides": strides,
        "blocks": [int(b) for b in arch_kwargs["n_blocks_per_stage"]],
        "decoder_convs": [int(c) for c in arch_kwargs["n_conv_per_stage_decoder"]]}}


# nnssl's ResEncL preset (src/nnssl/architectures/architecture_registry.py) is this class; nnU-Net v2's and AMAES's
# files (no plan) hold it too
RESENC_NNUNET = NNUNetForm("dynamic_network_architectures.architectures.unet.ResidualEncoderUNet", _arch_kwargs, _spec,
                           keys=RESENC_KEYS, read=read_resenc, layouts=("nnunet", "amaes"), presets=("ResEncL",))
RESENC = register_family(Family(
    "resenc", face=ResEncTokens(), masked="resenc_pretrain", pretrain_settings=ResEncPretrainModel, segmenter="resenc",
    nnunet=RESENC_NNUNET, export_check=_resenc_export,
    presets={size: {"size": size} for size in RESENC_SIZES}))
DYNUNET = register_family(Family("dynunet"))
