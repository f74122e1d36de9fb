"""The residual-encoder U-Net's steps beside each other and beside the SW-ViT's, in one process.

    python -m benchmarks.resenc --crop 64 --size tiny --batch 2 --repeats 5 [--swvit tiny] [--json out.json]
    python -m benchmarks.resenc --crop 128 --size M --batch 2 --swvit base      # the issue's 128³ rows (GPU)

Times, round by round (`benchmarks.harness.alternate`, so that load on a shared machine falls on every step
alike): ``masked``, the masked-convolution pretraining step of `resenc_pretrain` (masking, visible-only norms,
mask tokens, densify, attentive or uniform block loss); ``dense``, the same network with no mask (plain
convolutions and instance norms, the decoder on the encoder's skips, MSE over every voxel); ``finetune``,
`ResEncUNet`'s segmentation step (deep supervision, 2 classes); ``swvit``, the SW-ViT's ASA pretraining step at
the same crop (``--swvit``: its preset; ``none`` leaves it out); and two references of the machine's attainable
rate: a dense matmul and a 3³ convolution. Each step is forward, backward and AdamW (`benchmarks.speed.adamw`,
asa-pretrain's kernel), in fp32. Reported per
step: the median wall time, samples/s, process CPU time (which load on other processes disturbs less), peak
memory (CUDA: allocated; CPU: resident set) and the fraction of the timed convolution (CNN steps) or matmul
(SW-ViT step) rate its counted FLOPs reach. The target of the masked step: at most 1.15× the dense step.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from asa.models import PRESETS, build_network
from benchmarks.harness import Workload, alternate, matmul_workload
from benchmarks.speed import Setup, adamw, asa_workloads, train_workload


def dense_loss(net, x: torch.Tensor) -> torch.Tensor:
    """The unmasked step's loss: the encoder without a mask, the decoder on its skips, MSE over every voxel."""
    net.decoder.deep_supervision = False
    return torch.nn.functional.mse_loss(net.decoder(net.encoder(net.with_coordinates(x))), x)


def conv_workload(device: torch.device, crop: int, batch: int) -> Workload:
    """A 3³ convolution, 32 -> 32 channels at the crop's full resolution (the ResEnc's first stage): the
    machine's attainable convolution rate (FLOPs counted by the harness)."""
    conv = torch.nn.Conv3d(32, 32, 3, padding=1, bias=False).to(device)
    x = torch.randn(batch, 32, crop, crop, crop, device=device)

    def run() -> None:
        with torch.no_grad():
            conv(x)

    return Workload("conv", run)


def cpu_timed(workload: Workload, cpu: list[float]) -> Workload:
    """``workload`` whose every run also appends its process CPU time to ``cpu``."""
    run = workload.run

    def timed() -> None:
        start = time.process_time()
        run()
        cpu.append(time.process_time() - start)

    workload.run = timed
    return workload


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--size", default="tiny", choices=("tiny", "M", "L"))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--weighting", default="attentive", choices=("uniform", "attentive"))
    parser.add_argument("--swvit", default="tiny", choices=(*PRESETS, "none"),
                        help="the SW-ViT preset whose ASA pretraining step is timed beside (none: left out)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    setup = Setup(device, args.crop, args.batch, PRESETS["tiny" if args.swvit == "none" else args.swvit])
    net = build_network({"arch": "resenc_pretrain", "kwargs": {"img_size": args.crop, "size": args.size,
                                                               "loss_weighting": args.weighting}}).to(device)
    seg = build_network({"arch": "resenc", "kwargs": {"img_size": args.crop, "in_channels": 1, "out_channels": 2,
                                                      "size": args.size}}).to(device).train()
    x = torch.randn(args.batch, 1, args.crop, args.crop, args.crop, device=device)
    label = torch.randint(0, 2, (args.batch, args.crop, args.crop, args.crop), device=device)

    def finetune_loss() -> torch.Tensor:
        outs = seg(x)  # one output per supervised resolution (a single tensor when there is one)
        return sum(torch.nn.functional.cross_entropy(o, torch.nn.functional.interpolate(
            label[:, None].float(), size=o.shape[2:]).long()[:, 0]) for o in ([outs] if torch.is_tensor(outs) else outs))

    # every step with the optimiser asa-pretrain runs (AdamW, its multi-tensor kernel), the SW-ViT's too
    work = [train_workload("masked", setup, net, adamw(net, args.batch), lambda: net(x).loss),
            train_workload("dense", setup, net, adamw(net, args.batch), lambda: dense_loss(net, x)),
            train_workload("finetune", setup, seg, adamw(seg, args.batch), finetune_loss)]
    if args.swvit != "none":
        work.append(asa_workloads(setup, x)[0])
        work[-1].name = "swvit"
    work += [conv_workload(device, args.crop, args.batch), matmul_workload(device, 4096 if device.type == "cpu" else 8192)]
    cpu: dict[str, list[float]] = {w.name: [] for w in work}
    for w in work:
        cpu_timed(w, cpu[w.name])
    steps = [w.name for w in work if w.name not in ("conv", "matmul")]
    alternate(work, device, warmup=1, steps=args.repeats, count_flops=(*steps, "conv"))
    by = {w.name: w for w in work}
    rates = {"conv": by["conv"].flops / by["conv"].median, "matmul": by["matmul"].flops / by["matmul"].median}
    reference = {name: "matmul" if name == "swvit" else "conv" for name in steps}
    cpu_median = {name: statistics.median(cpu[name][-args.repeats:]) for name in steps}
    result = {
        "device": str(device), "crop": args.crop, "size": args.size, "batch": args.batch, "repeats": args.repeats,
        "weighting": args.weighting, "swvit": args.swvit, "threads": torch.get_num_threads(),
        "parameters_M": round(sum(p.numel() for p in seg.parameters()) / 1e6, 2),
        "median_s": {n: round(by[n].median, 4) for n in steps},
        "samples_per_s": {n: round(args.batch / by[n].median, 4) for n in steps},
        "masked_over_dense": round(by["masked"].median / by["dense"].median, 3),
        "paired_ratios": [round(m / d, 3) for m, d in zip(by["masked"].times, by["dense"].times)],
        "cpu_median_s": {n: round(v, 4) for n, v in cpu_median.items()},
        "cpu_masked_over_dense": round(cpu_median["masked"] / cpu_median["dense"], 3),
        "peak_memory_MiB": {n: round(by[n].peak_mib, 1) for n in steps},
        "step_GFLOPs": {n: float(f"{by[n].flops / 1e9:.4g}") for n in steps},
        "reference_GFLOPs_per_s": {k: round(v / 1e9, 2) for k, v in rates.items()},
        "fraction_of_reference_rate": {n: float(f"{by[n].flops / by[n].median / rates[reference[n]]:.3g}") for n in steps},
        "reference_of": reference,
    }
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
