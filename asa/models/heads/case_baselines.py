"""Case-network baselines (issue #24): MONAI's ViT (``vit_case``) and SwinUNETR's SwinViT
(``swin_case``) encoders under the case head of :class:`ASACaseHead` (the same pooling and MLP,
:class:`PooledTokenHead`), so a transfer study compares encoders under one recipe.

Neither uses the brain frame: they take the crop alone (no patch offsets). Both number their encoder
layers (``encoder_layer_id``), so ``optim.encoder_lr_scale``, ``layer_decay`` and
``freeze_encoder_epochs`` apply to them as to the SW-ViT.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from monai.networks.nets import ViT
from monai.networks.nets.swin_unetr import SwinTransformer
from torch import nn

from asa.models.blocks.sizes import to_3tuple
from asa.models.declared import Capabilities
from asa.models.heads.case_head import PooledTokenHead
from asa.models.presets import DEFAULT_CROP, SWIN_SIZES
from asa.models.registry import record_spec, register_network
from asa.models.swin.sa_swin import SASwin
from asa.models.swin.swin_unetr import SWIN_KEYS, SwinSettings
from asa.models.vit.unetr import VIT_KEYS, ViTSettings

__all__ = ["ViTCaseNet", "SwinCaseNet"]


def _check_input(net: nn.Module, x: torch.Tensor) -> None:
    if tuple(x.shape[1:]) != (net.in_channels, *net.img_size):
        raise ValueError(f"{type(net).__name__} expects input [B, {net.in_channels}, "
                         f"{', '.join(map(str, net.img_size))}], got {list(x.shape)}")


@dataclass
class ViTCaseSettings(ViTSettings):
    """``model=vit_case``: the ViT's keyword arguments (:class:`ViTCaseNet`; the head's are ``task.head.*``)."""

    patch_size: int = 16
    num_layers: int = 12
    pos_embed_type: str = "learnable"


@dataclass
class SwinCaseSettings(SwinSettings):
    """``model=swin_case``: the SwinViT's keyword arguments (:class:`SwinCaseNet`; the head's are ``task.head.*``)."""

    patch_size: int = 2


@register_network("vit_case", kind="case", settings=ViTCaseSettings, family="vit")
class ViTCaseNet(PooledTokenHead):
    """MONAI's ViT (UNETR's encoder, module ``vit``) over the crop, its normed tokens pooled and
    passed through the case head's MLP. ``patch_size``, ``hidden_size``, ``mlp_dim``,
    ``num_layers``, ``num_heads``, ``proj_type``, ``pos_embed_type``, ``dropout_rate`` and
    ``qkv_bias`` are ``monai.networks.nets.ViT``'s; the head's options are :class:`ASACaseHead`'s.

    x: [B, C, D, H, W] (D, H, W = img_size, multiples of patch_size) -> [B, out_channels].
    """

    key_to_encoder, key_to_stem, keys_to_in_proj = VIT_KEYS  # its transfer keys (asa.models.keys)

    def __init__(
        self,
        *,
        img_size: int | Sequence[int] = DEFAULT_CROP,
        in_channels: int = 1,
        out_channels: int = 2,
        patch_size: int = 16,
        hidden_size: int = 768,
        mlp_dim: int = 3072,
        num_layers: int = 12,
        num_heads: int = 12,
        proj_type: str = "conv",
        pos_embed_type: str = "learnable",
        dropout_rate: float = 0.0,
        qkv_bias: bool = False,
        pooling: str = "mean",
        hidden_dim: int = 256,
        head_dropout: float = 0.0,
        target_shift: float = 0.0,
        target_scale: float = 1.0,
    ) -> None:
        super().__init__()
        given = {k: v for k, v in locals().items() if k not in ("self", "__class__")}  # the spec's kwargs
        self.check_head("ViTCaseNet", out_channels=out_channels, pooling=pooling, hidden_dim=hidden_dim,
                        target_scale=target_scale)
        size = to_3tuple(img_size, "img_size")
        if any(s % patch_size for s in size):
            raise ValueError(f"data.crop={size[0]}: model arch vit_case needs a crop that is a multiple of its "
                             f"ViT patch_size {patch_size}")
        self.vit = ViT(in_channels=in_channels, img_size=size, patch_size=patch_size, hidden_size=hidden_size,
                       mlp_dim=mlp_dim, num_layers=num_layers, num_heads=num_heads, proj_type=proj_type,
                       pos_embed_type=pos_embed_type, classification=False, dropout_rate=dropout_rate, spatial_dims=3,
                       qkv_bias=qkv_bias)
        self.img_size, self.in_channels, self.patch_size = size, in_channels, patch_size
        self.capabilities = Capabilities(crop_lattice=patch_size)  # shifted test-time crops see whole patches
        self.num_encoder_layers = num_layers + 1  # patch embedding 0, block i: i + 1, final norm num_layers + 1
        self.init_head(hidden_size, out_channels=out_channels, pooling=pooling, hidden_dim=hidden_dim,
                       head_dropout=head_dropout, target_shift=target_shift, target_scale=target_scale)
        record_spec(self, "vit_case", {**given, "img_size": list(size)})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C, D, H, W] -> [B, out_channels]."""
        _check_input(self, x)
        tokens, _ = self.vit(x)  # [B, N, hidden_size], after the ViT's final norm
        return self.head(tokens)

    def encoder_layer_id(self, name: str) -> int | None:
        """Depth of a parameter for layer-wise lr decay: 0 the patch embedding (and its position
        embedding), i + 1 ViT block i, ``num_encoder_layers`` the final norm, None the head."""
        if name.startswith("vit.patch_embedding."):
            return 0
        if name.startswith("vit.blocks."):
            return int(name.split(".")[2]) + 1
        if name.startswith("vit."):
            return self.num_encoder_layers
        return None

    def no_weight_decay(self) -> set[str]:
        """The learned position embedding, as MAE / BEiT exempt position tokens."""
        return {"vit.patch_embedding.position_embeddings"}


@register_network("swin_case", kind="case", settings=SwinCaseSettings, family="swin")
class SwinCaseNet(PooledTokenHead):
    """SwinUNETR's SwinViT (``monai.networks.nets.swin_unetr.SwinTransformer``, module ``swinViT``,
    built as ``SwinUNETR`` builds it, so SA-Swin pretraining files load with :meth:`load_pretrained`)
    over the crop; the tokens of its last stage (normalised, as SwinUNETR's bottleneck) pooled and
    passed through the case head's MLP. ``feature_size``, ``depths``, ``num_heads``, ``window_size``,
    ``patch_size``, ``drop_rate``, ``attn_drop_rate``, ``dropout_path_rate`` and ``use_checkpoint``
    are ``SwinUNETR``'s.

    x: [B, C, D, H, W] (D, H, W = img_size, multiples of 16 · patch_size) -> [B, out_channels].
    """

    key_to_encoder, key_to_stem, keys_to_in_proj = SWIN_KEYS  # its transfer keys (asa.models.keys)

    def __init__(
        self,
        *,
        img_size: int | Sequence[int] = DEFAULT_CROP,
        in_channels: int = 1,
        out_channels: int = 2,
        feature_size: int = SWIN_SIZES["feature_size"],
        depths: Sequence[int] = SWIN_SIZES["depths"],
        num_heads: Sequence[int] = SWIN_SIZES["num_heads"],
        window_size: int = 7,
        patch_size: int = 2,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        dropout_path_rate: float = 0.0,
        use_checkpoint: bool = False,
        pooling: str = "mean",
        hidden_dim: int = 256,
        head_dropout: float = 0.0,
        target_shift: float = 0.0,
        target_scale: float = 1.0,
    ) -> None:
        super().__init__()
        given = {k: v for k, v in locals().items() if k not in ("self", "__class__")}  # the spec's kwargs
        self.check_head("SwinCaseNet", out_channels=out_channels, pooling=pooling, hidden_dim=hidden_dim,
                        target_scale=target_scale)
        size = to_3tuple(img_size, "img_size")
        stride = patch_size * 2 ** len(depths)  # the patch embedding, then one patch merging per stage
        if any(s % stride for s in size):
            raise ValueError(f"data.crop={size[0]}: model arch swin_case needs a crop that is a multiple of "
                             f"{stride} (patch_size {patch_size} x 2^{len(depths)} stages)")
        self.swinViT = SwinTransformer(in_chans=in_channels, embed_dim=feature_size, window_size=(window_size,) * 3,
                                       patch_size=(patch_size,) * 3, depths=list(depths), num_heads=list(num_heads),
                                       mlp_ratio=4.0, qkv_bias=True, drop_rate=drop_rate, attn_drop_rate=attn_drop_rate,
                                       drop_path_rate=dropout_path_rate, norm_layer=nn.LayerNorm,
                                       use_checkpoint=use_checkpoint, spatial_dims=3, downsample="merging")
        self.img_size, self.in_channels = size, in_channels
        self.capabilities = Capabilities(crop_lattice=stride)  # shifted test-time crops keep the last stage's token grid
        # SwinViT blocks per stage, numbered as SASwin numbers them (encoder_layer_id)
        self._stage_depths = [len(getattr(self.swinViT, f"layers{k}")[0].blocks) for k in range(1, 5)]
        self.num_encoder_layers = sum(self._stage_depths) + 1
        self.init_head(feature_size * 2 ** len(depths), out_channels=out_channels, pooling=pooling,
                       hidden_dim=hidden_dim, head_dropout=head_dropout, target_shift=target_shift,
                       target_scale=target_scale)
        record_spec(self, "swin_case", {**given, "img_size": list(size), "depths": list(depths),
                                        "num_heads": list(num_heads)})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C, D, H, W] -> [B, out_channels]."""
        _check_input(self, x)
        last = self.swinViT(x, normalize=True)[-1]  # [B, 16·feature_size, d, h, w]
        return self.head(last.flatten(2).transpose(1, 2))  # tokens [B, d·h·w, C]

    # the SwinViT is SA-Swin's (same keys, same stages): its layer ids and pretrained loader apply unchanged
    encoder_layer_id = SASwin.encoder_layer_id
    load_pretrained = SASwin.load_pretrained
