"""Check a GPU machine in one command: the CUDA tests, the paper-scale benchmarks (fp16 and bf16),
a torchrun (NCCL) pretraining killed and resumed, asa-predict of a full-size BraTS case, the
fine-tuning step against MONAI's UNETR and SwinUNETR, and the attention kernels in use.

    python -m benchmarks.gpu --out DIR             # from a checkout on a CUDA machine (budgeted: < 9 min on one H100)
    python -m benchmarks.gpu --out DIR --dry-run   # every part at toy sizes on the CPU (seconds)
    python -m benchmarks.gpu --rows DIR/gpu_check.json --append-md BENCHMARKS.md   # add its rows here

``scripts/gpu_check.sh DIR`` installs the package from the checkout first. Each part runs in its
own process with its own time limit inside an overall budget (``--budget``); a part that fails,
runs out of time or is left without time is recorded as such and the others still run. Written
under ``--out``: ``gpu_check.json`` (everything measured, the device, torch / CUDA / cuDNN / NCCL
versions, date, command, each part's status and checks, the targets), ``benchmarks_row.md`` (the
BENCHMARKS.md rows, one per benchmarked precision) and ``gpu_check.log`` (all output). Exit code 0
when every part passed its checks, 1 otherwise. Targets (e.g. peak memory ≤ 30 GiB at batch 24,
matmul frac ≥ 0.4) are reported, not enforced.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import asa
from benchmarks.gpu_parts import PARTS, PROFILES, Context, reap, spawn, stop_started
from benchmarks.report import TARGETS, append_markdown, markdown_row
from asa.io import atomic_write_json, atomic_write_text

__all__ = ["GPU_TARGETS", "main", "run_check", "rows_of"]

ORDER = ("cuda_tests", "benchmark_fp16", "pretrain_torchrun", "predict_case", "finetune", "benchmark_bf16", "sdpa")
TIMEOUTS = {  # seconds on one H100; the dry run takes a fraction
    "prepare": 240, "cuda_tests": 170, "benchmark_fp16": 110, "pretrain_torchrun": 150, "predict_case": 120,
    "finetune": 80, "benchmark_bf16": 110, "sdpa": 60,
}
NEEDS_DATA = ("pretrain_torchrun", "predict_case")
ALONGSIDE_IN_DRY_RUN = ("cuda_tests", "pretrain_torchrun")  # mostly waiting on their own commands
MIN_PART_S = 20  # a part with less time than this left in the budget is skipped
GPU_TARGETS = {  # (key, comparison, bound) on the merged row of each precision
    "asa_pretrain_peak_gib": ("<=", 30.0),  # a 32 GB V100 holds the paper's per-GPU batch of 24
    "matmul_frac": (">=", 0.4),
    "speedup_vs_monai_mae": TARGETS["speedup_vs_monai_mae"],
    "ar_weights_fraction": TARGETS["ar_weights_fraction"],
    "finetune_speedup_vs_unetr": TARGETS["finetune_speedup_vs_unetr"],
    "case_inference_s": TARGETS["case_inference_s"],
}


def find_repo(given: Path | None) -> Path:
    """The checkout whose benchmarks/speed.py and tests/ the check runs: ``given``, else the
    working folder, else the checkout this package lies in."""
    for candidate in ([given] if given else [Path.cwd(), Path(__file__).resolve().parents[1]]):
        if (candidate / "benchmarks" / "speed.py").is_file() and (candidate / "tests").is_dir():
            return candidate.resolve()
    raise SystemExit(f"--repo {given or Path.cwd()}: not an asa checkout (needs benchmarks/speed.py and tests/); "
                     "run from the repository root or pass --repo")


def describe_machine(repo: Path, argv: Sequence[str]) -> dict[str, Any]:
    """Device, driver and library versions, date and command."""
    import monai

    facts: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(["python", "-m", "benchmarks.gpu", *argv]),
        "host": platform.node(), "python": platform.python_version(), "torch_version": torch.__version__,
        "monai_version": monai.__version__, "asa_version": getattr(asa, "__version__", "unknown"),
        "cuda_available": torch.cuda.is_available(), "cuda_version": torch.version.cuda,
        "cpu_count": os.cpu_count(), "load_avg_start": os.getloadavg()[0],
    }
    with contextlib.suppress(Exception):
        facts["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                                             timeout=10).stdout.strip() or None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        facts.update(device_name=torch.cuda.get_device_name(0), device_count=torch.cuda.device_count(),
                     gpu_memory_gib=props.total_memory / 2**30, compute_capability=f"{props.major}.{props.minor}",
                     multiprocessors=props.multi_processor_count, cudnn_version=torch.backends.cudnn.version())
        with contextlib.suppress(Exception):
            facts["nccl_version"] = ".".join(map(str, torch.cuda.nccl.version()))
        with contextlib.suppress(Exception):
            facts["driver_version"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True,
                timeout=10).stdout.strip().splitlines()[0]
    else:
        facts["device_name"] = f"{platform.processor() or platform.machine()} (CPU)"
    return facts


class Log:
    """The plain-text log: every part's output, with a header and a status line per part."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")

    def __call__(self, text: str) -> None:
        with open(self.path, "a") as f:
            f.write(text if text.endswith("\n") else text + "\n")
        print(text.rstrip("\n")[-2000:], file=sys.__stdout__, flush=True)  # the terminal, also while a part runs


def _child_command(name: str, repo: Path, work: Path, dry_run: bool, timeout_s: float) -> list[str]:
    return [sys.executable, "-m", "benchmarks.gpu", "--part", name, "--repo", str(repo), "--work", str(work),
            "--part-timeout", f"{timeout_s:.0f}", *(["--dry-run"] if dry_run else [])]


@dataclass
class Started:
    """A part running in its own process."""

    name: str
    ctx: Context
    proc: subprocess.Popen
    log_path: Path
    start: float


def start_part(name: str, ctx: Context) -> Started:
    """Start a part in its own process (its own CUDA context, memory and process group)."""
    (ctx.work / f"part_{name}.json").unlink(missing_ok=True)
    log_path = ctx.work / f"part_{name}.log"
    with open(log_path, "w") as sink:
        proc = spawn(_child_command(name, ctx.repo, ctx.work, ctx.profile.device == "cpu", ctx.timeout_s),
                     stdout=sink, env=ctx.env(), cwd=ctx.repo)
    return Started(name, ctx, proc, log_path, time.perf_counter())


def finish_part(started: Started) -> dict[str, Any]:
    """Wait for a started part until its time limit; then SIGTERM (the part stops what it started)
    and, 10 s later, SIGKILL to its process group. Its result."""
    ctx, proc = started.ctx, started.proc
    left = ctx.timeout_s - (time.perf_counter() - started.start)
    try:
        code = proc.wait(timeout=max(left, 1.0))
        reap(proc)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        reap(proc, kill=True)
        code = None
    ctx.log(f"--- {started.name} (its own process) ---\n{started.log_path.read_text(errors='replace')}")
    result_path = ctx.work / f"part_{started.name}.json"
    if code is None:
        result = {"status": "timeout", "error": f"still running after {ctx.timeout_s:.0f} s: killed"}
    elif result_path.is_file():
        result = json.loads(result_path.read_text())
    else:
        result = {"status": "error", "error": f"the part's process exited {code} without a result (see the log)"}
    result["seconds"] = time.perf_counter() - started.start
    result["timeout_s"] = ctx.timeout_s
    return result


def run_part(name: str, ctx: Context, *, isolate: bool) -> dict[str, Any]:
    """One part; its result with ``status`` (ok, failed, timeout, error), ``seconds`` and
    ``timeout_s``. Isolated: in its own process, else in this one."""
    if isolate:
        return finish_part(start_part(name, ctx))
    start = time.perf_counter()
    result = run_inline(name, ctx)
    result["seconds"] = time.perf_counter() - start
    result["timeout_s"] = ctx.timeout_s
    return result


def run_inline(name: str, ctx: Context) -> dict[str, Any]:
    """Run a part in this process (its prints go to the check's log, or stay on this process's
    output in a child); write and return its result."""
    with contextlib.ExitStack() as stack:
        if isinstance(ctx.log, Log):
            sink = stack.enter_context(open(ctx.log.path, "a", buffering=1))
            stack.enter_context(contextlib.redirect_stdout(sink))
            stack.enter_context(contextlib.redirect_stderr(sink))
        try:
            result = PARTS[name](ctx)
            checks = result.get("checks", {})
            result["status"] = "ok" if all(checks.values()) else "failed"
            if result["status"] == "failed":
                result["error"] = "checks failed: " + ", ".join(k for k, v in checks.items() if not v)
        except Exception as err:  # recorded, and the other parts go on
            traceback.print_exc()
            result = {"status": "error", "error": f"{type(err).__name__}: {err}"}
    atomic_write_json(ctx.work / f"part_{name}.json", result)
    return result


def rows_of(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The BENCHMARKS.md rows of a check: per benchmarked precision, its pretrain results with the
    fine-tune / inference ratios and the asa-predict case time of that precision, under the
    check's command and date."""
    parts, machine = summary["parts"], summary["machine"]
    rows = []
    for name in ("benchmark_fp16", "benchmark_bf16"):
        bench = (parts.get(name) or {}).get("results")
        if not bench or "asa_step_s" not in bench:
            continue
        row = {**bench, "command": machine["command"], "date": machine["date"]}
        finetune = (parts.get("finetune") or {}).get("results") or {}
        if finetune.get("amp") == bench["amp"]:
            for key in ("finetune_speedup_vs_unetr", "inference_speedup_vs_unetr", "finetune_speedup_vs_swin_unetr"):
                if key in finetune:
                    row[key] = finetune[key]
        predict = parts.get("predict_case") or {}
        if predict.get("amp") == bench["amp"] and "case_inference_s" in predict:
            row["case_inference_s"] = predict["case_inference_s"]
        rows.append(row)
    return rows


def evaluate_targets(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """{"<key> <amp>": {value, target, met}} for each target a row has a value for."""
    out = {}
    for row in rows:
        values = {**row, "asa_pretrain_peak_gib": row["asa_pretrain_peak_mib"] / 1024}
        for key, (op, bound) in GPU_TARGETS.items():
            if key in values:
                value = float(values[key])
                out[f"{key} {row['amp']}"] = {"value": value, "target": f"{op} {bound:g}",
                                              "met": value <= bound if op == "<=" else value >= bound}
    return out


def write_rows(rows: list[dict[str, Any]], path: Path) -> Path:
    lines = ["<!-- BENCHMARKS.md rows of this GPU check: paste below the last row of the results table, or run",
             "     python -m benchmarks.gpu --rows gpu_check.json --append-md BENCHMARKS.md -->"]
    lines += [markdown_row(r) for r in rows] or ["<!-- no benchmark part finished: no row -->"]
    return atomic_write_text(path, "\n".join(lines) + "\n")


def run_check(out: Path, *, dry_run: bool, budget_s: float, repo: Path, work: Path | None = None,
              parts: Sequence[str] = ORDER, isolate: bool | None = None, argv: Sequence[str] = ()) -> dict[str, Any]:
    """Run the parts in order within ``budget_s`` seconds; writes and returns the summary.

    On a GPU every part runs alone, in its own process (timings and memory undisturbed), while the
    data are written on the CPU in the background. In the dry run the parts run in this process,
    except the ones that mostly wait on commands of their own (the pytest run, torchrun), which
    run alongside in their own processes."""
    start = time.perf_counter()
    profile = PROFILES["dry" if dry_run else "gpu"]
    if not dry_run and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: the GPU check needs one (--dry-run runs it at toy sizes on the CPU)")
    isolate = (not dry_run) if isolate is None else isolate
    out.mkdir(parents=True, exist_ok=True)
    own_work = work is None
    work = Path(tempfile.mkdtemp(prefix="asa-gpu-check-")) if work is None else work
    work.mkdir(parents=True, exist_ok=True)
    log = Log(out / "gpu_check.log")
    machine = describe_machine(repo, argv)
    log(f"asa GPU check{' (dry run: toy sizes on the CPU)' if dry_run else ''}: {machine['device_name']}, "
        f"torch {machine['torch_version']}, CUDA {machine['cuda_version']}, budget {budget_s:.0f} s, work {work}")
    summary: dict[str, Any] = {"machine": machine, "dry_run": dry_run, "profile": dict(profile.__dict__),
                               "budget_s": budget_s, "parts": {}}
    results = summary["parts"]
    deadline = start + budget_s

    def context(name: str) -> Context:
        left = deadline - time.perf_counter()
        timeout = TIMEOUTS[name] if not dry_run else TIMEOUTS[name] / 2 + 60
        return Context(repo=repo, work=work, profile=profile, timeout_s=min(timeout, left), log=log)

    wanted = [p for p in ORDER if p in parts]
    background: dict[str, Started] = {}
    if any(p in NEEDS_DATA for p in wanted):
        if isolate:  # the data are written on the CPU while the GPU runs the first parts
            background["prepare"] = start_part("prepare", context("prepare"))
        else:
            results["prepare"] = run_part("prepare", context("prepare"), isolate=False)

    def ready(name: str) -> bool:
        if name in NEEDS_DATA and "prepare" in background:
            results["prepare"] = finish_part(background.pop("prepare"))
        if name in NEEDS_DATA and results.get("prepare", {}).get("status") != "ok":
            results[name] = {"status": "skipped", "error": "its data could not be prepared (see prepare)"}
            return False
        ctx = context(name)
        if ctx.timeout_s < min(MIN_PART_S, TIMEOUTS[name]):
            results[name] = {"status": "skipped", "error": f"{ctx.timeout_s:.0f} s left of the {budget_s:.0f} s budget"}
            log(f"=== {name}: skipped, {ctx.timeout_s:.0f} s left in the budget")
            return False
        return True

    if not isolate:  # dry run: the command-bound parts alongside
        for name in [p for p in wanted if p in ALONGSIDE_IN_DRY_RUN]:
            if ready(name):
                log(f"=== {name}: started in its own process")
                background[name] = start_part(name, context(name))
    for name in wanted:
        if name in background or name in results or not ready(name):
            continue
        ctx = context(name)
        log(f"=== {name} (time limit {ctx.timeout_s:.0f} s)")
        results[name] = run_part(name, ctx, isolate=isolate)
        log(f"=== {name}: {results[name]['status']} in {results[name]['seconds']:.1f} s"
            + (f" ({results[name]['error']})" if results[name].get("error") else ""))
    for name, started in background.items():
        results[name] = finish_part(started)
    summary["parts"] = {name: results[name] for name in ("prepare", *ORDER) if name in results}
    rows = rows_of(summary)
    summary["targets"] = evaluate_targets(rows)
    summary["rows"] = [markdown_row(r) for r in rows]
    summary["ok"] = all(p.get("status") == "ok" for p in summary["parts"].values())
    summary["wall_s"] = time.perf_counter() - start
    summary["machine"]["load_avg_end"] = os.getloadavg()[0]
    atomic_write_json(out / "gpu_check.json", summary)
    write_rows(rows, out / "benchmarks_row.md")
    log(_report(summary))
    if own_work:
        shutil.rmtree(work, ignore_errors=True)
    return summary


def _report(summary: dict[str, Any]) -> str:
    lines = [f"asa GPU check: {'every part passed' if summary['ok'] else 'NOT every part passed'} "
             f"({summary['wall_s']:.0f} s of a {summary['budget_s']:.0f} s budget)"]
    for name, part in summary["parts"].items():
        lines.append(f"  {name:<18} {part.get('status', '?'):<8} {part.get('seconds', 0.0):6.1f} s"
                     + (f"  {part['error']}" if part.get("error") else ""))
    for name, target in summary["targets"].items():
        lines.append(f"  target {name}: {target['value']:.3g} ({target['target']}): {'met' if target['met'] else 'MISSED'}")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, help="folder for gpu_check.json, benchmarks_row.md and gpu_check.log")
    p.add_argument("--dry-run", action="store_true", help="every part at toy sizes on the CPU (gloo for NCCL)")
    p.add_argument("--budget", type=float, default=450.0, help="seconds for all parts together (default 450)")
    p.add_argument("--parts", nargs="+", choices=ORDER, default=list(ORDER), metavar="PART",
                   help=f"parts to run, of {' '.join(ORDER)} (default: all)")
    p.add_argument("--repo", type=Path, help="the asa checkout (default: the working folder)")
    p.add_argument("--work", type=Path, help="scratch folder for data and runs (default: a temporary one, removed)")
    p.add_argument("--inline", action="store_true", help="run the parts in this process (the dry run's default)")
    p.add_argument("--rows", type=Path, metavar="JSON", help="no run: the BENCHMARKS.md rows of this gpu_check.json")
    p.add_argument("--append-md", type=Path, metavar="PATH", help="with --rows: add the rows to this BENCHMARKS.md")
    p.add_argument("--part", choices=sorted(PARTS), help=argparse.SUPPRESS)  # one part, in a child process
    p.add_argument("--part-timeout", type=float, default=600.0, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.part is not None:  # a child process: one part, its result in the work folder
        signal.signal(signal.SIGTERM, stop_started)  # stopped from outside: take what it started along
        ctx = Context(repo=find_repo(args.repo), work=args.work, profile=PROFILES["dry" if args.dry_run else "gpu"],
                      timeout_s=args.part_timeout)
        result = run_inline(args.part, ctx)
        print(f"[gpu-check] part {args.part}: {result['status']}" + (f" ({result['error']})" if "error" in result else ""))
        return 0
    if args.rows is not None:
        rows = rows_of(json.loads(args.rows.read_text()))
        for row in rows:
            print(markdown_row(row))
            if args.append_md is not None:
                append_markdown(row, args.append_md)
        return 0 if rows else 1
    if args.out is None:
        raise SystemExit("--out is required (or --rows to print the rows of a finished check)")
    summary = run_check(args.out, dry_run=args.dry_run, budget_s=args.budget, repo=find_repo(args.repo),
                        work=args.work, parts=args.parts, isolate=False if args.inline else None, argv=argv)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
