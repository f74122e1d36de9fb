"""The set-up of a training run and how a job is refused: `TrainingRun` (process group and run folder),
`refusing` and `OptionError` (a bad option, exit 2) and `describe_error` (one line naming the fault)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Mapping
from typing import Any

from asa.api.machinery.rundir import RunDir, RunDirError, prepare_run_dir
from asa.api.configuration.schema import FinetuneConfig, PretrainConfig
from asa.data import CaseError
from asa.data.datasets import CaseLoadError
from asa.data.store import StoreError
from asa.io import CheckpointError, VolumeError, WriteError
from asa.train import IncompatibleCheckpointError, cleanup_distributed, setup_distributed
from asa.train.folder import RunFolderError
from asa.train.distributed import DistEnv

__all__ = ["OptionError", "TrainingRun", "describe_error", "refusing"]


class OptionError(ValueError):
    """A bad option or value, found before anything was written: the job is refused (exit 2)."""


def _is_refusal(err: BaseException) -> bool:
    """A bad value or missing input that is not yet reported as a refusal of its own kind."""
    if isinstance(err, (OptionError, RunDirError, CaseError, IncompatibleCheckpointError)):
        return False
    # a TypeError is a caller's mistake in Python (a config object of the wrong kind), not an option
    return isinstance(err, (ValueError, FileNotFoundError, NotADirectoryError, CheckpointError))


@contextlib.contextmanager
def refusing() -> Iterator[None]:
    """Checks that run before a job writes anything: a bad value (``ValueError``), a missing input
    (``FileNotFoundError``) or an unreadable checkpoint raised inside becomes an `OptionError` with
    the same one-line message, so the job ends as refused (exit 2), not failed."""
    try:
        yield
    except Exception as err:
        if not _is_refusal(err):
            raise
        raise OptionError(describe_error(err)) from err


def _refused_before_writing(err: BaseException) -> bool:
    """A refusal raised by a check that runs before a job writes (a store that cannot be used, bad cases,
    a bad value)."""
    return isinstance(err, (OptionError, RunDirError, CaseError, IncompatibleCheckpointError, StoreError)) or \
        _is_refusal(err)


class TrainingRun:
    """The set-up that pretraining and fine-tuning share: ``with TrainingRun(cfg, app) as run:`` joins
    the process group (``run.env``); ``run.prepare_dir(resolved)`` locks and checks ``cfg.output_dir``
    (``run.dir``). On leaving, the run folder's lock is released and the process group left, also
    when the job failed (then without the final barrier: the peers may be gone). A bad value raised
    before ``prepare_dir`` (nothing written yet) leaves as an `OptionError`: the run is refused."""

    def __init__(self, cfg: PretrainConfig | FinetuneConfig, app: str) -> None:
        self.cfg, self.app = cfg, app
        self.env = DistEnv()
        self.dir: RunDir | None = None

    def __enter__(self) -> "TrainingRun":
        self.env = setup_distributed(self.cfg.device)
        return self

    def prepare_dir(self, resolved: Mapping[str, Any]) -> RunDir:
        """Lock and check the run folder for the fully resolved run config (`prepare_run_dir`); resume
        compares its ``resume_must_match`` keys."""
        cfg = self.cfg
        self.dir = prepare_run_dir(cfg.output_dir, app=self.app, resume=cfg.resume, overwrite=cfg.overwrite,
                                   run_config=resolved, compat_keys=list(resolved.get("resume_must_match", cfg.resume_must_match)), env=self.env)
        return self.dir

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.dir is not None:  # a refusal after the folder was locked leaves no empty folder behind
            left = self.dir.release(refused=exc is not None and _refused_before_writing(exc))
            if isinstance(exc, RunFolderError):  # its one line says how to continue, and what became of the lock
                exc.resume_with = f"{self.dir.command} resume=true"
                exc.lock_left = None if left is None else self.dir.lock.path
            elif left is not None:
                print(f"[asa] warning: {self.dir.lock.path} could not be removed ({left.strerror or left}); the next "
                      "run on this host takes it over, this process having ended", file=sys.stderr, flush=True)
        cleanup_distributed(finished=exc_type is None)
        if self.dir is None and exc is not None and _is_refusal(exc):
            # the run folder was never touched: a bad option or value refuses the run (exit 2)
            raise OptionError(describe_error(exc)) from exc


def describe_error(err: BaseException) -> str:
    """One line naming the file and the fault: the innermost asa error of the chain, or the last line
    of a DataLoader worker's re-raised traceback, or ``Type: message``."""
    seen, e = [], err
    while e is not None and e not in seen:
        seen.append(e)
        e = e.__cause__ or e.__context__
    for kind in (CaseLoadError, VolumeError):
        for e in seen:
            if isinstance(e, kind) and "Original Traceback" not in str(e):
                return str(e)
    for e in seen:
        text = str(e)
        if "Original Traceback" in text:  # raised again in the main process by a DataLoader worker
            last = [ln for ln in text.strip().splitlines() if ln.strip()][-1]
            name, _, message = last.partition(": ")
            return message if name.split(".")[-1] in {"VolumeError", "CaseLoadError"} else last

    text = str(err).strip()
    if isinstance(err, WriteError):
        return err.strerror or text
    return text if isinstance(err, (ValueError, RuntimeError, FileNotFoundError, KeyError)) and text else \
        f"{type(err).__name__}: {text}"
