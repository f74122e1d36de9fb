"""The study's sittings in times.json: each call's start, end and how it ended, stopped ones included, so that the
stage totals can be checked against the wall time every sitting took. A sitting is kept from its start: one killed
with no chance to write its end (SIGKILL, the machine going down) is closed by the next, at the last moment its
study was seen working (its units' logs), its stage and unit seconds lost with it."""

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


RUNNING = "running"  # a sitting's end until it has one
KILLED = "killed (no end written; its end is when its study was last seen working)"


def _stamp(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(seconds))


def last_seen(folder: Path) -> float:
    """When the study in ``folder`` was last seen working: the latest change to its units' logs or its times.json."""
    logs = folder / "logs"
    files = [*(f for f in logs.rglob("*") if f.is_file()), folder / "times.json"] if logs.is_dir() else [
        folder / "times.json"]
    return max((f.stat().st_mtime for f in files if f.is_file()), default=time.time())


def close_killed(times: dict[str, Any], seen: float) -> None:
    """Every sitting of ``times`` still running (none is: this call is the study's only one) ended killed, at
    ``seen`` (`last_seen`) or its start if that came later."""
    for sitting in times.get("sittings", []):
        if sitting["ended"] == RUNNING:
            start = time.mktime(time.strptime(sitting["start"], "%Y-%m-%dT%H:%M:%S"))
            end = max(start, seen)
            sitting.update(end=_stamp(end), seconds=round(end - start, 1), ended=KILLED)


def keep_sitting(times: dict[str, Any], times_file: Path, work: Callable[[], int]) -> int:
    """``work()``'s exit code; its sitting (start, end, seconds, how it ended) is added to ``times["sittings"]`` and
    kept in ``times_file`` from its start (`RUNNING`), its end written however it ends; a sitting before it left
    running was killed (`close_killed`)."""
    close_killed(times, last_seen(times_file.parent))
    start, code = time.time(), None
    sitting = {"start": _stamp(start), "end": None, "seconds": None, "ended": RUNNING}
    times.setdefault("sittings", []).append(sitting)
    atomic_write_json(times_file, times)
    try:
        code = work()
        return code
    except SystemExit as refused:  # a refusal's code (2); a failed unit's message: failed
        code = refused.code if isinstance(refused.code, int) else None
        raise
    finally:
        end = time.time()
        sitting.update(end=_stamp(end), seconds=round(end - start, 1), ended=ended(code))
        atomic_write_json(times_file, times)
