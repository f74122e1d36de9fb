"""What a run says when its folder can no longer be written (turned read-only, full, its permissions taken) while it
trains: one line with the folder and the cause, the step it stopped at, the last.pt that stays and how to resume."""
from __future__ import annotations

from pathlib import Path

from asa.io import WriteError

__all__ = ["RunFolderError", "folder_fault"]


class RunFolderError(RuntimeError):
    """The run stopped because a file of its folder could not be written. The job that started it fills in
    ``resume_with`` (the command that continues the run) and ``lock_left`` (the lock file, when it could not be
    removed either)."""

    def __init__(self, run_dir: Path, fault: WriteError, *, step: int, saved_step: int | None, last: Path) -> None:
        super().__init__()
        self.run_dir, self.fault, self.step, self.saved_step, self.last = run_dir, fault, step, saved_step, last
        self.resume_with = "the same command with resume=true"
        self.lock_left: Path | None = None

    def __str__(self) -> str:
        where = f"{self.fault.folder}" if self.fault.folder is not None else f"{self.run_dir}"
        if self.saved_step is not None or self.last.is_file():
            of = "" if self.saved_step is None else f" of step {self.saved_step}"
            kept = f"{self.last}{of} is intact; once the folder can be written, resume with: {self.resume_with}"
        else:
            kept = f"no {self.last.name} was written yet; once the folder can be written, start again with: " \
                   f"{self.resume_with.replace(' resume=true', ' resume=auto')}"
        lock = "" if self.lock_left is None else \
            f" ({self.lock_left.name} stays: the next run on this host takes it over, this process having ended)"
        return (f"training stopped at step {self.step}: its folder {self.run_dir} could not be written ({where}: "
                f"{self.fault.cause}); {kept}{lock}")


def folder_fault(err: BaseException | None, run_dir: Path) -> WriteError | None:
    """The `WriteError` of a file in ``run_dir`` in ``err``'s chain (raised again by the writer threads), or None."""
    seen = []
    while err is not None and err not in seen:
        seen.append(err)
        folder = getattr(err, "folder", None)
        if isinstance(err, WriteError) and folder is not None and (folder == run_dir or run_dir in folder.parents):
            return err
        err = err.__cause__ or err.__context__
    return None
