"""One atomic writer: a temporary file in the target's folder, fsync, rename, fsync of the folder.

A crash at any moment leaves either the previous file or the complete new one, never a torn file.
The final file gets the mode a plain ``open(path, "w")`` would give under the process umask
(``0o666 & ~umask``), not the private 0600 of the temporary file.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from asa.io.nifti import nifti_suffix

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_json", "atomic_write_text", "default_file_mode"]


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


def default_file_mode() -> int:
    """The permission bits a newly created regular file gets under the current umask."""
    return 0o666 & ~_umask()


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
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix is None:
        suffix = ".nii.gz" if nifti_suffix(path) == ".nii.gz" else path.suffix
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
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
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)


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
