"""Compute planning for a pretraining run (``asa-plan``): wall time, GPU-hours, store size, page-cache
RAM and loader workers, and which of them limits.

The arithmetic, for N volumes, E epochs, per-GPU batch B and G GPUs (``DistributedSampler`` and the
loader drop the remainders, as training does):

    steps per epoch       S = floor(floor(N / G) / B)
    samples per GPU/s     r = min(step rate s, loader rate W · c)     (W workers per GPU, c crops/s each;
                                                                        W unknown: as many as needed)
    workers needed / GPU  ceil(s / c)
    wall time             E · S · B / r
    GPU-hours             wall time · G
    store on disk         N · bytes per case
    page cache wanted     the whole store, per node (every epoch reads every case; each node's
                          ranks draw from all of them over the epochs)

When the store does not fit the page cache (``ram_bytes`` given and smaller) the loader runs at its
cold rate (``cold_crops_per_worker``, if known).

Wall time and GPU-hours are estimates: the step rate s is one GPU's, timed on synthetic batches
(``benchmarks/speed.py``, ``python -m benchmarks.gpu``) or derived from FLOPs. They leave out DDP
gradient communication between GPUs, validation (loss, probes), checkpoint writes and start-up,
and they assume every epoch runs (early stopping can end the run sooner).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ESTIMATE_CAVEATS", "DeviceProfile", "Plan", "plan_run", "format_plan", "profile_from_json",
           "profile_from_markdown", "samples_per_s_estimate", "bytes_per_case"]

GIB = 2**30


@dataclass
class DeviceProfile:
    """What one GPU and one loader worker deliver: training ``samples_per_s`` per GPU at the plan's
    batch, and store-loader crops/s per worker (page cache warm; cold when the store does not fit)."""

    samples_per_s: float
    crops_per_worker: float
    cold_crops_per_worker: float | None = None
    source: str = "command line"


@dataclass
class Plan:
    steps_per_epoch: int
    samples_per_s_per_gpu: float  # what each GPU actually gets: min(step, loader)
    wall_s: float
    gpu_hours: float
    store_bytes: float
    page_cache_bytes: float  # per node
    workers_needed_per_gpu: int
    limit: str  # "GPU step" | "loader workers" | "page cache (cold reads)"
    loader_rate_per_gpu: float | None  # W · c when W is known
    notes: list[str]


def samples_per_s_estimate(flops_per_sample: float, peak_tflops: float, utilization: float) -> float:
    """Samples/s of a device that sustains ``utilization`` of ``peak_tflops`` on a step of
    ``flops_per_sample`` (forward + backward FLOPs per sample)."""
    return peak_tflops * 1e12 * utilization / flops_per_sample


def bytes_per_case(box: tuple[int, int, int], *, channels: int = 1, image_bytes: int = 2) -> float:
    """Store bytes of one case whose arrays cover ``box`` voxels: the image (``channels`` ×
    ``image_bytes``) and the uint8 brain mask."""
    return math.prod(box) * (channels * image_bytes + 1)


def plan_run(profile: DeviceProfile, *, volumes: int, epochs: int, batch: int, gpus: int, case_bytes: float,
             workers_per_gpu: int | None = None, gpus_per_node: int | None = None,
             ram_bytes: float | None = None) -> Plan:
    """The plan (see the module docstring for the arithmetic)."""
    if min(volumes, epochs, batch, gpus) < 1:
        raise ValueError(f"volumes, epochs, batch and gpus must be >= 1, got {volumes}, {epochs}, {batch}, {gpus}")
    rates = {"samples/s per GPU": profile.samples_per_s, "crops/s per worker": profile.crops_per_worker,
             "cold crops/s per worker": profile.cold_crops_per_worker, "store bytes per case": case_bytes,
             "page-cache bytes": ram_bytes}
    bad = [f"{name} {value}" for name, value in rates.items()
           if value is not None and not (math.isfinite(value) and value > 0)]
    if bad:
        raise ValueError(f"{', '.join(bad)}: expected finite numbers > 0")
    steps = (volumes // gpus) // batch
    if steps < 1:
        raise ValueError(f"{volumes} volumes on {gpus} GPU(s) at batch {batch} give no full step per epoch")
    notes = []
    store = volumes * case_bytes
    nodes = 1 if gpus_per_node is None else math.ceil(gpus / gpus_per_node)
    crops, cold = profile.crops_per_worker, False
    if ram_bytes is not None and store > ram_bytes:
        if profile.cold_crops_per_worker is None:
            notes.append(f"the store ({store / GIB:.0f} GiB) exceeds the page cache ({ram_bytes / GIB:.0f} GiB): "
                         "reads are cold, but no cold crops/s was given; the warm figure is used")
        else:
            crops, cold = profile.cold_crops_per_worker, True
            notes.append(f"the store ({store / GIB:.0f} GiB) exceeds the page cache ({ram_bytes / GIB:.0f} GiB): "
                         "the loader's cold rate is used")
    needed = math.ceil(profile.samples_per_s / crops)
    loader_rate = None if workers_per_gpu is None else workers_per_gpu * crops
    if loader_rate is not None and loader_rate < profile.samples_per_s:
        rate, limit = loader_rate, "loader workers (cold reads: the store exceeds the page cache)" if cold else \
            "loader workers"
    else:
        rate, limit = profile.samples_per_s, "GPU step"
    if workers_per_gpu is None:
        notes.append(f"assumes {needed} loader worker(s) per GPU (set --workers-per-gpu to the CPUs you have)")
    wall = epochs * steps * batch / rate
    return Plan(steps_per_epoch=steps, samples_per_s_per_gpu=rate, wall_s=wall, gpu_hours=wall * gpus / 3600,
                store_bytes=store, page_cache_bytes=store, workers_needed_per_gpu=needed, limit=limit,
                loader_rate_per_gpu=loader_rate, notes=notes + ([f"{nodes} nodes: each wants the page cache above"]
                                                               if nodes > 1 else []))


def _duration(seconds: float) -> str:
    hours = seconds / 3600
    return f"{hours:.1f} h ({hours / 24:.1f} days)" if hours >= 24 else f"{hours:.2f} h ({seconds / 60:.0f} min)"


ESTIMATE_CAVEATS = (
    "* estimated: epochs × steps at the profile's samples/s per GPU, a training step timed on one GPU",
    "  with synthetic batches (or a FLOP estimate). Left out: DDP gradient communication between GPUs,",
    "  validation and probe rounds, checkpoint writes, start-up; early stopping can end the run sooner.",
)
"""What the wall time and GPU-hours of `format_plan` do not count (printed under the plan)."""


def format_plan(plan: Plan, profile: DeviceProfile, *, volumes: int, epochs: int, batch: int, gpus: int,
                case_bytes: float | None = None) -> str:
    """The plan as printed by ``asa-plan``: wall time and GPU-hours marked as estimates, with what
    they leave out (`ESTIMATE_CAVEATS`); ``case_bytes``: the store bytes per case, printed if given."""
    lines = [
        f"plan: {volumes} volumes × {epochs} epochs, batch {batch} per GPU × {gpus} GPU(s) "
        f"(global batch {batch * gpus}, {plan.steps_per_epoch} steps/epoch)",
        f"  device profile ({profile.source}): {profile.samples_per_s:.1f} samples/s per GPU, "
        f"{profile.crops_per_worker:.1f} crops/s per loader worker"
        + (f" ({profile.cold_crops_per_worker:.1f} cold)" if profile.cold_crops_per_worker else ""),
        f"  wall time            {_duration(plan.wall_s)}, estimated*",
        f"  GPU-hours            {plan.gpu_hours:.1f}, estimated*",
        f"  store on disk        {plan.store_bytes / GIB:.1f} GiB",
        *([f"  store per case       {case_bytes / 2**20:.2f} MiB"] if case_bytes is not None else []),
        f"  page cache wanted    {plan.page_cache_bytes / GIB:.1f} GiB per node (the whole store)",
        f"  loader workers       {plan.workers_needed_per_gpu} per GPU to keep up "
        f"({plan.workers_needed_per_gpu * gpus} in all)",
        f"  samples/s per GPU    {plan.samples_per_s_per_gpu:.1f}"
        + (f" (loader: {plan.loader_rate_per_gpu:.1f} with the workers given)" if plan.loader_rate_per_gpu else ""),
        f"  limited by           {plan.limit}",
    ]
    return "\n".join(lines + [f"  note: {n}" for n in plan.notes] + [f"  {line}" for line in ESTIMATE_CAVEATS])


def profile_from_json(path: str | Path) -> dict[str, Any]:
    """Figures from a ``benchmarks/speed.py --json`` file: ``samples_per_s`` (the ASA step's,
    ``asa_samples_per_s``, at that run's batch), ``crops_per_worker`` / ``cold_crops_per_worker``
    (a ``--loader`` run's store figures); whichever the file has."""
    r = json.loads(Path(path).read_text())
    out: dict[str, Any] = {}
    if "asa_samples_per_s" in r:
        out["samples_per_s"] = float(r["asa_samples_per_s"])
        out["batch"] = int(r["batch"])
    if "store_warm_crops_per_s_per_worker" in r:
        out["crops_per_worker"] = float(r["store_warm_crops_per_s_per_worker"])
        if "store_cold_crops_per_s_per_worker" in r:
            out["cold_crops_per_worker"] = float(r["store_cold_crops_per_s_per_worker"])
        if r.get("store_bytes") and r.get("volumes"):
            out["case_bytes"] = r["store_bytes"] / r["volumes"]
    return out


def _tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """Markdown tables as (header cells, rows of cells)."""
    out, lines = [], text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("|") and i + 1 < len(lines) and re.match(r"^\|\s*-", lines[i + 1]):
            cells = lambda line: [c.strip() for c in line.strip().strip("|").split("|")]  # noqa: E731
            header, rows = cells(lines[i]), []
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(cells(lines[i]))
                i += 1
            out.append((header, rows))
        else:
            i += 1
    return out


def _number(cell: str) -> float:
    match = re.match(r"\s*([0-9.]+)", cell)
    if match is None:
        raise ValueError(f"no number in {cell!r}")
    return float(match.group(1))


def profile_from_markdown(path: str | Path, device: str) -> dict[str, Any]:
    """Figures from the last BENCHMARKS.md rows whose device column contains ``device``: the results
    table's ``samples/s`` (with its ``batch``) and the "Data loader" table's store crops/s per worker
    (warm, and cold in brackets); whichever exists."""
    out: dict[str, Any] = {}
    for header, rows in _tables(Path(path).read_text()):
        if "device" not in header:
            continue
        col = header.index("device")
        mine = [r for r in rows if len(r) == len(header) and device.lower() in r[col].lower()]
        if not mine:
            continue
        row = dict(zip(header, mine[-1]))
        if "samples/s" in row:
            out["samples_per_s"], out["batch"] = _number(row["samples/s"]), int(_number(row["batch"]))
            out["samples_row"] = f"{row['date']} {row['device']} {row.get('size', '')}"
        key = next((h for h in header if h.startswith("store crops/s/worker")), None)
        if key is not None:
            out["crops_per_worker"] = _number(row[key])
            cold = re.search(r"\(([0-9.]+)\)", row[key])
            if cold:
                out["cold_crops_per_worker"] = float(cold.group(1))
            out["loader_row"] = f"{row['date']} {row['device']}"
    if not out:
        raise ValueError(f"{path}: no row whose device contains {device!r}")
    return out
