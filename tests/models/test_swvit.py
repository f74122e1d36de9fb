from __future__ import annotations

import pytest
import torch
from monai.networks.blocks import MLPBlock

from asa.models import (EncoderSettings, LinearWindowAttention, RegionAttention, SWBlock, SWViT,
                        WindowSymmetryCrossAttention, mirror_index)


def _vit(dim: int, depth: int, heads: int, **settings) -> SWViT:
    """An SW-ViT of the encoder's block settings (window 8 unless given) at width ``dim``."""
    return SWViT(EncoderSettings(**{"window_size": 8, **settings}).blocks(dim, depth, heads))


def test_blocks_alternate_lw_and_slw_and_init_is_xavier():
    net = _vit(32, 4, 2)
    assert [b.attn.shift for b in net.blocks] == [0, 4, 0, 4]
    w = net.blocks[0].mlp.linear1.weight
    bound = (6 / (w.shape[0] + w.shape[1])) ** 0.5
    assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound
    assert (net.blocks[0].mlp.linear1.bias == 0).all()


def test_hidden_states_of_chosen_blocks():
    net = _vit(32, 4, 2).eval()
    x = torch.randn(2, 24, 32)
    out, hidden = net(x, hidden_indices=(0, 3))
    assert out.shape == x.shape and len(hidden) == 2
    h = x
    for i, block in enumerate(net.blocks):
        h = block(h)
        if i == 0:
            torch.testing.assert_close(hidden[0], h)
    torch.testing.assert_close(hidden[1], h)
    torch.testing.assert_close(out, net.norm(h))
    with pytest.raises(ValueError, match="hidden index"):
        net(x, hidden_indices=(4,))


@pytest.mark.slow
def test_position_code_is_added_and_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    net = _vit(32, 2, 2)
    x = torch.randn(1, 16, 32)
    pos = torch.randn(16, 32)
    torch.testing.assert_close(net(x, pos), net(x + pos))
    net(x, pos).sum().backward()
    plain = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    net.grad_checkpointing = True
    net(x, pos).sum().backward()
    for a, p in zip(plain, net.parameters()):
        torch.testing.assert_close(a, p.grad)


@pytest.mark.parametrize("parts", ["lw", "region", "lw+saca"])
def test_a_block_is_the_residual_lines_of_its_parts(parts):
    """The block adds each part's output to the stream, parts in forward order; a block without
    SACA has no SACA parameters at all."""
    torch.manual_seed(0)
    dim, s = 16, 4
    attn = RegionAttention(dim, 2, s) if parts == "region" else LinearWindowAttention(dim, 2, s, shift=2)
    saca = WindowSymmetryCrossAttention(dim, 2, s) if parts == "lw+saca" else None
    block = SWBlock(dim, attn, MLPBlock(dim, 2 * dim), saca=saca).eval()
    assert block.uses_regions == (parts == "region") and block.uses_mirror == (saca is not None)
    assert [n for n, _ in block.named_children()] == (
        ["norm1", "attn", "norm_saca", "saca", "norm2", "mlp"] if saca else ["norm1", "attn", "norm2", "mlp"])
    x = torch.randn(2, 16, dim)
    regions = torch.randint(0, 3, (2, 16))
    mirror = mirror_index((4, 2, 2), 0)
    h = x + (attn(block.norm1(x), regions) if parts == "region" else attn(block.norm1(x)))
    if saca is not None:
        h = h + saca(block.norm_saca(h), mirror)
    expected = h + block.mlp(block.norm2(h))
    torch.testing.assert_close(block(x, regions, mirror), expected, rtol=0, atol=0)
    if saca is not None:  # the SACA part itself asks for what it needs
        with pytest.raises(ValueError, match="mirror index"):
            block(x)


def test_a_stack_needs_blocks_of_one_width():
    blocks = EncoderSettings(window_size=8).blocks(16, 1, 2) + EncoderSettings(window_size=8).blocks(32, 1, 2)
    with pytest.raises(ValueError, match="one width"):
        SWViT(blocks)
    with pytest.raises(ValueError, match="at least one block"):
        SWViT([])
