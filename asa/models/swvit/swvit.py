"""SW-ViT: pre-norm transformer blocks alternating LW-MSA and SLW-MSA (paper §2.2), optionally
with region attention (R-MSA, docs/method.md §1.6b) in some or all blocks and windowed symmetry-aware
cross-attention (SACA) in every block.

A block is put together from its parts (token mixer, MLP, optional SACA); :func:`sw_blocks` lays
out a stack of them, :class:`SWViT` runs the stack.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.blocks import MLPBlock
from torch import nn
from torch.utils.checkpoint import checkpoint

from asa.models.blocks.saca import WindowSymmetryCrossAttention
from asa.models.swvit.attention import LinearWindowAttention
from asa.models.swvit.region_attention import RegionAttention

REGION_LAYOUTS = ("none", "alternate", "all")


class AutocastLayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` whose output keeps its input's dtype under autocast. Autocast runs layer norm in fp32, which
    made the residual stream fp32 and cast it back before every matmul (on an H100 the norms, the casts and the fp32
    adds were about a sixth of the SW-ViT step, BENCHMARKS.md); here the kernel still accumulates the statistics
    in fp32, and weight and bias (fp32 parameters) are cast to the input's dtype. Outside autocast, or on an fp32
    input, it is ``nn.LayerNorm`` (same keys, same numbers)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype in (torch.float16, torch.bfloat16) and torch.is_autocast_enabled(x.device.type):
            with torch.autocast(x.device.type, enabled=False):
                return F.layer_norm(x, self.normalized_shape, self.weight.to(x.dtype), self.bias.to(x.dtype), self.eps)
        return super().forward(x)


class SWBlock(nn.Module):
    """Pre-norm residual block from parts; x: [B, N, C] -> [B, N, C]:
    ``x + attn(norm1(x), regions)``, with SACA then ``x + saca(norm_saca(x), mirror)``, then
    ``x + mlp(norm2(x))``.

    ``attn`` is the token mixer, called with the region id of every token and declaring whether it
    needs them (``uses_regions``): `LinearWindowAttention` (LW-/SLW-MSA, ignores them) or
    `RegionAttention` (R-MSA). ``saca``: windowed symmetry-aware cross-attention
    (`WindowSymmetryCrossAttention`, given each token's mirror position), or None for none.
    """

    def __init__(self, dim: int, attn: nn.Module, mlp: nn.Module, saca: nn.Module | None = None) -> None:
        super().__init__()
        self.dim = dim
        self.uses_regions = bool(attn.uses_regions)
        self.uses_mirror = saca is not None
        self.norm1 = AutocastLayerNorm(dim)
        self.attn = attn
        if saca is not None:  # registered in forward order: attention, SACA, MLP
            self.norm_saca = AutocastLayerNorm(dim)
            self.saca = saca
        self.norm2 = AutocastLayerNorm(dim)
        self.mlp = mlp

    def forward(self, x: torch.Tensor, regions: torch.Tensor | None = None,
                mirror: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), regions)
        if self.uses_mirror:  # a residual step that is absent adds nothing (x + Identity(x) would add x)
            x = x + self.saca(self.norm_saca(x), mirror)
        return x + self.mlp(self.norm2(x))


def sw_blocks(
    dim: int,
    depth: int,
    num_heads: int,
    window_size: int,
    *,
    mlp_ratio: float,
    shift_mask: bool,
    rel_pos_bias: bool,
    region_attention: str,
    saca: bool = False,
    dropout: float = 0.0,
    qkv_bias: bool = True,
) -> list[SWBlock]:
    """``depth`` SW blocks of width ``dim``, their token mixers laid out by ``region_attention``:
    ``none`` LW, SLW, LW, SLW, ... (SLW-MSA shifts by ⌊S/2⌋); ``alternate`` (RAT's layout) LW, R,
    SLW, R, ...; ``all`` R-MSA in every block (chunks of ``window_size`` tokens of one region).
    ``saca`` adds windowed SACA to every block. Each block's parts are made in forward order
    (attention, SACA, MLP), which fixes what a seed initialises."""
    if region_attention not in REGION_LAYOUTS:
        raise ValueError(f"region_attention must be one of {REGION_LAYOUTS}, got {region_attention!r}")
    region = {"none": [False] * depth, "all": [True] * depth,
              "alternate": [i % 2 == 1 for i in range(depth)]}[region_attention]
    shifted = [i % 2 == 1 for i in range(depth)]
    if region_attention == "alternate":
        shifted = [i % 4 == 2 for i in range(depth)]  # LW, R, SLW, R, ...
    blocks = []
    for i in range(depth):
        if region[i]:
            attn: nn.Module = RegionAttention(dim, num_heads, window_size, qkv_bias=qkv_bias, proj_drop=dropout)
        else:
            attn = LinearWindowAttention(dim, num_heads, window_size, (window_size // 2) * shifted[i],
                                         qkv_bias=qkv_bias, shift_mask=shift_mask, rel_pos_bias=rel_pos_bias,
                                         proj_drop=dropout)
        cross = (WindowSymmetryCrossAttention(dim, num_heads, window_size, qkv_bias=qkv_bias, proj_drop=dropout)
                 if saca else None)
        mlp = MLPBlock(dim, int(dim * mlp_ratio), dropout_rate=dropout, act="GELU")
        blocks.append(SWBlock(dim, attn, mlp, saca=cross))
    return blocks


class SWViT(nn.Module):
    """A stack of SW blocks and a final norm, initialised as the MAE reference (Xavier-uniform linear
    layers with zero bias, unit LayerNorms).

    ``forward(x[B, N, C], pos)`` adds ``pos`` ([N, C] or [B, N, C]) to the tokens, runs the blocks
    and returns the normed tokens; with ``hidden_indices`` it also returns the (un-normed)
    outputs of those blocks, as the segmentation decoder needs. Blocks with R-MSA need ``regions``
    [B, N], the region id of every token; blocks with SACA need ``mirror`` ([N] or [B, N], the
    sequence position of each token's left–right mirror).
    """

    def __init__(self, blocks: Sequence[SWBlock], *, grad_checkpointing: bool = False) -> None:
        super().__init__()
        if not blocks:
            raise ValueError("an SW-ViT needs at least one block (depth >= 1)")
        self.embed_dim = blocks[0].dim
        if any(block.dim != self.embed_dim for block in blocks):
            raise ValueError(f"SW-ViT blocks must share one width, got {[block.dim for block in blocks]}")
        self.saca = any(block.uses_mirror for block in blocks)
        self.uses_regions = any(block.uses_regions for block in blocks)
        self.grad_checkpointing = grad_checkpointing
        self.blocks = nn.ModuleList(blocks)
        self.norm = AutocastLayerNorm(self.embed_dim)
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
        if pos is not None:  # in the tokens' dtype: under autocast the residual stream stays in it
            x = x + pos.to(x.dtype)
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
