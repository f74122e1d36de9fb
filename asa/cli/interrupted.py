"""Ctrl-C in the console scripts that are not Hydra jobs (`asa-export`, `asa-cohort`, `asa-prepare`,
`asa-demo-data`): one line saying what was kept, exit 130, no ``KeyboardInterrupt`` traceback."""

from __future__ import annotations

import functools
import signal
import sys
from collections.abc import Callable, Sequence

__all__ = ["EXIT_INTERRUPTED", "ctrl_c_exits"]

EXIT_INTERRUPTED = 128 + signal.SIGINT  # 130, as a shell reports a process that SIGINT ended


def ctrl_c_exits(app: str, kept: str) -> Callable[[Callable[..., int]], Callable[..., int]]:
    """Wrap a console script's ``main(argv) -> exit code``: a ``KeyboardInterrupt`` (the user's Ctrl-C) prints
    ``[app] stopped by SIGINT (kept); exit 130`` and returns 130. ``kept``: what the docs promise a stopped
    run leaves and how to finish it."""

    def wrap(main: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(main)
        def wrapped(argv: Sequence[str] | None = None) -> int:
            try:
                return main(argv)
            except KeyboardInterrupt:
                print(f"\n[{app}] stopped by SIGINT ({kept}); exit {EXIT_INTERRUPTED}", file=sys.stderr, flush=True)
                return EXIT_INTERRUPTED

        return wrapped

    return wrap
