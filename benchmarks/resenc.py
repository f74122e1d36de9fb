"""The residual-encoder U-Net's steps beside each other and beside the SW-ViT's, in one process.

    python -m benchmarks.resenc --crop 64 --size tiny S --batch 2 --repeats 5 [--swvit tiny] [--json out.json]
    python -m benchmarks.resenc --crop 128 160 --size S M --batch 32 --amp bf16 --swvit none   # the GPU rows

Times, round by round (`benchmarks.harness.alternate`, so that load on a shared machine falls on every step
alike): ``masked``, the masked-convolution pretraining step of `resenc_pretrain` (masking as ``asa-pretrain``'s
defaults: 16³ blocks, SparK's densify, attentive weights per 8³; ``--earlier`` adds the earlier form;
``--autograd-norm`` the same step with the visible-only norm's earlier gradient (autograd's); ``--fp32-norm``
the same step with the visible-only norm's earlier statistics, an fp32 copy of each activation squared, kept for
the backward pass); ``dense``, the same network with no mask (plain
convolutions and instance norms, the decoder on the encoder's skips, MSE over every voxel); ``finetune``,
`ResEncUNet`'s segmentation step (deep supervision, 2 classes); ``swvit``, the SW-ViT's ASA pretraining step at
the same crop (``--swvit``: its preset; ``none`` leaves it out); and two references of the machine's attainable
rate: a dense matmul and a 3³ convolution. Each step is forward, backward and AdamW (`benchmarks.speed.adamw`,
asa-pretrain's kernel), in fp32 or under ``--amp``'s autocast (the references in that precision); on CUDA
the batch is the largest of ``--batch``, its half, ... whose masked step fits. Reported per
step: the median wall time, samples/s, process CPU time (which load on other processes disturbs less), peak
memory (CUDA: allocated; CPU: resident set) and the fraction of the timed convolution (CNN steps) or matmul
(SW-ViT step) rate its counted FLOPs reach. The target of the masked step: at most 1.15× the dense step.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import torch
import torch.utils._pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

import asa.models.cnn.masked as masked_module
from asa.models import PRESETS, build_network
from asa.models.cnn.masked import MaskedConv3d, MaskedInstanceNorm3d
from asa.models.cnn.resenc import RESENC_SIZES
from asa.train.precision import AMP_CHOICES, amp_name, resolve_amp
from benchmarks.harness import Workload, alternate, largest_fitting, matmul_workload, release_memory
from benchmarks.speed import Setup, adamw, asa_workloads, train_workload


DEFAULT_MASKING = {"mask_block": 16, "densify": "spark", "weight_patch": 8}  # asa-pretrain's method defaults


def dense_loss(net, x: torch.Tensor) -> torch.Tensor:
    """The unmasked step's loss: the encoder without a mask, the decoder on its skips, MSE over every voxel."""
    net.decoder.deep_supervision = False
    return torch.nn.functional.mse_loss(net.decoder(net.encoder(net.with_coordinates(x))), x)


def conv_workload(device: torch.device, crop: int, batch: int, dtype: torch.dtype | None = None) -> Workload:
    """A 3³ convolution, 32 -> 32 channels at the crop's full resolution (the ResEnc's first stage), in the
    run's precision: the machine's attainable convolution rate (FLOPs counted by the harness)."""
    conv = torch.nn.Conv3d(32, 32, 3, padding=1, bias=False).to(device, dtype or torch.float32)
    x = torch.randn(batch, 32, crop, crop, crop, device=device, dtype=dtype or torch.float32)

    def run() -> None:
        with torch.no_grad():
            conv(x)

    return Workload("conv", run)


class Fp32StatsNorm(MaskedInstanceNorm3d):
    """The visible-only norm's earlier statistics (``--fp32-norm``): the sum of squares from an fp32 copy of the
    activation, which autograd keeps for the backward pass; the count summed in the mask's dtype."""

    zero_gradient_at_masked = False  # autograd's gradient holds the mean's share there

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.visible.at(tuple(x.shape[2:]), x.dtype)
        if m is None:
            return torch.nn.InstanceNorm3d.forward(self, x)
        count = m.sum(dim=(2, 3, 4), keepdim=True).clamp_min(1.0)
        mean = x.sum(dim=(2, 3, 4), keepdim=True, dtype=torch.float32) / count
        var = ((x.float() * x).sum(dim=(2, 3, 4), keepdim=True) / count - mean * mean).clamp_min(0.0)
        scale = torch.rsqrt(var + self.eps) * self.weight.view(1, -1, 1, 1, 1)
        shift = -mean * scale + self.bias.view(1, -1, 1, 1, 1)
        return torch.addcmul(shift.to(x.dtype), x, scale.to(x.dtype)).mul_(m)


class AutogradNorm(MaskedInstanceNorm3d):
    """The visible-only norm before its gradient was written out (``--autograd-norm``): the same forward, autograd's
    backward through the sums, the squares and the scale-and-shift."""

    zero_gradient_at_masked = False  # autograd's gradient holds the mean's share there

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.visible.at(tuple(x.shape[2:]), x.dtype)
        if m is None:
            return torch.nn.InstanceNorm3d.forward(self, x)
        count = m.sum(dim=(2, 3, 4), keepdim=True, dtype=torch.float32).clamp_min(1.0)
        mean = x.sum(dim=(2, 3, 4), keepdim=True, dtype=torch.float32) / count
        var = (masked_module.sum_of_squares(x) / count - mean * mean).clamp_min(0.0)
        scale = torch.rsqrt(var + self.eps) * self.weight.view(1, -1, 1, 1, 1)
        shift = -mean * scale + self.bias.view(1, -1, 1, 1, 1)
        return torch.addcmul(shift.to(x.dtype), x, scale.to(x.dtype)).mul_(m)


def squares_summed(x: torch.Tensor) -> torch.Tensor:
    """Σ x² as the visible-only norm took it before 2026-11-27: the squares written in x's dtype, then summed in fp32."""
    return x.square().sum(dim=(2, 3, 4), keepdim=True, dtype=torch.float32)


class PreviousNorm(MaskedInstanceNorm3d):
    """The visible-only norm before 2026-11-27 (``--previous``): Σ x² from the squares written out (`squares_summed`)
    instead of one reduction, and the masked convolutions before it keep their output mask's backward
    (`MaskedConv3d`)."""

    zero_gradient_at_masked = False  # as then: every masked convolution's mask with its backward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with mock.patch.object(masked_module, "sum_of_squares", squares_summed):
            return super().forward(x)


def with_norm(net: torch.nn.Module, norm: type, workload: Workload) -> Workload:
    """``workload`` run with every visible-only norm of ``net`` of class ``norm`` (swapped in before each run)."""
    run = workload.run

    def swapped() -> None:
        for module in net.modules():
            if isinstance(module, MaskedInstanceNorm3d):
                module.__class__ = norm
        run()

    workload.run = swapped
    return workload


class _UnmaskedConv3d(MaskedConv3d):
    """``--components``: a masked convolution without its output's mask (what the mask multiplication costs)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.Conv3d.forward(self, x)


class _DenseStatsNorm(MaskedInstanceNorm3d):
    """``--components``: the visible-only norm as a plain instance norm (what the visible-only statistics and the
    output's mask cost against cuDNN's / oneDNN's own norm)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.InstanceNorm3d.forward(self, x)


COMPONENTS = ("conv_output_mask", "visible_only_norms", "densify_and_tokens", "attentive_weights")


@contextlib.contextmanager
def ablated(net, part: str | None) -> Iterator[None]:
    """``net`` (a `resenc_pretrain`) without one part of its masked step for the block (timing and counting only:
    the objective is then not a valid one): ``conv_output_mask`` (the masked convolutions' output multiplied by the
    mask), ``visible_only_norms`` (plain instance norms instead), ``densify_and_tokens`` (the decoder on the masked
    skips as they are), ``attentive_weights`` (a uniform loss); None: the step as it is."""
    swap = {"conv_output_mask": {MaskedConv3d: _UnmaskedConv3d},
            "visible_only_norms": {MaskedInstanceNorm3d: _DenseStatsNorm}}.get(part or "", {})
    classes = {}
    for module in net.modules():
        if type(module) in swap:
            classes[module] = type(module)
            module.__class__ = swap[type(module)]
    weighting = net.loss_weighting
    if part == "densify_and_tokens":
        net.forward_decoder = lambda skips, mask: dense_decoder(net, skips)
    if part == "attentive_weights":
        net.loss_weighting = net.criterion.weighting = "uniform"
    try:
        yield
    finally:
        net.__dict__.pop("forward_decoder", None)
        net.loss_weighting = net.criterion.weighting = weighting
        for module, cls in classes.items():
            module.__class__ = cls


def dense_decoder(net, skips: list[torch.Tensor]) -> torch.Tensor:
    net.decoder.deep_supervision = False
    return net.decoder(skips)


def masking_only(net, x: torch.Tensor, dtype: torch.dtype | None) -> None:
    """The masking alone: the mask drawn, upsampled to every masked stage, the input's ``where``."""
    mask = net.random_masking(x.shape[0], x.device)
    net.visible.set(net.block_mask(mask))
    try:
        stride = 1
        for step in net.plan.strides:  # each stage's mask (None below the block grid)
            stride *= step
            net.visible.at(tuple(e // stride for e in net.img_size), dtype or torch.float32)
        torch.where(net.visible.at(tuple(x.shape[2:]), torch.bool), x, 0.0)
    finally:
        net.visible.set(None)


def component_workloads(setup: Setup, net, x: torch.Tensor, batch: int) -> list[Workload]:
    """The masked step with one component at a time taken out (``--components``, `ablated`): each one's cost is
    the masked step's time less that variant's; the masking itself timed alone (``masking``)."""
    def variant(part: str) -> Workload:
        def loss() -> torch.Tensor:
            with ablated(net, part):
                return net(x).loss
        return with_norm(net, MaskedInstanceNorm3d, train_workload(f"without_{part}", setup, net, adamw(net, batch), loss))

    def masking() -> None:
        with torch.no_grad(), setup.autocast():
            masking_only(net, x, setup.dtype)

    return [*(variant(part) for part in COMPONENTS), Workload("masking", masking)]


def component_costs(by: dict, cpu_median: dict, repeats: int) -> dict:
    """``--components``: each component's cost per step, wall and CPU-time medians of the paired differences
    (masked step less the variant without it; the masking timed alone), and what the masked step costs over the
    dense one."""
    def paired(a: list[float], b: list[float]) -> float:
        return round(statistics.median(x - y for x, y in zip(a[-repeats:], b[-repeats:])), 4)

    out = {part: {"wall": paired(by["masked"].times, by[f"without_{part}"].times),
                  "cpu": round(cpu_median["masked"] - cpu_median[f"without_{part}"], 4)} for part in COMPONENTS}
    out["masking"] = {"wall": round(by["masking"].median, 4), "cpu": None}
    out["masked_over_dense"] = {"wall": paired(by["masked"].times, by["dense"].times),
                                "cpu": round(cpu_median["masked"] - cpu_median["dense"], 4)}
    return out


CONV_OPS = ("convolution", "convolution_backward")


class Traffic(TorchDispatchMode):
    """Per aten op (forward and backward alike): calls and the bytes of its tensor arguments and results, the
    memory it reads and writes (views move nothing and are left out). Exact on the ``meta`` device, where nothing
    is computed: what a memory-bound (elementwise, reduction) kernel costs on a GPU is its bytes over the memory's
    bandwidth."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes: dict[str, int] = {}
        self.calls: dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not func.is_view and func.overloadpacket.__name__ not in ("detach", "alias", "_to_copy_meta"):
            name = func.overloadpacket.__name__
            tensors = [t for t in pytree.tree_leaves((args, kwargs or {}, out)) if isinstance(t, torch.Tensor)]
            self.bytes[name] = self.bytes.get(name, 0) + sum(t.numel() * t.element_size() for t in tensors)
            self.calls[name] = self.calls.get(name, 0) + 1
        return out


def traffic(crop: int, size: str, batch: int, *, dtype: torch.dtype, weighting: str = "attentive",
            masking: dict | None = None) -> dict:
    """The masked step's forward and backward (no optimiser: the same for every variant) on the ``meta`` device in
    ``dtype`` (the network cast to it: autocast's activations), against the dense step and each `ablated` variant:
    per variant, its convolutions' FLOPs and the bytes every other op moves (``--traffic``)."""
    from torch.utils.flop_counter import FlopCounterMode

    masking = dict(DEFAULT_MASKING if masking is None else masking)
    masking["mask_block"] = min(masking["mask_block"], crop // 2)
    with torch.device("meta"):
        torch.manual_seed(0)
        net = build_network({"arch": "resenc_pretrain", "kwargs": {"img_size": crop, "size": size,
                                                                   "loss_weighting": weighting, **masking}})
        net = net.to(dtype)
        x = torch.randn(batch, 1, crop, crop, crop, dtype=dtype)

    def count(loss_fn) -> dict:
        with FlopCounterMode(display=False) as flops, Traffic() as moved:
            loss_fn().float().backward()
        other = {k: v for k, v in moved.bytes.items() if k not in CONV_OPS}
        return {"conv_GFLOPs": round(flops.get_total_flops() / 1e9, 3),
                "conv_GB": round(sum(moved.bytes.get(k, 0) for k in CONV_OPS) / 1e9, 3),
                "other_GB": round(sum(other.values()) / 1e9, 3),
                "other_calls": sum(n for k, n in moved.calls.items() if k not in CONV_OPS),
                "top_other_GB": {k: round(v / 1e9, 3) for k, v in sorted(other.items(), key=lambda kv: -kv[1])[:12]}}

    def variant(part: str | None):
        def loss() -> torch.Tensor:
            with ablated(net, part):
                return net(x).loss
        return loss

    def previous() -> torch.Tensor:  # the masked step as it was (--previous)
        with_norm(net, PreviousNorm, Workload("previous", lambda: None)).run()
        try:
            return net(x).loss
        finally:
            with_norm(net, MaskedInstanceNorm3d, Workload("now", lambda: None)).run()

    out = {"masked": count(variant(None)), "masked_previous": count(previous), "dense": count(lambda: dense_loss(net, x))}
    for part in COMPONENTS:
        out[f"without_{part}"] = count(variant(part))
    with Traffic() as moved:
        masking_only(net, x, dtype)
    out["masking_GB"] = round(sum(moved.bytes.values()) / 1e9, 3)
    return {"crop": crop, "size": size, "batch": batch, "dtype": str(dtype).removeprefix("torch."),
            "masking": masking, "weighting": weighting, "steps": out,
            "component_other_GB": {part: round(out["masked"]["other_GB"] - out[f"without_{part}"]["other_GB"], 3)
                                   for part in COMPONENTS},
            "component_conv_GFLOPs": {part: round(out["masked"]["conv_GFLOPs"]
                                                  - out[f"without_{part}"]["conv_GFLOPs"], 3) for part in COMPONENTS}}


def cpu_timed(workload: Workload, cpu: list[float]) -> Workload:
    """``workload`` whose every run also appends its process CPU time to ``cpu``."""
    run = workload.run

    def timed() -> None:
        start = time.process_time()
        run()
        cpu.append(time.process_time() - start)

    workload.run = timed
    return workload


def measure(device: torch.device, crop: int, size: str, batch: int, *, repeats: int, weighting: str, swvit: str,
            dtype: torch.dtype | None, masking: dict | None = None, earlier: bool = False,
            fp32_norm: bool = False, components: bool = False, autograd_norm: bool = False,
            previous: bool = False) -> dict:
    """The steps of one (crop, size) at the largest batch of ``batch``, ``batch // 2``, ... whose masked step
    fits (`benchmarks.harness.largest_fitting`; CPU: ``batch`` itself): one result dict."""
    torch.manual_seed(0)
    setup = Setup(device, crop, batch, PRESETS["tiny" if swvit == "none" else swvit], dtype)
    masking = dict(DEFAULT_MASKING if masking is None else masking)
    masking["mask_block"] = min(masking["mask_block"], crop // 2)  # as the pretraining method does
    net = build_network({"arch": "resenc_pretrain", "kwargs": {"img_size": crop, "size": size,
                                                               "loss_weighting": weighting, **masking}}).to(device)
    old = build_network({"arch": "resenc_pretrain", "kwargs": {"img_size": crop, "size": size,
                                                               "loss_weighting": weighting}}).to(device) if earlier else None
    seg = build_network({"arch": "resenc", "kwargs": {"img_size": crop, "in_channels": 1, "out_channels": 2,
                                                      "size": size}}).to(device).train()
    inputs: dict[str, torch.Tensor] = {}

    def masked_at(b: int) -> Workload:
        inputs["x"] = torch.randn(b, 1, crop, crop, crop, device=device)
        inputs["label"] = torch.randint(0, 2, (b, crop, crop, crop), device=device)
        return with_norm(net, MaskedInstanceNorm3d, train_workload("masked", setup.with_batch(b), net, adamw(net, b),
                                                                   lambda: net(inputs["x"]).loss))

    masked, batch, too_big = largest_fitting(masked_at, batch, device)
    if masked is None:
        raise SystemExit(f"resenc {size} at {crop}³: not even one sample fits on {device}")
    x, label = inputs["x"], inputs["label"]
    setup = setup.with_batch(batch)

    def finetune_loss() -> torch.Tensor:
        outs = seg(x)  # one output per supervised resolution (a single tensor when there is one)
        return sum(torch.nn.functional.cross_entropy(o, torch.nn.functional.interpolate(
            label[:, None].float(), size=o.shape[2:]).long()[:, 0]) for o in ([outs] if torch.is_tensor(outs) else outs))

    # every step with the optimiser asa-pretrain runs (AdamW, its multi-tensor kernel), the SW-ViT's too
    work = [masked,
            train_workload("dense", setup, net, adamw(net, batch), lambda: dense_loss(net, x)),
            train_workload("finetune", setup, seg, adamw(seg, batch), finetune_loss)]
    if fp32_norm:  # the same step with the norm's earlier statistics (an fp32 copy of each activation)
        work.append(with_norm(net, Fp32StatsNorm, train_workload("masked_fp32_norm", setup, net, adamw(net, batch),
                                                                  lambda: net(x).loss)))
    if previous:  # the same step as before 2026-11-27: Σx² from written squares, each conv's mask with its backward
        work.append(with_norm(net, PreviousNorm, train_workload("masked_previous", setup, net, adamw(net, batch),
                                                                lambda: net(x).loss)))
    if autograd_norm:  # the same step with the norm's earlier gradient (autograd's)
        work.append(with_norm(net, AutogradNorm, train_workload("masked_autograd_norm", setup, net, adamw(net, batch),
                                                                lambda: net(x).loss)))
    if old is not None:  # the earlier masking (mask block = total stride, asa's densify, one weight per block)
        work.append(train_workload("masked_earlier", setup, old, adamw(old, batch), lambda: old(x).loss))
    if components:  # the masked step less one component at a time, and the masking alone
        work += component_workloads(setup, net, x, batch)
    if swvit != "none":
        work.append(asa_workloads(setup, x)[0])
        work[-1].name = "swvit"
    work += [conv_workload(device, crop, batch, dtype), matmul_workload(device, 4096 if device.type == "cpu" else 8192, dtype)]
    cpu: dict[str, list[float]] = {w.name: [] for w in work}
    for w in work:
        cpu_timed(w, cpu[w.name])
    steps = [w.name for w in work if w.name not in ("conv", "matmul", "masking")]
    alternate(work, device, warmup=1, steps=repeats, count_flops=(*steps, "conv"))
    by = {w.name: w for w in work}
    rates = {"conv": by["conv"].flops / by["conv"].median, "matmul": by["matmul"].flops / by["matmul"].median}
    reference = {name: "matmul" if name == "swvit" else "conv" for name in steps}
    cpu_median = {name: statistics.median(cpu[name][-repeats:]) for name in steps}
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
        "torch": torch.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
        "precision": amp_name(dtype), "crop": crop, "size": size, "batch": batch,
        "batch_that_did_not_fit": too_big, "repeats": repeats,
        "weighting": weighting, "swvit": swvit, "threads": torch.get_num_threads(),
        "parameters_M": round(sum(p.numel() for p in seg.parameters()) / 1e6, 2),
        "median_s": {n: round(by[n].median, 4) for n in steps},
        "samples_per_s": {n: round(batch / by[n].median, 4) for n in steps},
        "masking": {**masking, "mask_block": net.block, "weight_patch": net.weight_patch},
        "masked_over_dense": round(by["masked"].median / by["dense"].median, 3),
        **({"fp32_norm_over_dense": round(by["masked_fp32_norm"].median / by["dense"].median, 3)} if fp32_norm else {}),
        **({"autograd_norm_over_dense": round(by["masked_autograd_norm"].median / by["dense"].median, 3)}
           if autograd_norm else {}),
        **({"previous_over_dense": round(by["masked_previous"].median / by["dense"].median, 3),
            "paired_previous_over_masked": [round(p / m, 3) for p, m in zip(by["masked_previous"].times,
                                                                           by["masked"].times)]}
           if previous else {}),
        **({"earlier_over_dense": round(by["masked_earlier"].median / by["dense"].median, 3)} if old is not None else {}),
        "paired_ratios": [round(m / d, 3) for m, d in zip(by["masked"].times, by["dense"].times)],
        "cpu_median_s": {n: round(v, 4) for n, v in cpu_median.items()},
        "cpu_masked_over_dense": round(cpu_median["masked"] / cpu_median["dense"], 3),
        **({"component_s": component_costs(by, cpu_median, repeats)} if components else {}),
        "peak_memory_MiB": {n: round(by[n].peak_mib, 1) for n in steps},
        "step_GFLOPs": {n: float(f"{by[n].flops / 1e9:.4g}") for n in steps},
        "reference_GFLOPs_per_s": {k: round(v / 1e9, 2) for k, v in rates.items()},
        "fraction_of_reference_rate": {n: float(f"{by[n].flops / by[n].median / rates[reference[n]]:.3g}") for n in steps},
        "reference_of": reference,
    }
    del work, by, masked, net, old, seg, inputs, x, label
    release_memory(device)
    return result


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crop", type=int, nargs="+", default=[64], help="crop edges (each with every --size)")
    parser.add_argument("--size", nargs="+", default=["tiny"], choices=tuple(RESENC_SIZES))
    parser.add_argument("--batch", type=int, default=2,
                        help="batch, or on CUDA the largest tried (then halved until the masked step fits)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--amp", default="off", choices=AMP_CHOICES, help="autocast precision (default off: fp32)")
    parser.add_argument("--weighting", default="attentive", choices=("uniform", "attentive"))
    parser.add_argument("--mask-block", type=int, default=DEFAULT_MASKING["mask_block"],
                        help="mask block edge (default 16, as model.mask_block; capped at half the crop)")
    parser.add_argument("--densify", default=DEFAULT_MASKING["densify"], choices=("spark", "asa"))
    parser.add_argument("--weight-patch", type=int, default=DEFAULT_MASKING["weight_patch"])
    parser.add_argument("--earlier", action="store_true",
                        help="also time the earlier masking (block = total stride, asa densify, a weight per block)")
    parser.add_argument("--fp32-norm", action="store_true",
                        help="also time the masked step with the visible-only norm's earlier fp32 statistics")
    parser.add_argument("--previous", action="store_true",
                        help="also time the masked step as before 2026-11-27 (the squares of the norm's statistics "
                             "written out, each masked convolution's output mask with its own backward)")
    parser.add_argument("--autograd-norm", action="store_true",
                        help="also time the masked step with the visible-only norm's earlier gradient (autograd's)")
    parser.add_argument("--components", action="store_true",
                        help="also time the masked step without each of its parts (the convolutions' output mask, "
                             "the visible-only norms, densify and tokens, the attentive weights) and the masking "
                             "alone: each part's cost per step")
    parser.add_argument("--swvit", default="tiny", choices=(*PRESETS, "none"),
                        help="the SW-ViT preset whose ASA pretraining step is timed beside (none: left out)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path, default=None, help="write the list of results here (after each one)")
    parser.add_argument("--traffic", action="store_true",
                        help="count, on the meta device (nothing computed), each step's convolution FLOPs and the bytes "
                             "its other ops move, masked, dense and the masked step without each part (--amp: the "
                             "activations' dtype); no timing")
    args = parser.parse_args(argv)
    if args.traffic:
        dtype = {"off": torch.float32, "fp16": torch.float16}.get(args.amp, torch.bfloat16)
        results = [traffic(crop, size, args.batch, dtype=dtype, weighting=args.weighting,
                           masking={"mask_block": args.mask_block, "densify": args.densify,
                                    "weight_patch": args.weight_patch})
                   for crop in args.crop for size in args.size]
        print(json.dumps(results, indent=1), flush=True)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
        return results
    device = torch.device(args.device)
    dtype = resolve_amp(args.amp, device, option="--amp")
    results: list[dict] = []
    for crop in args.crop:
        for size in args.size:
            results.append(measure(device, crop, size, args.batch, repeats=args.repeats, weighting=args.weighting,
                                   swvit=args.swvit, dtype=dtype, earlier=args.earlier,
                                   fp32_norm=args.fp32_norm, components=args.components,
                                   autograd_norm=args.autograd_norm, previous=args.previous,
                                   masking={"mask_block": args.mask_block, "densify": args.densify,
                                            "weight_patch": args.weight_patch}))
            print(json.dumps(results[-1], indent=1), flush=True)
            if args.json:  # every finished configuration kept, should a later one not finish
                args.json.write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
