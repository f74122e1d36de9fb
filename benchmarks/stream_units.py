"""The bit-preserving route for a draw's units in one process: each unit its own dense network and kernels.

The fused mode (`asa.train.fused`) trains K units as one vmapped network: each convolution one grouped convolution,
its numbers a unit's to float rounding, not bit for bit. On one H200 it reached 70.9 unit-steps/s for K = 14 in one
process and 192.3 for 8 such processes, against 175.6 for 16 processes of one unit
(benchmarks/results/fused-units-h200-2026-11-29). The other route keeps every unit's own kernels, so a unit's
numbers stay those of its own process, and lets the device run the units' small kernels side by side instead of in
turns. This measures that route before it is built into the engine. Every mode trains K units of the gpu scale's
shapes (`benchmarks.fusion_host.make_unit`: ResEnc S, 32³ crops, batch 2, each its own initial weights, AdamW,
clipping and GradScaler) on the batch they share (one loader per draw), a group step being every unit's forward,
loss and backward, then every unit's update (`asa.train.step.apply_steps`: the one host read of the step):

- ``eager``: the units' forward, loss and backward one after another on one stream, as one process runs them;
- ``streams``: each unit's on a CUDA stream of its own;
- ``graphs``: each unit's forward, loss and backward captured once as a CUDA graph and replayed every step (the
  host launches one graph a unit instead of its kernels), one after another on one stream;
- ``graph_streams``: those graphs, each replayed on a stream of its own.

``streams``, ``graphs`` and ``graph_streams`` need CUDA; on a CPU the run is the dry run of ``eager``. Each row, one
mode at one K: ``unit_steps_per_s`` over ``--seconds`` after ``--warmup`` group steps (the device synchronised at
both ends), the memory torch held for the group meanwhile (``peak_gib``, CUDA: its peak reserved, the graphs'
pools included), and ``max_abs_diff``: after ``--check-steps`` group steps
on distinct batches, the largest absolute difference between any unit's weights and those of a copy of it trained
alone, its own process's way (eager, `OptimizerStep.accumulate`). 0.0 is the route preserving bits. The ``alone``
row (one unit, ``eager``) is the unit as its own process trains it: its ``max_abs_diff`` is two copies trained alone,
0.0 where the kernels repeat themselves (the study's default, `asa.train.rng.kernel_determinism`, under which every
row runs). A mode that fails gets its row with the
``error`` instead, and the other modes still run.

    python -m benchmarks.stream_units --device cuda --ks 4 14 --json OUT.json     # about 2 minutes on one H200
    python -m benchmarks.stream_units --ks 2 --size tiny --crop 16 --seconds 1   # the dry run on a CPU
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from asa.train.rng import kernel_determinism
from asa.train.step import Accumulated, OptimizerStep, StepValues, apply_steps
from benchmarks.fusion_host import batch_of, finish, make_unit, step_fn

MODES = ("eager", "streams", "graphs", "graph_streams")
CUDA_ONLY = frozenset(MODES[1:])
GRAPH_WARMUP = 3  # eager forward-and-backward passes before a capture (cuDNN's and cuBLAS's workspaces, the scaler)

Unit = tuple[nn.Module, OptimizerStep]


class Group:
    """K units training on the batches they share, in one of `MODES`: `step` is one group step."""

    def __init__(self, units: Sequence[Unit], mode: str, device: torch.device) -> None:
        if mode not in MODES:
            raise ValueError(f"mode {mode!r}: expected one of {', '.join(MODES)}")
        if mode in CUDA_ONLY and device.type != "cuda":
            raise ValueError(f"mode {mode!r} needs CUDA streams or graphs: expected --device cuda, got {device}")
        self.units, self.mode, self.device = list(units), mode, device
        self.streams = [torch.cuda.Stream(device) for _ in self.units] if mode.endswith("streams") else None
        self.graphs: list[torch.cuda.CUDAGraph] = []
        self.static: dict[str, torch.Tensor] = {}
        self.captured: list[Accumulated] = []  # each graph's losses and logs: its outputs, rewritten at each replay
        self.grads: list[list[torch.Tensor | None]] = []  # each graph's gradients, in its network's parameter order

    def step(self, batch: dict[str, torch.Tensor]) -> list[StepValues]:
        """Every unit's forward, loss and backward on ``batch`` in this group's mode, then every unit's update."""
        if self.mode.startswith("graph"):
            if not self.graphs:
                self._capture(batch)
            for name, tensor in batch.items():
                self.static[name].copy_(tensor)
        main = torch.cuda.current_stream(self.device) if self.device.type == "cuda" else None
        accs = []
        for k, (net, opt) in enumerate(self.units):
            on = contextlib.nullcontext() if self.streams is None else torch.cuda.stream(self.streams[k])
            if self.streams is not None:
                self.streams[k].wait_stream(main)  # the batch, and the weights the last update wrote
            with on:
                if self.graphs:
                    self.graphs[k].replay()
                    for p, grad in zip(net.parameters(), self.grads[k]):
                        p.grad = grad  # the update drops its .grad (set_to_none): the graph's own tensors again
                    accs.append(self.captured[k])
                else:
                    accs.append(opt.accumulate(net, step_fn, [batch], distributed=False))
        for stream in self.streams or ():
            main.wait_stream(stream)
        return apply_steps([(opt, 0, acc) for (_, opt), acc in zip(self.units, accs)])

    def _capture(self, batch: dict[str, torch.Tensor]) -> None:
        """Each unit's forward, loss and backward on the static batch as a CUDA graph, after `GRAPH_WARMUP` eager
        passes on a side stream (torch.cuda.graphs' rule); the weights are not updated by them. Each graph has a
        memory pool of its own: replayed side by side, they must not share one."""
        self.static = {name: tensor.clone() for name, tensor in batch.items()}
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(GRAPH_WARMUP):
                for net, opt in self.units:
                    opt.accumulate(net, step_fn, [self.static], distributed=False)
                    opt.skip()
        torch.cuda.current_stream(self.device).wait_stream(side)
        for net, opt in self.units:
            opt.skip()  # no .grad: the capture's backward allocates them in the graph's pool
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self.captured.append(opt.accumulate(net, step_fn, [self.static], distributed=False))
            self.graphs.append(graph)
            self.grads.append([p.grad for p in net.parameters()])


def units_of(k: int, shapes: dict, *, device: torch.device, amp: str, seed: int = 0) -> list[Unit]:
    """``k`` units of ``shapes``, unit j's initial weights drawn from ``seed + j``."""
    units = []
    for j in range(k):
        torch.manual_seed(seed + j)
        units.append(make_unit(**shapes, device=device, amp=amp))
    return units


def twin(unit: Unit) -> Unit:
    """A copy of ``unit`` (its network and its update: the optimiser holds the copy's parameters)."""
    return copy.deepcopy(unit)


def train_alone(unit: Unit, batches: Sequence[dict]) -> None:
    """``unit`` trained on ``batches`` as its own process trains it."""
    net, opt = unit
    for batch in batches:
        apply_steps([(opt, 0, opt.accumulate(net, step_fn, [batch], distributed=False))])


def max_abs_diff(a: nn.Module, b: nn.Module) -> float:
    """The largest absolute difference between two networks' weights."""
    with torch.no_grad():
        return max(float((p - q).abs().max()) for p, q in zip(a.parameters(), b.parameters()))


def exactness(group: Group, batches: Sequence[dict]) -> float:
    """After ``batches``, one group step each, the largest difference between any of ``group``'s units' weights and
    those of its copy, taken before, trained alone on the same batches (`train_alone`)."""
    twins = [twin(unit) for unit in group.units]
    for batch in batches:
        group.step(batch)
    for copied in twins:
        train_alone(copied, batches)
    return max(max_abs_diff(net, copied) for (net, _), (copied, _) in zip(group.units, twins))


def rate(group: Group, batches: Sequence[dict], *, seconds: float, warmup: int) -> float:
    """Unit-steps a second: group steps over at least ``seconds`` (at least one), after ``warmup``, on ``batches``
    in turn."""
    for j in range(warmup):
        group.step(batches[j % len(batches)])
    finish(group.device)
    steps, start = 0, time.perf_counter()
    while steps == 0 or time.perf_counter() - start < seconds:
        group.step(batches[steps % len(batches)])
        steps += 1
    finish(group.device)
    return len(group.units) * steps / (time.perf_counter() - start)


def row(k: int, mode: str, shapes: dict, batches: Sequence[dict], *, device: torch.device, amp: str,
        seconds: float, warmup: int, check_steps: int) -> dict:
    """One mode at one K (module docstring), on ``batches`` (the bit check on the first ``check_steps``); a mode
    that fails: its ``error``."""
    out = {"k": k, "mode": mode}
    try:
        group = Group(units_of(k, shapes, device=device, amp=amp), mode, device)
        out["max_abs_diff"] = exactness(group, batches[:check_steps])
        if device.type == "cuda":  # the group's own memory: the bit check's copies gone, the graphs' pools held
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        out["unit_steps_per_s"] = round(rate(group, batches, seconds=seconds, warmup=warmup), 2)
        if device.type == "cuda":
            out["peak_gib"] = round(torch.cuda.max_memory_reserved(device) / 2**30, 2)
    except Exception as err:  # noqa: BLE001 -- a mode's failure is its row's finding; the other modes still run
        out["error"] = f"{type(err).__name__}: {err}"
        if device.type == "cuda":  # a capture that failed can leave its stream current
            torch.cuda.set_stream(torch.cuda.default_stream(device))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.stream_units", description=__doc__.split("\n\n")[0])
    p.add_argument("--ks", type=int, nargs="+", default=[4, 14])
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES),
                   help="the modes to measure (default all; on a CPU those that need CUDA are left out)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", default="auto", help="trainer.amp (default auto: fp16 on CUDA, as the gpu scale's units)")
    p.add_argument("--size", default="S", help="the ResEnc's model.size (default S, the gpu scale's)")
    p.add_argument("--crop", type=int, default=32)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--in-channels", type=int, default=4)
    p.add_argument("--out-channels", type=int, default=3)
    p.add_argument("--seconds", type=float, default=8.0, help="each row's timed window (default 8)")
    p.add_argument("--warmup", type=int, default=3, help="group steps before each window (default 3)")
    p.add_argument("--check-steps", type=int, default=3, help="group steps of the bit check (default 3)")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    if bad := [k for k in args.ks if k < 1]:
        p.error(f"--ks {' '.join(map(str, bad))}: expected at least 1")
    if args.check_steps < 1:
        p.error(f"--check-steps {args.check_steps}: expected at least 1")
    device = torch.device(args.device)
    modes = [m for m in args.modes if device.type == "cuda" or m not in CUDA_ONLY]
    shapes = dict(size=args.size, crop=args.crop, in_channels=args.in_channels, out_channels=args.out_channels)
    doc = {"torch": torch.__version__, "device": torch.cuda.get_device_name(device) if device.type == "cuda"
           else str(device), "amp": args.amp, "unit": f"ResEnc {args.size}, {args.crop}³, batch {args.batch}",
           "seconds": args.seconds, "check_steps": args.check_steps,
           "left_out": sorted(set(args.modes) - set(modes)), "rows": []}

    def write() -> None:  # after each row: a run stopped by its time limit keeps what it measured
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(doc, indent=1) + "\n")

    with kernel_determinism(True, device):
        batches = [batch_of(batch=args.batch, crop=args.crop, in_channels=args.in_channels,
                            out_channels=args.out_channels, device=device, seed=s)
                   for s in range(max(args.check_steps, 2))]
        timing = dict(device=device, amp=args.amp, seconds=args.seconds, warmup=args.warmup,
                      check_steps=args.check_steps)
        alone = row(1, "eager", shapes, batches, **timing)
        doc["alone"] = alone
        print(f"stream_units: one unit alone {alone.get('unit_steps_per_s', alone.get('error'))} unit-steps/s; "
              f"two copies trained alone differ by {alone.get('max_abs_diff')}", flush=True)
        write()
        for mode in modes:  # the graphs last: a capture that fails cannot disturb the other modes' rows
            for k in args.ks:
                r = row(k, mode, shapes, batches, **timing)
                doc["rows"].append(r)
                print(f"stream_units: K={k:>3} {mode:<13} " + (f"error {r['error']}" if "error" in r else
                      f"{r['unit_steps_per_s']:8.2f} unit-steps/s, weights off a unit alone by {r['max_abs_diff']}"
                      + (f", peak {r['peak_gib']} GiB" if "peak_gib" in r else "")), flush=True)
                write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
