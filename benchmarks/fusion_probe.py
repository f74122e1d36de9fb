"""Grouped against dense 3D convolutions at a fine-tuning unit's shapes: what training K units as one network costs.

Fused, K copies of a network become one whose every convolution is a grouped one (``groups=K``, each unit's channels
its own group), as ``torch.func.vmap`` over stacked parameters makes them. cuDNN's grouped 3D backward has been slow
(pytorch issue 37406): this measures it before a fused mode relies on it. The unit is asa-study's gpu-scale one
(ResEnc S, 32³ crops, batch 2); every Conv3d and ConvTranspose3d of its forward is read by hooks, equal shapes once
with their number. For each K, precision and shape, forward and backward (input and weight gradients), channels-last,
are timed three ways:

- ``grouped``: one convolution over the K units' channels, ``groups=K`` (the fused kernel);
- ``dense``: K convolutions in turn, each unit's own weights (the units' kernels without their processes);
- ``batched``: one convolution of the K units' batches with shared weights (the same FLOPs in one dense kernel).

Each row also holds the largest difference between the grouped output and the K dense ones (the same convolutions).
The totals weight each shape by its number in the network: the network's convolutions of one step, K units at once.

    python -m benchmarks.fusion_probe --json OUT.json --markdown OUT.md     # one GPU, within --budget-s (270)
    python -m benchmarks.fusion_probe --dry-run --json /tmp/p.json           # the same at toy sizes on the CPU
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from asa.models.cnn.resenc import resenc_unet
from benchmarks.harness import sync

KS = (1, 4, 14, 56, 112)
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass(frozen=True)
class Conv:
    """One convolution of the network as its forward calls it: ``transposed`` a ConvTranspose3d."""

    transposed: bool
    in_channels: int
    out_channels: int
    kernel: tuple[int, int, int]
    stride: tuple[int, int, int]
    padding: tuple[int, int, int]
    bias: bool
    input: tuple[int, ...]  # [N, C, D, H, W]

    def run(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, groups: int) -> torch.Tensor:
        if self.transposed:
            return F.conv_transpose3d(x, w, b, self.stride, self.padding, groups=groups)
        return F.conv3d(x, w, b, self.stride, self.padding, groups=groups)

    def weight_shape(self, k: int) -> tuple[int, ...]:
        """The weights of ``k`` units stacked along the grouped axis (ConvTranspose3d's is its input channels)."""
        if self.transposed:
            return (k * self.in_channels, self.out_channels, *self.kernel)
        return (k * self.out_channels, self.in_channels, *self.kernel)


def unit_network(size: str, crop: int, in_channels: int, out_channels: int) -> nn.Module:
    """The unit's segmentation network (asa-finetune model=resenc), as asa-study's gpu scale builds it."""
    return resenc_unet(img_size=crop, in_channels=in_channels, out_channels=out_channels, size=size)


def unit_convs(net: nn.Module, batch: int, crop: int, in_channels: int) -> tuple[dict[Conv, int], int]:
    """(each convolution shape of one forward -> its number, the FLOPs of one training step's forward and backward
    through the network, counted by ``FlopCounterMode``)."""
    seen: dict[Conv, int] = {}

    def hook(module: nn.Module, args: tuple) -> None:
        conv = Conv(isinstance(module, nn.ConvTranspose3d), module.in_channels, module.out_channels,
                    tuple(module.kernel_size), tuple(module.stride), tuple(module.padding), module.bias is not None,
                    tuple(args[0].shape))
        seen[conv] = seen.get(conv, 0) + 1

    handles = [m.register_forward_pre_hook(hook) for m in net.modules() if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d))]
    x = torch.randn(batch, in_channels, crop, crop, crop)
    with FlopCounterMode(display=False) as counter:
        out = net(x)
        sum(o.float().sum() for o in (out if isinstance(out, (list, tuple)) else [out])).backward()
    for handle in handles:
        handle.remove()
    return seen, counter.get_total_flops()


def _time(step, device: torch.device, warmup: int, repeats: int) -> float:
    """Median seconds of ``step()``."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def probe(conv: Conv, k: int, dtype: torch.dtype, device: torch.device, *, warmup: int, repeats: int) -> dict:
    """The three ways of one shape at one K (module docstring), forward and backward, channels-last."""
    last = torch.channels_last_3d
    n, c, *space = conv.input

    def leaf(*shape: int) -> torch.Tensor:
        t = torch.randn(*shape, device=device, dtype=dtype)
        return (t.contiguous(memory_format=last) if t.dim() == 5 else t).requires_grad_()

    x, w = leaf(n, k * c, *space), leaf(*conv.weight_shape(k))
    b = leaf(k * conv.out_channels) if conv.bias else None
    xs = [xi.detach().contiguous(memory_format=last).requires_grad_() for xi in x.detach().chunk(k, dim=1)]
    ws = [wi.detach().contiguous(memory_format=last).requires_grad_() for wi in w.detach().chunk(k, dim=0)]
    bs = [bi.detach().requires_grad_() for bi in b.detach().chunk(k)] if b is not None else [None] * k
    xb = torch.cat([xi.detach() for xi in xs]).contiguous(memory_format=last).requires_grad_()
    with torch.no_grad():
        grouped_out = conv.run(x, w, b, k)
        dense_out = torch.cat([conv.run(xi, wi, bi, 1) for xi, wi, bi in zip(xs, ws, bs)], dim=1)
        diff = float((grouped_out.float() - dense_out.float()).abs().max())
    g = torch.randn_like(grouped_out).contiguous(memory_format=last)
    gs = [gi.contiguous(memory_format=last) for gi in g.chunk(k, dim=1)]
    gb = torch.cat(gs).contiguous(memory_format=last)

    def grads(out: torch.Tensor, grad: torch.Tensor, *leaves: torch.Tensor | None) -> None:
        torch.autograd.grad(out, [t for t in leaves if t is not None], grad)

    def grouped() -> None:
        grads(conv.run(x, w, b, k), g, x, w, b)

    def dense() -> None:
        for xi, wi, bi, gi in zip(xs, ws, bs, gs):
            grads(conv.run(xi, wi, bi, 1), gi, xi, wi, bi)

    def batched() -> None:
        grads(conv.run(xb, ws[0], bs[0], 1), gb, xb, ws[0], bs[0])

    with FlopCounterMode(display=False) as counter:
        grads(conv.run(xs[0], ws[0], bs[0], 1), gs[0], xs[0], ws[0], bs[0])
    seconds = {name: _time(step, device, warmup, repeats) for name, step in
               (("grouped", grouped), ("dense", dense), ("batched", batched))}
    return {"k": k, "flops": k * counter.get_total_flops(), "max_abs_diff": diff,
            **{f"{name}_ms": round(1e3 * s, 4) for name, s in seconds.items()}}


def totals(rows: list[dict], counts: dict[str, int]) -> list[dict]:
    """Per precision and K, over the shapes measured: each time and the FLOPs weighted by the shape's number."""
    out: dict[tuple[str, int], dict] = {}
    for row in rows:
        key = (row["dtype"], row["k"])
        n = counts[row["conv"]]
        total = out.setdefault(key, {"dtype": key[0], "k": key[1], "shapes": 0, "grouped_ms": 0.0, "dense_ms": 0.0,
                                     "batched_ms": 0.0, "flops": 0})
        total["shapes"] += 1
        total["flops"] += n * row["flops"]
        for name in ("grouped_ms", "dense_ms", "batched_ms"):
            total[name] += n * row[name]
    for total in out.values():
        total["grouped_over_dense"] = round(total["grouped_ms"] / total["dense_ms"], 4)
        total["grouped_tflops"] = round(total["flops"] / (total["grouped_ms"] * 1e-3) / 1e12, 4)
        total["dense_tflops"] = round(total["flops"] / (total["dense_ms"] * 1e-3) / 1e12, 4)
    return list(out.values())


def markdown(doc: dict) -> str:
    """The totals as a Markdown table."""
    lines = [f"Grouped vs dense convolutions of {doc['unit']} on {doc['device']} (forward and backward, channels-last; "
             f"the network's convolutions of one step, K units; {doc['network_gflop_step']} GFLOP a unit-step in all)",
             "", "| precision | K | grouped ms | dense ms (K kernels) | batched ms | grouped / dense | grouped TFLOP/s | "
             "dense TFLOP/s |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for t in doc["totals"]:
        lines.append(f"| {t['dtype']} | {t['k']} | {t['grouped_ms']:.3f} | {t['dense_ms']:.3f} | {t['batched_ms']:.3f} | "
                     f"{t['grouped_over_dense']:.3f} | {t['grouped_tflops']:.2f} | {t['dense_tflops']:.2f} |")
    if doc["stopped"]:
        lines.append(f"\nStopped at the time budget: {doc['stopped']}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.fusion_probe", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--size", default="S", help="the ResEnc's model.size (default S, the gpu scale's)")
    p.add_argument("--crop", type=int, default=32)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--in-channels", type=int, default=4, help="image channels (default 4, the planted bed's)")
    p.add_argument("--out-channels", type=int, default=3, help="logits channels (default 3, the planted bed's)")
    p.add_argument("--ks", type=int, nargs="+", default=list(KS))
    p.add_argument("--dtypes", nargs="+", default=["bf16", "fp16"], choices=sorted(DTYPES))
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--budget-s", type=float, default=270.0, help="stop measuring after this many seconds (default 270)")
    p.add_argument("--dry-run", action="store_true",
                   help="toy sizes on the CPU: ResEnc tiny, 16³, K 1 and 2, fp32, one timed run")
    p.add_argument("--json", type=Path)
    p.add_argument("--markdown", type=Path)
    args = p.parse_args(argv)
    if args.dry_run:
        args.device, args.size, args.crop, args.ks, args.dtypes = "cpu", "tiny", 16, [1, 2], ["fp32"]
        args.warmup, args.repeats = 0, 1
    if bad := [k for k in args.ks if k < 1]:
        p.error(f"--ks {' '.join(map(str, bad))}: expected at least 1")
    device = torch.device(args.device)
    started = time.perf_counter()
    net = unit_network(args.size, args.crop, args.in_channels, args.out_channels)
    convs, step_flops = unit_convs(net, args.batch, args.crop, args.in_channels)
    names = {conv: f"{'convT' if conv.transposed else 'conv'} {conv.in_channels}->{conv.out_channels} "
                   f"k{conv.kernel[0]} s{conv.stride[0]} @ {'x'.join(map(str, conv.input[2:]))}" for conv in convs}
    rows, stopped = [], None
    for k in sorted(args.ks):  # the smallest K first: a budget that ends early keeps them
        for dtype in args.dtypes:
            for conv in convs:
                if time.perf_counter() - started > args.budget_s:
                    stopped = stopped or f"K={k} {dtype} {names[conv]} and after"
                    continue
                row = probe(conv, k, DTYPES[dtype], device, warmup=args.warmup, repeats=args.repeats)
                rows.append({"conv": names[conv], "dtype": dtype, **row})
                print(f"fusion_probe: {dtype} K={k:>3} {names[conv]:<34} grouped {row['grouped_ms']:9.3f} ms  "
                      f"dense {row['dense_ms']:9.3f} ms  batched {row['batched_ms']:9.3f} ms", flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    counts = {names[conv]: n for conv, n in convs.items()}
    doc = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
           "torch": torch.__version__, "dry_run": args.dry_run,
           "unit": f"ResEnc {args.size}, {args.crop}³ crops, batch {args.batch}, {args.in_channels} -> "
                   f"{args.out_channels} channels",
           "network_gflop_step": round(step_flops / 1e9, 2),
           "convs": [{"conv": names[conv], "count": n, **asdict(conv)} for conv, n in convs.items()],
           "rows": rows, "totals": totals(rows, counts), "stopped": stopped,
           "seconds": round(time.perf_counter() - started, 1)}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(markdown(doc))
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
