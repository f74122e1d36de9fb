"""Datasets that read a whole batch at once, straight into the batch's memory, reused batch after batch.

A dataset with ``read_batch(indices, seeds) -> CollatedBatch`` fills one buffer per key of the batch
(`batch_buffer`) instead of building one tensor per sample that collation then copies again;
``asa.train.data``'s loader calls it when the dataset offers it.

In a DataLoader worker the buffers are slots of shared memory that the worker keeps and reuses:
PyTorch's own collation allocates fresh shared memory for every batch, and paging in fresh memory
costs as much as the crops' copy itself (on a VM, more). A slot is handed to the training process
by file descriptor the first time and by number afterwards; the training process keeps it mapped
and marks it free again when the last tensor (or view, or numpy array) using the batch's memory is
gone, only then does the worker write into it again. A worker keeps at most `SLOTS_PER_SIZE` slots
of a size; when all are in use (the consumer holds many batches, e.g. ``list(loader)``) a batch gets
fresh shared memory as before. Outside a worker the buffers are ordinary tensors.
"""

from __future__ import annotations

import mmap
import os
import secrets
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.reduction import DupFd
from typing import Any

import numpy as np
import torch

__all__ = ["CollatedBatch", "SLOTS_PER_SIZE", "batch_buffer", "forget_exited_workers"]

SLOTS_PER_SIZE = 4  # a worker's reusable slots per buffer size (its prefetched batches and the one in use)
MAX_SLOTS = 32  # a worker's slots of all sizes together
# flags shared by a worker and the training process, one byte each: [0] the training process maps the
# flags; per slot i, [1 + 2i] the slot is in use (sent, not yet released), [2 + 2i] it is mapped there
_FLAGS = 1 + 2 * MAX_SLOTS


class CollatedBatch(dict):
    """A batch as a dataset read it whole: what the loader's collate function would have made of its
    samples (tensors stacked along a new first axis, strings in a list, dicts key by key). Sent from a
    DataLoader worker, its tensors in reusable slots travel as slot references (`_SlotRef`); the
    training process receives a plain dict of tensors."""

    def __reduce__(self):
        pool = _POOL if _POOL is not None and _POOL.pid == os.getpid() else None
        parts = {k: (pool.reference(v) if pool is not None and isinstance(v, torch.Tensor) else None) or v
                 for k, v in self.items()}
        return _received_batch, (parts,)


def batch_buffer(shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    """A tensor for one key of a batch, its values undefined (a reused slot holds an earlier batch's):
    a reusable slot of shared memory inside a DataLoader worker (fresh shared memory when none is
    free, as `default_collate` allocates there), ordinary memory elsewhere."""
    shape = tuple(int(s) for s in shape)
    if torch.utils.data.get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    tensor = _worker_pool().tensor(shape, dtype)
    if tensor is not None:
        return tensor
    numel = int(np.prod(shape))
    storage = torch.empty(0, dtype=dtype)._typed_storage()._new_shared(numel)  # as default_collate does
    return torch.empty(0, dtype=dtype).new(storage).view(shape)


# --- in the worker ----------------------------------------------------------------------------------
@dataclass
class _Slot:
    index: int
    fd: int
    map: mmap.mmap
    nbytes: int
    sent: bool = False  # this use of the slot went to the training process, which frees it
    use: int = 0  # counts the slot's uses
    base: int = 0  # address of the slot's memory


class _WorkerSlots:
    """The reusable shared-memory slots of one DataLoader worker process."""

    def __init__(self) -> None:
        self.pid, self.token = os.getpid(), secrets.randbits(62)
        self.flags_fd = os.memfd_create("asa-batch-flags", os.MFD_CLOEXEC)
        os.ftruncate(self.flags_fd, _FLAGS)
        self.flags = mmap.mmap(self.flags_fd, _FLAGS)
        self.slots: list[_Slot] = []

    def tensor(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor | None:
        """A tensor over a free slot of its size (a new slot while there are fewer than
        `SLOTS_PER_SIZE`), or None when every one is in use."""
        np_dtype = torch.empty(0, dtype=dtype).numpy().dtype
        numel = int(np.prod(shape))
        nbytes = max(numel * np_dtype.itemsize, 1)
        same = [s for s in self.slots if s.nbytes == nbytes]
        slot = next((s for s in same if not self.flags[1 + 2 * s.index]), None)
        if slot is None:
            if len(same) >= SLOTS_PER_SIZE or len(self.slots) >= MAX_SLOTS:
                return None
            slot = self._new_slot(nbytes)
            if slot is None:
                return None
        self.flags[1 + 2 * slot.index] = 1
        slot.sent, slot.use = False, slot.use + 1
        array = np.frombuffer(slot.map, dtype=np_dtype, count=numel)
        # not sent (the dataset failed, say): free again once the worker drops it
        weakref.finalize(array, self._dropped, slot, slot.use).atexit = False
        slot.base = array.ctypes.data
        return torch.from_numpy(array).view(shape)

    def _new_slot(self, nbytes: int) -> _Slot | None:
        try:
            fd = os.memfd_create(f"asa-batch-{len(self.slots)}", os.MFD_CLOEXEC)
        except (AttributeError, OSError):  # no memfd here: fresh shared memory per batch
            return None
        os.ftruncate(fd, nbytes)
        slot = _Slot(len(self.slots), fd, mmap.mmap(fd, nbytes), nbytes)
        self.slots.append(slot)
        return slot

    def _dropped(self, slot: _Slot, use: int) -> None:
        if os.getpid() == self.pid and slot.use == use and not slot.sent:
            self.flags[1 + 2 * slot.index] = 0

    def reference(self, tensor: torch.Tensor) -> _SlotRef | None:
        """How ``tensor`` travels to the training process: a `_SlotRef` when it is a whole slot (the
        slot's file descriptor goes along until the training process maps it), else None."""
        if not tensor.is_contiguous():
            return None
        ptr = tensor.data_ptr()
        slot = next((s for s in self.slots if s.base == ptr and s.nbytes == max(tensor.nbytes, 1)
                     and self.flags[1 + 2 * s.index]), None)
        if slot is None:
            return None
        slot.sent = True
        return _SlotRef(self.pid, self.token, slot.index, slot.nbytes, tensor.dtype, tuple(tensor.shape),
                        None if self.flags[2 + 2 * slot.index] else DupFd(slot.fd),
                        None if self.flags[0] else DupFd(self.flags_fd))


_POOL: _WorkerSlots | None = None


def _worker_pool() -> _WorkerSlots:
    global _POOL
    if _POOL is None or _POOL.pid != os.getpid():  # made in this process, never one inherited by fork
        _POOL = _WorkerSlots()
    return _POOL


# --- in the training process ------------------------------------------------------------------------
@dataclass
class _SlotRef:
    """A batch tensor in a worker's slot, as pickled: where it is, and the descriptors to map it."""

    pid: int
    token: int
    index: int
    nbytes: int
    dtype: torch.dtype
    shape: tuple[int, ...]
    fd: Any  # multiprocessing DupFd of the slot, while the training process has not mapped it
    flags_fd: Any  # likewise of the worker's flags

    def tensor(self) -> torch.Tensor:
        """The tensor over the slot, mapped once per slot; when the last user of its memory is gone,
        the slot is marked free for the worker."""
        worker = _MAPPED.get(self.token)
        if worker is None:
            forget_exited_workers()
            worker = _MAPPED[self.token] = {"pid": self.pid, "flags": None, "maps": {}}
        for name in ("flags_fd", "fd"):  # a descriptor sent is always received (the worker shares it until then)
            dup = getattr(self, name)
            if dup is not None:
                fd = dup.detach()
                try:
                    if name == "flags_fd" and worker["flags"] is None:
                        worker["flags"] = mmap.mmap(fd, _FLAGS)
                    elif name == "fd" and self.index not in worker["maps"]:
                        worker["maps"][self.index] = mmap.mmap(fd, self.nbytes)
                finally:
                    os.close(fd)
        flags = worker["flags"]
        flags[0] = 1
        flags[2 + 2 * self.index] = 1
        np_dtype = torch.empty(0, dtype=self.dtype).numpy().dtype
        array = np.frombuffer(worker["maps"][self.index], dtype=np_dtype, count=int(np.prod(self.shape)))
        weakref.finalize(array, _release, flags, 1 + 2 * self.index, os.getpid()).atexit = False
        return torch.from_numpy(array).view(self.shape)


def _release(flags: mmap.mmap, offset: int, pid: int) -> None:
    """The slot's memory is no longer used here: the worker may write into it again. Only in the
    process that received it (a process forked from it drops copies, not the batch)."""
    if os.getpid() == pid:
        flags[offset] = 0


_MAPPED: dict[int, dict[str, Any]] = {}  # worker token -> its flags and slot maps, in the training process


def forget_exited_workers() -> None:
    """Unmap the slots of workers that have exited (memory a tensor still uses stays mapped until it
    is gone); done when a new worker's first batch arrives, and by ``asa.train.data.close_loader``."""
    for token, worker in list(_MAPPED.items()):
        try:
            os.kill(worker["pid"], 0)
        except ProcessLookupError:
            del _MAPPED[token]
        except PermissionError:
            pass


def _received_batch(parts: dict[str, Any]) -> dict[str, Any]:
    return {k: v.tensor() if isinstance(v, _SlotRef) else v for k, v in parts.items()}
