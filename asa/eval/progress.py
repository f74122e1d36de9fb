"""Progress over cases as asa-predict and asa-evaluate show it: a tqdm bar on a terminal, else (a log file, a
scheduler's output) one line per case, so that a log holds lines a reader can follow, not a bar's redraws."""

from __future__ import annotations

import sys
import time

from tqdm import tqdm

__all__ = ["CaseProgress"]


class CaseProgress:
    """Progress over ``total`` cases on stderr, ``advance`` after each one: a bar named ``desc`` when stderr is a
    terminal, else the line ``[asa] <verb> <n>/<total>: <case> (<s> s elapsed)`` per case done; nothing when not
    ``enabled``. Used as a context manager, which closes the bar."""

    def __init__(self, total: int, *, desc: str, verb: str, enabled: bool = True) -> None:
        terminal = sys.stderr.isatty()
        self.lines = enabled and not terminal
        self.bar = tqdm(total=total, desc=desc, unit="case", disable=not (enabled and terminal))
        self.total, self.verb, self.done = total, verb, 0
        self.start = time.perf_counter()

    def advance(self, case_id: str | None) -> None:
        """One case handled: ``case_id`` the one done (a line in a log), None one passed over (the bar alone)."""
        self.bar.update(1)
        if case_id is None:
            return
        self.done += 1
        if self.lines:
            print(f"[asa] {self.verb} {self.done}/{self.total}: {case_id} "
                  f"({time.perf_counter() - self.start:.0f} s elapsed)", file=sys.stderr, flush=True)

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> CaseProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
