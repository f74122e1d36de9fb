from __future__ import annotations

import itertools

import pytest
import torch

from asa.models import symmetric_position_encoding


def _index(grid, i0, i1, i2):
    return (i0 * grid[1] + i1) * grid[2] + i2


@pytest.mark.parametrize("grid", [(4, 4, 4), (6, 3, 5), (5, 4, 2)])
@pytest.mark.parametrize("lr_axis", [0, 1, 2])
def test_mirror_pairs_share_a_code_and_nothing_else_does(grid, lr_axis):
    pe = symmetric_position_encoding(grid, 16, lr_axis=lr_axis)
    assert pe.shape == (grid[0] * grid[1] * grid[2], 16)
    size_w = grid[lr_axis]
    for a, b in itertools.combinations(itertools.product(*(range(n) for n in grid)), 2):
        others_equal = all(a[k] == b[k] for k in range(3) if k != lr_axis)
        mirror = others_equal and (a[lr_axis] + b[lr_axis] == size_w - 1)
        same = torch.equal(pe[_index(grid, *a)], pe[_index(grid, *b)])
        assert same == mirror, (a, b)


def test_paper_mode_pairs_w_with_W_minus_w():
    grid = (6, 3, 4)  # lr_axis 0, W = 6: pairs (1,5), (2,4); 0 and 3 alone
    pe = symmetric_position_encoding(grid, 8, mode="paper")
    for t, h in itertools.product(range(3), range(4)):
        codes = [pe[_index(grid, w, t, h)] for w in range(6)]
        assert torch.equal(codes[1], codes[5]) and torch.equal(codes[2], codes[4])
        assert not torch.equal(codes[0], codes[5])  # the true mirror of 0 is 5: eq. 3 misses it
        assert len({tuple(c.tolist()) for c in codes}) == 4


def test_none_mode_is_a_plain_sinusoid_of_a_unique_index():
    grid = (4, 3, 2)
    dim = 6
    pe = symmetric_position_encoding(grid, dim, mode="none")
    assert len({tuple(r.tolist()) for r in pe}) == pe.shape[0]
    # eq. 3 with f(w) = w, lr_axis 0: Pos = H·W·t + W·h + w with t = axis 1, h = axis 2, W = 4, H = 2
    w, t, h = 3, 2, 1
    pos = 2 * 4 * t + 4 * h + w
    row = pe[_index(grid, w, t, h)]
    for i in range(dim // 2):
        angle = torch.tensor(pos / 10000 ** (2 * i / dim), dtype=torch.float64)
        assert row[2 * i].item() == pytest.approx(torch.sin(angle).item(), abs=1e-6)
        assert row[2 * i + 1].item() == pytest.approx(torch.cos(angle).item(), abs=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(grid=(4, 4, 4), dim=7), "even"),
        (dict(grid=(4, 4, 4), dim=8, mode="mirrored"), "mode"),
        (dict(grid=(4, 4, 4), dim=8, lr_axis=3), "lr_axis"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        symmetric_position_encoding(**kwargs)
