"""The residual-encoder U-Net's masked pretraining step against the same network's dense step, side by side.

    python -m benchmarks.resenc --crop 64 --size tiny --batch 2 --repeats 5 [--json out.json]

The dense step is the same `ResEncMaskedAutoencoder` with no mask (every block visible, plain convolutions
and instance norms, the decoder on the encoder's skips) and the loss over every voxel; the masked step is its
training forward (masking, visible-only norms, mask tokens, densify, attentive or uniform block loss). Both
run forward, backward and an AdamW step on the same input, interleaved repeat by repeat, so that load on a
shared machine falls on both; the figure is the ratio of medians (wall, and process CPU time, which load on
other processes disturbs less). Also times the fine-tuning step of
`ResEncUNet` (deep supervision, 2 classes) at the same crop. On CUDA: peak memory per step.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from asa.models import build_network


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def dense_loss(net, x: torch.Tensor) -> torch.Tensor:
    """The unmasked step's loss: the encoder without a mask, the decoder on its skips, MSE over every voxel."""
    net.decoder.deep_supervision = False
    return torch.nn.functional.mse_loss(net.decoder(net.encoder(net.with_coordinates(x))), x)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--size", default="tiny", choices=("tiny", "M", "L"))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--weighting", default="attentive", choices=("uniform", "attentive"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    net = build_network({"arch": "resenc_pretrain", "kwargs": {"img_size": args.crop, "size": args.size,
                                                               "loss_weighting": args.weighting}}).to(device)
    seg = build_network({"arch": "resenc", "kwargs": {"img_size": args.crop, "in_channels": 1, "out_channels": 2,
                                                      "size": args.size}}).to(device).train()
    x = torch.randn(args.batch, 1, args.crop, args.crop, args.crop, device=device)
    label = torch.randint(0, 2, (args.batch, args.crop, args.crop, args.crop), device=device)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    opt_seg = torch.optim.AdamW(seg.parameters(), lr=1e-4)

    def masked() -> None:
        net(x).loss.backward()

    def dense() -> None:
        dense_loss(net, x).backward()

    def finetune() -> None:
        outs = seg(x)
        sum(torch.nn.functional.cross_entropy(o, torch.nn.functional.interpolate(
            label[:, None].float(), size=o.shape[2:]).long()[:, 0]) for o in outs).backward()

    steps = {"masked": (masked, opt), "dense": (dense, opt), "finetune": (finetune, opt_seg)}
    times: dict[str, list[float]] = {name: [] for name in steps}
    cpu: dict[str, list[float]] = {name: [] for name in steps}  # process CPU time: steadier than wall on a loaded host
    peaks: dict[str, int] = {}
    for repeat in range(args.repeats + 1):  # the first round warms up and is not counted
        for name, (step, optimizer) in steps.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            _sync(device)
            start, start_cpu = time.perf_counter(), time.process_time()
            optimizer.zero_grad(set_to_none=True)
            step()
            optimizer.step()
            _sync(device)
            if repeat:
                times[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
            if device.type == "cuda":
                peaks[name] = torch.cuda.max_memory_allocated(device)
    median = {name: statistics.median(t) for name, t in times.items()}
    result = {
        "device": str(device), "crop": args.crop, "size": args.size, "batch": args.batch, "repeats": args.repeats,
        "weighting": args.weighting, "threads": torch.get_num_threads(),
        "parameters_M": round(sum(p.numel() for p in seg.parameters()) / 1e6, 2),
        "median_s": {k: round(v, 4) for k, v in median.items()},
        "samples_per_s": {k: round(args.batch / v, 3) for k, v in median.items()},
        "masked_over_dense": round(median["masked"] / median["dense"], 3),
        "paired_ratios": [round(m / d, 3) for m, d in zip(times["masked"], times["dense"])],
        "cpu_median_s": {k: round(statistics.median(v), 4) for k, v in cpu.items()},
        "cpu_masked_over_dense": round(statistics.median(cpu["masked"]) / statistics.median(cpu["dense"]), 3),
        "peak_memory_GiB": {k: round(v / 2**30, 2) for k, v in peaks.items()},
    }
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
