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


@pytest.mark.parametrize("mode", ["mirror", "paper", "none"])
@pytest.mark.parametrize("lr_axis", [0, 2])
def test_codes_inside_the_reference_box_are_the_pretraining_codes_bit_for_bit(mode, lr_axis):
    """Pretrained weights depend on them: wherever a crop overlaps the reference box, its rows are the
    rows of the pretraining table (eq. 3 as first implemented) at the same reference patch, exactly."""
    from asa.models import brain_frame_encoding

    reference, grid = (6, 4, 5), (4, 3, 3)
    pretraining = symmetric_position_encoding(reference, 16, mode=mode, lr_axis=lr_axis)
    assert torch.equal(pretraining, _old_table(reference, 16, mode, lr_axis))
    offsets = torch.tensor(list(itertools.product(range(-3, 5), range(-2, 3), range(-2, 4))))  # inside, across, outside
    codes = brain_frame_encoding(grid, 16, offsets, mode=mode, lr_axis=lr_axis, reference_grid=reference)
    local = torch.stack(torch.meshgrid(*(torch.arange(n) for n in grid), indexing="ij"), -1).reshape(-1, 3)
    checked = 0
    for b, offset in enumerate(offsets):
        ref = local + offset
        inside = ((ref >= 0) & (ref < torch.tensor(reference))).all(-1)
        rows = _index(reference, *ref[inside].T)
        assert torch.equal(codes[b][inside], pretraining[rows])
        checked += int(inside.sum())
    assert checked > 1000


def _brats_lattice():
    """Reference coordinates [N, 3] of every patch of a 240×240×155 volume (patch 8 -> 30×30×20 after
    lattice padding), reference grid 16³ centred on the brain centre as the brain frame places it."""
    import numpy as np

    from asa.data.lattice import lattice_padding, reference_origin

    shape, patch, reference = (240, 240, 155), 8, (16, 16, 16)
    origin = reference_origin((119.5, 119.5, 77.0), [g * patch for g in reference])
    before, after = lattice_padding(shape, origin, patch, (128, 128, 128))
    grid = tuple(int(n) // patch for n in np.asarray(shape) + before + after)
    offset = tuple(int(v) for v in -((origin + before) // patch))  # the volume's first patch, in the reference frame
    assert grid == (30, 30, 20) and offset == (-7, -7, -2)
    return grid, offset, reference


@pytest.mark.parametrize("mode", ["mirror", "paper", "none"])
def test_codes_are_unique_over_a_brats_volume_except_mirror_pairs(mode):
    """Beyond the reference box too, two patches share a code exactly when they are mirror pairs: the
    linear continuation of eq. 3 gave (w=3, t=10, h=20) the code of (w=3, t=11, h=4)."""
    grid, offset, reference = _brats_lattice()
    coords = torch.stack(torch.meshgrid(*(torch.arange(n) for n in grid), indexing="ij"), -1).reshape(-1, 3)
    coords = coords + torch.tensor(offset)  # reference coordinates, lr_axis 0: (w, t, h)
    w = coords[:, 0]
    canonical = {"mirror": torch.minimum(w, 15 - w), "paper": torch.minimum(w, 16 - w), "none": w}[mode]
    anatomy = torch.stack([canonical, coords[:, 1], coords[:, 2]], -1)  # one key per patch or mirror pair
    n_pairs = len(anatomy.unique(dim=0))
    codes = symmetric_position_encoding(grid, 64, mode=mode, offset=offset, reference_grid=reference)
    n_codes = len(codes.unique(dim=0))
    assert n_codes == n_pairs  # the float32 codes (the linear continuation: 7260 codes for 9000 mirror pairs)
    from asa.models import position_index

    pos = position_index(coords, reference, mode=mode)  # and Pos itself, an exact integer: equal iff one key
    assert len(pos.unique()) == n_pairs == len(torch.stack([pos, *anatomy.T], -1).unique(dim=0))
    if mode != "none":
        partner = {"mirror": 15, "paper": 16}[mode] - w  # mirror pairs share a code (all inside this volume)
        rows = _index(grid, *(torch.stack([partner, coords[:, 1], coords[:, 2]], -1) - torch.tensor(offset)).T)
        keep = (partner - offset[0] >= 0) & (partner - offset[0] < grid[0])
        assert keep.float().mean() > 0.9
        assert torch.equal(codes[keep], codes[rows[keep]])
    one = lambda c: symmetric_position_encoding((1, 1, 1), 64, mode=mode, offset=c, reference_grid=reference)  # noqa: E731
    assert not torch.equal(one((3, 10, 20)), one((3, 11, 4)))


@pytest.mark.parametrize("mode", ["mirror", "paper", "none"])
@pytest.mark.parametrize("lr_axis", [0, 1, 2])
def test_pos_is_one_to_one_on_mirror_pairs_over_many_tiles(mode, lr_axis):
    """Odd and even reference sizes, several reference boxes away in every direction."""
    from asa.models import position_index

    reference = (3, 4, 5)
    coords = torch.stack(torch.meshgrid(torch.arange(-9, 12), torch.arange(-8, 13), torch.arange(-10, 16),
                                        indexing="ij"), -1).reshape(-1, 3)
    w, size = coords[:, lr_axis], reference[lr_axis]
    key = coords.clone()
    key[:, lr_axis] = {"mirror": torch.minimum(w, size - 1 - w), "paper": torch.minimum(w, size - w), "none": w}[mode]
    pos = position_index(coords, reference, mode=mode, lr_axis=lr_axis)
    assert (pos >= 0).all()
    n = len(key.unique(dim=0))
    assert len(pos.unique()) == n == len(torch.cat([pos[:, None], key], 1).unique(dim=0))


def test_tile_numbering_is_a_bijection():
    from asa.models.blocks.position import _tile_number

    a, b, c = torch.stack(torch.meshgrid(*(torch.arange(12),) * 3, indexing="ij")).reshape(3, -1)
    small = a + b + c < 12  # the triples of sum < 12 are numbered 0 … C(14, 3) - 1
    assert torch.equal(_tile_number(a, b, c)[small].sort().values, torch.arange(14 * 13 * 12 // 6))
    assert _tile_number(*torch.zeros(3, dtype=torch.long)) == 0
