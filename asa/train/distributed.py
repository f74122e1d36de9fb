"""torchrun-aware process-group setup: NCCL on CUDA, gloo on CPU, one DistEnv per process."""
from __future__ import annotations

import datetime
import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistEnv", "setup_distributed", "cleanup_distributed", "all_reduce_mean", "barrier", "resolve_device"]

_DEVICES = {"auto", "cpu", "cuda"}


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in the job. `is_main` is rank 0 (the only rank that writes files)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    is_main: bool = True

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """'auto' -> cuda:<local_rank> when CUDA is available else cpu; 'cuda' requires CUDA."""
    name = str(device).split(":")[0]
    if name not in _DEVICES:
        raise ValueError(f"device={device!r}: expected one of {sorted(_DEVICES)} (optionally 'cuda:N')")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError(f"device={device!r} was requested but CUDA is not available on this machine")
    if ":" in str(device):
        return torch.device(str(device))
    return torch.device("cuda", local_rank)


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as err:
        raise ValueError(f"environment variable {name}={value!r}: expected an integer") from err


def setup_distributed(device: str = "auto", *, timeout_s: float | None = None) -> DistEnv:
    """Read torchrun's RANK/WORLD_SIZE/LOCAL_RANK and, when WORLD_SIZE > 1, join the process group.

    NCCL is used on CUDA, gloo on CPU. `timeout_s` (default: $ASA_DIST_TIMEOUT_S or 1800) bounds every
    collective, so a dead peer ends the job with an error instead of a hang.
    """
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world_size > 1 and not dist.is_initialized():
        if timeout_s is None:
            timeout_s = float(os.environ.get("ASA_DIST_TIMEOUT_S", "1800"))
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(
            backend=backend, rank=rank, world_size=world_size, timeout=datetime.timedelta(seconds=timeout_s)
        )
    return DistEnv(rank=rank, world_size=world_size, local_rank=local_rank, device=dev, is_main=rank == 0)


def cleanup_distributed(*, finished: bool = True) -> None:
    """Leave the process group (no-op when none was joined).

    After a run that ``finished``, every rank first meets at a barrier and drops its pending
    collective work, so no rank tears its connections down while a peer still uses them (with gloo
    that can abort the peer at exit). After a failure there is no barrier: the peers may be gone.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    if finished:
        gc.collect()  # release DDP reducers and their pending work while the group still exists
        dist.barrier()
    dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    if env.distributed and dist.is_initialized():
        dist.barrier()


def all_reduce_mean(values: dict[str, float], env: DistEnv) -> dict[str, float]:
    """Average a flat dict of floats over all ranks (every rank must pass the same keys, in any order)."""
    if not env.distributed or not values:
        return {k: float(v) for k, v in values.items()}
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=env.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    t /= env.world_size
    return dict(zip(keys, t.tolist()))


def all_reduce_max_ints(values: list[int], env: DistEnv) -> list[int]:
    """Element-wise maximum over all ranks (so every rank takes the same skip/stop decisions)."""
    if not env.distributed:
        return [int(v) for v in values]
    t = torch.tensor([int(v) for v in values], dtype=torch.int64, device=env.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [int(v) for v in t.tolist()]


def all_gather_objects(obj: object, env: DistEnv) -> list:
    """Gather one picklable object per rank, in rank order (rank 0's own when not distributed)."""
    if not env.distributed:
        return [obj]
    out: list = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out
