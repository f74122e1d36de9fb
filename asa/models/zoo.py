"""Segmentation networks by name: ``asa`` (ASASegmenter) and MONAI's UNETR and SwinUNETR baselines."""

from __future__ import annotations

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
