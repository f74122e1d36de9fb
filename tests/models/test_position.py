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


def _old_table(grid, dim, mode, lr_axis):
    """The crop-frame table as eq. 3 was first implemented (fold min(w, W-1-w) for mirror)."""
    import math

    coords = torch.meshgrid(*(torch.arange(n, dtype=torch.float64) for n in grid), indexing="ij")
    t_axis, h_axis = (a for a in range(3) if a != lr_axis)
    t, h, w = coords[t_axis], coords[h_axis], coords[lr_axis]
    size_w = grid[lr_axis]
    fold = {"mirror": torch.minimum(w, size_w - 1 - w), "paper": size_w / 2 - (size_w / 2 - w).abs(), "none": w}[mode]
    pos = grid[h_axis] * size_w * t + size_w * h + fold
    freq = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    angle = pos.reshape(-1, 1) * freq
    return torch.stack([angle.sin(), angle.cos()], dim=-1).reshape(-1, dim).float()


@pytest.mark.parametrize("mode", ["mirror", "paper", "none"])
def test_offset_zero_is_the_pretraining_table_bit_for_bit(mode):
    from asa.models import ASA, PRESETS

    grid = (6, 4, 5)
    for lr_axis in (0, 2):
        table = symmetric_position_encoding(grid, 16, mode=mode, lr_axis=lr_axis, offset=(0, 0, 0))
        assert torch.equal(table, _old_table(grid, 16, mode, lr_axis))
        assert torch.equal(table, symmetric_position_encoding(grid, 16, mode=mode, lr_axis=lr_axis))
    mae = ASA(img_size=32, **{**PRESETS["tiny"], "pos_mode": mode})
    assert torch.equal(mae.encoder.pos_embed, symmetric_position_encoding((4, 4, 4), 48, mode=mode, offset=(0, 0, 0)))


@pytest.mark.parametrize("lr_axis", [0, 2])
def test_brain_frame_codes_belong_to_anatomy(lr_axis):
    """Across crops at random lattice offsets, two patches share a code exactly when they are the same
    anatomical patch or contralateral mirrors about the reference centre (within the reference box
    along the two non-mirrored axes; along the mirrored one the fold extends beyond it)."""
    from asa.models import brain_frame_encoding

    grid = (6, 6, 6)
    gen = torch.Generator().manual_seed(0)
    offsets = torch.randint(-3, 4, (6, 3), generator=gen)
    codes = brain_frame_encoding(grid, 16, offsets, lr_axis=lr_axis)  # [6, N, 16]
    local = torch.stack(torch.meshgrid(*(torch.arange(n) for n in grid), indexing="ij"), -1).reshape(-1, 3)
    anatomy, rows = [], []
    for b in range(len(offsets)):
        ref = local + offsets[b]  # reference-grid coordinates of every patch of crop b
        inside = torch.ones(len(ref), dtype=torch.bool)
        for a in range(3):
            if a != lr_axis:
                inside &= (ref[:, a] >= 0) & (ref[:, a] < grid[a])
        anatomy.append(ref[inside])
        rows.append(codes[b][inside])
        # each crop's table is the single-offset encoding of that crop
        assert torch.equal(codes[b], symmetric_position_encoding(grid, 16, lr_axis=lr_axis, offset=offsets[b].tolist()))
    anatomy, rows = torch.cat(anatomy), torch.cat(rows)
    others = [a for a in range(3) if a != lr_axis]
    same_other = (anatomy[:, None, others] == anatomy[None, :, others]).all(-1)
    w = anatomy[:, lr_axis]
    expected = same_other & ((w[:, None] == w[None, :]) | (w[:, None] + w[None, :] == grid[lr_axis] - 1))
    shared = (rows[:, None, :] == rows[None, :, :]).all(-1)
    assert torch.equal(shared, expected)
    assert expected.sum() > 2 * len(anatomy)  # crops overlap and hold mirror pairs: the check is not vacuous


def test_fold_extends_linearly_beyond_the_reference_grid():
    # W = 4 reference patches, c = 1.5: f(-1) = f(4) = -1, f(-2) = f(5) = -2 (no wrap-around)
    grid = (1, 1, 1)
    code = {w: symmetric_position_encoding(grid, 8, offset=(w, 0, 0), reference_grid=(4, 1, 1)) for w in range(-2, 6)}
    assert torch.equal(code[-1], code[4]) and torch.equal(code[-2], code[5]) and torch.equal(code[0], code[3])
    assert not torch.equal(code[-1], code[0]) and not torch.equal(code[-1], code[-2])
    none = {w: symmetric_position_encoding(grid, 8, mode="none", offset=(w, 0, 0), reference_grid=(4, 1, 1)) for w in (-1, 4)}
    assert not torch.equal(none[-1], none[4])  # no fold without SPE
