"""Block puzzles (asa.models.heads.puzzles): hand-computed labels, the permutation set, where blocks are cut,
and the networks' labels end to end against an oracle head."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from asa.models import PRESETS, build_network
from asa.models.heads.puzzles import (CENTRE_CELL, NEIGHBOUR_OFFSETS, JigsawPuzzle, RelativePatchLocation, block_layout,
                                      cut_blocks, jigsaw_permutations, min_hamming, neighbour_class, permutation_index,
                                      shuffle_blocks)

TINY = {k: v for k, v in PRESETS["tiny"].items() if not k.startswith("decoder")}


# --- RPL labels -----------------------------------------------------------------------------------
@pytest.mark.parametrize("offset, cls", [((-1, -1, -1), 0), ((-1, -1, 0), 1), ((-1, 0, -1), 3), ((0, -1, -1), 9),
                                         ((0, 0, -1), 12), ((0, 0, 1), 13), ((1, 0, 0), 21), ((1, 1, 1), 25)])
def test_a_neighbour_offset_gives_its_raster_class(offset, cls):
    # cell 9(d0+1) + 3(d1+1) + (d2+1) of the 3x3x3 grid, one less past the centre cell 13
    assert int(neighbour_class(torch.tensor(offset))) == cls
    assert tuple(NEIGHBOUR_OFFSETS[cls].tolist()) == offset


def test_the_26_classes_are_the_neighbours_in_raster_order():
    assert NEIGHBOUR_OFFSETS.shape == (26, 3)
    assert torch.equal(neighbour_class(NEIGHBOUR_OFFSETS), torch.arange(26))
    cells = 9 * (NEIGHBOUR_OFFSETS[:, 0] + 1) + 3 * (NEIGHBOUR_OFFSETS[:, 1] + 1) + NEIGHBOUR_OFFSETS[:, 2] + 1
    assert cells.tolist() == [c for c in range(27) if c != CENTRE_CELL]


@pytest.mark.parametrize("offset, match", [((0, 0, 0), "centre block"), ((2, 0, 0), r"\{-1, 0, 1\}"),
                                           ((0, 1), "3 integers")])
def test_neighbour_class_refuses_what_is_no_neighbour(offset, match):
    with pytest.raises(ValueError, match=match):
        neighbour_class(torch.tensor(offset))


# --- jigsaw labels ------------------------------------------------------------------------------
def test_min_hamming_counts_the_positions_that_differ():
    assert min_hamming(torch.tensor([[0, 1, 2, 3], [1, 0, 2, 3], [3, 2, 1, 0]])) == 2
    assert min_hamming(torch.tensor([[0, 1, 2], [1, 2, 0]])) == 3


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_three_permutations_of_three_blocks_differ_everywhere(seed):
    # the best possible: a Latin square (each slot sees every block once), whichever permutation comes first
    perms = jigsaw_permutations(3, 3, seed=seed)
    assert min_hamming(perms) == 3
    assert all(sorted(col.tolist()) == [0, 1, 2] for col in perms.T)


@pytest.mark.slow
def test_the_permutation_set_is_deterministic_and_keeps_its_claimed_distance():
    perms = jigsaw_permutations(27, 100, seed=0)  # the default set (docs/configuration.md: least Hamming distance 24 of 27)
    assert perms.shape == (100, 27) and perms.dtype == torch.long
    assert torch.equal(perms.sort(1).values, torch.arange(27).expand(100, -1))  # every row a permutation
    assert min_hamming(perms) == 24
    assert torch.equal(perms, jigsaw_permutations(27, 100, seed=0))
    assert not torch.equal(perms, jigsaw_permutations(27, 100, seed=1))
    assert len({tuple(p) for p in jigsaw_permutations(8, 100, seed=0).tolist()}) == 100
    assert min_hamming(jigsaw_permutations(8, 100, seed=0)) == 5


def test_the_greedy_choice_beats_random_permutations():
    gen = torch.Generator().manual_seed(0)
    random = torch.rand(24, 8, generator=gen).argsort(1)
    assert min_hamming(jigsaw_permutations(8, 24, seed=0)) > min_hamming(random)


def test_a_set_larger_than_the_permutations_is_refused():
    assert len({tuple(p) for p in jigsaw_permutations(3, 6).tolist()}) == 6
    with pytest.raises(ValueError, match="method.permutations=7: 3 blocks have only 6"):
        jigsaw_permutations(3, 7)


def test_a_known_permutation_gives_its_index_and_puts_the_blocks_in_its_slots():
    perms = jigsaw_permutations(4, 5, seed=0)
    perm = perms[3]
    blocks = torch.arange(4.0)[None, :, None] * torch.ones(1, 4, 2)  # block k holds the value k
    shown = shuffle_blocks(blocks, perm[None])
    assert shown[0, :, 0].tolist() == perm.tolist()  # slot i holds block perm[i]
    hand = shuffle_blocks(blocks, torch.tensor([[2, 0, 3, 1]]))
    assert hand[0, :, 1].tolist() == [2.0, 0.0, 3.0, 1.0]
    assert int(permutation_index(perm, perms)) == 3
    assert permutation_index(perms[[4, 0]], perms).tolist() == [4, 0]
    missing = next(p for p in torch.tensor([[0, 1, 2, 3], [1, 0, 2, 3], [0, 1, 3, 2]]) if not (perms == p).all(1).any())
    with pytest.raises(ValueError, match="outside the jigsaw permutation set"):
        permutation_index(missing, perms)


# --- blocks ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("crop, grid, block, jitter, expected", [
    (64, 3, None, 4, (21, 16, 0)),   # the demo crop: 2-patch blocks, 5 voxels of play
    (128, 3, None, 4, (42, 32, 1)),  # the paper's crop: 4-patch blocks, 10 voxels of play
    (48, 3, None, 4, (16, 8, 0)),
    (48, 2, None, 4, (24, 16, 0)),
    (64, 3, 1, 4, (21, 8, 0)),
])
def test_block_layout(crop, grid, block, jitter, expected):
    layout = block_layout(crop, grid, 8, block=block, jitter=jitter)
    assert (layout.cell, layout.block, layout.margin) == expected
    assert layout.jitter == layout.cell - layout.block >= jitter


@pytest.mark.parametrize("crop, grid, block, jitter, match", [
    (32, 3, None, 4, "data.crop=32"), (64, 3, 3, 4, "method.block=3"), (64, 1, None, 4, "method.grid=1"),
    (64, 3, None, -1, "method.jitter=-1"),
])
def test_block_layout_refuses_blocks_that_do_not_fit(crop, grid, block, jitter, match):
    with pytest.raises(ValueError, match=match):
        block_layout(crop, grid, 8, block=block, jitter=jitter)


def _coordinates(size: int, batch: int = 1) -> torch.Tensor:
    """[batch, 1, size³] whose voxel (i, j, k) holds 10000 i + 100 j + k (+ 10⁶ per sample)."""
    i = torch.arange(size, dtype=torch.float64)
    v = 10000 * i[:, None, None] + 100 * i[None, :, None] + i[None, None, :]
    return torch.stack([v + 1e6 * s for s in range(batch)])[:, None]


def test_blocks_are_cut_where_their_cell_and_jitter_put_them():
    layout = block_layout(64, 3, 8, jitter=4)  # cells of 21, blocks of 16, margin 0
    x = _coordinates(64, 2)
    offsets = torch.zeros(2, 27, 3, dtype=torch.long)
    offsets[1, 22] = torch.tensor([3, 0, 5])  # cell 22 = (2, 1, 1)
    blocks = cut_blocks(x, layout, offsets)
    assert blocks.shape == (2, 27, 1, 16, 16, 16)
    assert blocks[0, 22, 0, 0, 0, 0] == 10000 * 42 + 100 * 21 + 21
    start = (42 + 3, 21, 21 + 5)
    assert blocks[1, 22, 0, 0, 0, 0] == 1e6 + 10000 * start[0] + 100 * start[1] + start[2]
    assert torch.equal(blocks[1, 22, 0], x[1, 0, 45:61, 21:37, 26:42])
    assert torch.equal(blocks[0, 13, 0], x[0, 0, 21:37, 21:37, 21:37])  # the centre block


# --- networks: labels end to end ------------------------------------------------------------------
class _Oracle(nn.Module):
    """Features: the block's first voxel decoded to its cell; a head that names the answer from them."""

    def __init__(self, answer) -> None:
        super().__init__()
        self.answer = answer

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.answer(features)


def _start_cells(blocks: torch.Tensor, cell: int) -> torch.Tensor:
    """blocks [M, 1, b, b, b] of a `_coordinates` volume -> [M, 3] cell of each block's first voxel."""
    v = blocks[:, 0, 0, 0, 0].double() % 1e6
    start = torch.stack([v // 10000, (v // 100) % 100, v % 100], -1)
    return torch.round(start / cell).long().float()  # jitter < cell / 2, so rounding gives the cell


def test_rpl_labels_name_the_neighbour_that_was_encoded():
    torch.manual_seed(0)
    net = RelativePatchLocation(img_size=64, pairs=26, **TINY)  # every neighbour of each centre
    cell = net.layout.cell
    assert cell / 2 > net.layout.jitter
    net.encode_blocks = lambda blocks: _start_cells(blocks, cell)  # type: ignore[method-assign]

    def answer(features):  # [B, pairs, 6]: centre cell, neighbour cell (its offset must not be 0)
        cls = neighbour_class((features[..., 3:] - features[..., :3]).long())
        return nn.functional.one_hot(cls, 26).float() * 50  # [B, pairs, 26]

    net.head = _Oracle(answer)
    out = net(_coordinates(64, 3).float())
    assert out.logits.shape == (3 * 26, 26) and out.accuracy == 1.0 and out.loss < 1e-6
    assert sorted(out.target.view(3, 26)[1].tolist()) == list(range(26))  # distinct neighbours per volume


def test_jigsaw_labels_name_the_permutation_that_ordered_the_blocks():
    torch.manual_seed(0)
    net = JigsawPuzzle(img_size=64, grid=3, permutations=20, puzzles=3, **TINY)
    cell = net.layout.cell
    net.encode_blocks = lambda blocks: _start_cells(blocks, cell)  # type: ignore[method-assign]

    def answer(features):  # [M, 27·3]: the cell of the block in each slot
        cells = features.view(features.shape[0], 27, 3).long()
        perm = 9 * cells[..., 0] + 3 * cells[..., 1] + cells[..., 2]  # slot i shows block perm[i]
        return nn.functional.one_hot(permutation_index(perm, net.permutations), 20).float() * 50

    net.head = _Oracle(answer)
    out = net(_coordinates(64, 2).float())
    assert out.logits.shape == (6, 20) and out.accuracy == 1.0 and out.loss < 1e-6


@pytest.mark.parametrize("arch, kwargs, n", [
    ("rpl_pretrain", dict(img_size=48, pairs=2), 26),
    ("rpl_pretrain", dict(img_size=64, pairs=1, block=1), 26),
    ("jigsaw_pretrain", dict(img_size=48, grid=2, permutations=10, puzzles=2), 10),
    ("jigsaw_pretrain", dict(img_size=64, permutations=30, puzzles=1), 30),
])
def test_networks_rebuild_from_their_spec_with_the_encoder_of_asa(arch, kwargs, n):
    net = build_network({"arch": arch, "kwargs": {**TINY, **kwargs}})
    out = net(torch.randn(2, 1, *(kwargs["img_size"],) * 3))
    m = 2 * kwargs.get("pairs", kwargs.get("puzzles", 1))
    assert out.logits.shape == (m, n) and out.target.shape == (m,)
    assert math.isfinite(out.loss.item())
    again = build_network({"arch": net.network_arch, "kwargs": net.network_kwargs})
    again.load_state_dict(net.state_dict())  # the permutation set travels in the state dict
    asa = build_network({"arch": "asa_pretrain", "kwargs": {**PRESETS["tiny"], "img_size": kwargs["img_size"]}})
    shapes = lambda module: {k: v.shape for k, v in module.state_dict().items()}  # noqa: E731
    assert shapes(net.encoder) == shapes(asa.encoder)


def test_networks_refuse_options_a_block_cannot_have():
    with pytest.raises(ValueError, match="region_attention"):
        RelativePatchLocation(img_size=64, region_attention="alternate", **TINY)
    with pytest.raises(ValueError, match="method.pairs=27"):
        RelativePatchLocation(img_size=64, pairs=27, **TINY)
    with pytest.raises(ValueError, match="method.puzzles=0"):
        JigsawPuzzle(img_size=64, puzzles=0, **TINY)
    with pytest.raises(ValueError, match=r"expected input \[B, 1, 64, 64, 64\]"):
        RelativePatchLocation(img_size=64, **TINY)(torch.randn(1, 1, 48, 48, 48))


def test_shift_volumes_moves_each_volume_zero_filled():
    from asa.models.heads.puzzles import shift_volumes

    x = torch.arange(2 * 4 ** 3, dtype=torch.float32).view(2, 1, 4, 4, 4) + 1
    out = shift_volumes(x, torch.tensor([[1, 0, -2], [0, 0, 0]]))
    assert torch.equal(out[1], x[1])  # no shift: as it was
    assert torch.equal(out[0, :, 1:, :, :2], x[0, :, :3, :, 2:])  # out[v] = x[v - shift]
    assert out[0, :, 0].abs().sum() == 0 and out[0, :, :, :, 2:].abs().sum() == 0  # zero-filled where nothing moved in


def test_normalised_blocks_lose_their_brightness():
    from asa.models.heads.puzzles import normalise_blocks

    torch.manual_seed(0)
    blocks = torch.randn(3, 2, 4, 4, 4)
    out = normalise_blocks(blocks * 5 + 7)
    assert torch.allclose(out.mean((-3, -2, -1)), torch.zeros(3, 2), atol=1e-5)
    assert torch.allclose(out.std((-3, -2, -1), unbiased=False), torch.ones(3, 2), atol=1e-4)
    assert torch.allclose(out, normalise_blocks(blocks), atol=1e-4)  # brightness and contrast gone
    assert torch.equal(normalise_blocks(torch.full((1, 1, 2, 2, 2), 3.0)), torch.zeros(1, 1, 2, 2, 2))


def test_the_options_reach_the_network_and_its_spec():
    net = JigsawPuzzle(img_size=32, grid=2, permutations=4, puzzles=1, hidden_dim=8, shift=3, block_norm=True,
                       embed_dim=16, depth=1, num_heads=2, window_size=8)
    kwargs = net.network_kwargs
    assert (kwargs["shift"], kwargs["block_norm"]) == (3, True)
    assert net(torch.randn(2, 1, 32, 32, 32)).logits.shape == (2, 4)
    with pytest.raises(ValueError, match=r"method.shift=-1: expected voxels from 0"):
        JigsawPuzzle(img_size=32, grid=2, permutations=4, shift=-1, embed_dim=16, depth=1, num_heads=2, window_size=8)
    with pytest.raises(ValueError, match=r"method.permutations=1: a jigsaw with fewer than 2 permutations has nothing"):
        JigsawPuzzle(img_size=32, grid=2, permutations=1, embed_dim=16, depth=1, num_heads=2, window_size=8)
