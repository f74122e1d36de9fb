"""Patch embedding and the (un)patchify maps between volumes and token sequences.

Tokens are ordered in raster order over the patch grid (G0, G1, G2), axis 2 fastest; inside a
patch the values are ordered (s0, s1, s2, C), as in the MAE reference.
"""

from __future__ import annotations

import torch
from torch import nn

from asa.models.blocks.sizes import Size3, to_3tuple


def patch_grid(img_size: int | tuple[int, ...], patch_size: int) -> Size3:
    """Token grid (G0, G1, G2) of a volume; every side must be a multiple of ``patch_size``."""
    size = to_3tuple(img_size, "img_size")
    if patch_size <= 0 or any(s % patch_size for s in size):
        raise ValueError(f"img_size {size} must be divisible by patch_size {patch_size} along every axis")
    return tuple(s // patch_size for s in size)  # type: ignore[return-value]


def patchify(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Cut volumes into patches. x: [B, C, D, H, W] -> [B, N, s³·C] with N = G0·G1·G2."""
    b, c, d, h, w = x.shape
    s = patch_size
    g0, g1, g2 = patch_grid((d, h, w), s)
    x = x.reshape(b, c, g0, s, g1, s, g2, s)
    x = x.permute(0, 2, 4, 6, 3, 5, 7, 1)  # [B, G0, G1, G2, s, s, s, C]
    return x.reshape(b, g0 * g1 * g2, s**3 * c)


def unpatchify(p: torch.Tensor, patch_size: int, grid: Size3, channels: int) -> torch.Tensor:
    """Inverse of :func:`patchify`. p: [B, N, s³·C] -> [B, C, G0·s, G1·s, G2·s]."""
    b, n, _ = p.shape
    s = patch_size
    g0, g1, g2 = grid
    if n != g0 * g1 * g2:
        raise ValueError(f"got {n} tokens for a grid {grid} ({g0 * g1 * g2} tokens)")
    x = p.reshape(b, g0, g1, g2, s, s, s, channels)
    x = x.permute(0, 7, 1, 4, 2, 5, 3, 6)  # [B, C, G0, s, G1, s, G2, s]
    return x.reshape(b, channels, g0 * s, g1 * s, g2 * s)


class PatchEmbed(nn.Module):
    """Linear embedding of non-overlapping s³ patches: [B, C, D, H, W] -> [B, N, dim].

    A strided convolution is exactly a linear map of each patch; its weight is initialised
    Xavier-uniform as a [dim, C·s³] matrix.
    """

    def __init__(self, in_channels: int, embed_dim: int, patch_size: int = 8) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.in_channels = in_channels
        self.proj = nn.Conv3d(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size)
        nn.init.xavier_uniform_(self.proj.weight.view(embed_dim, -1))
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patch_grid(x.shape[2:], self.patch_size)  # clear error for sizes that do not divide
        return self.proj(x).flatten(2).transpose(1, 2)  # [B, dim, G0, G1, G2] -> [B, N, dim]
