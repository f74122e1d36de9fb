"""Sliding-window Dice validation: hand-computed means, and exact means across ranks."""
from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from asa.api.tasks.segmentation import DiceValidator
from asa.data import Task, get_task
from asa.train.distributed import DistEnv


class Echo(nn.Module):
    """Logits = the input itself (so the 'prediction' is whatever the image says)."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.dummy


WT = Task("wt", ("t1",), ("WT",), True, 1, (0, 1), regions=((1,),))


def _items() -> list[dict]:
    mask = torch.zeros(1, 16, 16, 16)
    mask[:, 4:12, 4:12, 4:12] = 1
    perfect = {"image": mask * 20 - 10, "label": mask}  # Dice 1
    missed = {"image": torch.full_like(mask, -10.0), "label": mask}  # predicts nothing: Dice 0
    half = mask.clone()
    half[:, 4:8] = 0  # predicts half the cube: Dice 2·256/(256+512) = 2/3
    return [perfect, missed, {"image": half * 20 - 10, "label": mask}]


def test_hand_computed_mean_dice():
    validate = DiceValidator(_items(), task=WT, roi_size=(16, 16, 16), env=DistEnv())
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
    validate = DiceValidator([{"image": logits, "label": target}], task=get_task("wmh"),
                             roi_size=(8, 8, 8), env=DistEnv())
    assert validate(Echo())["dice_WMH"] == 1.0


def test_brats_dice_is_computed_on_decoded_labels_as_asa_evaluate_does():
    # reference: an NCR cube (label 1), so WT = TC = the cube and ET is empty
    cube = torch.zeros(16, 16, 16)
    cube[4:12, 4:12, 4:12] = 1
    target = torch.stack([cube, cube, torch.zeros_like(cube)])
    logits = torch.full((3, 16, 16, 16), -10.0)
    logits[0, 4:8, 4:12, 4:12] = 10  # WT thresholded alone covers half the cube (Dice 2/3) ...
    logits[1][cube.bool()] = 10  # ... but TC covers all of it, and decoded TC voxels are label 1, inside WT
    validate = DiceValidator([{"image": logits, "label": target}], task=get_task("brats"),
                             roi_size=(16, 16, 16), env=DistEnv())
    got = validate(Echo())
    assert got["dice_WT"] == 1.0 and got["dice_TC"] == 1.0 and got["dice_ET"] == 1.0  # ET: both empty


def _rank(rank: int, world: int, init: str, out: dict) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    env = DistEnv(rank=rank, world_size=world, is_main=rank == 0)
    perfect, _, half = _items()
    validate = DiceValidator([perfect, half], task=WT, roi_size=(16, 16, 16), env=env)
    out[rank] = validate(Echo())
    dist.destroy_process_group()


@pytest.mark.slow
def test_ranks_agree_on_the_exact_mean_even_without_cases_of_their_own(tmp_path):
    # 2 cases over 3 ranks: ranks 0 and 1 validate one each, rank 2 nothing: the fewest ranks (each a process importing
    # torch and monai) that add up several ranks' cases and leave one without any
    world = 3
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_rank, args=(world, f"file://{tmp_path / 'store'}", out), nprocs=world, join=True)
        results = dict(out)
    assert sorted(results) == list(range(world))
    expected = (1 + 2 / 3) / 2  # not (1 + 2/3) / 3: the empty rank adds no case
    assert all(abs(r["dice"] - expected) < 1e-9 for r in results.values()), results


class _PrecisionRecorder(Echo):
    """Echo that records the autocast dtype (None outside autocast) of every forward pass."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
        return x + self.dummy


def test_dice_validation_runs_in_the_callers_precision():
    """Inside the engine's autocast region (trainer.amp) the sliding windows keep that precision;
    outside any region they run in fp32."""
    validate = DiceValidator(_items()[:1], task=WT, roi_size=(16, 16, 16), env=DistEnv())
    net = _PrecisionRecorder()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        validate(net)
    assert net.seen and set(net.seen) == {torch.bfloat16}
    net.seen.clear()
    validate(net)
    assert net.seen and set(net.seen) == {None}


@pytest.mark.parametrize("amp, expected", [("bf16", torch.bfloat16), ("off", None)])
def test_engine_validation_and_panels_follow_trainer_amp(tmp_path, amp, expected):
    import warnings

    from asa.train import TrainConfig
    from tests.train.toy import ToyData, make_engine

    seen = {}

    def record(name):
        def fn(*args):
            seen[name] = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None
            return {"loss": 1.0} if name == "validate" else {}
        return fn

    config = TrainConfig(max_steps=1, batch_size=2, progress=False, log_every=1, ckpt_every=1000, amp=amp,
                         val_every=1, panel_every=1)
    engine = make_engine(tmp_path, config=config, validate=record("validate"))
    engine.panel_fn = record("panel")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bf16 on a CPU without native bf16 warns; the dtype is what counts
        engine.fit(ToyData())
    assert seen == {"validate": expected, "panel": expected}
