from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from asa.models import LinearWindowAttention
from tests.fixtures.ops import AtenOps


def _reference_mhsa(attn: LinearWindowAttention, x: torch.Tensor) -> torch.Tensor:
    """Plain multi-head self-attention with the module's own weights."""
    b, n, c = x.shape
    h = attn.num_heads
    q, k, v = attn.qkv(x).view(b, n, 3, h, c // h).permute(2, 0, 3, 1, 4)
    a = (q @ k.transpose(-1, -2) / (c // h) ** 0.5).softmax(-1)
    return attn.proj((a @ v).transpose(1, 2).reshape(b, n, c))


@pytest.mark.parametrize("n", [16, 11])
def test_single_window_equals_mhsa(n):
    attn = LinearWindowAttention(24, 3, window_size=16).eval()
    with torch.no_grad():
        attn.rel_pos_bias.zero_()
    x = torch.randn(2, n, 24)
    torch.testing.assert_close(attn(x), _reference_mhsa(attn, x), atol=1e-5, rtol=1e-5)


def test_relative_bias_matches_offset_table():
    attn = LinearWindowAttention(8, 2, window_size=4)
    bias = attn._attn_bias(4, torch.float32, torch.device("cpu"))[0]  # [h, S, S]
    for i in range(4):
        for j in range(4):
            torch.testing.assert_close(bias[:, i, j], attn.rel_pos_bias[i - j + 3])


@pytest.mark.parametrize("shift", [0, 4])
def test_tokens_only_see_their_window(shift):
    s, n = 8, 32
    attn = LinearWindowAttention(12, 2, window_size=s, shift=shift, shift_mask=False).eval()
    x = torch.randn(1, n, 12)
    base = attn(x)
    for changed in range(n):
        y = x.clone()
        y[0, changed] += 1.0
        moved = (attn(y) - base).abs().amax(-1)[0] > 1e-6
        window = lambda i: ((i - shift) % n) // s  # noqa: E731 - boundaries at shift + k·S
        expected = torch.tensor([window(i) == window(changed) for i in range(n)])
        assert torch.equal(moved, expected), changed


def test_shift_moves_boundaries_by_half_a_window():
    s = 8
    lw = LinearWindowAttention(12, 2, window_size=s).eval()
    slw = LinearWindowAttention(12, 2, window_size=s, shift=s // 2).eval()
    x = torch.randn(1, 32, 12)

    def influenced(attn, i):
        y = x.clone()
        y[0, i] += 1.0
        return ((attn(y) - attn(x)).abs().amax(-1)[0] > 1e-6).nonzero().flatten().tolist()

    assert influenced(lw, 9) == list(range(8, 16))
    assert influenced(slw, 9) == list(range(4, 12))


def test_wraparound_window_is_split_by_the_shift_mask():
    s, n = 8, 32
    x = torch.randn(1, n, 12)
    for shift_mask, expected in [(True, [0, 1, 2, 3]), (False, [0, 1, 2, 3, 28, 29, 30, 31])]:
        attn = LinearWindowAttention(12, 2, window_size=s, shift=4, shift_mask=shift_mask).eval()
        y = x.clone()
        y[0, 1] += 1.0
        moved = ((attn(y) - attn(x)).abs().amax(-1)[0] > 1e-6).nonzero().flatten().tolist()
        assert moved == expected


@pytest.mark.parametrize("shift", [0, 4])
def test_padding_does_not_affect_real_tokens(shift):
    """N = 13 is padded to 16: outputs equal those of the sequence run window by window without padding."""
    s, n = 8, 13
    attn = LinearWindowAttention(12, 2, window_size=s, shift=shift).eval()
    x = torch.randn(2, n, 12)
    out = attn(x)
    assert out.shape == x.shape and torch.isfinite(out).all()
    rolled = torch.roll(x, -shift, dims=1)
    # rolled windows: [0, 8) and [8, 13); with the shift mask the last `shift` rolled tokens form
    # their own segment.
    segments = [(0, 8), (8, 13)] if not shift else [(0, 8), (8, 9), (9, 13)]
    expected = torch.empty_like(out)
    for lo, hi in segments:
        chunk = rolled[:, lo:hi]
        b, m, c = chunk.shape
        q, k, v = attn.qkv(chunk).view(b, m, 3, 2, c // 2).permute(2, 0, 3, 1, 4)
        rel = torch.arange(lo, hi) % s
        bias = attn.rel_pos_bias[rel[:, None] - rel[None, :] + s - 1].permute(2, 0, 1)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        expected[:, lo:hi] = attn.proj(y.transpose(1, 2).reshape(b, m, c))
    torch.testing.assert_close(out, torch.roll(expected, shift, dims=1), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(dim=10, num_heads=3, window_size=8), "divisible"),
        (dict(dim=12, num_heads=3, window_size=8, shift=8), "shift"),
        (dict(dim=12, num_heads=3, window_size=0), "window_size"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LinearWindowAttention(**kwargs)


def test_attention_bias_has_the_layout_the_fused_cuda_kernels_take():
    """CUDA's memory-efficient / cuDNN attention take an additive mask only when its last dimension
    has stride 1; any other layout sends every call to the unfused math kernel (materialising all
    scores). The relative-position bias, with and without the shift and padding masks, is contiguous."""
    for shift, n in ((0, 64), (4, 64), (0, 60), (4, 60)):
        layer = LinearWindowAttention(24, 3, 8, shift=shift)
        for dtype in (torch.float32, torch.bfloat16):
            bias = layer._attn_bias(n, dtype, torch.device("cpu"))
            assert bias.dtype == dtype and bias.is_contiguous(), (shift, n, dtype, bias.stride())


@pytest.mark.parametrize("n, shift, shift_mask", [(64, 4, True), (64, 4, False), (64, 0, True), (45, 4, True),
                                                  (45, 0, True), (13, 4, False)])
def test_gather_partition_reproduces_the_roll(n, shift, shift_mask):
    """The shifted windows cut by one gather give the values of roll, pad, attend, slice, roll back:
    bit for bit in fp32 when n is a multiple of S (then also every gradient); with padding the
    projection bias's gradient sums its rows in another grouping (fp32 rounding)."""
    torch.manual_seed(0)
    new = LinearWindowAttention(32, 4, window_size=8, shift=shift, shift_mask=shift_mask)
    old = LinearWindowAttention(32, 4, window_size=8, shift=shift, shift_mask=shift_mask)
    old.load_state_dict(new.state_dict())
    old.partition = "roll"
    x = torch.randn(3, n, 32)
    results = []
    for attn in (new, old):
        xi = x.clone().requires_grad_()
        out = attn(xi)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        results.append((out.detach(), xi.grad, {k: p.grad for k, p in attn.named_parameters()}))
    (out_new, gx_new, g_new), (out_old, gx_old, g_old) = results
    assert torch.equal(out_new, out_old) and torch.equal(gx_new, gx_old)
    for name in g_new:
        if n % 8 == 0 or name != "proj.bias":
            assert torch.equal(g_new[name], g_old[name]), name
        else:
            torch.testing.assert_close(g_new[name], g_old[name], rtol=1e-5, atol=1e-4)


def test_unknown_partition_is_refused():
    attn = LinearWindowAttention(8, 2, window_size=4, shift=2)
    attn.partition = "cat"
    with pytest.raises(ValueError, match="partition must be one of"):
        attn(torch.randn(1, 8, 8))


def _plain_window_attention(qkv: torch.Tensor, bias: torch.Tensor, h: int, s: int) -> torch.Tensor:
    """softmax(q kᵀ / √d + bias) v per window, written out in fp32."""
    b, n, c3 = qkv.shape
    c, nw = c3 // 3, n // s
    q, k, v = qkv.float().view(b, nw, s, 3, h, c // h).permute(3, 0, 1, 4, 2, 5)  # each [B, nW, h, S, d]
    a = (q @ k.transpose(-1, -2) / (c // h) ** 0.5 + bias.float()).softmax(-1)
    return (a @ v).permute(0, 1, 3, 2, 4).reshape(b, n, c)


@pytest.mark.parametrize("windows", [1, 4])
def test_window_kernel_matches_plain_attention(windows):
    """`window_attention` (the CPU training path of LW-MSA) against attention written out, with a bias
    per window (and a wrap-around mask in the last one) or one for all; gradients by autograd through
    the plain version."""
    from asa.models.swvit.window_kernel import window_attention

    torch.manual_seed(0)
    b, h, s, d, nw = 2, 3, 8, 4, 4
    qkv = torch.randn(b, nw * s, 3 * h * d, dtype=torch.float64).float()
    bias = torch.randn(windows, h, s, s) * 0.5
    if windows > 1:
        bias[-1, :, :3, 3:] = float("-inf")
        bias[-1, :, 3:, :3] = float("-inf")
    grads = []
    for fn in (window_attention, _plain_window_attention):
        qi, bi = qkv.clone().requires_grad_(), bias.clone().requires_grad_()
        out = fn(qi, bi, h, s)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads.append((out.detach(), qi.grad, bi.grad))
    for new, ref in zip(*grads):
        torch.testing.assert_close(new, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n, shift, shift_mask", [(64, 4, True), (64, 0, True), (45, 4, True), (45, 0, True),
                                                  (13, 4, False)])
@pytest.mark.parametrize("amp", [False, True])
def test_cpu_window_kernel_is_bit_exact_with_sdpa(n, shift, shift_mask, amp):
    """On a CPU the training path (bias needing a gradient) skips SDPA, whose math kernel it
    replaces: outputs and every gradient equal bit for bit, in fp32 and under bf16 autocast."""
    from unittest import mock

    torch.manual_seed(0)
    new = LinearWindowAttention(32, 4, window_size=8, shift=shift, shift_mask=shift_mask)
    old = LinearWindowAttention(32, 4, window_size=8, shift=shift, shift_mask=shift_mask)
    old.load_state_dict(new.state_dict())
    old.kernel = "sdpa"
    x = torch.randn(3, n, 32)
    results = []
    for attn in (new, old):
        xi = x.clone().requires_grad_()
        sdpa = mock.patch("torch.nn.functional.scaled_dot_product_attention",
                          side_effect=AssertionError("SDPA called")) if attn is new else mock.MagicMock()
        with sdpa, torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            out = attn(xi)
        (out.float() * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        results.append((out.detach(), xi.grad, {k: p.grad for k, p in attn.named_parameters()}))
    (out_new, gx_new, g_new), (out_old, gx_old, g_old) = results
    assert out_new.dtype == (torch.bfloat16 if amp else torch.float32)
    assert torch.equal(out_new, out_old) and torch.equal(gx_new, gx_old)
    for name in g_new:
        assert torch.equal(g_new[name], g_old[name]), name


def test_window_kernel_only_where_sdpa_cannot_fuse():
    """Without a gradient, with attention dropout, without a relative bias, or inside torch.compile
    (which lowers SDPA itself) LW-MSA keeps SDPA."""
    from contextlib import nullcontext
    from unittest import mock

    x = torch.randn(1, 16, 8)
    compiling = mock.patch("torch.compiler.is_compiling", return_value=True)
    cases = [(LinearWindowAttention(8, 2, window_size=4), torch.no_grad()),
             (LinearWindowAttention(8, 2, window_size=4, attn_drop=0.1), nullcontext()),
             (LinearWindowAttention(8, 2, window_size=4, shift=2, rel_pos_bias=False), nullcontext()),
             (LinearWindowAttention(8, 2, window_size=4, shift=2), compiling)]
    for attn, context in cases:
        with context, mock.patch("asa.models.swvit.attention.window_attention",
                                 side_effect=AssertionError("window kernel called")):
            assert attn(x).shape == x.shape


def test_window_kernel_refuses_bad_shapes():
    from asa.models.swvit.window_kernel import window_attention

    with pytest.raises(ValueError, match="does not split"):
        window_attention(torch.randn(1, 16, 20), torch.zeros(1, 2, 4, 4), 2, 4)
    with pytest.raises(ValueError, match="bias must be"):
        window_attention(torch.randn(1, 16, 24), torch.zeros(3, 2, 4, 4), 2, 4)
    attn = LinearWindowAttention(8, 2, window_size=4)
    attn.kernel = "flash"
    with pytest.raises(ValueError, match="kernel must be one of"):
        attn(torch.randn(1, 8, 8))


@pytest.mark.gpu
def test_cuda_keeps_sdpa():
    """CUDA's memory-efficient kernel takes the bias with its gradient: the CPU window kernel is never used."""
    from unittest import mock

    attn = LinearWindowAttention(32, 4, window_size=8, shift=4).cuda()
    with mock.patch("asa.models.swvit.attention.window_attention", side_effect=AssertionError("window kernel called")):
        attn(torch.randn(2, 64, 32, device="cuda", requires_grad=True)).sum().backward()


def _backward_ops(attn: LinearWindowAttention, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict, list]:
    """Output, input gradient, parameter gradients and the aten ops of the backward pass."""
    xi = x.clone().requires_grad_()
    out = attn(xi)
    with AtenOps() as ops:
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    return out.detach(), xi.grad, {k: p.grad for k, p in attn.named_parameters()}, ops.names


@pytest.mark.parametrize("n, shift", [(64, 4), (64, 0), (45, 4), (45, 0)])
def test_the_windows_copies_removed_give_the_earlier_values(n, shift):
    """SDPA's path (what CUDA runs): q, k, v cut as views whose backward writes their gradients straight into the
    projection's layout (one stack, no clone), and without padding the shifted windows' token order as a permutation
    whose backward is the inverse gather (no zero fill, no index_add). Against the earlier formulation kept in
    benchmarks.compile_ab (unbind, index_select): outputs and every gradient bit for bit (fp32)."""
    from benchmarks.compile_ab import earlier_copies

    torch.manual_seed(0)
    new = LinearWindowAttention(32, 4, window_size=8, shift=shift)
    old = LinearWindowAttention(32, 4, window_size=8, shift=shift)
    old.load_state_dict(new.state_dict())
    earlier_copies(old)
    new.kernel = old.kernel = "sdpa"
    x = torch.randn(3, n, 32)
    out_new, gx_new, g_new, ops_new = _backward_ops(new, x)
    out_old, gx_old, g_old, ops_old = _backward_ops(old, x)
    assert torch.equal(out_new, out_old) and torch.equal(gx_new, gx_old)
    assert all(torch.equal(g_new[k], g_old[k]) for k in g_new)
    assert ops_new.count("stack") == ops_old.count("stack") == 1 and ops_old.count("clone") >= 1
    assert ops_new.count("clone") == ops_old.count("clone") - 1  # the stack made contiguous: gone
    if shift and n % 8 == 0:  # two gathers: their backward gathers, no longer zero-fill and scatter-add
        assert ops_old.count("index_add") == 2 and "index_add" not in ops_new and ops_new.count("index_select") == 2
        assert ops_old.count("new_zeros") - ops_new.count("new_zeros") == 2
    else:
        assert ops_new.count("index_add") == ops_old.count("index_add")
