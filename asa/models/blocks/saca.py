"""Symmetry-aware cross-attention (SACA, SA-Swin; docs/method.md §1.6b) and the token mirror map.

``SACA(f, f̃) = softmax(Q K̃ᵀ/√d) Ṽ`` with ``Q = f W_Q``, ``K̃ = f̃ W_K``, ``Ṽ = f̃ W_V``: the tokens of
a brain attend to the tokens of its left–right mirror image. :class:`SymmetryCrossAttention` is the
block on its own (SA-Swin's bottleneck layer); :class:`WindowSymmetryCrossAttention` is the cheap
form inside SW-ViT, where the mirror image of each window is gathered from the same sequence through
the token mirror map, so no second forward pass is needed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from asa.models.blocks.sizes import to_3tuple

SACA_PLACES = ("none", "decoder", "encoder", "all")


class SymmetryCrossAttention(nn.Module):
    """Multi-head cross-attention: queries from ``f``, keys and values from the mirror tokens ``f̃``.

    forward(f [B, N, C], f_mirror [B, M, C], attn_mask [B or 1, heads or 1, N, M] additive or bool,
    optional) -> [B, N, C]. One fused ``scaled_dot_product_attention`` call.
    """

    def __init__(
        self, dim: int, num_heads: int, *, qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0
    ) -> None:
        super().__init__()
        if dim < 1 or num_heads < 1 or dim % num_heads:
            raise ValueError(f"dim {dim} must be a positive multiple of num_heads {num_heads}")
        self.num_heads = num_heads
        self.attn_drop = attn_drop
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(
        self, f: torch.Tensor, f_mirror: torch.Tensor, attn_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        if f.ndim != 3 or f_mirror.ndim != 3 or f.shape[0] != f_mirror.shape[0] or f.shape[2] != f_mirror.shape[2]:
            raise ValueError(f"SACA expects f [B, N, C] and f_mirror [B, M, C], got {list(f.shape)} and "
                             f"{list(f_mirror.shape)}")
        b, n, c = f.shape
        m, h = f_mirror.shape[1], self.num_heads
        q = self.q(f).view(b, n, h, c // h).transpose(1, 2)  # [B, h, N, d]
        k, v = self.kv(f_mirror).view(b, m, 2, h, c // h).permute(2, 0, 3, 1, 4).unbind(0)  # each [B, h, M, d]
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.attn_drop if self.training else 0.0
        )  # [B, h, N, d]
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, c)))


def mirror_index(grid: int | tuple[int, int, int], lr_axis: int = 0) -> torch.Tensor:
    """The token mirror map of a grid in raster order (axis 2 fastest): entry n is the index of the
    token at n's position with ``a ↦ G−1−a`` along ``lr_axis``. An involution. -> [N] long."""
    if lr_axis not in (0, 1, 2):
        raise ValueError(f"lr_axis must be 0, 1 or 2, got {lr_axis}")
    sizes = to_3tuple(grid, "grid")
    return torch.arange(sizes[0] * sizes[1] * sizes[2]).view(sizes).flip(lr_axis).reshape(-1)


def check_mirror_windows(grid: int | tuple[int, int, int], lr_axis: int, window_size: int, where: str) -> None:
    """Raise ``ValueError`` unless the mirror map sends every window of ``window_size`` consecutive
    tokens (unshifted, no padding) onto one window.

    With ``lr_axis=0`` (slowest in raster order) that holds when S divides G1·G2, or G1·G2 divides S
    and S/(G1·G2) divides G0; along a faster axis it needs the whole mirrored run inside a window.
    """
    sizes = to_3tuple(grid, "grid")
    n = sizes[0] * sizes[1] * sizes[2]
    windows = mirror_index(sizes, lr_axis) // window_size  # window of each token's mirror
    ok = n % window_size == 0 and bool((windows.view(-1, window_size) == windows.view(-1, window_size)[:, :1]).all())
    if not ok:
        slab = sizes[1] * sizes[2]
        raise ValueError(
            f"{where}: saca needs the mirror of every window to be a window, which fails for token grid "
            f"{sizes}, lr_axis {lr_axis} and window_size {window_size}; choose a window_size that divides "
            f"G1·G2 = {slab} (lr_axis 0) or a crop whose grid satisfies it"
        )


class WindowSymmetryCrossAttention(nn.Module):
    """Windowed SACA for a 1D token sequence: window k of ``x`` attends to the mirror images of its
    own tokens, gathered through ``mirror`` (position of each token's mirror in the same sequence).

    On a full grid whose windows the mirror map preserves (:func:`check_mirror_windows`) the gathered
    keys are exactly the tokens of the mirror window. Under mirror-consistent masking the encoder's
    visible sequence holds every visible token's mirror, so the gather stays exact there too.
    ``mirror`` −1 marks a token whose mirror is not in the sequence (an off-centre crop in the brain
    frame): it is no key, and SACA adds nothing to it. Padded keys are masked out likewise.

    forward(x [B, L, C], mirror [L] or [B, L] long) -> [B, L, C].
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, *, qkv_bias: bool = True,
                 proj_drop: float = 0.0) -> None:
        super().__init__()
        if window_size < 1:
            raise ValueError(f"window_size must be >= 1, got {window_size}")
        self.window_size = window_size
        self.attn = SymmetryCrossAttention(dim, num_heads, qkv_bias=qkv_bias, proj_drop=proj_drop)

    def forward(self, x: torch.Tensor, mirror: torch.Tensor | None) -> torch.Tensor:
        b, n, c = x.shape
        s = self.window_size
        if mirror is None:
            raise ValueError("windowed SACA needs the token mirror index (mirror [L] or [B, L])")
        if mirror.shape[-1] != n:
            raise ValueError(f"mirror index has {mirror.shape[-1]} entries for a sequence of {n} tokens")
        mirror = mirror.to(x.device).expand(b, n)
        valid = mirror >= 0  # [B, L]
        index = mirror.clamp_min(0).unsqueeze(-1).expand(-1, -1, c)
        x_mirror = torch.gather(x, 1, index)  # [B, L, C]: token i's slot holds its mirror token
        pad = -n % s
        nw = (n + pad) // s
        mask = None
        if pad or not bool(valid.all()):
            x, x_mirror = F.pad(x, (0, 0, 0, pad)), F.pad(x_mirror, (0, 0, 0, pad))
            keys = F.pad(valid, (0, pad)).view(b, nw, s)  # slot j of a window is a key if its mirror exists
            keys = keys | ~keys.any(-1, keepdim=True)  # a window without any: attend anywhere, output zeroed
            mask = keys[:, :, None, None, :].expand(b, nw, 1, s, s).reshape(b * nw, 1, s, s)
        out = self.attn(x.reshape(b * nw, s, c), x_mirror.reshape(b * nw, s, c), mask)  # [B·nW, S, C]
        out = out.view(b, nw * s, c)[:, :n]
        return out if mask is None else out * valid.unsqueeze(-1).to(out.dtype)
