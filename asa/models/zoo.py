"""Segmentation networks by name: ``asa`` (ASASegmenter) and MONAI's UNETR and SwinUNETR baselines."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from asa.models.segmenter import ASASegmenter

ARCHITECTURES = ("asa", "unetr", "swin_unetr")


def build_segmentation_network(
    arch: str, *, img_size: tuple[int, int, int], in_channels: int, out_channels: int, **kwargs: Any
) -> nn.Module:
    """Build a segmentation network mapping [B, in_channels, *img_size] -> [B, out_channels, *img_size].

    ``kwargs`` are the architecture's own keyword arguments (those of :class:`ASASegmenter`, of
    ``monai.networks.nets.UNETR`` or of ``monai.networks.nets.SwinUNETR``).
    """
    if arch == "asa":
        return ASASegmenter(img_size=img_size, in_channels=in_channels, out_channels=out_channels, **kwargs)
    if arch == "unetr":
        from monai.networks.nets import UNETR

        return UNETR(in_channels=in_channels, out_channels=out_channels, img_size=img_size, **kwargs)
    if arch == "swin_unetr":
        from monai.networks.nets import SwinUNETR

        return SwinUNETR(in_channels=in_channels, out_channels=out_channels, **kwargs)
    raise ValueError(f"unknown segmentation architecture {arch!r}; expected one of {ARCHITECTURES}")


PRETRAINING_ONLY = ("decoder_dim", "decoder_depth", "decoder_num_heads")  # ASA decoder sizes


def build_from_config(
    model_cfg: Mapping[str, Any],
    segmenter_cfg: Mapping[str, Any],
    *,
    in_channels: int,
    out_channels: int,
    patch_size: int,
) -> nn.Module:
    """The segmentation network of a run config's ``model`` and ``segmenter`` sections.

    ``model.arch`` picks the network (default ``asa``); ``model.pretrained`` initialises the ASA
    encoder from a pretraining checkpoint or encoder export, read once. ``segmenter.pos_mode: null``
    takes the position encoding recorded in that file, else ``mirror``; the effective mode is
    ``net.pos_mode``.
    """
    kwargs = dict(model_cfg)
    arch = kwargs.pop("arch", "asa")
    pretrained = kwargs.pop("pretrained", None)
    if arch != "asa":
        if pretrained:
            raise ValueError(f"model.pretrained is only supported for model arch 'asa', not {arch!r}")
        return build_segmentation_network(arch, img_size=(patch_size,) * 3, in_channels=in_channels,
                                          out_channels=out_channels, **kwargs)
    for key in PRETRAINING_ONLY:
        kwargs.pop(key, None)
    checkpoint = None
    if pretrained:
        from asa.train.checkpoint import load_checkpoint

        checkpoint = load_checkpoint(pretrained)
    pos_mode = segmenter_cfg.get("pos_mode")
    if pos_mode is None:
        recorded = (checkpoint or {}).get("config") or {}
        pos_mode = (recorded.get("mae") or {}).get("pos_mode") or recorded.get("pos_mode") or "mirror"
    net = ASASegmenter(
        img_size=(patch_size,) * 3, in_channels=in_channels, out_channels=out_channels, pos_mode=pos_mode,
        lr_axis=segmenter_cfg.get("lr_axis", 0), feature_size=segmenter_cfg.get("feature_size", 16), **kwargs,
    )
    if checkpoint is not None:
        net.load_pretrained(pretrained, checkpoint=checkpoint)
    return net
