"""The software a run ran on, recorded in its folder, and the known-bad versions, warned about at start.

Two environments are known to hurt 3D convolutional training on CUDA:

- torch 2.9.* turned cuDNN off for fp16/bf16 3D convolutions (a vol2col fallback: several times slower and far
  more memory; pytorch/pytorch #163539, nnU-Net requires ``torch!=2.9.*``);
- cuDNN 9.10–9.15 has a broken TF32 kernel for 3D convolutions (wrong results; pytorch/pytorch PR #167024,
  "known to affect 9.10.2-9.15"), which torch uses whenever cuDNN convolutions may use TF32 (the default;
  ``torch.backends.cudnn.conv.fp32_precision`` from torch 2.9, ``torch.backends.cudnn.allow_tf32`` before) and
  a convolution runs in fp32.

torch 2.9.1 turns cuDNN back on for half-precision 3D convolutions with cuDNN >= 9.15, so only 2.9.0, or 2.9.1+
with an older cuDNN, gets the first warning.

:func:`environment` is the record (``environment.json`` in a run folder, one entry per start);
:func:`environment_warnings` the warning lines, each naming its fix; :func:`record_warnings` adds them to this
start's entry.
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
           "record_environment", "record_warnings", "tf32_allowed"]

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


def _attribute(path: str, name: str) -> Any:
    node: Any = torch.backends
    for part in filter(None, path.split(".")):
        node = getattr(node, part)
    return getattr(node, name)


# the operator's own fp32_precision first, then its parents' (an unset "none" inherits), and its legacy flag
_TF32 = {"cudnn_conv": (("cudnn.conv", "cudnn", ""), "cudnn"), "cuda_matmul": (("cuda.matmul", ""), "cuda.matmul")}


def tf32_allowed(backend: str) -> bool | None:
    """Whether fp32 ``backend`` operators (``"cudnn_conv"``: cuDNN convolutions, ``"cuda_matmul"``: CUDA matrix
    products) may use TF32: the torch >= 2.9 ``fp32_precision`` API where torch has it (the first value other
    than ``"none"`` from the operator up to ``torch.backends``; ``"none"`` throughout is full fp32), else the
    legacy ``allow_tf32`` flag; None when neither can be read. Never raises: torch raises on reading the legacy
    cuDNN flag once the new API set convolutions and RNNs differently."""
    chain, legacy = _TF32[backend]
    with contextlib.suppress(Exception):
        values = [str(_attribute(path, "fp32_precision")) for path in chain]
        return next((v for v in values if v != "none"), "none") == "tf32"
    with contextlib.suppress(Exception):
        return bool(_attribute(legacy, "allow_tf32"))
    return None


def environment() -> dict[str, Any]:
    """What this process runs on: asa (version, git commit), Python, torch, CUDA, cuDNN and NCCL versions
    (None where absent), the GPUs by name and whether cuDNN convolutions and CUDA matrix products may use TF32
    (:func:`tf32_allowed`)."""
    gpus: list[str] = []
    with contextlib.suppress(Exception):
        gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {
        "time": datetime.datetime.now().isoformat(timespec="seconds"),
        "asa": asa.__version__, "git_commit": git_commit(),
        "python": platform.python_version(), "platform": platform.platform(),
        "torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": cudnn_version(), "nccl": _nccl_version(),
        "gpus": gpus, "cudnn_allow_tf32": tf32_allowed("cudnn_conv"),
        "cuda_matmul_allow_tf32": tf32_allowed("cuda_matmul"),
    }


def _version(version: str | None) -> tuple[int, ...] | None:
    """``(major, minor, patch)`` of a version string (``"2.9.1+cu128"``; a missing patch reads 0), None if unreadable."""
    with contextlib.suppress(Exception):
        parts = [int(p) for p in str(version).split("+")[0].split(".")[:3]]
        return tuple(parts + [0] * (3 - len(parts)))
    return None


_TF32_OFF = ("set torch.backends.cudnn.conv.fp32_precision = 'ieee' (torch >= 2.9; torch.backends.cudnn.allow_tf32 "
             "= False before)")


def environment_warnings(record: Mapping[str, Any], *, device: str | torch.device,
                         amp: torch.dtype | None) -> list[str]:
    """One line per known-bad version in ``record`` (:func:`environment`) for a run on ``device`` with autocast
    dtype ``amp`` (None: fp32), each naming a fix that does not trip the other warning; none off CUDA."""
    if torch.device(device).type != "cuda":
        return []
    lines = []
    version, cudnn = _version(record.get("torch")), _version(record.get("cudnn"))
    if (version is not None and version[:2] == (2, 9) and amp in (torch.float16, torch.bfloat16)
            and (version < (2, 9, 1) or cudnn is None or cudnn[:2] < (9, 15))):
        lines.append(f"torch {record['torch']} runs fp16/bf16 3D convolutions without cuDNN (several times slower, "
                     "far more memory; nnU-Net requires torch!=2.9.*; 2.9.1 fixed it for cuDNN >= 9.15): install "
                     "torch >= 2.10 with cuDNN >= 9.16 (torch 2.8 ships cuDNN 9.10, whose TF32 3D convolutions are "
                     "broken)")
    if (cudnn is not None and BAD_CUDNN[0] <= cudnn[:2] <= BAD_CUDNN[1]
            and record.get("cudnn_allow_tf32") is not False):
        lines.append(f"cuDNN {record['cudnn']} has a broken TF32 kernel for 3D convolutions (9.10-9.15; wrong "
                     "results in fp32 convolutions): install cuDNN >= 9.16 (pip install -U nvidia-cudnn-cu12, or "
                     f"the -cu13 package matching torch's CUDA) or {_TF32_OFF}")
    return lines


def _starts(path: Path) -> list:
    with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
        return list(json.loads(path.read_text(encoding="utf-8")).get("starts") or [])
    return []


def record_warnings(folder: str | os.PathLike, lines: list[str]) -> None:
    """Add the warning ``lines`` (:func:`environment_warnings`) to this start's entry (the last) of
    ``folder/environment.json``, recording the start first when the folder has none."""
    path = Path(folder) / ENVIRONMENT_FILE
    starts = _starts(path)
    if not starts or not isinstance(starts[-1], dict):
        starts.append(environment())
    starts[-1] = starts[-1] | {"warnings": [str(line) for line in lines]}
    atomic_write_json(path, {"starts": starts})


def record_environment(folder: str | os.PathLike, *, resumed_from: str | None = None) -> dict[str, Any]:
    """Append this start's :func:`environment` to ``folder/environment.json`` (``{"starts": [...]}``, the first
    start first; a resumed run adds its own, with the checkpoint it resumed from) and return it."""
    path = Path(folder) / ENVIRONMENT_FILE
    starts = _starts(path)
    record = environment() | ({"resumed_from": str(resumed_from)} if resumed_from else {})
    atomic_write_json(path, {"starts": [*starts, record]})
    return record
