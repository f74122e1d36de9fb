"""Ctrl-C and a scheduler's SIGTERM in the console scripts that are not Hydra jobs (`asa-export`, `asa-cohort`,
`asa-prepare`, `asa-demo-data`): one line saying what was kept, exit 130 (SIGINT) or 143 (SIGTERM), no
traceback."""

from __future__ import annotations

import functools
import signal
import sys
from collections.abc import Callable, Sequence

__all__ = ["EXIT_INTERRUPTED", "EXIT_TERMINATED", "ctrl_c_exits"]

EXIT_INTERRUPTED = 128 + signal.SIGINT  # 130, as a shell reports a process that SIGINT ended
EXIT_TERMINATED = 128 + signal.SIGTERM  # 143


class _Terminated(BaseException):
    """SIGTERM arrived: unwinds the script as Ctrl-C's ``KeyboardInterrupt`` does (``finally`` blocks run)."""


def _raise_terminated(signum, frame) -> None:
    raise _Terminated()


def ctrl_c_exits(app: str, kept: str | Callable[[Sequence[str] | None], str]
                 ) -> Callable[[Callable[..., int]], Callable[..., int]]:
    """Wrap a console script's ``main(argv) -> exit code``: a ``KeyboardInterrupt`` (the user's Ctrl-C) prints
    ``[app] stopped by SIGINT (kept); exit 130`` and returns 130, a SIGTERM (a scheduler's stop) likewise with 143.
    ``kept``: what the docs promise a stopped run leaves and how to finish it, or a function of ``argv`` that reads it
    off the output when the stop arrives (what was kept is then what is there, not what was hoped for)."""

    def wrap(main: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(main)
        def wrapped(argv: Sequence[str] | None = None) -> int:
            try:
                before = signal.signal(signal.SIGTERM, _raise_terminated)
            except ValueError:  # not the main thread (a script called from a notebook's worker): left as it is
                before = None
            try:
                return main(argv)
            except KeyboardInterrupt:
                said = kept(argv) if callable(kept) else kept
                print(f"\n[{app}] stopped by SIGINT ({said}); exit {EXIT_INTERRUPTED}", file=sys.stderr, flush=True)
                return EXIT_INTERRUPTED
            except _Terminated:
                said = kept(argv) if callable(kept) else kept
                print(f"\n[{app}] stopped by SIGTERM ({said}); exit {EXIT_TERMINATED}", file=sys.stderr, flush=True)
                return EXIT_TERMINATED
            finally:
                if before is not None:
                    signal.signal(signal.SIGTERM, before)

        return wrapped

    return wrap
