"""The host's share of a fine-tuning unit's step, alone and fused: the step's dispatch without its arithmetic.

On one GPU the gpu scale's unit (ResEnc S, 32³ crops, batch 2) does about 4 ms of device work a step, and takes
60 ms (benchmarks/results/fused-units-h200-2026-11-28): the step is bound by the host, which launches its kernels. That
share can be measured on any machine: on PyTorch's ``meta`` device every operator runs its shape logic and none of
its arithmetic, so the time a step takes there is the time spent getting its kernels to the device (Python, the
dispatcher, autograd and, fused, the vmap). It is a gauge, not CUDA's launch cost: for operators without a C++ meta
kernel the meta path runs PyTorch's Python reference (``torch._refs``), which CUDA does not, and a launch's own
cost is not in it; read ratios measured side by side, alone against fused. For each K of ``--ks``:

- ``alone_ms``: one unit's forward, loss and backward (`asa.train.step.OptimizerStep.accumulate`), as its own
  process runs it;
- ``stack_ms``: the fused step's stacking of the K units' parameters (`asa.models.units.stack`);
- ``fused_ms``: the K units' forward, loss and backward as one vmapped step (`Stacked.accumulate`, the stacking
  included), and ``fused_ms_per_unit``, that over K.

The optimiser steps (one per unit, alone and fused) read their values to the host and are not timed here. They are
counted: ``ops_alone`` and ``ops_fused_per_unit`` are the operators a whole unit-step dispatches (forward, loss,
backward and the update: `asa.train.step.apply_steps`), one unit alone and the K fused, over K. A count is the same
on every machine, and on a GPU each is a launch or at least a trip through the dispatcher. The forward and backward
are counted on meta tensors (the same operators as on a device; a count does not depend on the arithmetic), the
updates on CPU units of the same shapes (one and two: each unit's own clipping and AdamW, so K units' count is the
first's and K - 1 times what a second adds): they read values to the host, which meta tensors cannot.
``reads_alone`` and ``reads_fused_per_unit`` are those host reads a unit-step; on a GPU each waits for the device
to finish what was launched before it.

With ``--validation X Y Z`` each row also counts a validation round on one case of that shape (the study's
validation: whole-volume sliding windows of the crop, ``task.overlap=0``, 2 windows a pass, the Dice read on the
host): ``val_ops_alone`` and ``val_reads_alone`` for one unit validated alone, ``val_ops_fused_per_unit`` and
``val_reads_fused_per_unit`` for the K units validated as one (`asa.models.units.Units`: the case cut into windows and
blended once, the K networks one vmapped forward a pass), over K. They are counted on CPU units with their arithmetic
(the windows are cut, blended and scored on the host, which meta tensors cannot): K = 14 at ResEnc S on a 68 × 72 × 80
case takes minutes.

With ``--profile`` each K's row is instead the whole unit-step run with its arithmetic on ``--device`` (its
``--amp``; the update included: each unit's clipping, the one host read and AdamW), alone and K fused: its wall
milliseconds (``alone_wall_ms``, ``fused_wall_ms_per_unit``: medians of ``--repeats``, the device synchronised) and
one step under `torch.profiler` by family (`STEP_FAMILIES`): on CUDA each kernel's device milliseconds and the
kernels launched (``alone_device_ms``, ``fused_device_ms_per_unit``, ``alone_kernels``, ``fused_kernels_per_unit``),
on a CPU each operator's own milliseconds and the operators (a dry run of the same code). On a GPU shared by
processes in turn, a fused group's rate is bounded by its device milliseconds a unit-step (``device_bound_unit_steps_per_s``),
and its host's share is the wall time beyond them.

    python -m benchmarks.fusion_host --ks 1 14 56 --json OUT.json        # ResEnc S, medians of --repeats
    python -m benchmarks.fusion_host --ks 1 4 14 --validation 68 72 80   # and a validation round's counts
    python -m benchmarks.fusion_host --ks 14 --profile --device cuda     # where a fused step's device time goes
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from asa.api.tasks.segmentation import DiceValidator
from asa.data import Task
from asa.models.cnn.resenc import resenc_unet
from asa.models.units import Units, stack
from asa.train.distributed import DistEnv
from asa.train.fused import Stacked
from asa.train.optim import build_optimizer
from asa.train.step import OptimizerStep, apply_steps
from benchmarks.compile_ab import family
from benchmarks.loop import SYNC_CALLS

META = torch.device("meta")
# a unit-step's kernels (CUDA) or operators (CPU) by what they do, the first that matches: the clipping's norm is the
# update's (foreach); cuDNN's layout transposes around a convolution and its batch norms (the vmapped instance
# norms) are named before its convolutions, implicit GEMMs
STEP_FAMILIES = (("update (clipping, AdamW)", ("adam", "multi_tensor", "foreach", "lerp", "addcdiv")),
                 ("layout (cuDNN's transposes)", ("nchwtonhwc", "nhwctonchw")),
                 ("norm", ("norm", "welford", "bn_fw", "bn_bw")),
                 ("convolution", ("conv", "fprop", "dgrad", "wgrad", "implicit", "cudnn", "xmma", "gemm", "cutlass",
                                  "sm90")),
                 ("copy / cast", ("copy", "cast", "clone", "contiguous", "cat", "stack")),
                 ("loss", ("softmax", "nll")))


def step_fn(net: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The unit's loss on its logits (cross-entropy; the study's Dice + CE differs in a few elementwise ops)."""
    out = net(batch["x"])
    out = out[0] if isinstance(out, (list, tuple)) else out
    loss = nn.functional.cross_entropy(out.float(), batch["y"])
    return loss, {"ce": loss.detach()}


def make_unit(*, size: str, crop: int, in_channels: int, out_channels: int, device: torch.device,
              amp: str) -> tuple[nn.Module, OptimizerStep]:
    """A fine-tuning unit of the benchmark's shapes on ``device``: the ResEnc and its update (AdamW, clipping at 1,
    a GradScaler where ``amp`` is fp16 on CUDA), as a unit's own process builds them."""
    net = resenc_unet(img_size=crop, in_channels=in_channels, out_channels=out_channels, size=size).to(device)
    return net, OptimizerStep(build_optimizer(net, name="adamw", lr=1e-3, weight_decay=0.01), amp=amp,
                              device=device, accum_steps=1, clip_grad=1.0)


def batch_of(*, batch: int, crop: int, in_channels: int, out_channels: int, device: torch.device,
             seed: int = 0) -> dict[str, torch.Tensor]:
    """A batch of the benchmark's shapes drawn from ``seed``, on ``device``."""
    generator = torch.Generator().manual_seed(seed)
    return {"x": torch.randn(batch, in_channels, crop, crop, crop, generator=generator).to(device),
            "y": torch.randint(0, out_channels, (batch, crop, crop, crop), generator=generator).to(device)}


class _Count(TorchDispatchMode):
    """The operators dispatched while it is entered (``n``)."""

    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n += 1
        return func(*args, **(kwargs or {}))


def count_ops(fn) -> int:
    """The operators ``fn()`` dispatches (after a first call that builds what later calls reuse)."""
    fn()
    with _Count() as count:
        fn()
    return count.n


@dataclasses.dataclass(frozen=True)
class Update:
    """The units' updates of a step (`asa.train.step.apply_steps`), counted on CPU units of the benchmark's shapes:
    ``first`` operators for one unit, ``each`` more for every further unit (K units: first + (K - 1) × each), and
    the host reads of a step's updates, ``reads`` (the same for one unit as for two)."""

    first: int
    each: int
    reads: int

    def ops(self, k: int) -> int:
        return self.first + (k - 1) * self.each


class HostReads:
    """The reads of a tensor's values to the host while it is entered (``n``): the calls of
    `benchmarks.loop.SYNC_CALLS`, which on a GPU wait for the device, counted on any device."""

    def __enter__(self) -> HostReads:
        self.n, self.own = 0, {name: torch.Tensor.__dict__.get(name) for name in SYNC_CALLS}
        for name in SYNC_CALLS:
            setattr(torch.Tensor, name, self._counted(getattr(torch.Tensor, name)))
        return self

    def _counted(self, real):
        def read(tensor, *args, **kwargs):
            self.n += 1
            return real(tensor, *args, **kwargs)

        return read

    def __exit__(self, *exc) -> None:
        for name, own in self.own.items():
            if own is None:
                delattr(torch.Tensor, name)  # torch's C base class holds it: torch.Tensor as found
            else:
                setattr(torch.Tensor, name, own)


def _update(*, size: str, crop: int, batch: int, in_channels: int, out_channels: int) -> Update:
    """The operators and host reads of the update (`apply_steps`: each unit's clipping, the values' one read,
    AdamW) of one and of two CPU units of the benchmark's shapes."""
    counts = {}
    for k in (1, 2):
        units = [resenc_unet(img_size=crop, in_channels=in_channels, out_channels=out_channels, size=size)
                 for _ in range(k)]
        steps = [OptimizerStep(build_optimizer(u, name="adamw", lr=1e-3, weight_decay=0.01), amp="off",
                               device=torch.device("cpu"), accum_steps=1, clip_grad=1.0) for u in units]
        data = {"x": torch.randn(batch, in_channels, crop, crop, crop),
                "y": torch.randint(0, out_channels, (batch, crop, crop, crop))}

        def updates():
            accs = [step.accumulate(unit, step_fn, [data], distributed=False) for unit, step in zip(units, steps)]
            return lambda: apply_steps([(step, 0, acc) for step, acc in zip(steps, accs)])

        updates()()  # the first update makes AdamW's state
        update = updates()
        with _Count() as ops, HostReads() as reads:
            update()
        counts[k] = ops.n, reads.n
    if counts[1][1] != counts[2][1]:
        raise RuntimeError(f"the updates of 1 and 2 units read the device {counts[1][1]} and {counts[2][1]} times: "
                           "expected once a step for any number of units")
    return Update(first=counts[1][0], each=counts[2][0] - counts[1][0], reads=counts[1][1])


def validation(k: int, *, size: str, crop: int, in_channels: int, out_channels: int,
               shape: tuple[int, int, int]) -> dict:
    """A validation round's operators and host reads on one case of ``shape``, one CPU unit alone and ``k`` as one
    (module docstring), the ``val_*`` columns of a row."""
    classes = tuple(range(out_channels))
    task = Task("units", tuple(f"c{i}" for i in range(in_channels)), tuple(f"class{c}" for c in classes[1:]), False,
                out_channels, classes, class_values=classes)
    generator = torch.Generator().manual_seed(0)
    case = {"image": torch.randn(in_channels, *shape, generator=generator),
            "label": torch.randint(0, out_channels, (1, *shape), generator=generator)}
    validate = DiceValidator([case], task=task, roi_size=(crop,) * 3, env=DistEnv(), overlap=0.0, sw_batch_size=2)
    units = [resenc_unet(img_size=crop, in_channels=in_channels, out_channels=out_channels, size=size).eval()
             for _ in range(k)]
    fused = Units.of(units)
    counts = {}
    with torch.no_grad():
        for name, run in (("alone", lambda: validate(units[0])), ("fused", lambda: validate.of_units(fused, k))):
            ops = count_ops(run)
            with HostReads() as reads:
                run()
            counts[name] = ops, reads.n
    return {"val_ops_alone": counts["alone"][0], "val_ops_fused_per_unit": round(counts["fused"][0] / k, 1),
            "val_reads_alone": counts["alone"][1], "val_reads_fused_per_unit": round(counts["fused"][1] / k, 2)}


def _median_ms(fn, repeats: int, device: torch.device = META) -> float:
    fn()  # the first call builds what later calls reuse
    times = []
    for _ in range(repeats):
        finish(device)
        start = time.perf_counter()
        fn()
        finish(device)
        times.append(time.perf_counter() - start)
    return round(1e3 * statistics.median(times), 2)


def finish(device: torch.device) -> None:
    """Wait for what ``device`` was given (CUDA runs it after the call returns)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def by_family(run, device: torch.device) -> tuple[dict[str, float], dict[str, int]]:
    """One call of ``run()`` under `torch.profiler`: milliseconds and kernels (CUDA: device time; else each
    operator's own CPU time and the operators) by `STEP_FAMILIES`, costliest first."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    with profile(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]) as prof:
        run()
        finish(device)
    ms: dict[str, float] = {}
    kernels: dict[str, int] = {}
    for event in prof.key_averages():
        fam = family(event.key, STEP_FAMILIES)
        ms[fam] = ms.get(fam, 0.0) + (event.device_time_total if cuda else event.self_cpu_time_total) / 1e3
        kernels[fam] = kernels.get(fam, 0) + event.count
    return dict(sorted(ms.items(), key=lambda kv: -kv[1])), kernels


def step_profile(k: int, *, size: str, crop: int, batch: int, in_channels: int, out_channels: int, repeats: int,
                 device: torch.device, amp: str) -> dict:
    """One K's ``--profile`` row (module docstring): a unit alone and ``k`` fused (`Stacked`), each with its own
    AdamW, clipping and GradScaler, on one batch drawn once."""
    shapes = dict(size=size, crop=crop, in_channels=in_channels, out_channels=out_channels)
    data = batch_of(batch=batch, crop=crop, in_channels=in_channels, out_channels=out_channels, device=device)
    lone, lone_step = make_unit(**shapes, device=device, amp=amp)
    group, steps = zip(*(make_unit(**shapes, device=device, amp=amp) for _ in range(k)))
    stacked = Stacked(group, step_fn)

    def alone() -> None:
        apply_steps([(lone_step, 0, lone_step.accumulate(lone, step_fn, [data], distributed=False))])

    def fused() -> None:
        apply_steps([(step, 0, acc) for step, acc in zip(steps, stacked.accumulate(steps, [data]))])

    row = {"k": k, "alone_wall_ms": _median_ms(alone, repeats, device)}
    row["fused_wall_ms_per_unit"] = round(_median_ms(fused, repeats, device) / k, 2)
    for name, run, units in (("alone", alone, 1), ("fused", fused, k)):
        ms, kernels = by_family(run, device)
        per = "_per_unit" if name == "fused" else ""
        row[f"{name}_device_ms{per}"] = {fam: round(v / units, 3) for fam, v in ms.items()}
        row[f"{name}_kernels{per}"] = {fam: round(kernels[fam] / units, 1) for fam in ms}
    total = sum(row["fused_device_ms_per_unit"].values())
    row["device_bound_unit_steps_per_s"] = round(1e3 / total, 1) if total else None
    return row


def measure(k: int, *, size: str, crop: int, batch: int, in_channels: int, out_channels: int, repeats: int,
            update: Update) -> dict:
    """One K's row (module docstring; ``update``: the units' updates, `_update`)."""
    units = [resenc_unet(img_size=crop, in_channels=in_channels, out_channels=out_channels, size=size).to(META)
             for _ in range(k)]
    steps = [OptimizerStep(torch.optim.AdamW(u.parameters(), lr=1e-3), amp="off", device=META, accum_steps=1,
                           clip_grad=1.0) for u in units]
    data = {"x": torch.empty(batch, in_channels, crop, crop, crop, device=META),
            "y": torch.empty(batch, crop, crop, crop, dtype=torch.long, device=META)}
    stacked = Stacked(units, step_fn)
    alone = _median_ms(lambda: steps[0].accumulate(units[0], step_fn, [data], distributed=False), repeats)
    stacking = _median_ms(lambda: stack(units), repeats)
    fused = _median_ms(lambda: stacked.accumulate(steps, [data]), repeats)
    ops_alone = count_ops(lambda: steps[0].accumulate(units[0], step_fn, [data], distributed=False)) + update.ops(1)
    ops_fused = count_ops(lambda: stacked.accumulate(steps, [data])) + update.ops(k)
    return {"k": k, "alone_ms": alone, "stack_ms": stacking, "fused_ms": fused,
            "fused_ms_per_unit": round(fused / k, 2), "alone_over_fused_per_unit": round(alone / (fused / k), 2),
            "ops_alone": ops_alone, "ops_fused_per_unit": round(ops_fused / k, 1),
            "reads_alone": update.reads, "reads_fused_per_unit": round(update.reads / k, 3)}


def profile_rows(ks: list[int], shapes: dict, *, repeats: int, device: torch.device, amp: str) -> list[dict]:
    """``--profile``'s row of each K (`step_profile`), each printed as it ends."""
    rows = []
    for k in ks:
        r = step_profile(k, **shapes, repeats=repeats, device=device, amp=amp)
        print(f"fusion_host: K={k:>3} on {device}  wall alone {r['alone_wall_ms']:.2f} ms, fused "
              f"{r['fused_wall_ms_per_unit']:.2f} ms a unit-step; by family, alone {r['alone_device_ms']}; fused a "
              f"unit {r['fused_device_ms_per_unit']}", flush=True)
        rows.append(r)
    return rows


def counted_rows(ks: list[int], shapes: dict, *, repeats: int, case_shape: list[int] | None) -> list[dict]:
    """The meta step's row of each K (`measure`), with a validation round's counts on one case of ``case_shape``
    (None: none), each printed as it ends."""
    update = _update(**shapes)
    rows = []
    for k in ks:
        r = measure(k, **shapes, repeats=repeats, update=update)
        if case_shape:
            r.update(validation(k, **{n: v for n, v in shapes.items() if n != "batch"}, shape=tuple(case_shape)))
            print(f"fusion_host: K={k:>3}  a validation round on one case: operators alone {r['val_ops_alone']}, "
                  f"fused {r['val_ops_fused_per_unit']} a unit; host reads alone {r['val_reads_alone']}, fused "
                  f"{r['val_reads_fused_per_unit']} a unit", flush=True)
        print(f"fusion_host: K={k:>3}  alone {r['alone_ms']:8.2f} ms  stacking {r['stack_ms']:8.2f} ms  fused "
              f"{r['fused_ms']:8.2f} ms ({r['fused_ms_per_unit']:.2f} ms a unit)  operators a unit-step: alone "
              f"{r['ops_alone']}, fused {r['ops_fused_per_unit']}; host reads a unit-step: alone {r['reads_alone']}, "
              f"fused {r['reads_fused_per_unit']}", flush=True)
        rows.append(r)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.fusion_host", description=__doc__.split("\n\n")[0])
    p.add_argument("--ks", type=int, nargs="+", default=[1, 4, 14, 56])
    p.add_argument("--size", default="S", help="the ResEnc's model.size (default S, the gpu scale's)")
    p.add_argument("--crop", type=int, default=32)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--in-channels", type=int, default=4)
    p.add_argument("--out-channels", type=int, default=3)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--validation", type=int, nargs=3, metavar=("X", "Y", "Z"),
                   help="also count a validation round on one case of this shape (on CPU, with its arithmetic)")
    p.add_argument("--profile", action="store_true",
                   help="each K's whole step with its arithmetic on --device, by kernel family (module docstring)")
    p.add_argument("--device", default="cpu", help="--profile's device (default cpu)")
    p.add_argument("--amp", default="auto", help="--profile's trainer.amp (default auto: fp16 on CUDA)")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    if bad := [k for k in args.ks if k < 1]:
        p.error(f"--ks {' '.join(map(str, bad))}: expected at least 1")
    if args.validation and min(args.validation) < args.crop:
        p.error(f"--validation {' '.join(map(str, args.validation))}: expected a case at least the crop "
                f"({args.crop}) along every axis")
    if args.profile and args.validation:
        p.error("--profile and --validation: expected one of them (a step's profile, or the operators counted)")
    shapes = dict(size=args.size, crop=args.crop, batch=args.batch, in_channels=args.in_channels,
                  out_channels=args.out_channels)
    doc = {"torch": torch.__version__, "unit": f"ResEnc {args.size}, {args.crop}³, batch {args.batch}",
           "repeats": args.repeats}
    if args.profile:
        device = torch.device(args.device)
        doc["device"] = torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)
        doc["amp"] = args.amp
        doc["rows"] = profile_rows(args.ks, shapes, repeats=args.repeats, device=device, amp=args.amp)
    else:
        doc["rows"] = counted_rows(args.ks, shapes, repeats=args.repeats, case_shape=args.validation)
    if args.validation:
        doc["validation_case"] = args.validation
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
