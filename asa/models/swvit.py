"""SW-ViT: pre-norm transformer blocks alternating LW-MSA and SLW-MSA (paper §2.2), optionally
with region attention (R-MSA, DESIGN §1.6b) in some or all blocks."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import MLPBlock
from torch import nn
from torch.utils.checkpoint import checkpoint

from asa.models.attention import LinearWindowAttention
from asa.models.region_attention import RegionAttention
from asa.models.saca import WindowSymmetryCrossAttention

REGION_LAYOUTS = ("none", "alternate", "all")


class SWBlock(nn.Module):
    """``x + attn(norm(x))`` then ``x + mlp(norm(x))``; x: [B, N, C] -> [B, N, C].

    ``region=True`` makes attn R-MSA (`RegionAttention` in chunks of ``window_size`` tokens of one
    region); forward then needs ``regions`` [B, N], the region id of every token.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int,
        shift: int = 0,
        *,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        shift_mask: bool = True,
        rel_pos_bias: bool = True,
        dropout: float = 0.0,
        region: bool = False,
        saca: bool = False,
    ) -> None:
        super().__init__()
        self.region = region
        self.norm1 = nn.LayerNorm(dim)
        if region:
            self.attn: nn.Module = RegionAttention(dim, num_heads, window_size, qkv_bias=qkv_bias, proj_drop=dropout)
        else:
            self.attn = LinearWindowAttention(
                dim, num_heads, window_size, shift,
                qkv_bias=qkv_bias, shift_mask=shift_mask, rel_pos_bias=rel_pos_bias, proj_drop=dropout,
            )
        if saca:
            self.norm_saca = nn.LayerNorm(dim)
            self.saca = WindowSymmetryCrossAttention(dim, num_heads, window_size, qkv_bias=qkv_bias,
                                                     proj_drop=dropout)
        else:
            self.saca = None
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio), dropout_rate=dropout, act="GELU")

    def forward(self, x: torch.Tensor, regions: torch.Tensor | None = None,
                mirror: torch.Tensor | None = None) -> torch.Tensor:
        x = x + (self.attn(self.norm1(x), regions) if self.region else self.attn(self.norm1(x)))
        if self.saca is not None:
            if mirror is None:
                raise ValueError("an SW block with saca needs the token mirror index")
            x = x + self.saca(self.norm_saca(x), mirror)
        return x + self.mlp(self.norm2(x))


class SWViT(nn.Module):
    """A stack of SW blocks (even blocks LW-MSA, odd blocks SLW-MSA with shift ⌊S/2⌋) and a final norm.

    ``forward(x[B, N, C], pos)`` adds ``pos`` ([N, C] or [B, N, C]) to the tokens, runs the blocks
    and returns the normed tokens; with ``hidden_indices`` it also returns the (un-normed)
    outputs of those blocks, as the segmentation decoder needs.

    ``region_attention``: ``none``; ``alternate`` (RAT's layout: odd blocks R-MSA, the even ones
    LW-MSA and SLW-MSA in turn: LW, R, SLW, R, ...); ``all`` (every block R-MSA). With R-MSA,
    forward needs ``regions`` [B, N], the region id of every token. With ``saca`` every block adds
    windowed symmetry-aware cross-attention and forward takes ``mirror`` ([N] or [B, N], the
    sequence position of each token's left–right mirror).
    """

    def __init__(
        self,
        embed_dim: int,
        depth: int,
        num_heads: int,
        window_size: int = 32,
        *,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        shift_mask: bool = True,
        rel_pos_bias: bool = True,
        dropout: float = 0.0,
        grad_checkpointing: bool = False,
        region_attention: str = "none",
        saca: bool = False,
    ) -> None:
        super().__init__()
        if region_attention not in REGION_LAYOUTS:
            raise ValueError(f"region_attention must be one of {REGION_LAYOUTS}, got {region_attention!r}")
        self.embed_dim = embed_dim
        self.saca = saca
        self.grad_checkpointing = grad_checkpointing
        region = {"none": [False] * depth, "all": [True] * depth,
                  "alternate": [i % 2 == 1 for i in range(depth)]}[region_attention]
        shifted = [i % 2 == 1 for i in range(depth)]
        if region_attention == "alternate":
            shifted = [i % 4 == 2 for i in range(depth)]  # LW, R, SLW, R, ...
        self.blocks = nn.ModuleList(
            SWBlock(
                embed_dim, num_heads, window_size, shift=(window_size // 2) * shifted[i],
                mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, shift_mask=shift_mask,
                rel_pos_bias=rel_pos_bias, dropout=dropout, region=region[i], saca=saca,
            )
            for i in range(depth)
        )
        self.uses_regions = any(region)
        self.norm = nn.LayerNorm(embed_dim)
        self.apply(_init_weights)

    def forward(
        self,
        x: torch.Tensor,
        pos: torch.Tensor | None = None,
        *,
        hidden_indices: Sequence[int] = (),
        regions: torch.Tensor | None = None,
        mirror: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """x: [B, N, C]; regions: [B, N] region ids (needed with R-MSA blocks)."""
        if self.uses_regions and regions is None:
            raise ValueError("this SW-ViT has region attention blocks: forward needs regions [B, N]")
        if pos is not None:
            x = x + pos
        for i in hidden_indices:
            if not 0 <= i < len(self.blocks):
                raise ValueError(f"hidden index {i} out of range for {len(self.blocks)} blocks")
        hidden = []
        for i, block in enumerate(self.blocks):
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, regions, mirror, use_reentrant=False)
            else:
                x = block(x, regions, mirror)
            if i in hidden_indices:
                hidden.append(x)
        x = self.norm(x)
        return (x, hidden) if hidden_indices else x


def _init_weights(module: nn.Module) -> None:
    """Xavier-uniform linear layers with zero bias, unit LayerNorms (as the MAE reference)."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
