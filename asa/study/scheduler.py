"""asa-study's one scheduler: units as child process groups, ``jobs`` at once within the budget, signals forwarded."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from asa.io import atomic_write_json
from asa.study.common import Clock

STOP_MARGIN = 25.0  # seconds before the budget ends at which running units are told to save and stop
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
RUNNING: dict[subprocess.Popen, tuple[Unit, float]] = {}  # every child process of this study: its unit, its start


@dataclasses.dataclass(frozen=True)
class Unit:
    """A child process; ``done``: its result on disk; ``resumable``: a stop saves it; ``after``: units it waits for;
    ``inputs``: the JSON files it reads, written when it starts (planning writes nothing); ``config``: the console
    script's config and overrides it trains with (checked before anything runs), None for a unit that trains
    nothing; ``steps``: the optimiser steps it trains, ``cases``: the cases it predicts (their planned cost)."""

    name: str
    argv: tuple[str, ...]
    done: Callable[[], bool]
    log: Path
    resumable: bool = True
    threads: int | None = None
    after: tuple[str, ...] = ()
    inputs: tuple[tuple[Path, Any], ...] = ()
    config: tuple[str, tuple[str, ...]] | None = None
    steps: int = 0
    cases: int = 0


def launch(unit: Unit) -> None:
    """Start ``unit`` in its own process group (a stop signal reaches the whole group), its output in its log, and
    keep it in `RUNNING`."""
    unit.log.parent.mkdir(parents=True, exist_ok=True)
    for path, content in unit.inputs:
        atomic_write_json(path, content)
    env = {**os.environ, **({k: str(unit.threads) for k in THREAD_VARS} if unit.threads else {})}
    with open(unit.log, "a") as log:
        proc = subprocess.Popen(list(unit.argv), stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    RUNNING[proc] = (unit, time.perf_counter())


def signal_children(sig: int) -> None:
    """Send ``sig`` to every running child's process group (its own workers included)."""
    for proc in list(RUNNING):
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)


def wait_children(timeout: float = 300.0) -> list[str]:
    """Wait for every child (SIGKILL to a group still running after ``timeout`` s); the names of those that ran."""
    deadline, names = time.monotonic() + timeout, [unit.name for unit, _ in RUNNING.values()]
    for proc in list(RUNNING):
        try:
            proc.wait(max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        RUNNING.pop(proc)
    return names


class Stopped(Exception):
    """SIGTERM or SIGINT reached the study."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_stopped(signum: int, frame: Any) -> None:
    raise Stopped(signum)


def run_units(units: Sequence[Unit], jobs: int, clock: Clock, times: dict[str, float]) -> bool:
    """Run the units not done, ``jobs`` at once; False when the budget ran out (SIGUSR1: save and stop)."""
    pending = [u for u in units if not u.done()]

    def ready(unit: Unit) -> bool:  # none of the units it comes after is pending or running
        return not set(unit.after) & {u.name for u in [*pending, *(u for u, _ in RUNNING.values())]}

    def stop_all() -> None:
        signal_children(signal.SIGUSR1)
        for proc in list(RUNNING):
            proc.wait()
            unit, started = RUNNING.pop(proc)
            times[unit.name] = times.get(unit.name, 0.0) + time.perf_counter() - started

    while pending or RUNNING:
        while len(RUNNING) < max(1, jobs) and (unit := next((u for u in pending if ready(u)), None)):
            if not clock.fits(STOP_MARGIN + (0.0 if unit.resumable else times.get(unit.name, 0.0) * 1.2)):
                break
            pending.remove(unit)
            print(f"[study] {unit.name}: {shlex.join(unit.argv)} (log {unit.log})", flush=True)
            launch(unit)
        if not RUNNING:
            return False
        time.sleep(0.5)
        for proc in [p for p in RUNNING if p.poll() is not None]:
            unit, started = RUNNING.pop(proc)
            times[unit.name] = times.get(unit.name, 0.0) + time.perf_counter() - started
            if proc.returncode != 0 or not unit.done():
                stop_all()
                raise SystemExit(f"[study] {unit.name} failed (exit {proc.returncode}): see {unit.log}")
        if RUNNING and not clock.fits(STOP_MARGIN):
            stop_all()
            return False
    return True


def stop_on_signals(work: Callable[[], int], stopped: Callable[[Stopped, list[str]], None]) -> int:
    """``work()``'s exit code, or 128 + signum after SIGTERM / SIGINT (forwarded to every child, then ``stopped``)."""
    previous = {s: signal.signal(s, _raise_stopped) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        return work()
    except Stopped as stop:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal_children(signal.SIGTERM)
        stopped(stop, wait_children())
        return 128 + stop.signum
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
