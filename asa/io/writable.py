"""The check every job runs on its output folder before any work: can a file be created there (read-only mounts,
missing permissions and full disks refused in one line naming the option)."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from asa.io.atomic import WriteError

__all__ = ["CANNOT_WRITE", "cannot_write", "check_writable"]

CANNOT_WRITE = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC)
"""The errnos of a folder that cannot be written (its other errors are not the folder's fault)."""


def cannot_write(option: str, folder: str | os.PathLike, err: OSError) -> str:
    """The one-line refusal of ``folder`` (the setting ``option``), which ``err`` could not write."""
    return (f"{option}={folder}: cannot write there ({os.strerror(err.errno).lower()}"
            f"{'; a read-only folder?' if err.errno != errno.ENOSPC else ''}); choose another {option}")


def check_writable(folder: str | os.PathLike, option: str) -> None:
    """Refuse (`WriteError`, its ``strerror`` the line `cannot_write` says) a folder a job cannot write: a file is
    created and removed in ``folder``, or in its nearest existing parent when it does not exist yet (the folder
    itself is not created: a refusal leaves nothing behind)."""
    folder = Path(folder)
    probe_in = folder
    while not probe_in.exists() and probe_in.parent != probe_in:
        probe_in = probe_in.parent
    if not probe_in.is_dir():
        return  # a file in the way: the caller's own checks name it
    try:
        fd, name = tempfile.mkstemp(prefix=".asa-write-check.", dir=probe_in)
    except OSError as err:
        if err.errno in CANNOT_WRITE:
            raise WriteError(err.errno, cannot_write(option, folder, err)) from None
        raise
    os.close(fd)
    os.unlink(name)
