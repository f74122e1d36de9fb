from __future__ import annotations

import pytest
import torch

from asa.models import RegionAttention, patch_regions


def _mhsa(attn: RegionAttention, x: torch.Tensor) -> torch.Tensor:
    """Plain global multi-head self-attention with the module's own weights."""
    b, n, c = x.shape
    h = attn.num_heads
    q, k, v = attn.qkv(x).view(b, n, 3, h, c // h).permute(2, 0, 3, 1, 4)
    a = (q @ k.transpose(-1, -2) / (c // h) ** 0.5).softmax(-1)
    return attn.proj((a @ v).transpose(1, 2).reshape(b, n, c))


def _pair(chunk: int) -> tuple[RegionAttention, RegionAttention]:
    chunked = RegionAttention(24, 3, chunk_size=chunk).eval()
    dense = RegionAttention(24, 3, chunk_size=chunk, mode="dense").eval()
    dense.load_state_dict(chunked.state_dict())
    return chunked, dense


@pytest.mark.parametrize("mode", ["chunked", "dense"])
def test_one_region_equals_global_attention(mode):
    attn = RegionAttention(24, 3, chunk_size=64, mode=mode).eval()
    x = torch.randn(2, 40, 24)
    regions = torch.full((2, 40), 7)
    torch.testing.assert_close(attn(x, regions), _mhsa(attn, x), atol=1e-5, rtol=1e-5)


def test_chunked_equals_dense_on_random_region_maps():
    torch.manual_seed(0)
    chunked, dense = _pair(chunk=8)
    n = 61
    x = torch.randn(3, n, 24)
    regions = torch.stack([
        torch.randint(0, 3, (n,)) * 5,  # three large regions (> a chunk), ids 0, 5, 10
        torch.randint(-2, 40, (n,)),  # many small regions, negative ids, one-token regions, gaps (empty ids)
        torch.cat([torch.zeros(n - 1, dtype=torch.long), torch.tensor([9])]),  # a one-token region at the end
    ])
    assert (torch.bincount(regions[0] // 5) > 8).all()
    assert (torch.bincount(regions[1] + 2) == 1).any() and (torch.bincount(regions[1] + 2) == 0).any()
    torch.testing.assert_close(chunked(x, regions), dense(x, regions), atol=1e-5, rtol=1e-5)


def test_chunked_gradients_match_dense():
    chunked, dense = _pair(chunk=4)
    x = torch.randn(2, 19, 24, requires_grad=True)
    regions = torch.randint(0, 3, (2, 19))
    g1 = torch.autograd.grad(chunked(x, regions).square().sum(), x)[0]
    g2 = torch.autograd.grad(dense(x, regions).square().sum(), x)[0]
    torch.testing.assert_close(g1, g2, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", ["chunked", "dense"])
def test_invariant_to_relabelling_regions(mode):
    attn = RegionAttention(24, 3, chunk_size=4, mode=mode).eval()
    x = torch.randn(2, 30, 24)
    regions = torch.randint(0, 4, (2, 30))
    relabelled = torch.tensor([17, -3, 2, 100])[regions]  # a permutation of the sort order as well
    torch.testing.assert_close(attn(x, regions), attn(x, relabelled), atol=1e-6, rtol=1e-6)


def test_no_information_crosses_regions():
    """Perturbing one token moves exactly the tokens of its own region's chunk."""
    s, n = 4, 24
    attn = RegionAttention(12, 2, chunk_size=s).eval()
    x = torch.randn(1, n, 12)
    regions = torch.tensor([[0, 1, 1, 2, 0, 0, 1, 2, 2, 2, 2, 2, 2, 0, 1, 1, 3, 0, 0, 0, 1, 2, 1, 1]])
    base = attn(x, regions)
    for changed in range(n):
        y = x.clone()
        y[0, changed] += 1.0
        moved = (attn(y, regions) - base).abs().amax(-1)[0] > 1e-6
        r = regions[0]
        rank = [int((r[:i] == r[i]).sum()) for i in range(n)]  # position inside the region, raster order
        expected = torch.tensor([bool(r[i] == r[changed]) and rank[i] // s == rank[changed] // s for i in range(n)])
        assert torch.equal(moved, expected), changed


def test_chunk_covers_a_whole_small_region():
    """A region of at most chunk_size tokens is attended as a whole wherever its tokens lie."""
    attn = RegionAttention(12, 2, chunk_size=4).eval()
    x = torch.randn(1, 10, 12)
    regions = torch.tensor([[5, 1, 1, 5, 1, 1, 1, 5, 1, 5]])  # region 5: 4 tokens spread out
    y = x.clone()
    y[0, 0] += 1.0
    moved = ((attn(y, regions) - attn(x, regions)).abs().amax(-1)[0] > 1e-6).nonzero().flatten().tolist()
    assert moved == [0, 3, 7, 9]


def test_bad_regions():
    attn = RegionAttention(12, 2, chunk_size=4)
    x = torch.randn(1, 8, 12)
    with pytest.raises(ValueError, match="region id"):
        attn(x, None)
    with pytest.raises(ValueError, match="integer ids of shape"):
        attn(x, torch.zeros(1, 7, dtype=torch.long))
    with pytest.raises(ValueError, match="mode"):
        RegionAttention(12, 2, mode="sparse")


def test_patch_regions_majority():
    labels = torch.zeros(1, 4, 4, 2, dtype=torch.long)  # patch 2: grid (2, 2, 1)
    labels[0, :2, :2] = 3  # patch (0,0): all 3
    labels[0, 2:, :2, 0] = 1  # patch (1,0): half 1, half 0 -> tie -> smallest (0)
    labels[0, :2, 2:] = 4
    labels[0, :2, 2, 0] = 2  # patch (0,1): six 4s, two 2s -> 4
    assert patch_regions(labels, 2).tolist() == [[3, 4, 0, 0]]
    assert patch_regions(labels[:, None].float(), 2).tolist() == [[3, 4, 0, 0]]
    with pytest.raises(ValueError, match="divisible"):
        patch_regions(labels, 3)


def test_padding_rows_do_not_produce_nan():
    attn = RegionAttention(12, 2, chunk_size=8).train()
    x = torch.randn(2, 9, 12, requires_grad=True)
    regions = torch.tensor([[0] * 9, [0] * 8 + [1]])  # sample 0: 2 chunks; sample 1: 2 chunks, padded
    out = attn(x, regions)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()
