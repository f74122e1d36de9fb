"""The software a run ran on, recorded in its folder, and the known-bad versions, warned about at start.

Two environments are known to hurt 3D convolutional training on CUDA:

- torch 2.9.* turned cuDNN off for fp16/bf16 3D convolutions (a vol2col fallback: several times slower and far
  more memory; pytorch/pytorch #163539, nnU-Net requires ``torch!=2.9.*``);
- cuDNN 9.10–9.15 has a broken TF32 kernel for 3D convolutions (wrong results; pytorch/pytorch PR #167024,
  "known to affect 9.10.2-9.15"), which torch uses whenever ``torch.backends.cudnn.allow_tf32`` is on (the
  default) and a convolution runs in fp32.

:func:`environment` is the record (``environment.json`` in a run folder, one entry per start);
:func:`environment_warnings` the warning lines, each naming its fix.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

import asa
from asa.io import atomic_write_json

__all__ = ["ENVIRONMENT_FILE", "cudnn_version", "environment", "environment_warnings", "git_commit",
           "record_environment"]

ENVIRONMENT_FILE = "environment.json"
BAD_CUDNN = ((9, 10), (9, 15))  # inclusive (major, minor) range of the broken TF32 3D-convolution kernel


def cudnn_version(number: int | None = None) -> str | None:
    """cuDNN's version as ``major.minor.patch`` (None without cuDNN). ``number``: the integer torch reports
    (``torch.backends.cudnn.version()``: 91002 for 9.10.2 from cuDNN 9 on, 8907 for 8.9.7 before)."""
    if number is None:
        with contextlib.suppress(Exception):
            number = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    if not number:
        return None
    number = int(number)
    if number >= 10000:
        major, minor, patch = number // 10000, number % 10000 // 100, number % 100
    else:
        major, minor, patch = number // 1000, number % 1000 // 100, number % 100
    return f"{major}.{minor}.{patch}"


def _nccl_version() -> str | None:
    with contextlib.suppress(Exception):
        if torch.cuda.is_available() and torch.distributed.is_nccl_available():
            version = torch.cuda.nccl.version()
            return ".".join(map(str, version)) if isinstance(version, tuple) else str(version)
    return None


def git_commit() -> str | None:
    """The commit of the asa source in use when it is a git checkout, else None."""
    with contextlib.suppress(Exception):
        repo = Path(__file__).resolve().parents[2]  # the checkout holding asa/train/environment.py
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10)
        return (done.stdout.strip() or None) if done.returncode == 0 else None
    return None


def environment() -> dict[str, Any]:
    """What this process runs on: asa (version, git commit), Python, torch, CUDA, cuDNN and NCCL versions
    (None where absent), the GPUs by name and whether cuDNN may use TF32."""
    gpus: list[str] = []
    with contextlib.suppress(Exception):
        gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {
        "time": datetime.datetime.now().isoformat(timespec="seconds"),
        "asa": asa.__version__, "git_commit": git_commit(),
        "python": platform.python_version(), "platform": platform.platform(),
        "torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": cudnn_version(), "nccl": _nccl_version(),
        "gpus": gpus, "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
    }


def _major_minor(version: str | None) -> tuple[int, int] | None:
    with contextlib.suppress(Exception):
        major, minor = str(version).split("+")[0].split(".")[:2]
        return int(major), int(minor)
    return None


def environment_warnings(record: Mapping[str, Any], *, device: str | torch.device,
                         amp: torch.dtype | None) -> list[str]:
    """One line per known-bad version in ``record`` (:func:`environment`) for a run on ``device`` with autocast
    dtype ``amp`` (None: fp32), each naming the fix; none off CUDA."""
    if torch.device(device).type != "cuda":
        return []
    lines = []
    if _major_minor(record.get("torch")) == (2, 9) and amp in (torch.float16, torch.bfloat16):
        lines.append(f"torch {record['torch']} runs fp16/bf16 3D convolutions without cuDNN (several times slower, "
                     "far more memory; nnU-Net requires torch!=2.9.*): install torch 2.8 or >= 2.10")
    cudnn = _major_minor(record.get("cudnn"))
    if cudnn is not None and BAD_CUDNN[0] <= cudnn <= BAD_CUDNN[1] and record.get("cudnn_allow_tf32", True):
        lines.append(f"cuDNN {record['cudnn']} has a broken TF32 kernel for 3D convolutions (9.10-9.15; wrong "
                     "results in fp32 convolutions): install cuDNN >= 9.16 (pip install -U nvidia-cudnn-cu12, or "
                     "the -cu13 package matching torch's CUDA) or set torch.backends.cudnn.allow_tf32 = False")
    return lines


def record_environment(folder: str | os.PathLike, *, resumed_from: str | None = None) -> dict[str, Any]:
    """Append this start's :func:`environment` to ``folder/environment.json`` (``{"starts": [...]}``, the first
    start first; a resumed run adds its own, with the checkpoint it resumed from) and return it."""
    path = Path(folder) / ENVIRONMENT_FILE
    starts: list = []
    with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
        starts = list(json.loads(path.read_text(encoding="utf-8")).get("starts") or [])
    record = environment() | ({"resumed_from": str(resumed_from)} if resumed_from else {})
    atomic_write_json(path, {"starts": [*starts, record]})
    return record
