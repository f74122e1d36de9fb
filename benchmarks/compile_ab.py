"""The SW-ViT ASA pretraining step eager against compiled or against its earlier precision, alternated round by
round in one process, with the eager step's CUDA time by kernel family (what a change could win) and same-seed losses.

    python -m benchmarks.compile_ab --size 128 --batch 24 --preset base --amp fp16 --json out.json   # GPU
    python -m benchmarks.compile_ab --size 32 --batch 1 --preset tiny --amp off --steps 1            # CPU smoke

Variants: ``eager``; ``blocks``, every SW-ViT block compiled in place (`asa.models.compile_blocks`, what
``trainer.compile=true`` does); ``whole``, ``torch.compile`` of the whole model's forward (graph breaks are
counted by ``torch._dynamo``); the residual stream's earlier precision under autocast: ``fp32_norm``, layer norms
as autocast runs them (fp32, the stream cast back before each matmul), ``fp32_stream``, that and the stream itself
in fp32 (its input cast up, as the fp32 position codes once made it); ``copies``, LW-/SLW-MSA's earlier copies
(`earlier_copies`: q, k, v cut by ``unbind``, whose backward stacks the gradients and copies the stack again, and the
shifted windows' gathers with ``index_select``'s zero-fill-and-scatter backward). Each is forward, backward and the
fused AdamW of ``asa-pretrain``. The losses of ``--loss-steps`` steps from the same weights and batches are compared
variant against eager (the relative gap of each step's loss; reduced precision rounds differently, so the gap is
reported, not asserted). On CUDA each of ``eager`` and ``copies`` has its step's kernel time by family.

``--traffic`` counts instead of timing, on the ``meta`` device (nothing computed; exact, whatever the machine's load):
per variant (``eager``, ``copies``), the aten ops of one step's forward and backward at the autocast dtype (the
network cast to it) with SDPA as CUDA's memory-efficient kernel, and the bytes each reads and writes, by family::

    python -m benchmarks.compile_ab --traffic --size 128 --batch 24 --preset base --amp fp16
"""
from __future__ import annotations

import argparse
import copy
import json
import types
from collections import defaultdict
from pathlib import Path

import torch

from asa.models import ASA, PRESETS, compile_blocks
from asa.models.swvit.attention import LinearWindowAttention
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


def family(kernel: str, families: tuple = FAMILIES) -> str:
    """The first of ``families`` ((name, substrings) pairs) with a substring in ``kernel``'s name."""
    name = kernel.lower()
    for fam, keys in families:
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


def earlier_copies(model: torch.nn.Module) -> None:
    """``model`` in place with LW-/SLW-MSA's earlier copies: q, k, v by ``unbind`` and the shifted windows' token
    order by ``index_select`` (autograd's backward of each), in place of `LinearWindowAttention`'s ``_heads`` and
    ``_to_order``; the values are the same (tests/models/test_attention.py)."""
    def heads(module: LinearWindowAttention, qkv: torch.Tensor, windows: int) -> tuple[torch.Tensor, ...]:
        b, p, c3 = qkv.shape
        return qkv.view(b * windows, p // windows, 3, module.num_heads, c3 // 3 // module.num_heads).permute(
            2, 0, 3, 1, 4).unbind(0)

    for module in model.modules():
        if isinstance(module, LinearWindowAttention):
            module._heads = types.MethodType(heads, module)
            module._to_order = lambda x, order, inverse, pad: x.index_select(1, order)


OP_FAMILIES = (("matmul", ("mm", "addmm", "bmm", "baddbmm")),
               ("attention", ("_scaled_dot_product_efficient_attention", "_scaled_dot_product_efficient_attention_backward")),
               ("norm", ("native_layer_norm", "native_layer_norm_backward")),
               ("copy / index", ("clone", "copy_", "_to_copy", "cat", "stack", "roll", "index_select", "index_add",
                                 "index_add_", "gather", "scatter", "scatter_add", "new_zeros", "zeros", "constant_pad_nd",
                                 "slice_backward", "select_backward", "expand_copy")))
NO_TRAFFIC = ("_unsafe_view", "empty", "empty_strided", "new_empty")  # a buffer renamed or allocated: nothing moves


def op_family(op: str) -> str:
    for fam, ops in OP_FAMILIES:
        if op in ops:
            return fam
    return "other elementwise / reduce"


def step_traffic(size: int, batch: int, preset: str, dtype: torch.dtype, variant: str) -> dict:
    """One ASA step's forward and backward (no optimiser) on the ``meta`` device, the network in ``dtype`` (autocast's
    activations), SDPA as CUDA's memory-efficient kernel; ``variant``: ``eager`` (now) or ``copies``
    (`earlier_copies`): aten calls and GB read + written by op family and the 12 costliest ops besides the matmuls."""
    import torch.nn.functional as F

    from benchmarks.resenc import Traffic

    def efficient(q, k, v, attn_mask=None, dropout_p=0.0, **_):  # what CUDA runs for LW-MSA's biased windows
        return torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, attn_mask, True, dropout_p)[0]

    with torch.device("meta"):
        torch.manual_seed(0)
        model = ASA(img_size=size, patch_size=PATCH, mask_ratio=MASK_RATIO, **PRESETS[preset]).to(dtype)
        x = torch.randn(batch, 1, size, size, size, dtype=dtype)
    if variant == "copies":
        earlier_copies(model)
    sdpa, autocast_on = F.scaled_dot_product_attention, torch.is_autocast_enabled
    F.scaled_dot_product_attention = efficient
    torch.is_autocast_enabled = lambda *a: False if a and a[0] == "meta" else autocast_on(*a)  # no meta autocast
    try:
        with Traffic() as moved:
            model(x).loss.float().backward()
    finally:
        F.scaled_dot_product_attention, torch.is_autocast_enabled = sdpa, autocast_on
    gb: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    moved.bytes["copy_"] = moved.bytes.get("copy_", 0) * 2 // 3  # its destination is counted as read and written
    for op, n in moved.bytes.items():
        if op not in NO_TRAFFIC:
            gb[op_family(op)] += n / 1e9
            calls[op_family(op)] += moved.calls[op]
    other = {op: n for op, n in moved.bytes.items() if op_family(op) not in ("matmul", "attention") and op not in NO_TRAFFIC}
    return {"GB": {k: round(v, 3) for k, v in sorted(gb.items(), key=lambda kv: -kv[1])},
            "calls": dict(sorted(calls.items(), key=lambda kv: -kv[1])),
            "top_other_GB": {op: round(n / 1e9, 3) for op, n in sorted(other.items(), key=lambda kv: -kv[1])[:12]}}


def traffic(size: int, batch: int, preset: str, dtype: torch.dtype) -> dict:
    """`step_traffic` of ``eager`` and ``copies``, and what the change removed (GB and calls)."""
    out = {v: step_traffic(size, batch, preset, dtype, v) for v in ("eager", "copies")}
    moved = {v: sum(out[v]["GB"].values()) for v in out}
    return {"size": size, "batch": batch, "preset": preset, "dtype": str(dtype).removeprefix("torch."), **out,
            "removed_GB": round(moved["copies"] - moved["eager"], 3),
            "removed_calls": sum(out["copies"]["calls"].values()) - sum(out["eager"]["calls"].values()),
            "outside_matmul_attention_GB": {v: round(sum(g for f, g in out[v]["GB"].items()
                                                          if f not in ("matmul", "attention")), 3) for v in out}}


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
                   choices=("blocks", "whole", "fp32_norm", "fp32_stream", "copies"))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--traffic", action="store_true",
                   help="count ops and bytes of eager and copies on the meta device (at --amp's dtype) instead")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    if args.traffic:
        amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.amp, torch.float32)
        result = traffic(args.size, args.batch, args.preset, amp)
        print(json.dumps(result, indent=1), flush=True)
        if args.json:
            args.json.write_text(json.dumps(result, indent=1))
        return result
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
        elif name == "copies":
            earlier_copies(model)
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
        "ms_by_kernel_family": {n: kernel_profile(by[n].run, device) for n in ("eager", "copies") if n in by},
        "eager_ms_top_operators": kernel_profile(by["eager"].run, device, top=25),
    }
    # same weights, same batches, same mask draws: each variant's losses against eager's
    losses: dict[str, list[float]] = {}
    for name in models:
        model = copy.deepcopy(base) if name == "eager" else models[name]
        if name != "eager":
            model.load_state_dict(base.state_dict())
        opt = adamw(model, args.batch)
        gen = torch.Generator(device=device).manual_seed(1)  # drawn where it is used: a CPU draw of 24·128³ took 0.3 s
        torch.manual_seed(1)
        losses[name] = []
        for _ in range(args.loss_steps):
            batch = torch.randn(x.shape, generator=gen, device=device)
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
