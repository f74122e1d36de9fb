"""MONAI's UNETR and SwinUNETR as registered networks (``unetr``, ``swin_unetr``): the baselines.

Their network spec holds the keyword arguments of ``monai.networks.nets.UNETR`` / ``SwinUNETR``
plus ``img_size``, the network's input size (SwinUNETR takes any multiple of 32, so for it
``img_size`` only records the input size).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List

from monai.networks.nets import UNETR, SwinUNETR
from torch import nn

from asa.choices import in_range
from asa.models.declared import Capabilities
from asa.models.swvit.patch import to_3tuple
from asa.models.presets import SWIN_SIZES
from asa.models.registry import NetworkSettings, record_spec, register_network


def spec_input_size(arch: str, img_size: Any) -> list[int]:
    """``img_size`` of a network spec as 3 ints; a spec of ``arch`` without one is refused."""
    if img_size is None:
        raise ValueError(f"network spec for {arch!r} needs kwargs.img_size (the network's input size)")
    return list(to_3tuple(img_size, "img_size"))


@dataclass
class ViTSettings(NetworkSettings):
    """MONAI's ViT (UNETR's encoder, patch 16, global self-attention): its sizes and regularisers with
    MONAI's defaults; the settings of the networks on it add their own."""

    hidden_size: int = in_range(768, 1)
    mlp_dim: int = in_range(3072, 1)
    num_heads: int = in_range(12, 1)
    proj_type: str = "conv"
    dropout_rate: float = in_range(0.0, 0.0, 1.0)
    qkv_bias: bool = False


@dataclass
class UNETRSettings(ViTSettings):
    """``model=unetr``: keyword arguments of ``monai.networks.nets.UNETR``, with its defaults."""

    feature_size: int = in_range(16, 1)
    norm_name: str = "instance"
    conv_block: bool = True
    res_block: bool = True


@dataclass
class SwinSettings(NetworkSettings):
    """MONAI's SwinViT, as ``SwinUNETR`` builds it: the sizes (`asa.models.SWIN_SIZES`, the one Swin
    preset) and its regularisers; the settings of the networks on it add their own."""

    feature_size: int = in_range(SWIN_SIZES["feature_size"], 1)
    depths: List[int] = field(default_factory=lambda: list(SWIN_SIZES["depths"]))
    num_heads: List[int] = field(default_factory=lambda: list(SWIN_SIZES["num_heads"]))
    window_size: int = in_range(7, 1)
    drop_rate: float = in_range(0.0, 0.0, 1.0)
    attn_drop_rate: float = in_range(0.0, 0.0, 1.0)
    dropout_path_rate: float = in_range(0.0, 0.0, 1.0)
    use_checkpoint: bool = False  # activation checkpointing: less memory, slower


@dataclass
class SwinUNETRSettings(SwinSettings):
    """``model=swin_unetr``: keyword arguments of ``monai.networks.nets.SwinUNETR``."""

    norm_name: str = "instance"


@register_network("unetr", task="segmentation", encoder="vit", settings=UNETRSettings)
def unetr(*, img_size: Any = None, **kwargs: Any) -> nn.Module:
    """MONAI's UNETR of input size ``img_size``; ``kwargs`` are ``UNETR``'s."""
    size = spec_input_size("unetr", img_size)
    net = UNETR(img_size=size, **kwargs)
    net.img_size = tuple(size)
    return record_spec(net, "unetr", {"img_size": size, **kwargs})


@register_network("swin_unetr", task="segmentation", encoder="swinViT", settings=SwinUNETRSettings)
def swin_unetr(*, img_size: Any = None, **kwargs: Any) -> nn.Module:
    """MONAI's SwinUNETR for inputs of size ``img_size``; ``kwargs`` are ``SwinUNETR``'s."""
    size = spec_input_size("swin_unetr", img_size)
    net = SwinUNETR(**kwargs)
    net.img_size = tuple(size)
    net.capabilities = Capabilities(crop_multiple=32, crop_min=64)  # five halvings; a 1³ bottleneck fails to normalise
    return record_spec(net, "swin_unetr", {"img_size": size, **kwargs})
