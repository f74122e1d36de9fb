"""Stop signals sent to the whole job (SLURM, torchrun) reach the DataLoader workers too: they must
leave them to the training process, which saves last.pt and then shuts its workers down."""
from __future__ import annotations

import os
import signal

import torch
from torch.utils.data import Dataset
from torch.utils.data._utils import signal_handling

from asa.train.data import build_loader


class SignalsItself(Dataset):
    """Item 0 sends SIGTERM to the worker that loads it, as a job-wide signal would."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> torch.Tensor:
        if i == 0:
            os.kill(os.getpid(), signal.SIGTERM)
        return torch.tensor([i, os.getpid()])


def test_loader_workers_outlive_a_job_wide_sigterm():
    loader, sampler, _, _ = build_loader(SignalsItself(), batch_size=2, rank=0, world_size=1, seed=0, num_workers=2)
    sampler.set_position(0)
    items = torch.cat([batch for batch in loader])
    assert sorted(items[:, 0].tolist()) == list(range(8))  # every item loaded: no worker died of the signal
    assert os.getpid() not in items[:, 1].tolist()  # loaded in worker processes, not here


class _Items(Dataset):
    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.tensor([i, os.getpid()])


def _signal_while_starting(monkeypatch) -> None:
    """Make every worker receive SIGTERM just after torch set its worker signal handlers and before
    `worker_init_fn` runs: where a job-wide signal (torchrun's killpg) lands when it comes as the
    workers start (the first batch, a validation loader)."""
    original = signal_handling._set_worker_signal_handlers

    def set_then_signal(*args):
        original(*args)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(signal_handling, "_set_worker_signal_handlers", set_then_signal)


def test_loader_workers_outlive_a_sigterm_as_they_start(monkeypatch):
    _signal_while_starting(monkeypatch)
    loader, sampler, _, _ = build_loader(_Items(), batch_size=2, rank=0, world_size=1, seed=0, num_workers=2)
    sampler.set_position(0)
    items = torch.cat([batch for batch in loader])
    assert sorted(items[:, 0].tolist()) == list(range(8))  # no worker died of the signal
    assert os.getpid() not in items[:, 1].tolist()
