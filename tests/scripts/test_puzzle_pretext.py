"""scripts/puzzle_pretext.py: the brightness-only Jigsaw solver solves a crop whose cells differ in brightness
and is at chance once every block is normalised on its own."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

from asa.models.heads.puzzles import JigsawPuzzle

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "puzzle_pretext.py"
_spec = importlib.util.spec_from_file_location("asa_puzzle_pretext", SCRIPT)
pretext = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = pretext
_spec.loader.exec_module(pretext)


def _cells(n: int) -> torch.Tensor:
    """n volumes [n, 1, 32, 32, 32] whose 2 x 2 x 2 cells of 16 voxels hold the brightness 1 .. 8 plus noise."""
    x = torch.arange(1, 9, dtype=torch.float32).view(1, 1, 2, 2, 2)
    x = x.repeat_interleave(16, 2).repeat_interleave(16, 3).repeat_interleave(16, 4)
    return x.repeat(n, 1, 1, 1, 1) + 0.1 * torch.randn(n, 1, 32, 32, 32)


def test_brightness_alone_solves_a_centred_jigsaw_and_not_a_normalised_one():
    torch.manual_seed(0)
    net = JigsawPuzzle(img_size=32, grid=2, jitter=4, permutations=10, puzzles=1, hidden_dim=8, embed_dim=16, depth=1,
                       num_heads=2, window_size=8)
    assert pretext.brightness_accuracy(net, _cells(4), _cells(3), draws=5) == 1.0
    net.block_norm = True
    assert pretext.brightness_accuracy(net, _cells(4), _cells(3), draws=5) < 0.5
