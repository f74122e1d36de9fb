from __future__ import annotations

import pytest
import torch

from asa.models import SWViT


def test_blocks_alternate_lw_and_slw_and_init_is_xavier():
    net = SWViT(32, 4, 2, window_size=8)
    assert [b.attn.shift for b in net.blocks] == [0, 4, 0, 4]
    w = net.blocks[0].mlp.linear1.weight
    bound = (6 / (w.shape[0] + w.shape[1])) ** 0.5
    assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound
    assert (net.blocks[0].mlp.linear1.bias == 0).all()


def test_hidden_states_of_chosen_blocks():
    net = SWViT(32, 4, 2, window_size=8).eval()
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


def test_position_code_is_added_and_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    net = SWViT(32, 2, 2, window_size=8)
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
