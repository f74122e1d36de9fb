"""Resumable, rank-sharded data loading: the sampler order is a function of (seed, epoch) only.

Workers are persistent across epochs: the sampler hands each index over with its epoch, so a
worker needs no message from the training process at an epoch's start, and it holds only the
dataset's items (for a store, the index), never volume data.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, default_collate

from asa.data.batching import CollatedBatch, forget_exited_workers

from .preemption import stop_signals_held
from .rng import SeededItems, item_seed, worker_init_fn

__all__ = ["ResumableSampler", "StopSafeLoader", "available_cpus", "build_loader", "close_loader", "loader_workers",
           "move_to"]


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. a scheduler's allocation), else all of them."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def loader_workers(requested: int) -> int:
    """DataLoader worker processes that fit the machine: ``requested`` (``data.num_workers``) capped at
    the available CPUs. More workers than CPUs only compete with the training process (PyTorch
    warns about it at every loader)."""
    return max(0, min(int(requested), available_cpus()))


class ResumableSampler(DistributedSampler):
    """DistributedSampler (also for a single process) that can skip the first `skip` samples of its
    epoch, so a run resumed mid-epoch sees exactly the batches an uninterrupted run would. It yields
    ``(epoch, index)`` pairs (`SeededItems` keys): the epoch reaches persistent workers with each index."""

    def __init__(self, dataset: Dataset, *, num_replicas: int, rank: int, seed: int, shuffle: bool = True) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=True)
        self.skip = 0

    def full_length(self) -> int:
        return super().__len__()

    def set_position(self, epoch: int, skip: int = 0) -> None:
        self.set_epoch(epoch)
        self.skip = int(skip)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter([(self.epoch, int(i)) for i in list(super().__iter__())[self.skip:]])

    def __len__(self) -> int:
        return max(super().__len__() - self.skip, 0)


class StopSafeLoader(DataLoader):
    """DataLoader whose workers start with the stop signals held (`stop_signals_held`), so that a
    job-wide SIGTERM / SIGUSR1 (torchrun, SLURM) arriving as they start waits until their
    ``worker_init_fn`` (`leave_stop_signals_to_the_trainer`) ignores it, instead of killing them
    and failing the training process before it can save ``last.pt``."""

    def __iter__(self):
        with stop_signals_held():  # workers are forked here (persistent ones on the first call only)
            return super().__iter__()


class _Collate:
    """The loader's collate function: a batch a dataset read whole (`CollatedBatch`) passes as it is
    (from a worker it travels in its shared-memory slots and arrives as a dict; in the training
    process it becomes a dict here), a list of items goes to ``collate_fn`` (default: `default_collate`)."""

    def __init__(self, collate_fn: Callable | None) -> None:
        self.collate_fn = collate_fn or default_collate

    def __call__(self, data: Any) -> Any:
        if not isinstance(data, CollatedBatch):
            return self.collate_fn(data)
        return data if torch.utils.data.get_worker_info() is not None else dict(data)


def build_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    rank: int,
    world_size: int,
    seed: int,
    num_workers: int = 0,
    collate_fn: Callable | None = None,
    pin_memory: bool = False,
    persistent_workers: bool = True,
) -> tuple[DataLoader, ResumableSampler, SeededItems, torch.Generator]:
    """DataLoader over `SeededItems(dataset)` with a `ResumableSampler`, seeded workers (``num_workers``
    capped at the available CPUs, `loader_workers`), persistent across epochs unless
    ``persistent_workers=False``, and its own generator (so creating an iterator never consumes the
    global torch RNG). A dataset with ``read_batch`` gives whole batches (`SeededItems`)."""
    seeded = SeededItems(dataset, seed)
    sampler = ResumableSampler(seeded, num_replicas=world_size, rank=rank, seed=seed)
    generator = torch.Generator()
    generator.manual_seed(item_seed(seed, 0, rank))
    workers = loader_workers(num_workers)
    loader = StopSafeLoader(
        seeded, batch_size=batch_size, sampler=sampler, num_workers=workers, collate_fn=_Collate(collate_fn),
        worker_init_fn=worker_init_fn, generator=generator, drop_last=True, pin_memory=pin_memory,
        persistent_workers=persistent_workers and workers > 0,
    )
    return loader, sampler, seeded, generator


def close_loader(loader: DataLoader) -> None:
    """Stop a loader's persistent workers now, rather than whenever the loader is garbage-collected,
    and unmap the shared batch slots they leave (`asa.data.batching`)."""
    iterator = getattr(loader, "_iterator", None)  # the iterator persistent workers belong to
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()
    loader._iterator = None
    forget_exited_workers()


def move_to(batch, device: torch.device):
    """Recursively move tensors in a batch (tensor, dict, list, tuple) to `device`; float16 tensors
    (images a store keeps in its precision up to here, half the bytes to copy) become float32 there."""
    if isinstance(batch, torch.Tensor):
        moved = batch.to(device, non_blocking=True)
        return moved.float() if moved.dtype == torch.float16 else moved
    if isinstance(batch, dict):
        return {k: move_to(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to(v, device) for v in batch)
    return batch
