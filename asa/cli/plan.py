"""``asa-plan``: wall time, GPU-hours, store size, page-cache RAM and loader workers of a pretraining run."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence

from asa.cli.help import kept_help
from asa.planning import (GIB, DeviceProfile, bytes_per_case, format_plan, plan_run, profile_from_json,
                               profile_from_markdown, samples_per_s_estimate)

_EPILOG = """device profile (one of, later ones filling what earlier ones lack):
  --benchmarks-md BENCHMARKS.md --device NAME   the last rows of that device: samples/s (results table)
                                                 and store crops/s per worker (Data loader table)
  --from-json FILE [FILE ...]                    benchmarks/speed.py --json outputs (a step run, a --loader run)
  --samples-per-s X --crops-per-worker Y         numbers
  --flops-per-sample F --peak-tflops T --utilization U   an estimate of samples/s without a GPU run:
                                                 T·1e12·U / F (the base step at 128³: 494 GFLOP per sample)

example (the paper's setting, estimated H100 figures):
  asa-plan --volumes 11993 --epochs 400 --batch 24 --gpus 4 --flops-per-sample 494e9 --peak-tflops 989 \\
           --utilization 0.4 --crops-per-worker 60 --box 144 176 144
"""


def _number(kind: type, *, low: float, low_open: bool = False, high: float | None = None):
    """An argparse type: a finite ``kind`` value >= ``low`` (> ``low`` when ``low_open``) and <= ``high``;
    argparse names the option in the refusal (exit 2)."""
    if low_open:
        wanted = f"a finite number > {low:g}"
    else:
        wanted = f"an integer >= {low:g}" if kind is int else f"a finite number >= {low:g}"
    if high is not None:
        wanted += f" and <= {high:g}"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {wanted}") from None
        if (not math.isfinite(value) or value < low or (low_open and value == low)
                or (high is not None and value > high)):
            raise argparse.ArgumentTypeError(f"{text} is not {wanted}")
        return value

    return parse


_COUNT = _number(int, low=1)
_POSITIVE = _number(float, low=0, low_open=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="asa-plan", description=__doc__.split("\n")[0].split(": ", 1)[1],
                                epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--volumes", type=_COUNT, required=True, help="training volumes")
    p.add_argument("--epochs", type=_COUNT, required=True)
    p.add_argument("--batch", type=_COUNT, required=True, help="batch per GPU")
    p.add_argument("--gpus", type=_COUNT, default=1)
    p.add_argument("--gpus-per-node", type=_COUNT, help="GPUs per node (default: all on one node)")
    p.add_argument("--workers-per-gpu", type=_COUNT, help="loader workers each GPU can have (CPU cores / GPUs)")
    p.add_argument("--ram-gib", type=_POSITIVE, help="page cache available per node, GiB (default: enough)")
    d = p.add_argument_group("device profile")
    d.add_argument("--benchmarks-md", help="a BENCHMARKS.md to read figures from (with --device)")
    d.add_argument("--device", help="substring of the device column of the rows to use")
    d.add_argument("--from-json", nargs="+", default=[], help="benchmarks/speed.py --json files")
    d.add_argument("--samples-per-s", type=_POSITIVE, help="training samples/s per GPU at --batch")
    d.add_argument("--flops-per-sample", type=_POSITIVE, help="step FLOPs per sample (forward + backward)")
    d.add_argument("--peak-tflops", type=_POSITIVE, help="the device's dense TFLOP/s at the run's precision")
    d.add_argument("--utilization", type=_number(float, low=0, low_open=True, high=1), default=0.4,
                   help="fraction of the peak sustained (default 0.4)")
    d.add_argument("--crops-per-worker", type=_POSITIVE, help="store loader crops/s per worker, page cache warm")
    d.add_argument("--cold-crops-per-worker", type=_POSITIVE, help="the same, cold (used when the store exceeds --ram-gib)")
    s = p.add_argument_group("store size (default: from a --loader JSON's store, else --box)")
    s.add_argument("--case-mib", type=_POSITIVE, help="store MiB per case")
    s.add_argument("--box", type=_COUNT, nargs=3, default=[144, 176, 144], metavar=("X", "Y", "Z"),
                   help="voxels of a case's stored box (default 144 176 144: a 1 mm brain with margin)")
    s.add_argument("--channels", type=_COUNT, default=1)
    s.add_argument("--dtype", default="float16", choices=("float16", "float32"), help="the store's image precision")
    return p


def _profile(args: argparse.Namespace) -> tuple[DeviceProfile, float | None, list[str]]:
    """(profile, store bytes per case or None, where the figures came from)."""
    found: dict = {}
    sources = []
    if args.benchmarks_md:
        if not args.device:
            raise ValueError("--benchmarks-md needs --device (a substring of the device column)")
        md = profile_from_markdown(args.benchmarks_md, args.device)
        found.update(md)
        sources += [f"{args.benchmarks_md}: " + ", ".join(md[k] for k in ("samples_row", "loader_row") if k in md)]
    for path in args.from_json:
        found.update({k: v for k, v in profile_from_json(path).items() if k not in found})
        sources.append(path)
    if args.samples_per_s is not None:
        found["samples_per_s"], found["batch"] = args.samples_per_s, args.batch
        sources.append("--samples-per-s")
    elif args.flops_per_sample is not None or args.peak_tflops is not None:
        if args.flops_per_sample is None or args.peak_tflops is None:
            raise ValueError("an estimate needs both --flops-per-sample and --peak-tflops")
        found["samples_per_s"] = samples_per_s_estimate(args.flops_per_sample, args.peak_tflops, args.utilization)
        found["batch"] = args.batch
        sources.append(f"estimate: {args.peak_tflops:g} TFLOP/s × {args.utilization:g} / "
                       f"{args.flops_per_sample / 1e9:g} GFLOP per sample")
    for key in ("crops_per_worker", "cold_crops_per_worker"):
        if getattr(args, key) is not None:
            found[key] = getattr(args, key)
            sources.append(f"--{key.replace('_', '-')}")
    missing = [name for key, name in (("samples_per_s", "--samples-per-s (or an estimate, --benchmarks-md, "
                                        "--from-json)"), ("crops_per_worker", "--crops-per-worker"))
               if key not in found]
    if missing:
        raise ValueError(f"the device profile lacks {' and '.join(missing)}")
    notes = []
    if found.get("batch") not in (None, args.batch):
        notes.append(f"samples/s was measured at batch {found['batch']}, the plan is at batch {args.batch}: "
                     "larger batches usually run faster per sample on a GPU")
    profile = DeviceProfile(found["samples_per_s"], found["crops_per_worker"], found.get("cold_crops_per_worker"),
                            source="; ".join(sources))
    return profile, found.get("case_bytes"), notes


def main(argv: Sequence[str] | None = None) -> int:
    kept_help("plan", argv, lambda: build_parser().format_help())
    args = build_parser().parse_args(argv)
    try:
        profile, measured_case_bytes, notes = _profile(args)
        if args.case_mib is not None:
            case_bytes = args.case_mib * 2**20
        elif measured_case_bytes is not None:
            case_bytes = measured_case_bytes
        else:
            case_bytes = bytes_per_case(tuple(args.box), channels=args.channels,
                                        image_bytes=2 if args.dtype == "float16" else 4)
        plan = plan_run(profile, volumes=args.volumes, epochs=args.epochs, batch=args.batch, gpus=args.gpus,
                        case_bytes=case_bytes, workers_per_gpu=args.workers_per_gpu,
                        gpus_per_node=args.gpus_per_node,
                        ram_bytes=None if args.ram_gib is None else args.ram_gib * GIB)
    except (ValueError, OSError) as err:
        print(f"asa-plan: error: {err}", file=sys.stderr)
        return 2
    plan.notes += notes
    print(format_plan(plan, profile, volumes=args.volumes, epochs=args.epochs, batch=args.batch, gpus=args.gpus,
                      case_bytes=case_bytes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
