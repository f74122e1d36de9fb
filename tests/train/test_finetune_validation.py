"""Sliding-window Dice validation: hand-computed means, and exact means across ranks."""
from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from asa.train.distributed import DistEnv
from asa.train.finetune import make_dice_validator


class Echo(nn.Module):
    """Logits = the input itself (so the 'prediction' is whatever the image says)."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.dummy


def _items() -> list[dict]:
    mask = torch.zeros(1, 16, 16, 16)
    mask[:, 4:12, 4:12, 4:12] = 1
    perfect = {"image": mask * 20 - 10, "label": mask}  # Dice 1
    missed = {"image": torch.full_like(mask, -10.0), "label": mask}  # predicts nothing: Dice 0
    half = mask.clone()
    half[:, 4:8] = 0  # predicts half the cube: Dice 2·256/(256+512) = 2/3
    return [perfect, missed, {"image": half * 20 - 10, "label": mask}]


def test_hand_computed_mean_dice():
    validate = make_dice_validator(_items(), names=("WT",), multilabel=True, roi_size=(16, 16, 16), env=DistEnv())
    got = validate(Echo())
    expected = (1 + 0 + 2 / 3) / 3
    assert abs(got["dice"] - expected) < 1e-9 and abs(got["dice_WT"] - expected) < 1e-9


def test_softmax_classes_skip_background_and_ignore():
    target = torch.zeros(1, 8, 8, 8, dtype=torch.long)
    target[:, :4] = 1
    target[:, 6:] = -1  # ignored voxels: whatever is predicted there does not count
    logits = torch.zeros(2, 8, 8, 8)
    logits[1, :4] = 10  # class 1 exactly where the target has it
    logits[1, 6:] = 10  # ... and in the ignored slab
    validate = make_dice_validator([{"image": logits, "label": target}], names=("WMH",), multilabel=False,
                                   roi_size=(8, 8, 8), env=DistEnv())
    assert validate(Echo())["dice_WMH"] == 1.0


def _rank(rank: int, world: int, init: str, out: dict) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    env = DistEnv(rank=rank, world_size=world, is_main=rank == 0)
    validate = make_dice_validator(_items(), names=("WT",), multilabel=True, roi_size=(16, 16, 16), env=env)
    out[rank] = validate(Echo())
    dist.destroy_process_group()


@pytest.mark.slow
def test_ranks_agree_on_the_exact_mean_even_without_cases_of_their_own(tmp_path):
    world = 4  # 3 cases over 4 ranks: rank 3 validates nothing
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_rank, args=(world, f"file://{tmp_path / 'store'}", out), nprocs=world, join=True)
        results = dict(out)
    expected = (1 + 0 + 2 / 3) / 3
    assert all(abs(r["dice"] - expected) < 1e-9 for r in results.values()), results
