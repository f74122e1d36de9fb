"""The exit code each asa worker records for `asa-torchrun` (asa.cli.launch), one file per rank in the folder that
``$ASA_EXIT_STATUS_DIR`` names: below both the launcher and the console scripts' entry (asa.cli.common), which
writes it."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["STATUS_ENV", "read_statuses", "write_status"]

STATUS_ENV = "ASA_EXIT_STATUS_DIR"


def write_status(code: int) -> None:
    """Record this worker's exit code for `asa-torchrun` (no-op outside it)."""
    folder = os.environ.get(STATUS_ENV)
    if not folder:
        return
    try:
        Path(folder, f"rank{int(os.environ.get('RANK', '0'))}").write_text(f"{int(code)}\n")
    except (OSError, ValueError):
        pass  # the launcher then falls back on torchrun's account of this worker


def read_statuses(folder: str | os.PathLike) -> dict[int, int]:
    """{rank: exit code} of the workers that recorded one."""
    codes = {}
    for path in Path(folder).glob("rank*"):
        try:
            codes[int(path.name[4:])] = int(path.read_text().strip())
        except ValueError:
            continue
    return codes
