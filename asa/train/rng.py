"""Seeding and RNG state capture in types that `torch.load(weights_only=True)` accepts."""
from __future__ import annotations

import contextlib
import functools
import os
import random
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .preemption import leave_stop_signals_to_the_trainer

__all__ = [
    "seed_everything", "capture_rng", "restore_rng", "fork_rng", "item_seed", "SeededItems", "worker_init_fn",
    "kernel_determinism",
]


def seed_everything(seed: int, *, deterministic: bool = False) -> None:
    """Seed python, numpy and torch (all devices); optionally ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


@contextlib.contextmanager
def kernel_determinism(deterministic: bool, device: torch.device) -> Iterator[None]:
    """Kernel choice for a block (a training run), the process's previous settings put back after it.

    ``deterministic``: torch's deterministic algorithms (warn-only: an op that has none warns once
    and runs anyway), cuDNN's deterministic convolutions without autotuning, and on CUDA a fixed
    cuBLAS workspace (``CUBLAS_WORKSPACE_CONFIG``, unless already set). Then a run repeats bit for
    bit, and a resumed run continues exactly, on CUDA as on a CPU (on CUDA the index_add_ and
    scatter_add_ of the AR weights otherwise sum in a varying order).
    Not ``deterministic`` on CUDA: cuDNN autotunes its convolution algorithms for the (fixed) crop
    shapes (``cudnn.benchmark``), the fast setting for training.
    """
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    try:
        if deterministic:
            if device.type == "cuda":
                os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        elif device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2], saved[3]


def capture_rng() -> dict:
    """Snapshot of python/numpy/torch(/cuda) RNG states as tensors and plain ints/floats/lists."""
    version, mt, gauss = random.getstate()
    np_state = np.random.get_state(legacy=False)
    state = {
        "python": {"version": int(version), "state": torch.tensor(mt, dtype=torch.int64),
                   "gauss": None if gauss is None else float(gauss)},
        "numpy": {"key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                  "pos": int(np_state["state"]["pos"]), "has_gauss": int(np_state["has_gauss"]),
                  "gauss": float(np_state["gauss"])},
        "torch": torch.get_rng_state(),
        "cuda": [s.cpu() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
    }
    return state


def restore_rng(state: dict) -> None:
    """Inverse of `capture_rng`."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    npst = state["numpy"]
    np.random.set_state({
        "bit_generator": "MT19937",
        "state": {"key": npst["key"].numpy().astype(np.uint32), "pos": int(npst["pos"])},
        "has_gauss": int(npst["has_gauss"]), "gauss": float(npst["gauss"]),
    })
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


@contextlib.contextmanager
def fork_rng(seed: int | None = None) -> Iterator[None]:
    """Run a block (validation, image panels, data loading) without disturbing the training RNG
    streams; with `seed`, the block itself is seeded so it is the same every time it runs."""
    saved = capture_rng()
    try:
        if seed is not None:
            seed_everything(seed)
        yield
    finally:
        restore_rng(saved)


def item_seed(seed: int, epoch: int, index: int) -> int:
    """A 32-bit seed that depends only on (seed, epoch, index), not on workers or resume position."""
    return int(np.random.SeedSequence([seed % 2**32, epoch, index]).generate_state(1)[0])


class SeededItems(Dataset):
    """Wrap a map-style dataset so item i of epoch e is drawn with RNGs seeded by (seed, e, i).

    Random augmentation then depends only on the sample and the epoch, never on the number of data
    workers or on where a resumed run picked up, which is what makes resume bit-exact. MONAI random
    transforms (their own RandomState) are re-seeded too. In the main process (num_workers=0) the
    caller's RNG streams are restored after each item.

    A key is an index (of epoch `epoch`) or an ``(epoch, index)`` pair, as `asa.train.data`'s
    sampler yields them: the epoch then travels with each index, so persistent DataLoader workers
    (which keep their own copy of this object) draw the epoch's numbers. A dataset with
    ``read_batch(indices, seeds)`` (`asa.data.datasets.StoreCropBatches`) is asked for whole batches, each
    item's draws seeded as here.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = int(seed)
        self.epoch = 0
        self._in_worker = False

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def _key(self, key) -> tuple[int, int]:
        return (int(key[0]), int(key[1])) if isinstance(key, tuple) else (self.epoch, int(key))

    def _seed_item(self, epoch: int, index: int) -> None:
        s = item_seed(self.seed, epoch, index)
        # the host's streams only (an item is made on the CPU): torch.manual_seed would also queue a
        # CUDA seeding, formatting a stack trace (~2 ms) while CUDA is uninitialised, as in a worker
        random.seed(s)
        np.random.seed(s)
        torch.default_generator.manual_seed(s)
        reseed = getattr(self.dataset, "reseed", None)  # asa.data.CaseDataset
        if reseed is not None:
            reseed(s)
            return
        target = getattr(self.dataset, "transform", None)
        if target is not None:
            from monai.data.utils import set_rnd

            set_rnd(target, s)

    def __getitem__(self, key):
        return self._get(key, self.dataset.__getitem__)

    def _get(self, key, read: Callable[[int], Any]) -> Any:
        epoch, index = self._key(key)
        if self._in_worker:
            self._seed_item(epoch, index)
            return read(index)
        with fork_rng():
            self._seed_item(epoch, index)
            return read(index)

    def __getitems__(self, keys: list) -> Any:
        """A batch of items (what the DataLoader's fetcher asks for): ``read_batch``'s collated batch
        when the dataset reads whole batches, else the items one by one, each told its place in the batch
        when the dataset takes it (``item_in_batch``: nnU-Net's per-batch forced crops)."""
        read_batch = getattr(self.dataset, "read_batch", None)
        if read_batch is None:
            in_batch = getattr(self.dataset, "item_in_batch", None)
            if in_batch is None:
                return [self[k] for k in keys]
            return [self._get(k, functools.partial(in_batch, position=j, batch_size=len(keys)))
                    for j, k in enumerate(keys)]
        pairs = [self._key(k) for k in keys]
        return read_batch([i for _, i in pairs], [item_seed(self.seed, e, i) for e, i in pairs])


def worker_init_fn(worker_id: int) -> None:
    """DataLoader worker init: seed python/numpy from the worker's torch seed, mark SeededItems and
    leave stop signals to the training process (`leave_stop_signals_to_the_trainer`)."""
    leave_stop_signals_to_the_trainer()
    info = torch.utils.data.get_worker_info()
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
    if info is not None and isinstance(info.dataset, SeededItems):
        info.dataset._in_worker = True
