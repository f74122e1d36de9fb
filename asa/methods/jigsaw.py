"""``method=jigsaw``: 3D jigsaw puzzles (Taleb et al., NeurIPS 2020, after Noroozi & Favaro) on the shared
SW-ViT encoder: name the permutation, out of a fixed set far apart in Hamming distance, that shuffled
the n³ blocks of a crop (`asa.models.heads.puzzles`). The encoder's sizes come from the ``model`` group."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from asa.methods.base import MethodSettings, register_method
from asa.methods.rpl import BlockPuzzleMethod
from asa.models.heads.puzzles import check_permutations

__all__ = ["JigsawPretraining", "JigsawSettings"]


@dataclass
class JigsawSettings(MethodSettings):
    """`asa.models.JigsawPuzzle` settings beyond the encoder sizes of the ``model`` group: grid³ cells of
    ⌊data.crop / grid⌋ voxels, ``permutations`` classes."""

    name: str = "jigsaw"
    grid: int = 3  # cells per axis (grid³ blocks)
    block: Optional[int] = None  # block edge in patches; null: the most that leave `jitter` voxels of play in a cell
    jitter: int = 4  # least random shift (voxels) of a block in its cell (Taleb's jitter)
    permutations: int = 100  # P: the fixed permutation set, chosen greedily for Hamming distance
    permutation_seed: int = 0  # draws the set (the same seed, the same set)
    puzzles: int = 4  # permutations per volume (Taleb: 1), sharing its block features
    hidden_dim: int = 256  # the classification head's hidden width
    shift: int = 0  # largest random offset (voxels per axis) of the volume before cutting: crops not brain-centred
    block_norm: bool = False  # normalise each block to mean 0, std 1: its brightness no longer tells its place


@register_method
class JigsawPretraining(BlockPuzzleMethod):
    """3D-Jig (`asa.models.JigsawPuzzle`)."""

    name = "jigsaw"
    Settings = JigsawSettings
    arch = "jigsaw_pretrain"

    def check(self) -> None:
        check_permutations(int(self.settings.permutations))
        super().check()

    @property
    def grid(self) -> int:  # type: ignore[override]
        return int(self.settings.grid)
