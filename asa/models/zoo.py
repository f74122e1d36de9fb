"""Segmentation networks by name, and the segmentation network of a run config.

Every network registers itself by name in its own file (:mod:`asa.models.registry`); this module
builds the segmentation networks among them (``swvit_unetr``, ``unetr``, ``swin_unetr``, ``sa_swin``, ...)
from explicit arguments or from a run config's ``model`` and ``segmenter`` sections.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from torch import nn

from asa.models.registry import NETWORKS, architectures, build_network, network_spec
from asa.models.segmenter import ASASegmenter, pretrained_geometry, set_options

__all__ = ["NETWORKS", "build_from_config", "build_network", "build_segmentation_network", "network_spec"]


def build_segmentation_network(
    arch: str, *, img_size: tuple[int, int, int], in_channels: int, out_channels: int, **kwargs: Any
) -> nn.Module:
    """Build a segmentation network mapping [B, in_channels, *img_size] -> [B, out_channels, *img_size].

    ``kwargs`` are the architecture's own keyword arguments (those of :class:`ASASegmenter`, of
    :class:`SASwin`, of ``monai.networks.nets.UNETR`` or of ``monai.networks.nets.SwinUNETR``).
    """
    if arch not in architectures("segmentation"):
        raise ValueError(f"unknown segmentation architecture {arch!r}; expected one of "
                         f"{architectures('segmentation')}")
    return build_network({"arch": arch, "kwargs": dict(img_size=img_size, in_channels=in_channels,
                                                       out_channels=out_channels, **kwargs)})


PRETRAINING_ONLY = ("decoder_dim", "decoder_depth", "decoder_num_heads")  # ASA decoder sizes


def build_from_config(
    model_cfg: Mapping[str, Any],
    segmenter_cfg: Mapping[str, Any],
    *,
    in_channels: int,
    out_channels: int,
    crop: int | None,
    default_crop: int | None = None,
) -> nn.Module:
    """The segmentation network of a run config's ``model`` and ``segmenter`` sections.

    ``model.arch`` picks the network (default ``swvit_unetr``); ``model.pretrained`` initialises the ASA
    encoder (or SA-Swin's SwinViT) from a pretraining checkpoint or encoder export, read once.
    ``crop`` is the crop edge (the network's input size); None takes the pretraining crop recorded in that file, else
    ``default_crop``. A crop whose patch grid differs from the pretraining grid is an error
    unless ``segmenter.allow_grid_change`` (then the brain frame keeps the pretraining grid as its
    reference). ``model.pos_mode`` / ``model.lr_axis`` null take the file's values, else
    ``mirror`` / 0 (`pretrained_geometry`). The effective values are the network's ``img_size``, ``pos_mode``, ``lr_axis``,
    ``spe_frame`` and ``reference_grid``.
    """
    kwargs = set_options(model_cfg)
    arch = kwargs.pop("arch", "swvit_unetr")
    pretrained = kwargs.pop("pretrained", None)
    if arch != "swvit_unetr":
        if pretrained and arch != "sa_swin":
            raise ValueError(f"model.pretrained is only supported for model arch 'swvit_unetr' and 'sa_swin', not "
                             f"{arch!r}")
        size = pretrained_geometry(None, crop=crop, pos_mode=None, lr_axis=None, default_crop=default_crop).crop
        try:
            net = build_segmentation_network(arch, img_size=(size,) * 3, in_channels=in_channels,
                                             out_channels=out_channels, **kwargs)
        except TypeError as err:  # an SW-ViT option (e.g. from experiment=asa_saca) given to another network
            key = re.search(r"unexpected keyword argument '(\w+)'", str(err))
            if key is None:
                raise
            raise ValueError(f"model.{key[1]}={kwargs[key[1]]}: model arch {arch!r} has no such option (it sets the ASA "
                             f"segmenter's SW-ViT); drop it, or the experiment preset that sets it") from err
        if pretrained:
            net.load_pretrained(pretrained)
        return net
    for key in PRETRAINING_ONLY:
        kwargs.pop(key, None)
    allow_grid_change = bool(segmenter_cfg.get("allow_grid_change", False))
    geometry = pretrained_geometry(pretrained, crop=crop, pos_mode=kwargs.pop("pos_mode", None),
                                   lr_axis=kwargs.pop("lr_axis", None), default_crop=default_crop,
                                   reference_grid=segmenter_cfg.get("reference_grid"),
                                   allow_grid_change=allow_grid_change)
    net = ASASegmenter(
        img_size=(geometry.crop,) * 3, in_channels=in_channels, out_channels=out_channels,
        pos_mode=geometry.pos_mode, lr_axis=geometry.lr_axis, feature_size=segmenter_cfg.get("feature_size", 16),
        input_skip=segmenter_cfg.get("input_skip", "full"),
        spe_frame=segmenter_cfg.get("spe_frame", "brain"), reference_grid=geometry.reference_grid, **kwargs,
    )
    if geometry.checkpoint is not None:
        net.load_pretrained(pretrained, checkpoint=geometry.checkpoint, allow_grid_change=allow_grid_change)
    return net
