"""One atomic writer: a temporary file in the target's folder, fsync, rename, fsync of the folder.

A crash at any moment leaves either the previous file or the complete new one, never a torn file.
The final file gets the mode a plain ``open(path, "w")`` would give under the process umask
(``0o666 & ~umask``), not the private 0600 of the temporary file.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from asa.io.nifti import nifti_suffix

__all__ = ["WriteError", "atomic_path", "describe_write_failure", "atomic_write_bytes", "atomic_write_json", "atomic_write_text",
           "default_file_mode", "is_atomic_temporary"]

_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}
_NOT_WRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM}
# what torch.save's zip writer says when a write comes up short (e.g. on a full disk): it gives no errno
_TORCH_SHORT_WRITE = ("unexpected pos", "file write failed", "PytorchStreamWriter failed")
_NUMPY_SHORT_WRITE = re.compile(r"\d+ requested and \d+ written")  # numpy's OSError for a write cut short
_LOW_SPACE = 64 * 2**20


# `atomic_path`'s temporary names: ".<name>.<tempfile.mkstemp's 8 random characters>.tmp<the name's suffix>"
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp(?P<suffix>(?:\.[^.]+)*)$")


class WriteError(OSError):
    """A file could not be written; the message names the folder and the cause (no space, read-only). ``folder``: the
    folder; ``cause``: the cause alone (``read-only file system``, ``no space left (12 MiB free)``)."""

    def __init__(self, code: int, message: str, *, folder: Path | None = None, cause: str = "") -> None:
        super().__init__(code, message)
        self.folder, self.cause = folder, cause or message


def describe_write_failure(err: BaseException, path: Path) -> WriteError | None:
    """A `WriteError` naming ``path``'s folder and the cause for a failed write, or None when ``err`` is
    not a write failure."""
    folder = path.parent
    code = getattr(err, "errno", None)
    short = (isinstance(err, RuntimeError) and any(s in str(err) for s in _TORCH_SHORT_WRITE)) or (
        isinstance(err, OSError) and code is None and _NUMPY_SHORT_WRITE.search(str(err)) is not None)
    if not (code in _NO_SPACE or code in _NOT_WRITABLE or short):
        return None
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = None
    if code in _NO_SPACE or (short and free is not None and free < _LOW_SPACE):
        left = "" if free is None else f", {free / 2**20:.0f} MiB free"
        return WriteError(errno.ENOSPC, f"no space left on {folder} (writing {path.name}{left}); free some space "
                                        f"or write elsewhere. A previous {path.name}, if any, is intact",
                          folder=folder, cause=f"no space left (writing {path.name}{left})")
    if code in _NOT_WRITABLE:
        return WriteError(code, f"cannot write in {folder}: {os.strerror(code).lower()} (a read-only folder?); "
                                "choose a folder you can write to", folder=folder, cause=os.strerror(code).lower())
    failed = str(err).strip().splitlines()[-1]
    return WriteError(errno.EIO, f"writing {path} failed ({failed}); a previous {path.name}, if any, is intact",
                      folder=folder, cause=f"writing {path.name} failed ({failed})")


def _umask() -> int:
    try:  # Linux: read it without changing it (changing it is not thread-safe)
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_file_mode(folder: bool = False) -> int:
    """The permission bits a newly created regular file (``folder``: a folder) gets under the current umask."""
    return (0o777 if folder else 0o666) & ~_umask()


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot sync a directory
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; when the block ends without error, the file written
    there is synced, given the umask's mode and renamed onto ``path``. On error it is removed.

    ``suffix`` is the temporary file's ending (default: ``path``'s, so e.g. nibabel still sees
    ``.nii.gz``).
    """
    path = Path(path)
    if suffix is None:
        suffix = ".nii.gz" if nifti_suffix(path) == ".nii.gz" else path.suffix
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    except OSError as err:
        raise (describe_write_failure(err, path) or err) from err
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:
        described = describe_write_failure(err, path)
        if described is None:
            raise
        raise described from err
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)


def is_atomic_temporary(path: str | os.PathLike) -> bool:
    """Whether ``path`` is named as `atomic_path` names its temporary files (``.last.pt.k3j9x_2a.tmp.pt``): what a
    process killed during a write leaves beside the file it was writing."""
    found = _TEMPORARY.match(Path(path).name)
    return found is not None and found["name"].endswith(found["suffix"])


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see the module docstring)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically, newlines as given."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """``obj`` as JSON (indent 2, keys in the order given) written atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2) + "\n")
