"""What the studies share: scale options, refusals, the settings record, the time budget and the report's formats."""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import io
import json
import os
import platform
import shlex
import sys
import time
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch

from asa.api.machinery.rundir import RunDirError, RunLock
from asa.io import atomic_write_json, load_checkpoint
from asa.train.checkpoint import flatten
from asa.train.data import available_cpus as usable_cores  # the cores this process may run on (its affinity)

S = TypeVar("S")
REFUSED = 2  # the exit code of a refused command line or study folder, as every asa console script


def refuse(message: str) -> typing.NoReturn:
    """Refuse the command line or the study folder: ``message`` on stderr, exit 2 before anything is written."""
    print(message, file=sys.stderr, flush=True)
    refusal = SystemExit(message)
    refusal.code = REFUSED
    raise refusal


@contextlib.contextmanager
def study_folder(out: Path) -> Iterator[None]:
    """Hold ``<out>/run.lock`` (a run's lock: `RunLock`) meanwhile, so that one study at a time writes ``out``; a
    second is refused in one line naming the holder before it reads or writes anything else (it would rewrite the
    first's tables and start its units). Folders made for the lock are removed again if the study left them empty;
    a lock whose process is gone (a study killed) is taken over."""
    made = [p for p in (out, *out.parents) if not p.exists()]
    out.mkdir(parents=True, exist_ok=True)
    lock = RunLock(out, "--out")
    try:
        lock.acquire(shlex.join(["asa-study", *sys.argv[1:]]))
    except RunDirError as err:
        _remove_empty(made)
        refuse(str(err))
    try:
        yield
    finally:
        lock.release()
        _remove_empty(made)


def _remove_empty(folders: Sequence[Path]) -> None:
    """Remove ``folders`` (innermost first), each only while it is empty."""
    for folder in folders:
        if not folder.is_dir() or any(folder.iterdir()):
            return
        folder.rmdir()


def add_scale_options(p: argparse.ArgumentParser, scales: Mapping[str, Any], default: str,
                      says: Mapping[str, str]) -> None:
    """``--scale``, ``--quick`` and an ``--<field>`` per field of the scales' dataclass, its help each scale's value."""
    p.add_argument("--scale", choices=sorted(scales), default=default,
                   help="how big the study is: " + "; ".join(f"{k} ({says[k]})" for k in sorted(scales))
                   + f" (default {default}); each of its settings can be overridden by the options below")
    p.add_argument("--quick", action="store_true", help="the plumbing check: the same as --scale quick")
    hints = typing.get_type_hints(kind_of := type(next(iter(scales.values()))))
    for f in dataclasses.fields(kind_of):
        kind = next(t for t in typing.get_args(hints[f.name]) or (hints[f.name],) if t is not type(None))
        p.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=kind,
                       nargs="+" if typing.get_origin(hints[f.name]) is tuple else None,
                       help=f"override the scale's {f.name.replace('_', ' ')} ("
                            + ", ".join(f"{k} {_shown(getattr(v, f.name))}" for k, v in sorted(scales.items())) + ")")


def _shown(value: Any) -> str:
    """A scale's value in the help: a tuple's entries, "none" for None or an empty tuple."""
    if value is None or value == ():
        return "none"
    return " ".join(map(str, value)) if isinstance(value, tuple) else str(value)


def scale_from_args(args: argparse.Namespace, scales: Mapping[str, S]) -> tuple[str, S]:
    """(name, scale): the chosen scale with every ``--<field>`` given on the command line in place."""
    name = "quick" if args.quick else args.scale
    changes = {f.name: tuple(v) if isinstance(v, list) else v for f in dataclasses.fields(scales[name])
               if (v := getattr(args, f.name, None)) is not None}
    return name, dataclasses.replace(scales[name], **changes)


def module_argv(module: str, *args: str) -> tuple[str, ...]:
    """The argv of a child process that runs ``python -m <module>`` with this interpreter."""
    return (sys.executable, "-m", module, *args)


def record_settings(out: Path, settings: Mapping[str, Any], *, grows: Sequence[str] = (),
                    recorded_as: Callable[[dict[str, Any]], dict[str, Any]] = lambda old: old,
                    keep: bool = True) -> None:
    """Keep ``settings`` in study.json; other settings are refused, but those named in ``grows`` may grow (a list gains
    entries, a count rises). ``keep`` False: only the refusal (a study checks its folder before it writes there, and
    keeps its settings once every check passed, so that a refused command does not hold the folder)."""
    recorded = out / "study.json"
    settings = json.loads(json.dumps(settings))
    old = recorded_as(json.loads(recorded.read_text())) if recorded.is_file() else settings  # a new study: as asked
    before, now = flatten(old), flatten(settings)
    differ = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
    fixed = [k for k in differ if k not in grows]
    lost = [k for k in differ if k in grows and not _grown(before.get(k), now.get(k))]
    if fixed or lost:
        changed = "; ".join(f"{k}: {json.dumps(before.get(k))} -> {json.dumps(now.get(k))}" for k in fixed + lost)
        refuse(f"--out {out} holds a study with other settings ({changed}"
               + (f"; {', '.join(lost)} may grow but not shrink" if lost else "")
               + f"; see {recorded}): rerun with the same options to continue it, or choose another --out")
    if not keep:
        return
    if differ:
        print(f"[study] {out}: extending the study ({'; '.join(f'{k}: {before[k]} -> {now[k]}' for k in differ)}); "
              "finished units are kept", flush=True)
    atomic_write_json(recorded, settings)


def _grown(old: Any, new: Any) -> bool:
    """Whether ``new`` holds ``old``: a list with every entry of it, or a count at least as large."""
    if isinstance(old, list) and isinstance(new, list):
        return all(v in new for v in old)
    return type(old) is int and type(new) is int and new >= old


class Clock:
    """The call's time budget: whether a unit expected to take ``seconds`` still fits."""

    def __init__(self, budget: float | None) -> None:
        self.start, self.budget = time.monotonic(), budget

    def fits(self, seconds: float = 0.0) -> bool:
        return self.budget is None or self.budget - (time.monotonic() - self.start) > seconds


def finished(ckpt: Path) -> bool:
    """Whether ``ckpt`` is the last.pt of a run that went through its whole schedule and ended: a stop during its
    final validation saves a last.pt at the last step with ``ended`` False, and the resumed run validates there."""
    if not ckpt.is_file():
        return False
    state = load_checkpoint(ckpt)
    through = int(state["step"]) >= int(state["scheduler"]["total_steps"])
    return through and bool(state.get("ended", True))  # a last.pt of an older asa has no "ended": its step decides


def machine() -> dict[str, Any]:
    """CPU model, cores and threads, torch and the GPU if any."""
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError, StopIteration):
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
    return {"cpu": model, "cpu_count": os.cpu_count(), "usable_cores": usable_cores(),
            "torch_threads": torch.get_num_threads(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "torch": torch.__version__, "python": platform.python_version(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def machine_line(m: Mapping[str, Any], finished_at: str) -> str:
    """The report's line on where the study ran (`machine`) and when it finished."""
    return (f"Machine: {m['cpu']}, {m['usable_cores']} usable core(s) of {m['cpu_count']}, {m['torch_threads']} torch "
            f"thread(s), torch {m['torch']}" + (f", GPU {m['gpu']}" if m["gpu"] else "") + f". Finished {finished_at}.")


def markdown_table(head: Sequence[str], rows: Sequence[Sequence[str]], *, left: int = 2) -> str:
    """A Markdown table: the first ``left`` columns aligned left, the others (numbers) right."""
    return "\n".join(map(table_row, [head, ["---"] * left + ["---:"] * (len(head) - left), *rows])) + "\n"


def table_row(cells: Sequence[str]) -> str:
    """One Markdown table row."""
    return "| " + " | ".join(cells) + " |"


def rows_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """CSV of dict rows (the union of their keys as the header; floats to six decimals)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(dict.fromkeys(k for r in rows for k in r)), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows)
    return buf.getvalue()
