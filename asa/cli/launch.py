"""``asa-torchrun``: torchrun itself (``torch.distributed.run``, same arguments, same rendezvous), ending
with the exit code of asa's workers instead of torchrun's.

torchrun ends with 1 and a traceback whenever a worker exits non-zero and when it is itself sent
SIGTERM, so a scheduler cannot tell "stopped by SIGTERM after saving last.pt, requeue me" (143) from
"refused" (2) or "failed" (1). Each asa worker records the code it exits with in the folder named by
``$ASA_EXIT_STATUS_DIR`` (set here, one file per rank; see `asa.cli.common.entry`), and this wrapper
ends with the job's code: 0 when every worker finished (also when a SIGTERM reached torchrun after
they had), else 1 if any worker failed, else 2 if the run was refused, else 128 + N when the workers
were stopped by signal N. A worker that left no record (killed hard) counts with torchrun's own
account of it (a worker killed by signal N: 128 + N). This is no launcher of its own: torchrun's
argument parsing, rendezvous, multi-node and elastic behaviour are used as they are.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["HELP", "STATUS_ENV", "job_exit_code", "main", "read_statuses", "write_status"]

STATUS_ENV = "ASA_EXIT_STATUS_DIR"

# printed before torchrun's own help; the codes are asa.cli.common's EXIT_* (docs/run-folders.md, "Exit codes")
HELP = """\
asa-torchrun: torchrun (torch.distributed.run) for asa's console scripts, ending with the job's exit code.
  asa-torchrun --nproc_per_node=4 -m asa.cli.pretrain data=... output_dir=runs/x   (or -m asa.cli.finetune)
The arguments, rendezvous, multi-node and elastic behaviour are torchrun's (its options below); those
after the module are the script's own (asa-pretrain --help, asa-finetune --help).
Exit codes, as asa's console scripts use them (plain torchrun ends with 1 whenever a worker exits
non-zero or it is sent SIGTERM, so a scheduler could not tell a preempted run from a failed one):
  0        finished: every worker finished (also when a stop signal came after they had)
  1        failed: a worker failed (it printed its error in one line)
  2        refused before starting: a bad option or value, a run folder that holds a run or is locked, ...
  128 + N  stopped by signal N after saving last.pt: 143 for SIGTERM, 138 for SIGUSR1, 130 for
           Ctrl-C (SIGINT); continue with resume=true
"""


def write_status(code: int) -> None:
    """Record this worker's exit code for `asa-torchrun` (no-op outside it)."""
    folder = os.environ.get(STATUS_ENV)
    if not folder:
        return
    try:
        Path(folder, f"rank{int(os.environ.get('RANK', '0'))}").write_text(f"{int(code)}\n")
    except (OSError, ValueError):
        pass  # the launcher then falls back on torchrun's account of this worker


def read_statuses(folder: str | os.PathLike) -> dict[int, int]:
    """{rank: exit code} of the workers that recorded one."""
    codes = {}
    for path in Path(folder).glob("rank*"):
        try:
            codes[int(path.name[4:])] = int(path.read_text().strip())
        except ValueError:
            continue
    return codes


def _code(exitcode: int) -> int:
    """A process's exit status as a shell reports it: killed by signal N -> 128 + N."""
    return 128 - exitcode if exitcode < 0 else exitcode


def job_exit_code(recorded: Mapping[int, int], failures: Mapping[int, int], launcher_signal: int | None) -> int:
    """The job's exit code from the workers' recorded codes, torchrun's failures {rank: exitcode} for
    workers that recorded none, and the signal torchrun itself got (None: none)."""
    codes = {rank: _code(code) for rank, code in failures.items()}
    codes.update(recorded)  # what a worker said about itself wins
    if codes and all(c == 0 for c in codes.values()):
        return 0
    nonzero = [c for c in codes.values() if c != 0]
    if any(c == 1 or 2 < c < 128 for c in nonzero):
        return 1
    if 2 in nonzero:
        return 2
    if nonzero:
        return max(nonzero)  # stopped by a signal (143 SIGTERM, 138 SIGUSR1, 137 SIGKILL)
    return 128 + launcher_signal if launcher_signal else 1


def main(argv: Sequence[str] | None = None) -> int:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    parser = get_args_parser()
    torchrun_help = parser.print_help

    def print_help(file=None) -> None:  # -h / --help before the script: asa's lines, then torchrun's
        print(HELP, file=file or sys.stdout)
        print("torchrun's help:", file=file or sys.stdout)
        torchrun_help(file)

    parser.print_help = print_help  # type: ignore[method-assign]
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    failures: dict[int, int] = {}
    launcher_signal = None
    with tempfile.TemporaryDirectory(prefix="asa-exit-") as folder:
        previous = os.environ.get(STATUS_ENV)
        os.environ[STATUS_ENV] = folder  # the workers inherit it
        try:
            run(args)
        except ChildFailedError as err:
            failures = {int(rank): int(f.exitcode) for rank, f in err.failures.items()}
        except SignalException as err:
            launcher_signal = int(err.sigval)
        finally:
            if previous is None:
                os.environ.pop(STATUS_ENV, None)
            else:
                os.environ[STATUS_ENV] = previous
        recorded = read_statuses(folder)
    code = job_exit_code(recorded, failures, launcher_signal)
    if failures or launcher_signal or code:
        seen = dict(sorted({**{r: _code(c) for r, c in failures.items()}, **recorded}.items()))
        got = f"asa-torchrun got signal {launcher_signal}; " if launcher_signal else ""
        print(f"[asa-torchrun] {got}workers' exit codes by rank: {seen or 'none recorded'}; exit {code}",
              file=sys.stderr, flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
