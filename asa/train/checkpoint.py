"""Atomic, weights-only checkpoints and resume-compatibility checks."""
from __future__ import annotations

import os
import pickle
import re
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch

from asa.io import atomic_path

__all__ = [
    "CheckpointError", "IncompatibleCheckpointError", "save_checkpoint", "load_checkpoint",
    "check_compatible", "flatten", "prune_step_checkpoints",
]

FORMAT = "asa-checkpoint"
VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable, or holds something other than plain tensors/containers."""


class IncompatibleCheckpointError(CheckpointError):
    """Resuming with a configuration that differs from the checkpoint's in keys that must match."""


def save_checkpoint(path: str | os.PathLike, state: Mapping) -> Path:
    """Write `state` to `path` atomically (`asa.io.atomic_path`: temporary file, fsync, rename).

    A crash at any moment leaves either the previous file or the new one, never a torn file.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(dict(state), tmp)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint with `torch.load(weights_only=True)`.

    Raises CheckpointError naming the file when it is missing, truncated, or contains pickled Python
    objects (a possible code-execution payload) that weights-only loading refuses.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if not zipfile.is_zipfile(path) or "Unsupported global" not in str(err):
            # random bytes / a torn file also fail in the weights-only unpickler: not a security matter
            raise CheckpointError(
                f"checkpoint {path}: unreadable or corrupt — not a checkpoint written by torch.save "
                f"({str(err).splitlines()[-1][:200]})"
            ) from err
        raise CheckpointError(
            f"checkpoint {path}: refused — it contains pickled Python objects that are not plain tensors or "
            f"containers (weights_only=True loading rejected it; a pickle payload could run arbitrary code). "
            f"Only load checkpoints you trust and that were written by asa. Details: {err}"
        ) from err
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path}: unreadable or truncated ({type(err).__name__}: {err})") from err
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path}: expected a dict at the top level, got {type(state).__name__}")
    return state


def flatten(cfg: Mapping, prefix: str = "") -> dict[str, object]:
    """{"a": {"b": 1}} -> {"a.b": 1} (lists stay values)."""
    out: dict[str, object] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def check_compatible(saved_cfg: Mapping, cfg: Mapping, keys: Iterable[str], *, source: str = "checkpoint") -> None:
    """Refuse to resume when any config entry under `keys` (dotted prefixes, e.g. "model") differs.

    The error lists every differing key with the saved and the requested value.
    """
    saved, now = flatten(saved_cfg), flatten(cfg)
    diffs = []
    for prefix in keys:
        names = {k for k in saved.keys() | now.keys() if k == prefix or k.startswith(prefix + ".")}
        for name in sorted(names):
            a, b = saved.get(name, "<missing>"), now.get(name, "<missing>")
            if a != b:
                diffs.append(f"{name}: {source} has {a!r}, config has {b!r}")
    if diffs:
        raise IncompatibleCheckpointError(
            f"cannot resume from {source}: the configuration differs in keys that must match:\n  "
            + "\n  ".join(diffs)
            + "\nTo continue that run, restore these settings (drop the overrides that changed them); to train "
            "with the new settings, start a new run in another output_dir. Nothing was changed."
        )


_STEP_RE = re.compile(r"^step_(\d+)\.pt$")


def prune_step_checkpoints(folder: str | os.PathLike, keep: int) -> list[Path]:
    """Delete all but the newest `keep` step_XXXXXXXX.pt files in `folder`; returns what was removed."""
    folder = Path(folder)
    found = sorted(
        (int(m.group(1)), p) for p in folder.glob("step_*.pt") if (m := _STEP_RE.match(p.name))
    )
    removed = [p for _, p in found[: max(len(found) - keep, 0)]]
    for p in removed:
        p.unlink(missing_ok=True)
    return removed
