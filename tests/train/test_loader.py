"""The training loader's workers persist across epochs, and the epoch reaches them with each index:
every epoch (and a resumed one) gets the items the main process would make."""
from __future__ import annotations

import os

import numpy as np
import torch
from torch.utils.data import Dataset

from asa.train.data import build_loader, close_loader


class Draws(Dataset):
    """Item i: its index, a draw of numpy's and of torch's global RNG (seeded per item and epoch by
    SeededItems), and the pid of the process that made it."""

    def __len__(self) -> int:
        return 12

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.tensor([i, np.random.randint(1 << 30), int(torch.randint(1 << 30, ())), os.getpid()])


def _epoch(loader, sampler, epoch: int, skip: int = 0) -> torch.Tensor:
    sampler.set_position(epoch, skip)
    return torch.cat(list(loader))


def test_persistent_workers_draw_each_epochs_items():
    main, main_sampler, _, _ = build_loader(Draws(), batch_size=2, rank=0, world_size=1, seed=3, num_workers=0)
    loader, sampler, _, _ = build_loader(Draws(), batch_size=2, rank=0, world_size=1, seed=3, num_workers=2)
    assert loader.persistent_workers
    try:
        pids = []
        for epoch in (0, 1, 2):
            got, expected = _epoch(loader, sampler, epoch), _epoch(main, main_sampler, epoch)
            assert torch.equal(got[:, :3], expected[:, :3])  # order and draws: the main process's
            assert os.getpid() not in got[:, 3].tolist()
            pids.append(set(got[:, 3].tolist()))
            tail = _epoch(loader, sampler, epoch, skip=6)  # a run resumed mid-epoch
            assert torch.equal(tail[:, :3], expected[6:, :3])
        assert pids[0] == pids[1] == pids[2] and len(pids[0]) == 2  # the same two workers throughout
        assert not torch.equal(_epoch(main, main_sampler, 0)[:, 1:3], _epoch(main, main_sampler, 1)[:, 1:3])
    finally:
        close_loader(loader)
    assert loader._iterator is None
