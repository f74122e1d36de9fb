"""Checkpoint files: atomic saves and weights-only loads (imports nothing of asa but this layer)."""
from __future__ import annotations

import copy
import os
import pickle
import re
import warnings
import zipfile
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from asa.io.atomic import atomic_path

__all__ = ["CheckpointError", "CheckpointWriter", "load_checkpoint", "save_checkpoint"]


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


def _detached(obj: object) -> object:
    """``obj`` with every tensor copied to the CPU and every container copied (a state_dict's ``_metadata`` kept):
    what the caller goes on to change in place (the weights, a history list) leaves this copy as it was."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        out = copy.copy(obj)  # the same type, its attributes (a state_dict's ``_metadata``) with it
        for key, value in obj.items():
            out[key] = _detached(value)
        return out
    if type(obj) in (list, tuple):
        return type(obj)(_detached(value) for value in obj)
    return copy.deepcopy(obj)


class CheckpointWriter:
    """Checkpoint writes the caller does not wait for: `submit` copies the state to the CPU (the one part the caller
    waits for) and queues its write (`save_checkpoint`: atomic, as ever) on one thread, in order, then ``then()``
    (e.g. pruning older files); at most ``MAX_PENDING`` writes are queued (a further `submit` waits for the oldest),
    so copies do not pile up in memory when the disk is slower than the training. `wait` blocks until every queued
    write is on disk and raises the first error; `close` waits and returns it instead (for a caller already failing
    with its own); `submit` raises an earlier write's error too."""

    MAX_PENDING = 2

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._pending: list[Future] = []

    def submit(self, paths: list[Path], state: Mapping, then: Callable[[], object] | None = None) -> None:
        while self._pending and (self._pending[0].done() or len(self._pending) >= self.MAX_PENDING):
            error = self._pending.pop(0).exception()  # waits for the oldest when the queue is full
            if error is not None:
                self.close()
                raise error
        snapshot = _detached(dict(state))
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="asa-checkpoint-writer")
        self._pending.append(self._pool.submit(_write_all, paths, snapshot, then))

    def write(self, paths: list[Path], state: Mapping, then: Callable[[], object] | None = None) -> None:
        """The same write, waited for (no copy): after every queued one."""
        self.wait()
        _write_all(paths, state, then)

    def close(self) -> BaseException | None:
        pending, self._pending = self._pending, []
        errors = [future.exception() for future in pending]  # each waited for, in order
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        return next((error for error in errors if error is not None), None)

    def wait(self) -> None:
        error = self.close()
        if error is not None:
            raise error


def _write_all(paths: list[Path], state: Mapping, then: Callable[[], object] | None) -> None:
    for path in paths:
        save_checkpoint(path, state)
    if then is not None:
        then()


def _not_a_checkpoint(path: Path) -> str:
    """The message for a file that is neither a torch.save archive nor a pickle (a text file, noise; a plain
    pickle gets :func:`_plain_pickle`'s), with its size and first bytes."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(24)
        seen = f"{path.stat().st_size} bytes, starting {head!r}"
    except OSError:
        seen = "unreadable"
    return (f"checkpoint {path}: not a checkpoint — unreadable or corrupt, neither a torch.save archive nor a "
            f"pickle ({seen})")


def _refused(path: Path, callable_: str, kind: str = "") -> str:
    """The message for a file that asks to call ``callable_`` on loading (never run)."""
    return (f"checkpoint {path}: refused, nothing in it was run — {kind}it asks to call {callable_}, which is not a "
            f"tensor, container or plain value (a pickle can run any code when it is loaded; weights-only loading "
            f"blocked it). Load only checkpoints you trust; asa's files and published weights call nothing")


# the modules whose callables torch.save itself writes into a pickle (tensor and container rebuilders)
_WRITER_MODULES = ("torch", "collections", "numpy")
_STRING_OPS = {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE",
               "BINUNICODE8"}


def _pickle_globals(path: Path) -> tuple[int, list[str]] | None:
    """(protocol, the callables it names, ``module.name``) of the first pickle in ``path``, read opcode by opcode
    (`pickletools.genops` parses, it builds and calls nothing); None when the bytes are no pickle."""
    import pickletools

    strings: list = []  # recent string pushes (STACK_GLOBAL takes its module and name from them)
    memo: dict = {}
    names, protocol = [], 0
    try:
        with open(path, "rb") as fh:
            for op, arg, _ in pickletools.genops(fh):
                if op.name == "PROTO":
                    protocol = int(arg)
                elif op.name in _STRING_OPS:
                    strings.append(arg)
                elif op.name == "MEMOIZE":
                    memo[len(memo)] = strings[-1] if strings else None
                elif op.name in ("PUT", "BINPUT", "LONG_BINPUT"):
                    memo[arg] = strings[-1] if strings else None
                elif op.name in ("GET", "BINGET", "LONG_BINGET"):
                    strings.append(memo.get(arg))
                elif op.name in ("GLOBAL", "INST"):
                    names.append(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL":
                    names.append(".".join(map(str, strings[-2:])) if len(strings) >= 2 else "an unnamed global")
            if fh.read(1):  # a pickle file ends at its STOP; noise that parses up to a stray STOP byte goes on
                return None
    except Exception:  # not a pickle, or torn: genops stops at the first byte it cannot parse
        return None
    return protocol, names


def _plain_pickle(path: Path, err: BaseException) -> str | None:
    """The message for a plain pickle (not a torch.save archive) that torch's weights-only loader refused: the
    callables it asks for, never run, or what the loader could not read; None when ``path`` is no pickle."""
    found = _pickle_globals(path)
    if found is None:
        return None
    protocol, names = found
    foreign = list(dict.fromkeys(n for n in names if n.split(".", 1)[0] not in _WRITER_MODULES))
    if foreign:
        return _refused(path, ", ".join(foreign[:3]), f"a plain pickle (protocol {protocol}, not a torch.save "
                                                      "archive): ")
    return (f"checkpoint {path}: a plain pickle (protocol {protocol}), not a torch.save archive, that torch's "
            f"weights-only loader cannot read ({_reason(err)}); nothing in it was run. Save the weights with "
            "torch.save")


def _reason(err: BaseException) -> str:
    """The line of a weights-only refusal that says what it could not read (``Unsupported operand 149``)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return next((ln for ln in lines if "unsupported" in ln.lower()), lines[-1] if lines else repr(err))[:160]


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
        with _numpy_scalars_allowed(), warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if (callable_ := refused_callable(err)) is None:
            # random bytes / a torn file also fail in the weights-only unpickler: not a security matter
            if zipfile.is_zipfile(path):
                raise CheckpointError(f"checkpoint {path}: unreadable or corrupt — not a checkpoint written by "
                                      f"torch.save ({str(err).splitlines()[-1][:200]})") from err
            raise CheckpointError(_plain_pickle(path, err) or _not_a_checkpoint(path)) from err
        raise CheckpointError(_refused(path, callable_)) from err
    except UnicodeDecodeError as err:  # a string opcode over bytes that are no text: noise, not a torn archive
        raise CheckpointError(_plain_pickle(path, err) or _not_a_checkpoint(path)) from err
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path}: unreadable or truncated ({type(err).__name__}: {err})") from err
    except Exception as err:  # any other fault of the unpickler on bytes that are no pickle (KeyError: 101 on text)
        if zipfile.is_zipfile(path):
            raise CheckpointError(f"checkpoint {path}: unreadable or corrupt ({type(err).__name__}: {err})") from err
        raise CheckpointError(_plain_pickle(path, err) or _not_a_checkpoint(path)) from err
    for warning in said:  # torch's warnings on a file it read; on a refused one asa's error is the first word
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path}: expected a dict at the top level, got {type(state).__name__}")
    return state
