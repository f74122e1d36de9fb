"""Checkpoint files: atomic saves and weights-only loads (imports nothing of asa but this layer)."""
from __future__ import annotations

import os
import pickle
import re
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import numpy as np
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


# numpy scalars and dtypes, which nnU-Net's trainer writes into its checkpoints (``_best_ema`` and the log values
# are numpy.float64): their reconstructors only rebuild a number from its dtype and bytes. No array, no other
# callable. Listed under numpy 2's names and numpy 1's (``numpy.core``), which files written there carry.
_NUMPY_SCALAR = np.dtype("f8").type(0).__reduce__()[0]  # numpy._core.multiarray.scalar (numpy.core in numpy 1)
NUMPY_SAFE_GLOBALS: list = [
    _NUMPY_SCALAR, (_NUMPY_SCALAR, "numpy.core.multiarray.scalar"), (_NUMPY_SCALAR, "numpy._core.multiarray.scalar"),
    np.dtype, *(type(np.dtype(code)) for code in "?bhilqBHILQefdgFDG")]
# torch's words for a callable its weights-only unpickler refused: "Unsupported global: GLOBAL eval was not an
# allowed global by default", "Trying to load unsupported GLOBAL posix.system whose module posix is blocked"
_REFUSED_GLOBAL = re.compile(r"unsupported\b.*?\bGLOBAL\s+([\w.]+)", re.IGNORECASE)
_REFUSED_BUILD = re.compile(r"can only build .* but got <class '([\w.]+)'>", re.IGNORECASE)


@contextmanager
def _numpy_scalars_allowed() -> Iterator[None]:
    """Inside: `torch.load(weights_only=True)` also rebuilds numpy scalars and dtypes (`NUMPY_SAFE_GLOBALS`)."""
    with torch.serialization.safe_globals(NUMPY_SAFE_GLOBALS):
        yield


def refused_callable(err: BaseException) -> str | None:
    """The callable or class named by a refusal of torch's weights-only unpickler (``posix.system``), in any
    of torch's wordings; None for any other error (a torn file, bytes that are no pickle)."""
    text = str(err)
    found = _REFUSED_GLOBAL.search(text) or _REFUSED_BUILD.search(text)
    return found.group(1) if found else None


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint with `torch.load(weights_only=True)`: tensors, containers, plain Python values and
    numpy scalars and dtypes (nnU-Net's trainer writes those), nothing else.

    Raises CheckpointError naming the file when it is missing, truncated, or asks to call anything else (a
    possible code-execution payload, never run: the error names the callable).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file")
    try:
        with _numpy_scalars_allowed():
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if (callable_ := refused_callable(err)) is None:
            # random bytes / a torn file also fail in the weights-only unpickler: not a security matter
            raise CheckpointError(_not_a_checkpoint(path) if not zipfile.is_zipfile(path) else
                                  f"checkpoint {path}: unreadable or corrupt — not a checkpoint written by torch.save "
                                  f"({str(err).splitlines()[-1][:200]})") from err
        raise CheckpointError(
            f"checkpoint {path}: refused, nothing in it was run — it asks to call {callable_}, which is not a "
            f"tensor, container or plain value (a pickle can run any code when it is loaded; weights-only loading "
            f"blocked it). Load only checkpoints you trust; asa's files and published weights call nothing"
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
