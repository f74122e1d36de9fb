"""The SW-ViT ASA pretraining step eager against compiled or against its earlier precision, alternated round by
round in one process, with the eager step's CUDA time by kernel family (what a change could win) and same-seed losses.

    python -m benchmarks.compile_ab --size 128 --batch 24 --preset base --amp fp16 --json out.json   # GPU
    python -m benchmarks.compile_ab --size 32 --batch 1 --preset tiny --amp off --steps 1            # CPU smoke

Variants: ``eager``; ``blocks``, every SW-ViT block compiled in place (`asa.models.compile_blocks`, what
``trainer.compile=true`` does); ``whole``, ``torch.compile`` of the whole model's forward (graph breaks are
counted by ``torch._dynamo``); the residual stream's earlier precision under autocast: ``fp32_norm``, layer norms
as autocast runs them (fp32, the stream cast back before each matmul), ``fp32_stream``, that and the stream itself
in fp32 (its input cast up, as the fp32 position codes once made it). Each is forward, backward and the fused AdamW of ``asa-pretrain``. The losses of
``--loss-steps`` steps from the same weights and batches are compared variant against eager (the relative gap
of each step's loss; reduced precision rounds differently, so the gap is reported, not asserted).
"""
from __future__ import annotations

import argparse
import copy
import json
from collections import defaultdict
from pathlib import Path

import torch

from asa.models import ASA, PRESETS, compile_blocks
from asa.models.swvit.swvit import AutocastLayerNorm, SWViT
from asa.train.precision import AMP_CHOICES, amp_name, resolve_amp
from benchmarks.harness import alternate
from benchmarks.speed import MASK_RATIO, PATCH, Setup, adamw, train_workload

FAMILIES = (("attention", ("flash", "fmha", "attention", "sdpa", "efficient")),
            ("matmul", ("gemm", "cutlass", "sm90", "nvjet", "xmma", "wgmma", "matmul")),
            ("norm", ("layer_norm", "layernorm", "norm")),
            ("optimizer", ("adam", "multi_tensor", "foreach")),
            ("copy / index", ("copy", "index", "gather", "scatter", "cat", "elementwise_kernel_with_index")),
            ("triton (fused)", ("triton",)))


def family(kernel: str) -> str:
    name = kernel.lower()
    for fam, keys in FAMILIES:
        if any(k in name for k in keys):
            return fam
    return "other elementwise / reduce"


def kernel_profile(run, device: torch.device, top: int = 0) -> dict[str, float]:
    """Device milliseconds of one step by kernel family, or with ``top`` of the ``top`` costliest operators
    (CUDA only; empty elsewhere)."""
    if device.type != "cuda":
        return {}
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        run()
        torch.cuda.synchronize()
    if top:
        ops = sorted(prof.key_averages(), key=lambda e: -e.device_time_total)[:top]
        return {e.key[:90]: round(e.device_time_total / 1e3, 2) for e in ops}
    out: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        out[family(event.key)] += event.device_time_total / 1e3
    return {k: round(v, 2) for k, v in sorted(out.items(), key=lambda kv: -kv[1])}


def earlier_precision(model: torch.nn.Module, *, stream: bool) -> None:
    """``model`` in place with the earlier precision under autocast: plain ``nn.LayerNorm`` (fp32 out), and with
    ``stream`` every SW-ViT's input cast to fp32 (the position codes, fp32, rounded to the tokens' dtype first)."""
    for module in model.modules():
        if type(module) is AutocastLayerNorm:
            module.__class__ = torch.nn.LayerNorm
        if stream and isinstance(module, SWViT):
            module.register_forward_pre_hook(lambda _, args, kwargs: ((args[0].float(), *args[1:]), kwargs),
                                             with_kwargs=True)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=24)
    p.add_argument("--preset", default="base", choices=sorted(PRESETS))
    p.add_argument("--amp", default="auto", choices=AMP_CHOICES)
    p.add_argument("--steps", type=int, default=5, help="timed rounds (default 5)")
    p.add_argument("--loss-steps", type=int, default=20, help="same-seed steps whose losses are compared (default 20)")
    p.add_argument("--variants", nargs="+", default=["blocks", "whole"],
                   choices=("blocks", "whole", "fp32_norm", "fp32_stream"))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    dtype = resolve_amp(args.amp, device, option="--amp")
    setup = Setup(device, args.size, args.batch, PRESETS[args.preset], dtype)
    torch.manual_seed(0)
    base = ASA(img_size=args.size, patch_size=PATCH, mask_ratio=MASK_RATIO, **setup.preset).to(device)
    x = torch.randn(args.batch, 1, args.size, args.size, args.size, device=device)
    models = {"eager": base}
    for name in args.variants:
        model = copy.deepcopy(base)
        if name == "blocks":
            compile_blocks(model)
        elif name == "whole":
            model.forward = torch.compile(model.forward)
        else:
            earlier_precision(model, stream=name == "fp32_stream")
        models[name] = model
    torch._dynamo.utils.counters.clear()
    work = [train_workload(name, setup, m, adamw(m, args.batch), (lambda m=m: m(x).loss)) for name, m in models.items()]
    alternate(work, device, warmup=2, steps=args.steps)
    breaks = sum(torch._dynamo.utils.counters["graph_break"].values())
    by = {w.name: w for w in work}
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
        "torch": torch.__version__, "precision": amp_name(dtype), "size": args.size, "batch": args.batch,
        "preset": args.preset, "graph_breaks": breaks,
        "median_s": {n: round(w.median, 4) for n, w in by.items()},
        "samples_per_s": {n: round(args.batch / w.median, 2) for n, w in by.items()},
        "speedup_vs_eager": {n: round(by["eager"].median / w.median, 3) for n, w in by.items()},
        "peak_memory_GiB": {n: round(w.peak_mib / 1024, 2) for n, w in by.items()},
        "eager_ms_by_kernel_family": kernel_profile(by["eager"].run, device),
        "eager_ms_top_operators": kernel_profile(by["eager"].run, device, top=25),
    }
    # same weights, same batches, same mask draws: each variant's losses against eager's
    losses: dict[str, list[float]] = {}
    for name in models:
        model = copy.deepcopy(base) if name == "eager" else models[name]
        if name != "eager":
            model.load_state_dict(base.state_dict())
        opt = adamw(model, args.batch)
        gen = torch.Generator(device="cpu").manual_seed(1)
        torch.manual_seed(1)
        losses[name] = []
        for _ in range(args.loss_steps):
            batch = torch.randn(x.shape, generator=gen).to(device)
            with setup.autocast():
                loss = model(batch).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses[name].append(float(loss.detach()))
    result["loss_first_last"] = {n: [round(v[0], 5), round(v[-1], 5)] for n, v in losses.items()}
    quarter = max(1, args.loss_steps // 4)  # where the runs have drifted apart most, if they drift
    result["loss_mean_last_quarter"] = {n: round(sum(v[-quarter:]) / quarter, 5) for n, v in losses.items()}
    result["max_relative_loss_gap"] = {n: float(f"{max(abs(a - b) / abs(b) for a, b in zip(v, losses['eager'])):.3g}")
                                       for n, v in losses.items() if n != "eager"}
    print(json.dumps(result, indent=1), flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
