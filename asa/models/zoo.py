"""Segmentation networks by name.

Every network registers itself by name in its own file (:mod:`asa.models.registry`); this module
builds the segmentation networks among them (``swvit_unetr``, ``unetr``, ``swin_unetr``, ``sa_swin``, ...)
from explicit arguments. The network of a run config is `asa.api.machinery.networks`'s.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from asa.models.registry import NETWORKS, architectures, build_network, network_spec

__all__ = ["NETWORKS", "build_network", "build_segmentation_network", "network_spec"]


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
