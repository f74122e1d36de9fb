"""Checkpoint files: atomic saves and weights-only loads (imports nothing of asa but this layer)."""
from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch

from asa.io.atomic import atomic_path

__all__ = ["CheckpointError", "load_checkpoint", "save_checkpoint"]


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable, or holds something other than plain tensors/containers."""


def save_checkpoint(path: str | os.PathLike, state: Mapping) -> Path:
    """Write `state` to `path` atomically (`asa.io.atomic_path`: temporary file, fsync, rename).

    A crash at any moment leaves either the previous file or the new one, never a torn file.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(dict(state), tmp)
    return path


def _not_a_checkpoint(path: Path) -> str:
    """The message for a file that is neither a torch.save archive nor a pickle (a text file, noise),
    with its size and first bytes."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(24)
        seen = f"{path.stat().st_size} bytes, starting {head!r}"
    except OSError:
        seen = "unreadable"
    return (f"checkpoint {path}: not a checkpoint — unreadable or corrupt, neither a torch.save archive nor a "
            f"pickle ({seen})")


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
            raise CheckpointError(_not_a_checkpoint(path) if not zipfile.is_zipfile(path) else
                                  f"checkpoint {path}: unreadable or corrupt — not a checkpoint written by torch.save "
                                  f"({str(err).splitlines()[-1][:200]})") from err
        raise CheckpointError(
            f"checkpoint {path}: refused — it contains pickled Python objects that are not plain tensors or "
            f"containers (weights_only=True loading rejected it; a pickle payload could run arbitrary code). "
            f"Only load checkpoints you trust and that were written by asa. Details: {err}"
        ) from err
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path}: unreadable or truncated ({type(err).__name__}: {err})") from err
    except Exception as err:  # any other fault of the unpickler on bytes that are no pickle (KeyError: 101 on text)
        if zipfile.is_zipfile(path):
            raise CheckpointError(f"checkpoint {path}: unreadable or corrupt ({type(err).__name__}: {err})") from err
        raise CheckpointError(_not_a_checkpoint(path)) from err
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path}: expected a dict at the top level, got {type(state).__name__}")
    return state
