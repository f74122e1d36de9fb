"""Stop signals: SIGTERM/SIGUSR1 (SLURM preemption, torchrun shutdown) ask a run to save last.pt and stop."""
from __future__ import annotations

import signal
import threading

__all__ = ["StopSignals"]


class StopSignals:
    """Context manager that records SIGTERM/SIGUSR1 in ``received`` instead of dying, and puts the
    previous handlers back on exit. Outside the main thread (where handlers cannot be set) it does nothing."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict = {}

    def _handler(self, signum, frame) -> None:
        self.received = int(signum)

    def __enter__(self) -> "StopSignals":
        self.received = None
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.getsignal(sig)
                signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
