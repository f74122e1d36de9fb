"""Block puzzles on the SW-ViT encoder: relative patch location (3D-RPL) and jigsaw (3D-Jig), the 3D
pretext tasks of Taleb et al., "3D Self-Supervised Methods for Medical Imaging" (NeurIPS 2020), after
Doersch et al. (2015) and Noroozi & Favaro (2016).

Blocks on the token lattice. The central ``n·c`` voxels of the crop (per axis) split into an
n × n × n grid of cells of ``c = ⌊crop / n⌋`` voxels, numbered in raster order (axis 2 fastest). In
every cell a block of ``b = block · patch_size`` voxels (a whole number of patches) sits at a random
offset in [0, c − b] voxels per axis, Taleb's jitter: neighbouring blocks lie 0 to 2(c − b) voxels
apart, so a puzzle cannot be solved by continuing edges across a block border.

Each block is encoded alone by the shared encoder (:class:`asa.models.SWViTEncoder`: patch
embedding, position code, SW blocks, final norm) and mean-pooled over its tokens. A block's tokens get
the codes the reference grid has at its origin corner, the same for every block: the code tells a
token where it sits inside its block, never where the block was cut (a code of the block's place
would hand the answer to the head). The encoder is built for the whole crop, so its weights, keys
(``encoder.*``) and recorded geometry are those of ASA's encoder and fine-tune alike.

The labels are pure functions: `neighbour_class` (RPL) and `jigsaw_permutations`, `shuffle_blocks`,
`permutation_index` (jigsaw).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from asa.models.swvit.encoder import SWVIT_KEYS, EncoderSettings
from asa.models.registry import record_spec, register_network

__all__ = ["CENTRE_CELL", "NEIGHBOUR_OFFSETS", "RPL_GRID", "BlockLayout", "JigsawPuzzle", "PuzzleOutput",
           "RelativePatchLocation", "block_layout", "check_permutations", "cut_blocks", "jigsaw_permutations", "min_hamming",
           "neighbour_class", "normalise_blocks", "permutation_index", "shift_volumes", "shuffle_blocks"]

RPL_GRID = 3
CENTRE_CELL = 13  # the centre of the 3 × 3 × 3 cells in raster order
# the 26 neighbour offsets (d0, d1, d2) ∈ {−1, 0, 1}³ \ {0} in raster order (d2 fastest): class k is row k
NEIGHBOUR_OFFSETS = torch.tensor([d for d in itertools.product((-1, 0, 1), repeat=3) if d != (0, 0, 0)])
ENUMERATE_UP_TO = 8  # jigsaw: every permutation is a candidate up to 8 blocks (8! = 40320), else a seeded sample
CANDIDATES = 20000  # the sample's size


# --- labels ---------------------------------------------------------------------------------------
def neighbour_class(offset: torch.Tensor) -> torch.Tensor:
    """RPL class of a neighbour at cell offset ``offset`` [..., 3] (each −1, 0 or 1, not all 0) from the
    centre cell -> [...] int64 in 0..25: the neighbour's cell in raster order of the 3 × 3 × 3 grid,
    ``9(d0+1) + 3(d1+1) + (d2+1)``, less one past the centre (cell 13). So (−1, −1, −1) is 0,
    (0, 0, −1) is 12, (0, 0, 1) is 13, (1, 1, 1) is 25; `NEIGHBOUR_OFFSETS` [26, 3] is the inverse."""
    offset = torch.as_tensor(offset, dtype=torch.long)
    if offset.shape[-1:] != (3,) or bool(((offset < -1) | (offset > 1)).any()):
        raise ValueError(f"a neighbour offset is 3 integers in {{-1, 0, 1}}, got {offset.tolist()}")
    if bool((offset == 0).all(-1).any()):
        raise ValueError("offset (0, 0, 0) is the centre block itself, not one of its 26 neighbours")
    cell = 9 * (offset[..., 0] + 1) + 3 * (offset[..., 1] + 1) + (offset[..., 2] + 1)
    return cell - (cell > CENTRE_CELL).long()


def min_hamming(perms: torch.Tensor) -> int:
    """Least Hamming distance (positions that differ) between two rows of ``perms`` [P, K], P >= 2."""
    d = (perms[:, None, :] != perms[None, :, :]).sum(-1)  # [P, P]
    d.fill_diagonal_(perms.shape[1] + 1)
    return int(d.min())


def jigsaw_permutations(num_blocks: int, count: int, *, seed: int = 0) -> torch.Tensor:
    """``count`` permutations of ``num_blocks`` blocks, far apart in Hamming distance: [count, num_blocks] int64.

    Greedy as Noroozi & Favaro's selection: the first is drawn at random (``seed``), each next one is
    the candidate farthest from those chosen; here "farthest" is the largest *least* distance to the
    chosen set (ties: the largest summed distance, Noroozi's criterion, then the first candidate), so
    `min_hamming` of the set is as large as the greedy choice makes it. Candidates: every
    permutation for up to 8 blocks (lexicographic), else 20000 drawn with ``seed``. Deterministic."""
    if num_blocks < 2 or count < 1:
        raise ValueError(f"jigsaw permutations: need >= 2 blocks and >= 1 permutation, got {num_blocks} and {count}")
    gen = torch.Generator().manual_seed(int(seed))
    if num_blocks <= ENUMERATE_UP_TO:
        pool = torch.tensor(list(itertools.permutations(range(num_blocks))), dtype=torch.long)
    else:
        pool = torch.rand(CANDIDATES, num_blocks, generator=gen).argsort(dim=1)
    available = math.factorial(num_blocks) if num_blocks <= ENUMERATE_UP_TO else len(pool)
    if count > available:
        raise ValueError(f"method.permutations={count}: {num_blocks} blocks have only {available} distinct "
                         "candidate permutations")
    chosen = [int(torch.randint(len(pool), (), generator=gen))]
    nearest = (pool != pool[chosen[0]]).sum(1)  # [M] least distance of each candidate to the chosen set
    total = nearest.clone()
    for _ in range(count - 1):
        j = int(torch.argmax(nearest * (num_blocks * count + 1) + total))  # by least, then summed distance
        if int(nearest[j]) == 0:
            raise ValueError(f"method.permutations={count}: only {len(chosen)} distinct permutations among the "
                             f"candidates of {num_blocks} blocks")
        chosen.append(j)
        d = (pool != pool[j]).sum(1)
        nearest, total = torch.minimum(nearest, d), total + d
    return pool[chosen]


def check_permutations(count: int) -> None:
    """Refuse a jigsaw of fewer than 2 permutations: one class, nothing to learn (loss 0 from the start)."""
    if count < 2:
        raise ValueError(f"method.permutations={count}: a jigsaw with fewer than 2 permutations has nothing to learn "
                         "(every puzzle has the same answer); expected at least 2 (Taleb et al.: 100)")


def shuffle_blocks(blocks: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """The puzzle: slot i of the output holds block ``perm[i]``. blocks [B, K, ...], perm [B, K] -> [B, K, ...]."""
    index = perm.reshape(*perm.shape, *(1,) * (blocks.ndim - 2)).expand(*perm.shape, *blocks.shape[2:])
    return torch.gather(blocks, 1, index)


def permutation_index(perm: torch.Tensor, perms: torch.Tensor) -> torch.Tensor:
    """Row of ``perms`` [P, K] equal to each permutation of ``perm`` [..., K] -> [...] int64 (the
    jigsaw class); a permutation outside the set is a ``ValueError``."""
    hit = (perm[..., None, :] == perms).all(-1)  # [..., P]
    if not bool(hit.any(-1).all()):
        raise ValueError("a permutation outside the jigsaw permutation set")
    return hit.long().argmax(-1)


# --- blocks ---------------------------------------------------------------------------------------
class BlockLayout(NamedTuple):
    """n cells per axis of ``cell`` voxels, from ``margin`` voxels into the crop; blocks of ``block``
    voxels; a block moves by up to ``cell − block`` voxels in its cell (the jitter)."""

    grid: int
    cell: int
    block: int
    margin: int

    @property
    def jitter(self) -> int:
        return self.cell - self.block


def block_layout(crop: int, grid: int, patch_size: int, *, block: int | None = None, jitter: int = 4) -> BlockLayout:
    """The cells of an n = ``grid`` puzzle in a ``crop``³ crop: cell edge ⌊crop / n⌋; block edge
    ``block`` patches, or (None) the most whole patches that leave at least ``jitter`` voxels of
    play in a cell. Raises ``ValueError`` naming the option when no block fits."""
    if grid < 2:
        raise ValueError(f"method.grid={grid}: a puzzle needs at least 2 cells per axis")
    if jitter < 0:
        raise ValueError(f"method.jitter={jitter}: expected a number of voxels >= 0")
    cell = crop // grid
    if block is None:
        block = (cell - jitter) // patch_size
        if block < 1:
            raise ValueError(f"data.crop={crop}: a cell of {crop}//{grid} = {cell} voxels holds no block of whole "
                             f"{patch_size}-voxel patches with method.jitter={jitter} voxels of play; lower "
                             "method.jitter, use fewer cells or a larger crop")
    elif block < 1 or block * patch_size + jitter > cell:
        raise ValueError(f"method.block={block}: a block of {block}×{patch_size} voxels with method.jitter={jitter} "
                         f"voxels of play does not fit a cell of {crop}//{grid} = {cell} voxels")
    return BlockLayout(grid, cell, block * patch_size, (crop - grid * cell) // 2)


def cut_blocks(x: torch.Tensor, layout: BlockLayout, offsets: torch.Tensor) -> torch.Tensor:
    """The block of every cell: x [B, C, D, D, D], offsets [B, n³, 3] (voxels, each in [0, jitter],
    cells in raster order) -> [B, n³, C, b, b, b]; block k of sample i starts at voxel
    ``margin + cell · (k's cell coordinates) + offsets[i, k]``."""
    n, b = layout.grid, layout.block
    cells = torch.stack(torch.meshgrid(*(torch.arange(n, device=x.device),) * 3, indexing="ij"), -1).view(-1, 3)
    start = layout.margin + layout.cell * cells + offsets.long()  # [B, K, 3]
    span = torch.arange(b, device=x.device)
    i0, i1, i2 = (start[..., a, None] + span for a in range(3))  # [B, K, b] each
    batch = torch.arange(x.shape[0], device=x.device)[:, None, None, None, None]
    blocks = x.movedim(1, -1)[batch, i0[..., :, None, None], i1[..., None, :, None], i2[..., None, None, :]]
    return blocks.movedim(-1, 2)  # [B, K, b, b, b, C] -> [B, K, C, b, b, b]


# --- networks -------------------------------------------------------------------------------------
@dataclass
class PuzzleOutput:
    """loss: scalar cross-entropy; logits [M, classes]; target [M] (the true class of each example)."""

    loss: torch.Tensor
    logits: torch.Tensor
    target: torch.Tensor

    @property
    def accuracy(self) -> torch.Tensor:
        return (self.logits.argmax(-1) == self.target).float().mean()


def _head(in_dim: int, hidden_dim: int, classes: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, classes))


def shift_volumes(x: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """x [B, C, D, H, W] moved by ``shifts`` [B, 3] voxels (each in [−s, s]), zero-filled (the background
    of a preprocessed scan): out[i, :, v] = x[i, :, v − shifts[i]]."""
    s = int(shifts.abs().max()) if shifts.numel() else 0
    if s == 0:
        return x
    padded = F.pad(x, (s, s) * 3)
    size = x.shape[2:]
    return torch.stack([padded[i, :, s - d0:s - d0 + size[0], s - d1:s - d1 + size[1], s - d2:s - d2 + size[2]]
                        for i, (d0, d1, d2) in enumerate(shifts.tolist())])


def normalise_blocks(blocks: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """blocks [M, C, b, b, b], each channel of each block to mean 0 and standard deviation 1 over its
    voxels (a constant block to 0): its brightness no longer tells where it was cut."""
    mean = blocks.mean((-3, -2, -1), keepdim=True)
    std = blocks.std((-3, -2, -1), keepdim=True, unbiased=False)
    return (blocks - mean) / (std + eps)


class BlockPuzzle(nn.Module):
    """The shared SW-ViT encoder (built for the whole crop) applied block by block, and a head.

    In a brain-centred crop a block's place is told by what it shows (its mean brightness solves the
    jigsaw of a 32³ crop alone). Taleb et al.'s setting takes that away: ``shift`` moves each volume by
    a random offset before the blocks are cut, so the crop is no longer centred on the brain, and
    ``block_norm`` normalises each block on its own.

    Args:
        settings: the encoder's settings; ``img_size`` is the crop (cubic).
        grid: cells per axis.
        block: block edge in patches (None: the largest with ``jitter`` voxels of play).
        jitter: least play of a block in its cell, in voxels.
        shift: largest random offset (voxels, per axis) each volume is moved by, zero-filled (0: none).
        block_norm: normalise every block to mean 0, standard deviation 1 per channel.
    """

    key_to_encoder, key_to_stem, keys_to_in_proj = SWVIT_KEYS  # its transfer keys (asa.models.keys)

    def __init__(self, settings: EncoderSettings, *, grid: int, block: int | None, jitter: int, shift: int = 0,
                 block_norm: bool = False) -> None:
        super().__init__()
        if shift < 0 or shift >= settings.img_size[0]:
            raise ValueError(f"method.shift={shift}: expected voxels from 0 to less than the crop "
                             f"({settings.img_size[0]})")
        self.shift, self.block_norm = int(shift), bool(block_norm)
        if len(set(settings.img_size)) != 1:
            raise ValueError(f"block puzzles need a cubic crop, got img_size {settings.img_size}")
        if settings.region_attention != "none":
            raise ValueError(f"region_attention={settings.region_attention!r}: a block cut from the crop has no "
                             "region map; use region_attention=none")
        self.layout = block_layout(settings.img_size[0], grid, settings.patch_size, block=block, jitter=jitter)
        self.encoder = settings.encoder()
        self.in_channels = settings.in_channels
        self.img_size, self.patch_size = self.encoder.img_size, self.encoder.patch_size
        k = self.block_patches = self.layout.block // self.patch_size  # the block edge in patches, resolved
        codes = self.encoder.pos_embed.view(*self.encoder.grid, -1)[:k, :k, :k]  # the reference grid's corner
        self.register_buffer("block_pos", codes.reshape(k ** 3, -1).clone(), persistent=False)  # [k³, E]

    def encode_blocks(self, blocks: torch.Tensor) -> torch.Tensor:
        """blocks [M, C, b, b, b] -> pooled features [M, E]: every block encoded alone, mean of its tokens."""
        if self.block_norm:
            blocks = normalise_blocks(blocks)
        tokens = self.encoder.patch_embed(blocks) + self.block_pos  # [M, k³, E]
        return self.encoder(tokens).mean(1)

    def random_blocks(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, D, D, D] -> the blocks of all n³ cells at random jitter: [B, n³, C, b, b, b]."""
        if tuple(x.shape[1:]) != (self.in_channels, *self.img_size):
            raise ValueError(f"expected input [B, {self.in_channels}, {', '.join(map(str, self.img_size))}], "
                             f"got {list(x.shape)}")
        if self.shift:
            x = shift_volumes(x, torch.randint(-self.shift, self.shift + 1, (x.shape[0], 3)))
        offsets = torch.randint(0, self.layout.jitter + 1, (x.shape[0], self.layout.grid ** 3, 3), device=x.device)
        return cut_blocks(x, self.layout, offsets)

    def no_weight_decay(self) -> set[str]:
        """The encoder's relative position biases, as ASA's."""
        return {name for name, _ in self.named_parameters() if name.endswith("rel_pos_bias")}


@register_network("rpl_pretrain", kind="pretraining", family="swvit")
class RelativePatchLocation(BlockPuzzle):
    """3D-RPL: from the 3 × 3 × 3 blocks of a crop, the centre block and ``pairs`` of its 26 neighbours
    (distinct, uniformly drawn) are encoded; the head reads [centre features, neighbour features] and
    names the neighbour's place (26-way cross-entropy, classes as `neighbour_class` numbers them).

    forward(x [B, C, D, D, D]) -> :class:`PuzzleOutput` over B·pairs examples.

    Args:
        pairs: neighbours per volume (Taleb: 1); each costs one more block encoding.
        hidden_dim: width of the head's hidden layer.
        block, jitter, shift, block_norm: as :class:`BlockPuzzle`.
        **encoder: the encoder's settings (:class:`EncoderSettings`).
    """

    def __init__(self, *, block: int | None = None, jitter: int = 4, pairs: int = 4, hidden_dim: int = 256,
                 shift: int = 0, block_norm: bool = False, **encoder: Any) -> None:
        settings = EncoderSettings.of("RelativePatchLocation", encoder)
        if not 1 <= pairs <= 26:
            raise ValueError(f"method.pairs={pairs}: expected 1 to 26 neighbours per volume")
        super().__init__(settings, grid=RPL_GRID, block=block, jitter=jitter, shift=shift, block_norm=block_norm)
        self.pairs = pairs
        self.head = _head(2 * settings.embed_dim, hidden_dim, len(NEIGHBOUR_OFFSETS))
        record_spec(self, "rpl_pretrain", {**settings.spec(), "block": self.block_patches, "jitter": jitter,
                                           "pairs": pairs, "hidden_dim": hidden_dim, "shift": shift,
                                           "block_norm": block_norm})

    def forward(self, x: torch.Tensor) -> PuzzleOutput:
        blocks = self.random_blocks(x)  # [B, 27, C, b, b, b]
        b = x.shape[0]
        target = torch.rand(b, len(NEIGHBOUR_OFFSETS), device=x.device).argsort(1)[:, :self.pairs]  # [B, pairs]
        cell = target + (target >= CENTRE_CELL).long()  # the neighbour's cell
        picked = torch.cat([blocks[:, CENTRE_CELL:CENTRE_CELL + 1], shuffle_blocks(blocks, cell)], 1)
        features = self.encode_blocks(picked.flatten(0, 1)).view(b, 1 + self.pairs, -1)  # [B, 1 + pairs, E]
        centre = features[:, :1].expand(-1, self.pairs, -1)
        logits = self.head(torch.cat([centre, features[:, 1:]], -1)).flatten(0, 1)  # [B·pairs, 26]
        target = target.flatten()
        return PuzzleOutput(F.cross_entropy(logits.float(), target), logits, target)


@register_network("jigsaw_pretrain", kind="pretraining", family="swvit")
class JigsawPuzzle(BlockPuzzle):
    """3D-Jig: the n³ blocks of a crop are encoded once, then shown in the order of ``puzzles``
    permutations drawn from a fixed set of ``permutations`` (`jigsaw_permutations`, kept in the
    state dict); the head reads the features concatenated slot by slot and names the permutation
    (P-way cross-entropy, class = row of the set).

    forward(x [B, C, D, D, D]) -> :class:`PuzzleOutput` over B·puzzles examples.

    Args:
        grid: cells per axis (n; n³ blocks).
        permutations: size P of the permutation set.
        permutation_seed: the seed that draws the set.
        puzzles: permutations per volume, sharing its block features (Taleb: 1).
        hidden_dim: width of the head's hidden layer.
        block, jitter, shift, block_norm: as :class:`BlockPuzzle`.
        **encoder: the encoder's settings (:class:`EncoderSettings`).
    """

    def __init__(self, *, grid: int = 3, block: int | None = None, jitter: int = 4, permutations: int = 100,
                 permutation_seed: int = 0, puzzles: int = 4, hidden_dim: int = 256, shift: int = 0,
                 block_norm: bool = False, **encoder: Any) -> None:
        settings = EncoderSettings.of("JigsawPuzzle", encoder)
        if puzzles < 1:
            raise ValueError(f"method.puzzles={puzzles}: expected at least 1 permutation per volume")
        check_permutations(permutations)
        super().__init__(settings, grid=grid, block=block, jitter=jitter, shift=shift, block_norm=block_norm)
        self.puzzles = puzzles
        self.register_buffer("permutations", jigsaw_permutations(grid ** 3, permutations, seed=permutation_seed))
        self.head = _head(grid ** 3 * settings.embed_dim, hidden_dim, permutations)
        record_spec(self, "jigsaw_pretrain", {**settings.spec(), "grid": grid, "block": self.block_patches,
                                              "jitter": jitter, "permutations": permutations,
                                              "permutation_seed": permutation_seed, "puzzles": puzzles,
                                              "hidden_dim": hidden_dim, "shift": shift, "block_norm": block_norm})

    def forward(self, x: torch.Tensor) -> PuzzleOutput:
        blocks = self.random_blocks(x)  # [B, K, C, b, b, b]
        b, k = blocks.shape[:2]
        features = self.encode_blocks(blocks.flatten(0, 1)).view(b, 1, k, -1)  # [B, 1, K, E]
        target = torch.randint(0, len(self.permutations), (b, self.puzzles), device=x.device)  # [B, puzzles]
        shown = shuffle_blocks(features.expand(-1, self.puzzles, -1, -1).flatten(0, 1),
                               self.permutations[target.flatten()])  # [B·puzzles, K, E]
        logits = self.head(shown.flatten(1))  # [B·puzzles, P]
        target = target.flatten()
        return PuzzleOutput(F.cross_entropy(logits.float(), target), logits, target)
