"""What the console scripts share: running a job with one-line errors and documented exit codes."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig

from asa.api.common import describe_error
from asa.api.rundir import RunDirError
from asa.data import CaseError
from asa.data.store import StoreSettingsError
from asa.train import IncompatibleCheckpointError

__all__ = ["EXIT_FAILED", "EXIT_FINISHED", "EXIT_REFUSED", "entry"]

# exit codes (README "Exit codes"); a run stopped by signal N exits 128 + N (SIGTERM: 143)
EXIT_FINISHED = 0
EXIT_FAILED = 1
EXIT_REFUSED = 2


def entry(app: str, run: Callable[[DictConfig], Any], cfg: DictConfig) -> None:
    """Run an entry point and end the process with a documented exit code: 0 finished, 1 failed,
    2 refused before starting (run-directory rules, lock, incompatible resume, bad cases, a store
    written under other settings),
    128 + N stopped by signal N. Errors print one line (``debug=true``: the full traceback)."""
    try:
        result = run(cfg)
    except (RunDirError, IncompatibleCheckpointError, CaseError, StoreSettingsError) as err:
        if cfg.get("debug", False):
            raise
        print(f"[{app}] refused: {err}", file=sys.stderr, flush=True)
        sys.exit(EXIT_REFUSED)
    except Exception as err:
        if cfg.get("debug", False):
            raise
        print(f"[{app}] error: {describe_error(err)}\n  (rerun with debug=true for the full traceback)",
              file=sys.stderr, flush=True)
        sys.exit(EXIT_FAILED)
    signum = getattr(result, "signal", None)
    if getattr(result, "preempted", False) and signum:
        sys.exit(128 + int(signum))
