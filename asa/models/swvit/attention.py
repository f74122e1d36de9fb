"""LW-MSA / SLW-MSA: multi-head self-attention inside windows of a 1D token sequence."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from asa.models.swvit.window_kernel import window_attention


class _HeadViews(torch.autograd.Function):
    """q, k, v [B·nW, h, S, d] as views of the fused projection qkv [B, nW·S, 3C] (what ``unbind`` gives), whose
    backward writes the three gradients straight into the projection's layout [B, nW·S, 3C]: one copy, where
    ``unbind``'s backward stacks them and the projection's backward then makes the stack contiguous (two)."""

    @staticmethod
    def forward(ctx, qkv: torch.Tensor, windows: int, heads: int) -> tuple[torch.Tensor, ...]:
        b, p, c3 = qkv.shape
        ctx.shape = b, p, c3
        return qkv.view(b * windows, p // windows, 3, heads, c3 // 3 // heads).permute(2, 0, 3, 1, 4).unbind(0)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor | None) -> tuple[torch.Tensor, None, None]:
        given = next(g for g in grads if g is not None)
        grads = tuple(torch.zeros_like(given) if g is None else g for g in grads)
        # [B·nW, S, 3, h, d] in one kernel: the projection's layout, each gradient read through its transposed view
        return torch.stack([g.transpose(1, 2) for g in grads], dim=2).view(ctx.shape), None, None


class _TokenPermutation(torch.autograd.Function):
    """x [B, N, C] -> x[:, order], ``order`` a permutation of the N tokens and ``inverse`` its inverse: the backward
    is the inverse gather (``index_select``'s own backward adds into a zero-filled tensor: a fill and an
    accumulating scatter where a gather suffices)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, order: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
        ctx.inverse = inverse
        return x.index_select(1, order)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return grad.index_select(1, ctx.inverse), None, None


class LinearWindowAttention(nn.Module):
    """Self-attention within consecutive windows of ``window_size`` tokens (paper §2.2).

    With ``shift > 0`` (SLW-MSA, usually ⌊S/2⌋) the sequence is rolled by ``-shift`` before the
    windows are cut and rolled back after, so window boundaries sit at ``shift + k·S``. The
    window that wraps the sequence's end onto its start is split by a mask when ``shift_mask``
    (Swin style). A sequence whose length is not a multiple of S is padded; padded keys are
    masked out. ``rel_pos_bias`` adds a learned bias per head indexed by the offset i − j
    (2S − 1 entries). All windows go through one batched ``scaled_dot_product_attention`` call.

    The shifted windows are cut by one gather with indices built once per sequence length
    (window slot -> token; padding slots point at a real token, their keys are masked and their
    outputs dropped) and put back by the inverse gather after the output projection, instead of a
    roll, a pad, a slice and a roll back. ``partition = "roll"`` selects that earlier way, kept only
    so that the benchmark can compare the two in one process; both give the same values.

    On a CPU, when the bias needs a gradient (training with ``rel_pos_bias``) and there is no attention
    dropout, the windows go through `window_attention` instead of SDPA, whose CPU kernels take no
    bias that needs a gradient and fall back to the unfused math kernel's copies; the values are
    bit-identical. ``kernel = "sdpa"`` keeps SDPA everywhere (the earlier way, kept for the benchmark's
    A/B). CUDA always runs SDPA (its memory-efficient kernel takes the bias), and so does a compiled
    block (``trainer.compile``: the kernel's strided writes would break dynamo's graph).

    x: [B, N, C] -> [B, N, C]. Windows group tokens by sequence position alone: the region ids an SW
    block hands each of its token mixers (``forward(x, regions)``) are not used.
    """

    uses_regions = False  # declared for SW blocks: LW-MSA needs no region ids
    PARTITIONS = ("gather", "roll")
    KERNELS = ("auto", "sdpa")

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int,
        shift: int = 0,
        *,
        qkv_bias: bool = True,
        shift_mask: bool = True,
        rel_pos_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be divisible by num_heads {num_heads}")
        if window_size < 1:
            raise ValueError(f"window_size must be >= 1, got {window_size}")
        if not 0 <= shift < window_size:
            raise ValueError(f"shift must lie in [0, window_size={window_size}), got {shift}")
        self.num_heads = num_heads
        self.window_size = window_size
        self.shift = shift
        self.shift_mask = shift_mask
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        if rel_pos_bias:
            self.rel_pos_bias = nn.Parameter(torch.zeros(2 * window_size - 1, num_heads))
            nn.init.trunc_normal_(self.rel_pos_bias, std=0.02)
            offsets = torch.arange(window_size)
            self.register_buffer(
                "rel_index", offsets[:, None] - offsets[None, :] + window_size - 1, persistent=False
            )
        else:
            self.rel_pos_bias = None
        self.partition = "gather"
        self.kernel = "auto"
        self._mask_cache: dict[tuple[int, torch.device, torch.dtype], torch.Tensor | None] = {}
        self._order_cache: dict[tuple[int, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}

    def _shifted_order(self, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(slot -> token [P], token -> slot [n]) for the shifted, padded window layout of n tokens
        (P = n rounded up to S): slot j holds token (j + shift) mod n, as after ``roll(-shift)``;
        padding slots hold token 0 (masked as keys, dropped as queries). Built once per length."""
        key = (n, device)
        if key not in self._order_cache:
            padded = -(-n // self.window_size) * self.window_size
            slots = torch.arange(padded, device=device)
            token = torch.where(slots < n, (slots + self.shift) % n, 0)
            self._order_cache[key] = token, (torch.arange(n, device=device) - self.shift) % n
        return self._order_cache[key]

    def _structural_mask(self, n: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor | None:
        """Additive mask [nW, 1, S, S] (0 or -inf) for padding and the wrap-around window, or None;
        built once per sequence length."""
        key = (n, device, dtype)
        if key not in self._mask_cache:
            s = self.window_size
            padded = -(-n // s) * s
            # Segment id of each (rolled, padded) position: the part rolled over from the start,
            # the rest, and padding. Tokens attend only to keys of their own segment; padding
            # queries see everything real so no row is empty (their output is dropped).
            wraps = bool(self.shift and self.shift_mask and n > self.shift)
            seg = torch.zeros(padded, dtype=torch.long, device=device)
            if wraps:
                seg[n - self.shift : n] = 1
            seg[n:] = 2
            if padded == n and not wraps:  # decided from the sizes: no read of the device's tensor
                mask = None
            else:
                seg = seg.view(-1, s)  # [nW, S]
                mask = (seg[:, :, None] == seg[:, None, :]) | (seg[:, :, None] == 2)
                mask &= seg[:, None, :] != 2
                keep = mask.unsqueeze(1)  # [nW, 1, S, S]
                mask = torch.zeros(keep.shape, dtype=dtype, device=device).masked_fill(~keep, float("-inf"))
            self._mask_cache[key] = mask
        return self._mask_cache[key]

    def _attn_bias(self, n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor | None:
        """Additive bias [nW or 1, heads, S, S] combining the relative bias and the masks."""
        blocked = self._structural_mask(n, device, dtype)
        bias = None
        if self.rel_pos_bias is not None:
            # [1, h, S, S], contiguous: CUDA's fused kernels take a mask only with last-dim stride 1
            # (a permuted view sends every call to the unfused math kernel)
            bias = self.rel_pos_bias[self.rel_index].permute(2, 0, 1).to(dtype).contiguous().unsqueeze(0)
        if blocked is None:
            return bias
        return blocked if bias is None else blocked + bias

    def forward(self, x: torch.Tensor, regions: torch.Tensor | None = None) -> torch.Tensor:
        if self.partition not in self.PARTITIONS:
            raise ValueError(f"partition must be one of {self.PARTITIONS}, got {self.partition!r}")
        if self.kernel not in self.KERNELS:
            raise ValueError(f"kernel must be one of {self.KERNELS}, got {self.kernel!r}")
        b, n, c = x.shape
        s, h = self.window_size, self.num_heads
        pad = -n % s
        nw = (n + pad) // s
        rolled = self.shift and self.partition == "roll"
        if self.shift and not rolled:
            slots, tokens = self._shifted_order(n, x.device)
            x = self._to_order(x, slots, tokens, pad)  # [B, nW·S, C], window slot order
        else:
            if rolled:
                x = torch.roll(x, -self.shift, dims=1)
            if pad:
                x = F.pad(x, (0, 0, 0, pad))
        qkv = self.qkv(x)  # [B, nW·S, 3C]
        bias = self._attn_bias(n, qkv.dtype, x.device)  # [1 or nW, h, S, S]
        dropout = self.attn_drop if self.training else 0.0
        if (self.kernel == "auto" and x.device.type == "cpu" and not dropout and bias is not None
                and bias.requires_grad and not torch.compiler.is_compiling()):  # compiled: SDPA, which inductor lowers
            out = window_attention(qkv, bias, h, s)  # [B, nW·S, C]
        else:
            q, k, v = self._heads(qkv, nw)  # each [B·nW, h, S, d]
            if bias is not None and bias.shape[0] > 1:
                # the fused kernels take 4D inputs only; 5D ones fall back to a much slower path
                bias = bias.unsqueeze(0).expand(b, -1, -1, -1, -1).reshape(b * nw, -1, s, s)  # heads: h or 1
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout)  # [B·nW, h, S, d]
            out = out.transpose(1, 2).reshape(b, nw * s, c)
        if rolled:
            return torch.roll(self.proj_drop(self.proj(out[:, :n])), self.shift, dims=1)
        out = self.proj_drop(self.proj(out))  # [B, nW·S, C]; padding rows dropped below
        if self.shift:
            return self._to_order(out, tokens, slots, pad)  # back to token order
        return out[:, :n] if pad else out

    def _heads(self, qkv: torch.Tensor, windows: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """qkv [B, nW·S, 3C] -> q, k, v [B·nW, h, S, d], views (`_HeadViews`; plain ``unbind`` while compiling)."""
        if torch.compiler.is_compiling():
            b, p, c3 = qkv.shape
            return qkv.view(b * windows, p // windows, 3, self.num_heads, c3 // 3 // self.num_heads).permute(
                2, 0, 3, 1, 4).unbind(0)
        return _HeadViews.apply(qkv, windows, self.num_heads)

    @staticmethod
    def _to_order(x: torch.Tensor, order: torch.Tensor, inverse: torch.Tensor, pad: int) -> torch.Tensor:
        """x [B, L, C] -> x[:, order]: without padding a permutation (`_TokenPermutation`), with padding a gather
        whose slots repeat a token (their gradients add up)."""
        return x.index_select(1, order) if pad else _TokenPermutation.apply(x, order, inverse)
