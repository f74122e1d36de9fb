"""Windowed self-attention with an additive bias that needs a gradient, for the CPU.

On a CPU, ``scaled_dot_product_attention`` with a bias that requires a gradient (LW-MSA's relative
position bias) runs its unfused math kernel, which is composed of autograd-recorded ops: q, k and v
are cut from the fused qkv projection as strided views and copied again and again on the way
(scaled, made contiguous for ``bmm``; in the backward the three gradients stacked, then permuted back
into the projection's layout), and every row of the softmax is checked for being fully masked.
`window_attention` does the same arithmetic in one ``autograd.Function``: each operand is written once
in the layout its ``bmm`` takes, the gradients of q, k and v go straight into the projection's layout,
and no row check is made (LW-MSA's masks leave every query a key).

Bit-exact with the math kernel (outputs and gradients, fp32 and bf16): the same scaling (√scale on
q and on kᵀ each), the same ``bmm`` operand layouts, fp32 arithmetic for bf16 inputs (the CPU math
kernel upcasts), the same reductions for the bias gradient.
"""

from __future__ import annotations

import math

import torch

__all__ = ["window_attention"]


class _WindowAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, qkv: torch.Tensor, bias: torch.Tensor, num_heads: int, window: int) -> torch.Tensor:
        with torch.autocast(qkv.device.type, enabled=False):  # fp32 throughout, as the math kernel
            return _WindowAttention._forward(ctx, qkv, bias, num_heads, window)

    @staticmethod
    def _forward(ctx, qkv: torch.Tensor, bias: torch.Tensor, num_heads: int, window: int) -> torch.Tensor:
        b, length, c3 = qkv.shape
        c, h, s = c3 // 3, num_heads, window
        d, nw = c // h, length // s
        scale = math.sqrt(1.0 / math.sqrt(d))  # the math kernel scales q and kᵀ by √(1/√d) each
        parts = qkv.view(b * nw, s, 3, h, d).permute(2, 0, 3, 1, 4)  # [3, B·nW, h, S, d], a view
        f32 = dict(dtype=torch.float32, device=qkv.device)
        q = torch.empty(b * nw * h, s, d, **f32)
        q.view(b * nw, h, s, d).copy_(parts[0]).mul_(scale)
        k_t = torch.empty(b * nw * h, d, s, **f32)  # kᵀ contiguous, as the math kernel hands it to bmm
        k_t.view(b * nw, h, d, s).copy_(parts[1].transpose(-2, -1)).mul_(scale)
        v = torch.empty(b * nw * h, s, d, **f32)
        v.view(b * nw, h, s, d).copy_(parts[2])
        scores = torch.bmm(q, k_t)  # [B·nW·h, S, S]
        scores.view(b, nw, h, s, s).add_(bias.to(torch.float32))  # bias [1 or nW, h, S, S], broadcast
        probs = torch.softmax(scores, -1)
        out = torch.bmm(probs, v)  # [B·nW·h, S, d]
        result = torch.empty(b, length, c, dtype=qkv.dtype, device=qkv.device)
        result.view(b * nw, s, h, d).copy_(out.view(b * nw, h, s, d).transpose(1, 2))  # token order
        ctx.save_for_backward(q, k_t, v, probs)
        ctx.shape = (b, nw, h, s, d, scale, qkv.dtype, bias.shape[0], bias.dtype)
        return result

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        with torch.autocast(grad.device.type, enabled=False):
            return _WindowAttention._backward(ctx, grad)

    @staticmethod
    def _backward(ctx, grad: torch.Tensor):
        q, k_t, v, probs = ctx.saved_tensors
        b, nw, h, s, d, scale, dtype, bias_windows, bias_dtype = ctx.shape
        g = torch.empty(b * nw * h, s, d, dtype=torch.float32, device=grad.device)
        g.view(b * nw, h, s, d).copy_(grad.reshape(b * nw, s, h, d).transpose(1, 2))
        d_probs = torch.bmm(g, v.transpose(1, 2))  # [B·nW·h, S, S]
        d_v = torch.bmm(probs.transpose(1, 2), g)  # [B·nW·h, S, d]
        d_scores = torch._softmax_backward_data(d_probs, probs, -1, torch.float32)
        d_bias = None
        if ctx.needs_input_grad[1]:
            # the reductions autograd makes: a bias broadcast over B·nW (one window's bias) is summed in
            # fp32 and then cast; one bias per window was expanded over B in its own dtype before the
            # kernel's fp32 cast, so its gradient is cast first and summed over B in that dtype
            if bias_windows == 1:
                d_bias = d_scores.view(b * nw, h, s, s).sum(0, keepdim=True).to(bias_dtype)
            else:
                d_bias = d_scores.to(bias_dtype).view(b, nw, h, s, s).sum(0)
        d_qkv = None
        if ctx.needs_input_grad[0]:
            d_q = torch.bmm(d_scores, k_t.transpose(1, 2))  # [B·nW·h, S, d]
            d_k_t = torch.bmm(q.transpose(1, 2), d_scores)  # [B·nW·h, d, S]
            d_qkv = torch.empty(b, nw * s, 3 * h * d, dtype=dtype, device=grad.device)
            parts = d_qkv.view(b * nw, s, 3, h, d).permute(2, 0, 3, 1, 4)  # [3, B·nW, h, S, d]
            torch.mul(d_q.view(b * nw, h, s, d), scale, out=parts[0])
            torch.mul(d_k_t.view(b * nw, h, d, s).transpose(-2, -1), scale, out=parts[1])
            parts[2].copy_(d_v.view(b * nw, h, s, d))
        return d_qkv, d_bias, None, None


def window_attention(qkv: torch.Tensor, bias: torch.Tensor, num_heads: int, window: int) -> torch.Tensor:
    """Self-attention within consecutive windows of ``window`` tokens, with an additive bias.

    Args:
        qkv: [B, nW·S, 3·C], the fused projection's output (q, k, v, each C = heads · d wide).
        bias: [1 or nW, heads, S, S], added to the scores of every window (1) or of each window (nW),
            the same for every sample; may require a gradient. Every query must keep a key (no row
            all -inf).
        num_heads: heads; C must be a multiple of it.
        window: S, the window length; nW·S must equal the sequence length.

    Returns: [B, nW·S, C] in token order, in ``qkv``'s dtype (computed in fp32, as the CPU math
    kernel of ``scaled_dot_product_attention`` does).
    """
    b, length, c3 = qkv.shape
    if c3 % (3 * num_heads) or length % window:
        raise ValueError(f"window_attention: qkv {list(qkv.shape)} does not split into 3 × {num_heads} heads "
                         f"and windows of {window}")
    if bias.dim() != 4 or bias.shape[0] not in (1, length // window) or bias.shape[1:] != (num_heads, window, window):
        raise ValueError(f"window_attention: bias must be [1 or {length // window}, {num_heads}, {window}, {window}], "
                         f"got {list(bias.shape)}")
    return _WindowAttention.apply(qkv.contiguous(), bias, num_heads, window)
