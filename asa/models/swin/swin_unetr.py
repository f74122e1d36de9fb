"""MONAI's SwinUNETR as a registered network (``swin_unetr``): the baseline, and the settings of MONAI's
SwinViT that the networks on it share.

Its network spec holds the keyword arguments of ``monai.networks.nets.SwinUNETR`` plus ``img_size``, the
network's input size (SwinUNETR takes any multiple of 32, so ``img_size`` only records the input size).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List

from monai.networks.nets import SwinUNETR
from torch import nn

from asa.choices import in_range
from asa.models.blocks.sizes import spec_input_size
from asa.models.declared import Capabilities
from asa.models.keys import EncoderKeys
from asa.models.presets import SWIN_SIZES
from asa.models.registry import NetworkSettings, record_spec, register_network


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


# the transfer keys of every network on MONAI's SwinViT (module ``swinViT``) and its patch embedding
SWIN_KEYS = EncoderKeys("swinViT", "swinViT.patch_embed", ("swinViT.patch_embed.proj",))


@register_network("swin_unetr", kind="segmentation", settings=SwinUNETRSettings, family="swin")
def swin_unetr(*, img_size: Any = None, **kwargs: Any) -> nn.Module:
    """MONAI's SwinUNETR for inputs of size ``img_size``; ``kwargs`` are ``SwinUNETR``'s."""
    size = spec_input_size("swin_unetr", img_size)
    net = SwinUNETR(**kwargs)
    net.img_size = tuple(size)
    net.capabilities = Capabilities(crop_multiple=32, crop_min=64)  # five halvings; a 1³ bottleneck fails to normalise
    return record_spec(SWIN_KEYS.declare(net), "swin_unetr", {"img_size": size, **kwargs})
