"""The study's sittings in times.json: each call's start, end and how it ended, stopped ones included, so that the
stage totals can be checked against the wall time every sitting took."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from asa.io import atomic_write_json
from asa.study.common import REFUSED
from asa.study.stages import UNFINISHED


def ended(code: int | None) -> str:
    """How a sitting ended, from the study's exit code (None: a unit failed)."""
    if code is None:
        return "failed"
    if code == 0:
        return "finished"
    if code == UNFINISHED:
        return "unfinished (rerun to continue)"
    if code == REFUSED:
        return "refused"
    if code > 128:
        return f"stopped by {signal.Signals(code - 128).name}"
    return f"exit {code}"


def keep_sitting(times: dict[str, Any], times_file: Path, work: Callable[[], int]) -> int:
    """``work()``'s exit code; its sitting (start, end, seconds, how it ended) is added to ``times["sittings"]`` and
    kept in ``times_file`` however it ends."""
    start, code = time.time(), None
    try:
        code = work()
        return code
    except SystemExit as refused:  # a refusal's code (2); a failed unit's message: failed
        code = refused.code if isinstance(refused.code, int) else None
        raise
    finally:
        end = time.time()
        times.setdefault("sittings", []).append({
            "start": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(start)),
            "end": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(end)),
            "seconds": round(end - start, 1), "ended": ended(code)})
        atomic_write_json(times_file, times)
