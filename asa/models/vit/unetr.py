"""MONAI's UNETR as a registered network (``unetr``): the baseline on MONAI's ViT.

Its network spec holds the keyword arguments of ``monai.networks.nets.UNETR`` plus ``img_size``, the
network's input size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from monai.networks.nets import UNETR
from torch import nn

from asa.choices import in_range
from asa.models.blocks.sizes import spec_input_size
from asa.models.keys import EncoderKeys
from asa.models.registry import NetworkSettings, record_spec, register_network


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


# the transfer keys of every network on MONAI's ViT (module ``vit``) and its patch embedding
VIT_KEYS = EncoderKeys("vit", "vit.patch_embedding", ("vit.patch_embedding.patch_embeddings",))


@register_network("unetr", kind="segmentation", settings=UNETRSettings, family="vit")
def unetr(*, img_size: Any = None, **kwargs: Any) -> nn.Module:
    """MONAI's UNETR of input size ``img_size``; ``kwargs`` are ``UNETR``'s."""
    size = spec_input_size("unetr", img_size)
    net = UNETR(img_size=size, **kwargs)
    net.img_size = tuple(size)
    return record_spec(VIT_KEYS.declare(net), "unetr", {"img_size": size, **kwargs})
