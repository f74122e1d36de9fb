"""The pretraining validator's loader: built once, its workers kept between rounds, and a round's value the same
at every round and for any number of workers (the loader draws nothing from the caller's RNG)."""
import os

import torch
from torch.utils.data import Dataset

from asa.train.distributed import DistEnv
from asa.train.pretrain import make_validator
from asa.train.rng import fork_rng


class Volumes(Dataset):
    """Fixed crops (as a validation split's brain-centred ones) that say which process read them."""

    def __len__(self) -> int:
        return 6

    def __getitem__(self, i: int) -> dict:
        return {"image": torch.full((1, 8, 8, 8), float(i + 1)), "pid": os.getpid()}


def _validator(workers: int, pids: list[int]):
    def step(model, batch):  # a masked loss: the mask drawn from the caller's RNG, as the methods' steps draw it
        pids.extend(int(p) for p in batch["pid"])
        mask = (torch.rand(batch["image"].shape) < 0.5).float()
        return (batch["image"] * mask).mean(), {}

    return make_validator(Volumes(), step_fn=step, batch_size=4, env=DistEnv(), num_workers=workers)


def _round(validate) -> float:
    with fork_rng(7):  # as the engine runs each round
        return validate(torch.nn.Identity())["loss"]


def test_rounds_agree_for_any_worker_count_and_keep_their_workers():
    pids: dict[int, list[int]] = {0: [], 2: []}
    values = {}
    for workers in (0, 2):
        validate = _validator(workers, pids[workers])
        values[workers] = [_round(validate) for _ in range(3)]
    assert values[0][0] == values[0][1] == values[0][2] == values[2][0] == values[2][1] == values[2][2]
    assert set(pids[0]) == {os.getpid()}
    # two worker processes read every round's crops: the same two each round (persistent, not restarted)
    assert len(set(pids[2])) == 2 and os.getpid() not in pids[2]
    assert set(pids[2][:6]) == set(pids[2][6:12]) == set(pids[2][12:])
    # the control: a different RNG state does change the masked loss (the check above could fail)
    validate = _validator(0, [])
    with fork_rng(8):
        assert validate(torch.nn.Identity())["loss"] != values[0][0]
