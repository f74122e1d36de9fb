"""asa-study's one scheduler: units as child process groups, ``jobs`` at once within the budget, signals forwarded.

A unit is a Python command line (``python -m <module> ...`` or ``python -c <code>``). It runs in a process forked from
one interpreter that imported torch, MONAI and the study's console scripts once (multiprocessing's fork server),
exactly as that command line would run in a fresh interpreter: its module as ``__main__``, its arguments in
``sys.argv``, its environment, its exit code, its exit handlers. A fresh interpreter spends seconds importing torch
and MONAI before a unit's first step; a study runs dozens to hundreds of units."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import dataclasses
import math
import multiprocessing
import os
import runpy
import shlex
import signal
import socket
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from multiprocessing import resource_tracker
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, Protocol

from asa.api.machinery.rundir import LOCK_NAME, RunLock
from asa.io import atomic_write_json
from asa.study.common import Clock

STOP_MARGIN = 25.0  # seconds before the budget ends at which running units are told to save and stop
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
# what the fork server imports once: what the units' modules import (torch, MONAI, Hydra and asa's jobs among them)
PRELOAD = ["asa.study.scheduler", "asa.api", "asa.cli.common", "asa.study.transfer"]
RUNNING: dict[BaseProcess, tuple[Unit, float]] = {}  # every child process of this study: its unit, its start
PR_SET_PDEATHSIG = 1  # prctl's option (linux/prctl.h): a signal to this process when its parent ends
HELD = {signal.SIGINT, signal.SIGTERM}  # the stop signals, held while a unit starts
ORPHANS_WAIT = 120.0  # seconds a study waits for the units of one killed before it to save and end
# GPU memory of a one-run unit at the gpu scale (ResEnc S, 32³, its CUDA context): 0.79 GiB a process measured on one
# H200 with 1-16 units at once (benchmarks.side_by_side, BENCHMARKS.md "Fine-tuning units side by side"), and some room
UNIT_GIB = 1.0


class Input(Protocol):
    """A file or folder a unit reads, written when the unit starts (planning writes nothing)."""

    def write(self) -> None:
        """Write it; what is already complete is kept (units that share an input: the first to start writes it)."""


@dataclasses.dataclass(frozen=True)
class JsonFile:
    """A JSON file a unit reads (a run's splits.json, a scoring unit's share), written afresh as the unit starts."""

    path: Path
    content: Any

    def write(self) -> None:
        atomic_write_json(self.path, self.content)


@dataclasses.dataclass(frozen=True)
class Unit:
    """A child process; ``argv``: its command line, ``python -m <module> ...`` or ``python -c <code>`` with this
    interpreter; ``done``: its result on disk; ``resumable``: a stop saves it; ``after``: units it waits for;
    ``late``: arguments read as it starts, from what the units it waits for wrote (`command`); ``inputs``: the
    files it reads, written when it starts (planning writes nothing); ``config``: the console
    script's config and overrides it trains with (checked before anything runs), None for a unit that trains
    nothing; ``group``: the overrides of each run it trains as one (asa-study --fused; ``config``'s are the
    first's), empty for one run; ``steps``: the optimiser steps it trains (each of its runs), ``cases``: the cases
    it predicts (their planned cost); ``arms``: the declared arms whose runs it trains, scores or probes (one, but
    for a fused, scoring or probing unit)."""

    name: str
    argv: tuple[str, ...]
    done: Callable[[], bool]
    log: Path
    resumable: bool = True
    threads: int | None = None
    after: tuple[str, ...] = ()
    late: Callable[[], tuple[str, ...]] | None = None
    inputs: tuple[Input, ...] = ()
    config: tuple[str, tuple[str, ...]] | None = None
    group: tuple[tuple[str, ...], ...] = ()
    steps: int = 0
    cases: int = 0
    arms: tuple[str, ...] = ()

    def command(self) -> tuple[str, ...]:
        """Its command line as it starts: ``argv``, then the ``late`` arguments (read now)."""
        return (*self.argv, *(self.late() if self.late is not None else ()))

    @property
    def arm(self) -> str | None:
        """Its one arm; None for a unit several arms share (fused, scoring, probing)."""
        if len(self.arms) == 1:
            return self.arms[0]
        return None

    @property
    def gib(self) -> float:
        """Its planned GPU memory in GiB: `UNIT_GIB` a run it trains. A fused unit's is an upper bound until measured
        on a GPU: its K runs hold K networks' weights, gradients, AdamW state and activations, but one CUDA context."""
        return UNIT_GIB * max(1, len(self.group))

    @property
    def splits(self) -> list[Any]:
        """The splits.json it writes for its runs, in their order (none: its runs split their own cases)."""
        return [i.content for i in self.inputs if isinstance(i, JsonFile) and i.path.name == "splits.json"]


def _run_command_line(argv: tuple[str, ...], env: dict[str, str], log: str, threads: int | None) -> None:
    """In the forked child: ``argv`` run as a fresh interpreter would, in its own process group (a stop signal
    reaches its workers too), stdout and stderr appended to ``log``."""
    _end_with_the_server()
    os.setsid()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD)  # held by the study as the fork server started (`launch`)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    for std in (1, 2):
        os.dup2(fd, std)
    os.close(fd)
    os.environ.clear()
    os.environ.update(env)
    if threads:  # the OpenMP pool read its size when the server imported torch: set it, as the variables would have
        import torch

        torch.set_num_threads(threads)
    flag, target, *args = argv[1:]
    try:
        if flag == "-m":
            sys.argv = [target, *args]  # run_module puts the module's file first, as python -m does
            sys.modules.pop(target, None)  # a module the server imported runs afresh as __main__, as with python -m
            runpy.run_module(target, run_name="__main__", alter_sys=True)
        else:
            sys.argv = ["-c", *args]
            exec(compile(target, "<string>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
    finally:
        atexit._run_exitfuncs()  # a fork server's child ends with os._exit: run what a normal exit would


def _end_with_the_server() -> None:
    """In the forked child: SIGTERM when the fork server ends (Linux's parent-death signal), and the server ends with
    the study, once no child holds the write end of its "alive" pipe that every child inherits: closed here. A study
    killed by SIGKILL (the OOM killer) runs no handler; without this its units ran on as orphans holding their
    folders' locks. SIGTERM: a unit saves what it can and stops, as on the study's own stop."""
    from multiprocessing import forkserver

    if sys.platform.startswith("linux"):  # set while this child holds the pipe: the server cannot have ended yet
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    server = forkserver._forkserver  # noqa: SLF001 (multiprocessing hands the pipe to its children there)
    if server._forkserver_alive_fd is not None:  # noqa: SLF001
        os.close(server._forkserver_alive_fd)  # noqa: SLF001
        server._forkserver_alive_fd = None  # noqa: SLF001 (a fork server of the unit's own would start afresh)


def wait_for_orphans(out: Path, timeout: float = ORPHANS_WAIT) -> None:
    """Wait up to ``timeout`` s for the processes on this host that hold a run.lock below ``out`` (the study's own
    apart) to end: the units of a study killed just before, saving as they end with it (`_end_with_the_server`);
    started now, this study's units would be refused their folders."""
    held = {lock: RunLock(lock.parent).holder() or {} for lock in out.rglob(LOCK_NAME) if lock.parent != out}
    pids = {lock: int(h.get("pid", -1)) for lock, h in held.items() if h.get("host") == socket.gethostname()}
    pids = {lock: pid for lock, pid in pids.items() if _alive(pid)}
    if pids:
        print(f"[study] waiting for the units of a study stopped before to save and end (pid "
              f"{', '.join(map(str, sorted(pids.values())))}), at most {timeout:.0f} s", flush=True)
    deadline = time.monotonic() + timeout
    while pids and time.monotonic() < deadline:
        time.sleep(0.5)
        pids = {lock: pid for lock, pid in pids.items() if lock.is_file() and _alive(pid)}


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (on this host)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True


def launch(unit: Unit) -> None:
    """Start ``unit`` (forked from the fork server, started with the first unit), its output in its log, and keep it
    in `RUNNING`."""
    argv = unit.command()
    if len(argv) < 3 or argv[0] != sys.executable or argv[1] not in ("-m", "-c"):
        raise ValueError(f"unit {unit.name}: {shlex.join(argv)} is not `{sys.executable} -m <module> ...` or "
                         "`-c <code>`, the command lines a study runs")
    unit.log.parent.mkdir(parents=True, exist_ok=True)
    for needed in unit.inputs:
        needed.write()
    env = {**os.environ, **({k: str(unit.threads) for k in THREAD_VARS} if unit.threads else {})}
    server = multiprocessing.get_context("forkserver")
    server.set_forkserver_preload(PRELOAD)  # read when the server starts, with the first unit of this process
    proc = server.Process(target=_run_command_line, args=(argv, env, str(unit.log), unit.threads),
                          name=unit.name)
    # the fork server starts here with the first unit, in the terminal's process group: started with the stop signals
    # held (as multiprocessing starts its resource tracker, which unblocks them after: started first), a Ctrl-C does
    # not end it mid-import with a 25-line "Fatal Python error: init_import_site ... KeyboardInterrupt" after the
    # study's own line; it ignores SIGINT once started, and each unit takes them back (`_run_command_line`)
    resource_tracker.ensure_running()
    held = signal.pthread_sigmask(signal.SIG_BLOCK, HELD)
    try:
        proc.start()
        RUNNING[proc] = (unit, time.perf_counter())
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def signal_children(sig: int) -> None:
    """Send ``sig`` to every running child's process group (its own workers included); to the child alone while it
    is still forking into its group."""
    for proc in list(RUNNING):
        if proc.exitcode is None:
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, sig)


def wait_children(timeout: float = 300.0) -> list[str]:
    """Wait for every child (SIGKILL to a group still running after ``timeout`` s); the names of those that ran."""
    deadline, names = time.monotonic() + timeout, [unit.name for unit, _ in RUNNING.values()]
    for proc in list(RUNNING):
        proc.join(max(1.0, deadline - time.monotonic()))
        if proc.exitcode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.kill()
            proc.join()
        RUNNING.pop(proc)
    return names


class Stopped(BaseException):
    """SIGTERM or SIGINT reached the study: a ``BaseException``, as ``KeyboardInterrupt`` is, so that no ``except
    Exception`` on its way (a dry run's timed units run in this process) takes it for a failure."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_stopped(signum: int, frame: Any) -> None:
    raise Stopped(signum)


def progress(units: Sequence[Unit], left: Sequence[Unit], times: Mapping[str, float], jobs: int) -> str:
    """What a line says of ``units``: how many are done, and the training units ``left`` (pending or running) priced
    at the mean seconds the done ones took (``times``: every sitting's, a unit's whole; one not recorded, none),
    less what each has spent so far, ``jobs`` at once; scoring and probing units are counted, not priced."""
    names = {u.name for u in left}
    took, todo = [], []  # the done training units' recorded seconds; the training units left
    for unit in (u for u in units if u.config is not None):
        seconds = times.get(unit.name, math.nan)
        if unit.name in names:
            todo.append(unit)
        elif math.isfinite(seconds) and seconds > 0:
            took.append(seconds)
    line = f"{len(units) - len(left)} of {len(units)} unit(s) done"
    if not took or not todo:
        return line
    mean, at_once = statistics.fmean(took), max(1, jobs)
    hours = sum(max(0.0, mean - times.get(u.name, 0.0)) for u in todo) / at_once / 3600
    line += (f"; the {len(todo)} training unit(s) left: about {hours:.1f} h at {at_once} at once (the {len(took)} "
             f"trained took {mean / 60:.0f} min each on average")
    if len(left) > len(todo):
        return line + ", scoring and probing not priced)"
    return line + ")"


def run_units(units: Sequence[Unit], jobs: int, clock: Clock, times: dict[str, float],
              memory_gib: float | None = None) -> bool:
    """Run the units not done, ``jobs`` at once and, on a GPU of ``memory_gib`` GiB (None: on the CPU), only while
    the running units' planned memory (`Unit.gib`) and the next one's fit in it; a unit larger than the device runs
    alone. Says the units' `progress` as a call resumes them and as each ends. False when the budget ran out
    (SIGUSR1: save and stop)."""
    pending = [u for u in units if not u.done()]
    if pending and len(pending) < len(units):  # a call that resumes the units: how far they are
        print(f"[study] resumed: {progress(units, pending, times, jobs)}", flush=True)

    def ready(unit: Unit) -> bool:  # none of the units it comes after is pending or running
        return not set(unit.after) & {u.name for u in [*pending, *(u for u, _ in RUNNING.values())]}

    def fits(unit: Unit) -> bool:  # beside the running units on the device; with none running, any unit starts
        if memory_gib is None or not RUNNING:
            return True
        return sum(u.gib for u, _ in RUNNING.values()) + unit.gib <= memory_gib

    def stop_all() -> None:
        signal_children(signal.SIGUSR1)
        for proc in list(RUNNING):
            proc.join()
            unit, started = RUNNING.pop(proc)
            times[unit.name] = times.get(unit.name, 0.0) + time.perf_counter() - started

    while pending or RUNNING:
        while len(RUNNING) < max(1, jobs) and (unit := next((u for u in pending if ready(u)), None)):
            if not fits(unit):  # the next unit waits for room: none behind it overtakes it (as `stages._makespan`)
                break
            if not clock.fits(STOP_MARGIN + (0.0 if unit.resumable else times.get(unit.name, 0.0) * 1.2)):
                break
            pending.remove(unit)
            if memory_gib is not None and unit.gib > memory_gib:
                print(f"[study] {unit.name}: its planned {unit.gib:g} GiB of GPU memory exceed the device's "
                      f"{memory_gib:.1f} GiB: it runs alone, and may run out of memory", flush=True)
            print(f"[study] {unit.name}: {shlex.join(unit.command())} (log {unit.log})", flush=True)
            launch(unit)
        if not RUNNING:
            return False
        time.sleep(0.5)
        for proc in [p for p in RUNNING if p.exitcode is not None]:
            unit, started = RUNNING.pop(proc)
            times[unit.name] = times.get(unit.name, 0.0) + time.perf_counter() - started
            if proc.exitcode != 0 or not unit.done():
                stop_all()
                raise SystemExit(f"[study] {unit.name} failed (exit {proc.exitcode}): see {unit.log}")
            left = [*pending, *(u for u, _ in RUNNING.values())]
            print(f"[study] {unit.name} done ({times[unit.name] / 60:.0f} min in all): "
                  f"{progress(units, left, times, jobs)}", flush=True)
        if RUNNING and not clock.fits(STOP_MARGIN):
            stop_all()
            return False
    return True


def end_servers() -> None:
    """End the fork server and multiprocessing's resource tracker it started, waiting for each: left to notice this
    process's exit, they would outlive the study by as long as their ends take."""
    from multiprocessing import forkserver, resource_tracker

    forkserver._forkserver._stop()  # noqa: SLF001 (multiprocessing's own way to stop them: no public one exists)
    resource_tracker._resource_tracker._stop()  # noqa: SLF001


def stop_on_signals(work: Callable[[], int], stopped: Callable[[Stopped, list[str]], None]) -> int:
    """``work()``'s exit code, or 128 + signum after SIGTERM / SIGINT (forwarded to every child, then ``stopped``);
    either way every process the study started has ended when it returns."""
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
        end_servers()
