"""Stop signals: SIGTERM/SIGUSR1 (SLURM preemption, torchrun shutdown) and SIGINT (a user's Ctrl-C) ask a
run to save last.pt and stop."""
from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["JobSignals", "StopRequested", "StopSignals", "leave_stop_signals_to_the_trainer", "mark_finished",
           "stop_signals_held"]


class StopRequested(BaseException):
    """A stop signal arrived inside `StopSignals.interruptible` (a validation round): what ran there is
    dropped. A ``BaseException``, as ``KeyboardInterrupt`` is, so that no ``except Exception`` on the way
    (MONAI wraps a transform's errors) takes it for a failure."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = int(signum)


class StopSignals:
    """Context manager that records SIGTERM/SIGUSR1/SIGINT in ``received`` instead of dying, and puts the
    previous handlers back on exit. Outside the main thread (where handlers cannot be set) it does nothing.

    A user's Ctrl-C is a stop like a scheduler's: the run saves at the end of its step, says how to
    resume and exits 130, with no ``KeyboardInterrupt`` traceback. Work that can be dropped and redone
    (a validation round) runs inside `interruptible`, where a signal ends it at once."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict = {}
        self._interruptible = False

    def _handler(self, signum, frame) -> None:
        self.received = int(signum)
        if self._interruptible:
            self._interruptible = False
            raise StopRequested(signum)

    @contextmanager
    def interruptible(self, enabled: bool = True) -> Iterator[None]:
        """Meanwhile a stop signal raises `StopRequested` at once (also one that arrived before) instead of
        waiting for the end of the step. ``enabled=False``: a no-op (under DDP, where one rank leaving a
        validation round that the others finish would leave their collectives waiting)."""
        if not enabled:
            yield
            return
        if self.received is not None:
            raise StopRequested(self.received)
        self._interruptible = True
        try:
            yield
        finally:
            self._interruptible = False

    def __enter__(self) -> "StopSignals":
        self.received = None
        self._interruptible = False
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.getsignal(sig)
                signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


def leave_stop_signals_to_the_trainer(worker_id: int | None = None) -> None:
    """In a DataLoader worker (its ``worker_init_fn``): ignore SIGTERM / SIGUSR1 / SIGINT.

    SLURM and torchrun send a stop signal to every process of the job, the loader's workers
    included, and a terminal sends Ctrl-C's SIGINT to its whole foreground process group. A worker dying of it makes the training process fail with "DataLoader worker ...
    killed by signal" before it can save ``last.pt``; ignoring it lets the training process finish
    its step, save and shut its workers down itself (a worker whose parent dies still exits:
    DataLoader workers watch their parent).
    """
    for sig in StopSignals.SIGNALS:
        signal.signal(sig, signal.SIG_IGN)  # also drops one that arrived while held (`stop_signals_held`)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, StopSignals.SIGNALS)


@contextmanager
def stop_signals_held() -> Iterator[None]:
    """Hold SIGTERM / SIGUSR1 / SIGINT in this thread meanwhile: a signal that arrives waits until the end.

    DataLoader workers are forked with this thread's signal mask, so around the start of a loader's
    workers (``iter(loader)``) a job-wide stop signal cannot reach one before its ``worker_init_fn``
    (`leave_stop_signals_to_the_trainer`) ignores it: torch's workers first install a SIGTERM handler
    that dies of any signal not sent by their parent (torchrun's ``killpg`` is not), which failed a
    rank with "DataLoader worker ... exited unexpectedly" when the signal came as a validation
    loader or the first epoch started. The training process takes its own signal when held ends.
    """
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, StopSignals.SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class JobSignals:
    """A console script's stop signals outside training (`StopSignals` takes over during `Engine.fit`).

    Until the run has finished (`finished`), SIGTERM/SIGUSR1/SIGINT end the job at once with exit code
    128 + N, through ``SystemExit`` so that the run folder's lock is released on the way out. Once
    training has finished (`mark_finished`, called by the jobs), there is nothing left to save: a stop
    signal is noted and the job completes its last writes (the encoder export) and exits as it would
    have, so a scheduler does not requeue a finished run. Outside the main thread it does nothing.
    """

    active: "JobSignals | None" = None

    def __init__(self) -> None:
        self.finished = False
        self.received: int | None = None
        self._previous: dict = {}

    def _handler(self, signum, frame) -> None:
        if self.finished:
            self.received = int(signum)
            return
        raise SystemExit(128 + int(signum))

    def __enter__(self) -> "JobSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in StopSignals.SIGNALS:
                self._previous[sig] = signal.getsignal(sig)
                signal.signal(sig, self._handler)
            JobSignals.active = self
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
        if JobSignals.active is self:
            JobSignals.active = None


def mark_finished() -> None:
    """The job's training has finished: from now on a stop signal no longer stops it (see `JobSignals`);
    a no-op outside a console script."""
    if JobSignals.active is not None:
        JobSignals.active.finished = True
