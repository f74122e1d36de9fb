from __future__ import annotations

import pytest
import torch

from asa.models import PatchEmbed, patchify, unpatchify


@pytest.mark.parametrize("shape, s", [((2, 1, 16, 16, 16), 8), ((1, 3, 8, 12, 4), 4), ((1, 2, 6, 6, 6), 3)])
def test_patchify_round_trip_and_layout(shape, s):
    x = torch.randn(shape)
    p = patchify(x, s)
    grid = (shape[2] // s, shape[3] // s, shape[4] // s)
    assert p.shape == (shape[0], grid[0] * grid[1] * grid[2], s**3 * shape[1])
    torch.testing.assert_close(unpatchify(p, s, grid, shape[1]), x, rtol=0, atol=0)
    # token index (i0·G1 + i1)·G2 + i2 holds the patch at grid position (i0, i1, i2)
    i0, i1, i2 = grid[0] - 1, 0, grid[2] - 1
    token = p[0, (i0 * grid[1] + i1) * grid[2] + i2].view(s, s, s, shape[1])
    patch = x[0, :, i0 * s : (i0 + 1) * s, i1 * s : (i1 + 1) * s, i2 * s : (i2 + 1) * s]
    torch.testing.assert_close(token.permute(3, 0, 1, 2), patch, rtol=0, atol=0)


def test_patch_embed_is_a_linear_map_of_each_patch():
    embed = PatchEmbed(2, 10, patch_size=4)
    x = torch.randn(1, 2, 8, 8, 4)
    tokens = embed(x)
    assert tokens.shape == (1, 4, 10)
    patches = x.unfold(2, 4, 4).unfold(3, 4, 4).unfold(4, 4, 4)  # [1, C, G0, G1, G2, s, s, s]
    flat = patches.permute(0, 2, 3, 4, 1, 5, 6, 7).reshape(1, 4, -1)  # channel-major inside a patch
    expected = flat @ embed.proj.weight.view(10, -1).T + embed.proj.bias
    torch.testing.assert_close(tokens, expected, atol=1e-5, rtol=1e-5)


def test_indivisible_size_is_rejected():
    with pytest.raises(ValueError, match="divisible"):
        PatchEmbed(1, 8, patch_size=8)(torch.zeros(1, 1, 12, 16, 16))
