"""torchrun-aware process-group setup: NCCL on CUDA, gloo on CPU, one DistEnv per process.

A process started by a launcher (torchrun, or srun with torchrun's variables) joins the process
group even when it is the only one (``--nproc_per_node=1``), so that a one-GPU job runs the same
DDP and NCCL code as a many-GPU job; a plain ``python`` process (no ``WORLD_SIZE`` /
``MASTER_ADDR`` / ``MASTER_PORT`` in its environment) stays out of any group.
"""
from __future__ import annotations

import datetime
import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistEnv", "setup_distributed", "cleanup_distributed", "all_reduce_mean", "barrier", "resolve_device",
           "launched", "dist_timeout_s"]

_DEVICES = {"auto", "cpu", "cuda"}


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in the job. `is_main` is rank 0 (the only rank that writes files)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    is_main: bool = True
    backend: str | None = None  # "nccl" or "gloo" once a process group is joined

    @property
    def distributed(self) -> bool:
        """True when collectives run: several processes, or one that joined a process group."""
        return self.world_size > 1 or self.backend is not None


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """'auto' -> cuda:<local_rank> when CUDA is available else cpu; 'cuda' requires CUDA; 'cuda:N'
    is taken as given (N must be a visible device)."""
    name = str(device).split(":")[0]
    if name not in _DEVICES:
        raise ValueError(f"device={device!r}: expected one of {sorted(_DEVICES)} (optionally 'cuda:N')")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError(f"device={device!r} was requested but CUDA is not available on this machine")
    visible = torch.cuda.device_count()
    visible_env = os.environ.get("CUDA_VISIBLE_DEVICES")
    seen = f"{visible} CUDA device(s)" + (f" (CUDA_VISIBLE_DEVICES={visible_env})" if visible_env is not None else "")
    if ":" in str(device):
        dev = torch.device(str(device))
        if dev.index is not None and dev.index >= visible:
            raise ValueError(f"device={device!r}: this process sees {seen}, so the last is cuda:{visible - 1}")
        return dev
    if local_rank >= visible:
        raise ValueError(
            f"LOCAL_RANK={local_rank} but this process sees {seen}: start at most {visible} process(es) per node "
            f"(torchrun --nproc_per_node={visible}), or, when each process is given its own GPU "
            f"(CUDA_VISIBLE_DEVICES per process), set device=cuda:0")
    return torch.device("cuda", local_rank)


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as err:
        raise ValueError(f"environment variable {name}={value!r}: expected an integer") from err


def launched() -> bool:
    """True when a launcher started this process: torchrun's WORLD_SIZE, MASTER_ADDR and MASTER_PORT are set."""
    return all(os.environ.get(name) for name in ("WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def dist_timeout_s() -> float:
    """$ASA_DIST_TIMEOUT_S (default 1800): seconds a collective may wait for its peers."""
    value = os.environ.get("ASA_DIST_TIMEOUT_S") or "1800"
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"environment variable ASA_DIST_TIMEOUT_S={value!r}: expected a positive number of seconds")
    return seconds


def setup_distributed(device: str = "auto", *, timeout_s: float | None = None) -> DistEnv:
    """Read torchrun's RANK/WORLD_SIZE/LOCAL_RANK and join the process group when WORLD_SIZE > 1 or a
    launcher started this process (`launched`; a one-process torchrun job runs DDP too).

    NCCL is used on CUDA (bound to this rank's device), gloo on CPU. `timeout_s` (default:
    $ASA_DIST_TIMEOUT_S or 1800) bounds every collective, so a dead peer ends the job with an error
    instead of a hang (NCCL enforces it through its watchdog, TORCH_NCCL_ASYNC_ERROR_HANDLING, on by
    default).
    """
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if not 0 <= rank < world_size:
        raise ValueError(f"environment: RANK={rank} must lie in [0, WORLD_SIZE={world_size})")
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    backend = None
    if world_size > 1 or launched():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if not dist.is_initialized():
            timeout = datetime.timedelta(seconds=dist_timeout_s() if timeout_s is None else timeout_s)
            extra = {"device_id": dev} if dev.type == "cuda" else {}  # NCCL: this rank's GPU, known up front
            dist.init_process_group(backend=backend, rank=rank, world_size=world_size, timeout=timeout, **extra)
        backend = str(dist.get_backend())
    return DistEnv(rank=rank, world_size=world_size, local_rank=local_rank, device=dev, is_main=rank == 0,
                   backend=backend)


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
