"""What an encoder's pretraining cohort list costs a fine-tuning run's start and an ``asa-export`` of the encoder.

For each cohort size it writes a tiny ResEnc encoder (``model.safetensors`` carrying the cohort's summary) with its
list beside it (``cohort.json.gz``: each case one T1 with a digest and a fingerprint, as
``benchmarks.cohort_size`` makes them), then, each in a fresh process:

- *start*: what ``asa-finetune model.pretrained=<file>`` does with the list before training: the check of its 16
  validation and test cases (`asa.api.machinery.cohort.check_pretraining_overlap`) and the copy of the list into
  the run folder (`write_overlap`);
- *export*: ``asa-export <file> <folder>`` (the list carried into the model folder, ``--cohort digests``);

and reports each one's wall and CPU seconds and the process's peak resident memory (``ru_maxrss``) over what the
same process held before it (its imports). The 16-case cohort is the reference: what a large list adds is the difference.

    python -m benchmarks.cohort_start --cases 16 100000 --out /tmp/cohort_start
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _cpu() -> float:
    """CPU seconds of this process (user and system): on a machine shared with other jobs, what the work costs."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def make(out: Path, cases: int) -> Path:
    """The encoder folder of a ``cases``-case cohort (written once) and the 16 query cases."""
    import torch

    from asa.data import write_demo_dataset
    from asa.data.cohort import cohort_summary
    from asa.data.cohort_list import write_cohort_list
    from benchmarks.cohort_size import files, fingerprints, record
    from asa.models.cnn.resenc import resenc_unet

    folder = out / f"encoder-{cases}"
    if not (folder / "model.safetensors").is_file():
        cohort = record(cases, fingerprints(200))
        write_cohort_list(folder, cohort)
        torch.manual_seed(0)
        files(folder, resenc_unet(img_size=32, in_channels=1, out_channels=1, size="tiny"), cohort_summary(cohort))
        (folder / "checkpoint_final.pth").unlink()
    if not (out / "queries").is_dir():
        write_demo_dataset("bids", out / "queries", cases=16, size=32, seed=3)
    return folder


def start(folder: Path, out: Path) -> dict:
    from asa.api.machinery.cohort import check_pretraining_overlap, write_overlap
    from asa.data import discover

    cases = discover("bids", out / "queries")
    splits = {"val": cases[:8], "test": cases[8:]}
    run = out / f"run-{folder.name}"
    run.mkdir(exist_ok=True)
    before, clock, cpu = _rss_mb(), time.perf_counter(), _cpu()
    report = check_pretraining_overlap(folder / "model.safetensors", splits, accept=True)
    write_overlap(run, report)
    seconds = time.perf_counter() - clock
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": round(seconds, 1), "cpu_s": round(_cpu() - cpu, 1), "peak_mb": round(peak),
            "added_mb": round(peak - before),
            "kept_list_bytes": (run / "pretraining_cohort.json.gz").stat().st_size}


def export(folder: Path, out: Path) -> dict:
    import shutil

    from asa.api.export import export_model

    target = out / f"export-{folder.name}"
    shutil.rmtree(target, ignore_errors=True)
    before, clock, cpu = _rss_mb(), time.perf_counter(), _cpu()
    export_model(folder / "model.safetensors", target)
    seconds = time.perf_counter() - clock
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": round(seconds, 1), "cpu_s": round(_cpu() - cpu, 1), "peak_mb": round(peak),
            "added_mb": round(peak - before),
            "list_bytes": (target / "cohort.json.gz").stat().st_size}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, nargs="+", default=[16, 10**5])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--only", choices=("start", "export"), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.only:  # one measurement in this fresh process
        print(json.dumps((start if args.only == "start" else export)(args.folder, args.out)))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    for n in args.cases:
        folder = make(args.out, n)
        results[n] = {"list_bytes": (folder / "cohort.json.gz").stat().st_size}
        for what in ("start", "export"):
            done = subprocess.run([sys.executable, "-m", "benchmarks.cohort_start", "--out", str(args.out),
                                   "--only", what, "--folder", str(folder)], capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(f"{what} of {n} cases failed:\n{done.stderr[-3000:]}")
            results[n][what] = json.loads(done.stdout.strip().splitlines()[-1])
        print(n, json.dumps(results[n]), flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
