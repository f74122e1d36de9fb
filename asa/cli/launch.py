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
argument parsing, rendezvous, multi-node and elastic behaviour are used as they are, but for this: a node
gives up on nodes that never come after `WAIT_S` unless ``--rdzv_conf`` sets torchrun's own wait, a rendezvous
that fails (timed out, its store lost) ends in one line and exit 1 instead of a traceback, and the rendezvous
options given here reach the workers (`LAUNCH_ENV`) for the resume command they print.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from asa.cli.help import kept_text
from asa.cli.status import STATUS_ENV, read_statuses

__all__ = ["HELP", "LAUNCH_ENV", "WAIT_S", "bounded_wait", "job_exit_code", "main", "rendezvous_failure"]

# asa.api.machinery.rundir.LAUNCH_ENV, which composes the resume command from it: spelled here, not imported, since
# asa.api's modules would double the launcher's start-up time and memory (8 s and 200 MB more, measured under load)
LAUNCH_ENV = "ASA_TORCHRUN_RENDEZVOUS"
CPP_LOG = "TORCH_CPP_LOG_LEVEL"  # read once, as torch loads
# torchrun's own wait for nodes that never come is 600 s (c10d's join_timeout) or 900 s tried twice (static's timeout:
# a node's connection to node 0's store is retried once), so asa's default keeps every node's wait within 5 minutes
WAIT_S = {"c10d": ("join_timeout", 300), "static": ("timeout", 150)}
# torchrun's options that say where the nodes meet, kept in the resume command the workers print
RENDEZVOUS = ("rdzv_backend", "rdzv_endpoint", "rdzv_id", "rdzv_conf", "master_addr", "master_port", "node_rank",
              "local_addr")

# printed before torchrun's own help; the codes are asa.cli.common's EXIT_* (docs/run-folders.md, "Exit codes")
HELP = """\
asa-torchrun: torchrun (torch.distributed.run) for asa's console scripts, ending with the job's exit code.
  asa-torchrun --nproc_per_node=4 -m asa.cli.pretrain data=... output_dir=runs/x   (or -m asa.cli.finetune)
The arguments, rendezvous, multi-node and elastic behaviour are torchrun's (its options below); those
after the module are the script's own (asa-pretrain --help, asa-finetune --help).
Exit codes, as asa's console scripts use them (plain torchrun ends with 1 whenever a worker exits
non-zero or it is sent SIGTERM, so a scheduler could not tell a preempted run from a failed one):
  0        finished: every worker finished (also when a stop signal came after they had)
  1        failed: a worker failed (it printed its error in one line), or the nodes' rendezvous did
  2        refused before starting: a bad option or value, a run folder that holds a run or is locked, ...
  128 + N  stopped by signal N after saving last.pt: 143 for SIGTERM, 138 for SIGUSR1, 130 for
           Ctrl-C (SIGINT); continue with resume=true
Several nodes: a node waits at most 300 s (c10d: --rdzv_conf join_timeout=S) or 150 s (static: --rdzv_conf
timeout=S; a node other than 0 up to about twice that) for nodes that never come, then says in one line
where it waited and for which nodes and exits 1, as it does when the rendezvous store is lost. The resume
command a stopped job prints keeps the rendezvous options (--rdzv_*, --master_*, --node_rank, --local_addr).
"""


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


def _conf(text: str) -> dict[str, str]:
    """``--rdzv_conf``'s ``key=value,...`` as a dict (torchrun refuses a malformed one itself)."""
    pairs = (item.partition("=") for item in text.split(","))
    return {key.strip(): value.strip() for key, _, value in pairs if key.strip()}


def bounded_wait(backend: str, conf: str) -> str:
    """``--rdzv_conf`` with asa's bound on the wait for the other nodes (`WAIT_S`) where it sets none."""
    key, seconds = WAIT_S.get(backend, (None, 0))
    if key is None or key in _conf(conf):
        return conf
    return ",".join(filter(None, [conf.strip(), f"{key}={seconds}"]))


def _message(err: BaseException) -> str:
    """The first line of what torch said, from the innermost error that says anything."""
    said = ""
    while err is not None:
        said = str(err).strip() or said
        err = err.__cause__
    return said.splitlines()[0] if said else ""


def rendezvous_failure(args: argparse.Namespace, err: BaseException) -> str:
    """One line on a rendezvous that timed out or lost its store: where the nodes meet, which node this is and
    which it waited for, up to which of torchrun's timeouts, and what torch said."""
    from torch.distributed.elastic.rendezvous import RendezvousConnectionError, RendezvousTimeoutError

    endpoint = args.rdzv_endpoint or f"{args.master_addr}:{args.master_port}"
    key = WAIT_S.get(args.rdzv_backend, ("timeout",))[0]
    seconds = _conf(args.rdzv_conf).get(key)
    wait = f"--rdzv_conf {key}={seconds} s" if seconds else f"torchrun's {key}"
    said = _message(err)
    if args.rdzv_backend == "static":
        nodes, rank = int(str(args.nnodes).split(":")[-1]), int(args.node_rank)
        others = "1" if nodes == 2 else f"1-{nodes - 1}"
        awaited = f"node_rank{'s' if nodes > 2 else ''} {others} to connect" if rank == 0 else \
            "node_rank 0, which hosts its store"
        return (f"[asa-torchrun] static rendezvous at {endpoint}, node_rank {rank} of --nnodes={args.nnodes}: "
                f"waited up to {wait} for {awaited}: {said}; exit 1")
    if isinstance(err, RendezvousTimeoutError):
        what = f"waited {wait} for the other nodes to join and they did not all come"
    elif isinstance(err, RendezvousConnectionError):
        what = f"its store did not answer: {said}"
    else:
        what = f"{type(err).__name__}: {said}" if said else type(err).__name__
    return (f"[asa-torchrun] {args.rdzv_backend} rendezvous at {endpoint} (rdzv_id {args.rdzv_id}), one of "
            f"--nnodes={args.nnodes}: {what}; exit 1")


@contextlib.contextmanager
def _environ(**values: str) -> Iterator[None]:
    """Set these environment variables (the workers inherit them), restored on leaving."""
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _help_text() -> str:
    """asa-torchrun's help: asa's lines, then torchrun's."""
    from torch.distributed.run import get_args_parser

    return f"{HELP}\ntorchrun's help:\n{get_args_parser().format_help()}"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv in (["-h"], ["--help"]):  # kept: printed before torch loads; among other arguments torchrun reads it
        print(kept_text("torchrun", _help_text), end="", flush=True)
        sys.exit(0)
    # torch's C++ log of this process alone (its workers keep theirs): a node that waits for others or loses their
    # store logs 40-55 lines of c10d retries and stack frames before the one line below says what happened
    with _environ(**({} if CPP_LOG in os.environ else {CPP_LOG: "FATAL"})):
        from torch.distributed import DistError
        from torch.distributed.elastic.multiprocessing.api import SignalException
        from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
        from torch.distributed.elastic.rendezvous import RendezvousError
        from torch.distributed.run import get_args_parser, run

    parser = get_args_parser()
    # -h / --help before the script (after it, the script's own)
    parser.print_help = lambda file=None: print(_help_text(), end="", file=file or sys.stdout)  # type: ignore
    unset = object()  # a rendezvous option the command line did not give keeps it (argparse sets no default then)
    args = parser.parse_args(argv, argparse.Namespace(**dict.fromkeys(RENDEZVOUS, unset)))
    given = [f"--{name}={getattr(args, name)}" for name in RENDEZVOUS if getattr(args, name) is not unset]
    for name in RENDEZVOUS:
        if getattr(args, name) is unset:
            setattr(args, name, parser.get_default(name))
    args.rdzv_conf = bounded_wait(args.rdzv_backend, args.rdzv_conf)
    failures: dict[int, int] = {}
    launcher_signal = None
    with tempfile.TemporaryDirectory(prefix="asa-exit-") as folder, \
            _environ(**{STATUS_ENV: folder, LAUNCH_ENV: shlex.join(given)}):
        try:
            run(args)
        except ChildFailedError as err:
            failures = {int(rank): int(f.exitcode) for rank, f in err.failures.items()}
        except SignalException as err:
            launcher_signal = int(err.sigval)
        except (RendezvousError, DistError) as err:  # a node that never came, a store lost: where, in one line
            print(rendezvous_failure(args, err), file=sys.stderr, flush=True)
            return 1
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
