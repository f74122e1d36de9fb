"""Fine-tuning units side by side on one device: what K units at once each get, and what they get together.

``asa-study`` runs its units as separate processes (`asa.study.scheduler`). On one GPU without NVIDIA's
multi-process service, separate processes' kernels take turns on the device, so a unit that is fast alone may be
slow beside others. This measures it on the real unit: for each K of ``--units``, K processes each run the study's
fine-tuning job (`asa.api.finetune` with the overrides a ``--scale gpu`` transfer unit runs with: ResEnc S, 32³
crops, one torch thread, no loader workers, constant lr, its log cadence; its split: ``--train-cases`` labeled
cases, the gpu scale's N, so one step an epoch as in the study, and 4 validation cases, no round inside the window),
started together.

Each process records the wall-clock start of every training step (`asa.train.Engine._train_step`, wrapped for the
run only). Once every process has taken ``--warmup`` steps, the parent opens one common window of ``--seconds``;
each process counts the steps it starts inside it and stops at its end. Reported per K:

- each unit's steps/s and samples/s (steps × ``trainer.batch_size``) in the window, their mean, least and most;
- the total samples/s of the K units, and against one unit alone (``speedup``: K means perfect sharing);
- the device's utilisation and each process's memory (``nvidia-smi``, sampled in the window; absent on a CPU).

    python -m benchmarks.side_by_side --data BED/labeled --units 1 4 8 16 --seconds 60 --json OUT.json  # one GPU
    python -m benchmarks.side_by_side --data BED/labeled --units 1 2 --seconds 3 --device cpu --size tiny \\
        --json /tmp/sbs.json                                                                        # CPU smoke

With ``--fused K ...`` each K is also run the study's other way (``asa-study --fused``): one process trains K units
as one network (`asa.api.finetune_fused`, one loader, the units' parameters stacked), its steps timed the same way;
a fused step is K unit-steps, so its row's ``samples_per_s_total`` is K × batch × its steps/s, set beside the
processes' rows (``fused``: K, ``processes``: 1). ``KxP`` runs P such processes at once, each its own K units (the
study's scheduler runs one fused group a draw, as many at once as its ``--jobs``): the row's total is their sum
(``processes``: P). A process dispatches on one core: where the step is the host's, P groups use P cores.

The JSON's ``best_units`` is the K of the greatest total samples/s (the smallest K within 5 % of it) among the
processes' rows, for a script to plan the study's ``--jobs`` from (``scripts/gpu_window.sh``, its study part). It is
written whole after each row, so a run stopped by a time limit keeps the rows it finished.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# the fine-tuning unit of asa-study --scale gpu (asa.study: the pilot's and the transfer units' shared overrides)
UNIT = ("data=msd", "model=resenc", "data.crop=32", "data.num_workers=0", "trainer.threads=1", "trainer.progress=false",
        "trainer.panel_every=0", "trainer.log_every=30", "task.overlap=0", "optim=adamw", "optim.schedule=constant",
        "trainer.epochs=100000", "trainer.val_every=100000", "model.pretrained=null")
WITHIN = 0.05  # best_units: the smallest K whose total is within this share of the greatest


class WindowEnd(BaseException):
    """Raised by the wrapped step once the window has closed: ends the run without a checkpoint or validation."""


def window_rates(starts: list[float], begin: float, end: float) -> float:
    """Steps per second that began in [begin, end): the steps a unit started inside the common window."""
    return sum(begin <= t < end for t in starts) / (end - begin)


def summarise(units: list[dict], begin: float, end: float, batch: int, alone: float | None) -> dict:
    """One K's row from its units' step starts: per-unit and total samples/s, and against one unit alone."""
    steps = [window_rates(u["starts"], begin, end) for u in units]
    samples = [s * batch for s in steps]
    total = sum(samples)
    late = [i for i, u in enumerate(units) if not u["starts"] or u["starts"][0] >= begin]
    row = {"units": len(units), "seconds": round(end - begin, 3), "batch": batch,
           "steps_per_s": [round(s, 3) for s in steps],
           "samples_per_s_unit": {"mean": round(total / len(units), 3), "least": round(min(samples), 3),
                                  "most": round(max(samples), 3)},
           "samples_per_s_total": round(total, 3), "late_units": late,
           "memory_reserved_gib": [u.get("memory_reserved_gib") for u in units]}
    if alone:
        row["speedup"] = round(total / alone, 3)  # K: the units share the device perfectly; 1: they take turns
        row["unit_slowdown"] = round(alone / (total / len(units)), 3)
    return row


def best_units(rows: list[dict]) -> int:
    """The smallest K whose total samples/s is within `WITHIN` of the greatest."""
    top = max(r["samples_per_s_total"] for r in rows)
    return min(r["units"] for r in rows if r["samples_per_s_total"] >= (1 - WITHIN) * top)


def _worker(args: argparse.Namespace) -> None:
    """One unit: the fine-tuning job with its steps timed; the window from the parent's go file."""
    import torch

    from asa.api import finetune
    from asa.api.config import compose_config
    from asa.data import discover
    from asa.train.engine import Engine

    from asa.api.finetune import finetune_fused
    from asa.train.fused import FusedEngine

    starts: list[float] = []
    folder = args.work
    go: dict | None = None
    stepping = FusedEngine if args.fused_units else Engine
    real_step = stepping._train_step

    def step(engine, run, batches):
        nonlocal go
        now = time.time()
        starts.append(now)
        if len(starts) == args.warmup:
            (folder / f"ready-{args.index}").touch()
        if go is None and (folder / "go.json").exists():
            go = json.loads((folder / "go.json").read_text())
        if go is not None and now >= go["end"]:
            raise WindowEnd
        return real_step(engine, run, batches)

    stepping._train_step = step
    ids = [c.id for c in discover("msd", args.data, validate="none")]
    drawn = random.Random(args.index).sample(ids, len(ids))  # each unit its own draw, as the study's
    n = args.train_cases
    # fused: the units of one draw (the study's arms share its seed and cases), each its own run folder
    runs = [folder / f"unit-{args.index}" / f"run-{j}" for j in range(args.fused_units)] or [folder / f"unit-{args.index}"]
    cfgs = [compose_config("finetune", [*UNIT, f"data.root={args.data}", f"model.size={args.size}",
                                        f"device={args.device}", f"seed={args.index}", f"output_dir={run}",
                                        "resume=false"]) for run in runs]
    for run in runs:
        run.mkdir(parents=True)
        (run / "splits.json").write_text(json.dumps({"train": drawn[:n], "val": drawn[n:n + 4],
                                                     "test": drawn[n + 4:], "dataset": "msd", "seed": args.index}))
    result = {"batch": int(cfgs[0].trainer.batch_size)}
    try:
        finetune_fused(cfgs) if args.fused_units else finetune(cfgs[0])
        result["error"] = "the run ended before the window closed"
    except WindowEnd:
        pass
    if torch.cuda.is_available() and args.device != "cpu":
        result["memory_reserved_gib"] = round(torch.cuda.max_memory_reserved() / 2 ** 30, 3)
    result["starts"] = starts
    tmp = folder / f"times-{args.index}.json.tmp"
    tmp.write_text(json.dumps(result))
    os.replace(tmp, folder / f"times-{args.index}.json")


def _smi(query: str, what: str) -> list[list[str]]:
    try:
        out = subprocess.run(["nvidia-smi", f"--query-{what}={query}", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [[f.strip() for f in line.split(",")] for line in out.strip().splitlines() if line.strip()]


def run_k(k: int, args: argparse.Namespace, root: Path, fused: int = 0) -> tuple[list[dict], float, float, dict]:
    """K processes started together (``fused``: one process of that many units trained as one); the window opened
    once all are warm. Returns their records and the window."""
    folder = root / (f"fused{fused}x{k}" if fused else f"k{k}")
    folder.mkdir(parents=True)
    cmd = [sys.executable, "-m", "benchmarks.side_by_side", "--worker", "--data", str(args.data), "--size", args.size,
           "--device", args.device, "--warmup", str(args.warmup), "--work", str(folder),
           "--train-cases", str(args.train_cases), "--fused-units", str(fused)]
    logs = [open(folder / f"unit-{i}.log", "w") for i in range(k)]
    procs = [subprocess.Popen([*cmd, "--index", str(i)], stdout=logs[i], stderr=subprocess.STDOUT) for i in range(k)]
    launched = time.time()
    while not all((folder / f"ready-{i}").exists() for i in range(k)):
        if time.time() - launched > args.start_limit or any(p.poll() is not None for p in procs):
            for p in procs:
                p.kill()
            failed = [i for i, p in enumerate(procs) if p.poll() not in (None, -9)]
            tail = (folder / f"unit-{failed[0] if failed else 0}.log").read_text()[-2000:]
            raise SystemExit(f"side_by_side: {k} units did not all reach step {args.warmup} within "
                             f"{args.start_limit} s (unit logs in {folder}); the first's log ends:\n{tail}")
        time.sleep(0.2)
    warm = time.time() - launched
    begin = time.time() + 1.0
    end = begin + args.seconds
    tmp = folder / "go.json.tmp"
    tmp.write_text(json.dumps({"begin": begin, "end": end}))
    os.replace(tmp, folder / "go.json")
    device = {"warm_seconds": round(warm, 1)}
    time.sleep(max(0.0, begin + args.seconds / 2 - time.time()))
    if util := _smi("utilization.gpu", "gpu"):
        device["gpu_utilisation_percent"] = [int(u[0]) for u in util]
        device["process_memory_mib"] = sorted(int(m[1]) for m in _smi("pid,used_memory", "compute-apps")
                                              if m[1].isdigit())
    for p in procs:
        p.wait(timeout=args.seconds + 120)
    for log in logs:
        log.close()
    units = []
    for i in range(k):
        path = folder / f"times-{i}.json"
        if not path.exists():
            raise SystemExit(f"side_by_side: unit {i} of {k} wrote no {path.name} (its log: {folder}/unit-{i}.log)")
        units.append(json.loads(path.read_text()))
        if "error" in units[-1]:
            raise SystemExit(f"side_by_side: unit {i} of {k}: {units[-1]['error']} (raise trainer.epochs)")
    return units, begin, end, device


def fused_spec(text: str) -> tuple[int, int]:
    """``K`` or ``KxP`` (--fused): K units trained as one in each of P processes, both at least 1."""
    k, x, p = text.partition("x")
    try:
        spec = int(k), int(p) if x else 1
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text}: expected K or KxP, whole numbers (14, 14x4)") from None
    if min(spec) < 1:
        raise argparse.ArgumentTypeError(f"{text}: expected K and P of at least 1")
    return spec


def write_rows(args: argparse.Namespace, rows: list[dict]) -> None:
    """The rows so far, in ``--json`` whole (a temporary file renamed over it)."""
    separate = [r for r in rows if "fused" not in r]
    doc = {"device": _smi("name,driver_version", "gpu") or args.device,
           "unit": [*UNIT, f"model.size={args.size}", f"train cases {args.train_cases}, 4 validation cases"],
           "seconds": args.seconds, "warmup_steps": args.warmup, "rows": rows,
           "best_units": best_units(separate) if separate else None}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.json.with_name(args.json.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    os.replace(tmp, args.json)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.side_by_side", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="an MSD-layout labeled folder (asa-demo-data --layout msd)")
    p.add_argument("--units", type=int, nargs="*", default=[1, 4, 8, 16],
                   help="units at once, in turn (default 1 4 8 16; none: --fused alone)")
    p.add_argument("--seconds", type=float, default=60.0, help="the common window of each K (default 60)")
    p.add_argument("--warmup", type=int, default=20, help="steps every unit takes before the window opens (default 20)")
    p.add_argument("--start-limit", type=float, default=180.0,
                   help="seconds the units may take to reach --warmup steps (default 180)")
    p.add_argument("--train-cases", type=int, default=2,
                   help="labeled training cases of each unit (default 2, the gpu scale's N)")
    p.add_argument("--size", default="S", help="model.size of the ResEnc (default S, the gpu scale's)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--json", type=Path, help="write the rows here")
    p.add_argument("--work", type=Path, help="the units' folders (default: a temporary folder)")
    p.add_argument("--fused", type=fused_spec, nargs="*", default=[], metavar="K[xP]",
                   help="K units trained as one in a process (asa-study --fused), P such processes at once (default "
                        "1), in turn after --units (default none)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--fused-units", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.data = args.data.absolute()
    if args.worker:
        _worker(args)
        return 0
    if bad := [k for k in args.units if k < 1]:
        p.error(f"--units {' '.join(map(str, bad))}: expected at least 1")
    if args.seconds <= 0 or args.warmup < 1 or args.train_cases < 1:
        p.error("--seconds must be above 0, --warmup and --train-cases at least 1")
    if not (args.data / "dataset.json").is_file():
        p.error(f"--data {args.data}: expected an MSD-layout folder with a dataset.json")
    with tempfile.TemporaryDirectory(prefix="asa-sbs-") as tmp:
        root = args.work.absolute() if args.work else Path(tmp)
        rows, alone = [], None
        for k, fused in [*((k, 0) for k in args.units), *((p, k) for k, p in args.fused)]:
            units, begin, end, device = run_k(k, args, root, fused)
            if fused:  # one process's step is its K units' steps: each unit's samples/s is its process's
                units = [unit for unit in units for _ in range(fused)]
            row = summarise(units, begin, end, units[0]["batch"], alone) | device
            if fused:
                row |= {"fused": fused, "processes": k}
            else:
                alone = alone or (row["samples_per_s_total"] if k == 1 else None)
            rows.append(row)
            print(f"side_by_side: {f'{fused}x{k} fused' if fused else f'{k:>2} at once'}: "
                  f"{row['samples_per_s_unit']['mean']:8.2f} samples/s a unit "
                  f"({row['samples_per_s_unit']['least']:.2f}-{row['samples_per_s_unit']['most']:.2f}), "
                  f"{row['samples_per_s_total']:8.2f} together"
                  + (f", {row['speedup']:.2f}x one alone" if "speedup" in row else "")
                  + (f", GPU busy {device['gpu_utilisation_percent']} %" if "gpu_utilisation_percent" in device
                     else ""),
                   flush=True)
            if args.json:  # after each row: a part stopped by its time limit keeps the rows it measured
                write_rows(args, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
