"""asa-prepare's long ANTs calls (N4, registration) in a process of their own. ITK's C++ holds the calling thread
until it returns (an affine registration at 1 mm: a minute), and Python handles a signal only after that, past a
scheduler's grace (SLURM's KillWait: 30 s); a stop signal here ends the child instead, at once.

One child per process, started on the first call (a plain ``python -c``, not multiprocessing's spawn, which would
run a user's unguarded script again), ANTs seeded as here on each call; it ignores Ctrl-C (its parent decides) and
dies with its parent."""

from __future__ import annotations

import atexit
import ctypes
import os
import resource
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from asa.data.prepare.tools import ants_seed, single_thread

__all__ = ["in_child", "child_cpu"]

_child: tuple[subprocess.Popen, Connection] | None = None
_cpu = 0.0  # CPU seconds the children spent on this process's calls


def in_child(function: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """``function(*args, **kwargs)`` in the child (``function`` importable, its arguments and result picklable), ANTs
    seeded as here (`asa.data.prepare.tools.single_thread`); its exception is raised here. A stop (SIGINT, SIGTERM)
    while it runs kills the child, as does the child's death (out of memory: a `RuntimeError` here); the next call
    starts another."""
    global _child, _cpu
    if _child is None or _child[0].poll() is not None:
        _child = _start()
    process, connection = _child
    try:
        connection.send((function, args, kwargs, ants_seed()))
        ok, value, spent = connection.recv()
    except BaseException as err:
        process.kill()
        process.wait()
        connection.close()
        _child = None
        if isinstance(err, (EOFError, ConnectionError)):  # the child died: out of memory, a crash in ITK
            raise RuntimeError(f"{function.__name__} ended with its process (exit code {process.returncode})") from None
        raise
    _cpu += spent
    if not ok:
        raise value
    return value


def child_cpu() -> float:
    """CPU seconds the children spent on this process's calls so far."""
    return _cpu


def _start() -> tuple[subprocess.Popen, Connection]:
    ours, theirs = socket.socketpair()
    code = (f"import sys; sys.path[:0] = {sys.path!r}; from asa.data.prepare.child import _serve; "
            f"_serve({theirs.fileno()}, {os.getpid()})")
    process = subprocess.Popen([sys.executable, "-c", code], pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                               env={**os.environ, "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": "1"})
    theirs.close()
    return process, Connection(ours.detach())


@atexit.register
def _close() -> None:
    if _child is not None:
        process, connection = _child
        connection.close()
        process.kill()
        process.wait()


def _serve(fd: int, parent: int) -> None:
    """The child's loop: run each call sent on ``fd``, send back (ok, result or exception, CPU seconds)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the terminal's whole process group
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: a parent killed outright takes it along
    if os.getppid() != parent:  # the parent died before that
        return
    connection = Connection(fd)
    while True:
        try:
            function, args, kwargs, seed = connection.recv()
        except EOFError:  # the parent is done
            return
        if seed is not None:
            single_thread(seed)
        before = resource.getrusage(resource.RUSAGE_SELF)
        try:
            ok, value = True, function(*args, **kwargs)
        except Exception as err:  # the parent's case fails with it
            ok, value = False, err
        after = resource.getrusage(resource.RUSAGE_SELF)
        spent = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        try:
            connection.send((ok, value, spent))
        except Exception as err:  # an exception that does not pickle
            connection.send((False, RuntimeError(f"{type(value).__name__}: {value} ({err})"), spent))
