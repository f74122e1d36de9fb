#!/usr/bin/env python
"""Side-by-side speed, FLOP efficiency and memory of ``asa`` against MONAI, on one input, in one run.

Measures, alternating the compared models round by round so that load changes hit both alike:

1. pretrain step (forward + backward + AdamW) of ``ASA`` vs MONAI's ``MaskedAutoEncoderViT`` of
   the same encoder/decoder sizes, patch size 8 and mask ratio 0.75 -> ``speedup_vs_monai_mae``;
2. FLOPs of one step (``FlopCounterMode``) / step time over the FLOP/s of a large dense matmul
   timed in the same rounds -> ``matmul_frac`` (and MONAI's, for context); over the device's datasheet
   peak (fp16 / bf16 on a listed GPU, ``benchmarks.harness.DATASHEET_PEAKS``; else None) -> ``mfu``;
3. ``patch_informativeness`` of the batch / ASA step time -> ``ar_weights_fraction``;
4. fine-tune step (forward + backward + SGD, Dice + BCE) and Gaussian sliding-window inference
   of ``ASASegmenter`` vs MONAI ``UNETR`` of the same width and heads -> ``finetune_speedup_vs_unetr``,
   ``inference_speedup_vs_unetr``;
5. peak memory of each (parameters + optimizer state + the peak rise during a step: process RSS
   on CPU, allocated memory on CUDA);
6. crops/s of the pretraining loader reading a store (2 workers, synthetic brain-size volumes,
   page cache warm) over the samples/s the ASA step consumes on the device that ran it ->
   ``loader_headroom`` (a CPU run gives the CPU's figure; the GPU's demand is measured on a GPU);
7. with reduced precision, the ASA step in fp32 alongside -> ``bf16_speedup`` (fp32 step / bf16 step);
8. ``asa.eval.predict_volume`` (the ``asa-predict`` path: window batch ``auto``, and with bf16 on a
   CPU the channels-last layout) of the preset's ``ASASegmenter`` over one whole case,
   4 × 240 × 240 × 155 by default (BraTS) -> ``case_inference_s`` and its peak memory; alongside,
   the same network in the contiguous layout at window batch = ``--batch`` ->
   ``case_inference_contiguous_s``.

``--region-attention`` measures instead one attention layer (forward + backward) over the token
sequence of a ``size``³ crop (4096 tokens at 128³) with the preset's width, heads and window S:
R-MSA in region-aligned chunks of S, the same R-MSA with its dense N × N mask, and LW-MSA, on the
region map of a phantom (k-means tissue classes, patch majority) -> ``rmsa_vs_dense_speedup``,
``rmsa_vs_dense_memory``, ``rmsa_vs_lw_time``, ``rmsa_vs_lw_memory``.

``--symmetry`` measures the symmetry mechanisms instead, alternated the same way: the ASA pretrain
step with windowed SACA in the decoder / encoder (mirror-consistent masking) against plain ASA
-> ``saca_decoder_overhead``, ``saca_encoder_overhead``; the fine-tune step of SA-Swin against
MONAI's SwinUNETR of the same sizes -> ``sa_swin_vs_swin_unetr`` (step time ratios, 1 = no cost).

``--loader`` measures the data path instead (`benchmarks.loader`): crops/s per worker at ``size``³
from a store of ``--loader-volumes`` synthetic brains of ``--loader-shape``, read in whole batches
against item by item, alternated round by round, page cache warm and cold (``posix_fadvise``);
resident memory per worker; start-up to the first batch with an ``--index-cases``-case store index.

``--gpu-ab`` compares old and new code paths of the step instead (`benchmarks.ab`: the optimizer's
kernel, SLW-MSA's window partition, each pair alternated in one process, and the AR weights' share),
then runs ``asa-pretrain`` from a store of synthetic brains with the real loader for ``--loop-steps``;
``--gpu-ab --dry-run`` runs all of it at toy sizes on the CPU.

``--amp`` picks the precision of every model alike, MONAI's references included, and of the
reference matmul: ``auto`` is what ``trainer.amp=auto`` gives (fp16 + GradScaler on CUDA, bf16 on
a CPU with native bf16 matmul, else fp32). Every figure is a median over timed repeats after warm-up.

Examples::

    python benchmarks/speed.py --json bench.json --append-md      # 128³, batch 2, base (CPU: < 10 min)
    python benchmarks/speed.py --size 64                           # quick look (CPU: < 1 min)
    python benchmarks/speed.py --batch 24 --json gpu.json --append-md   # the paper's per-GPU batch
    python benchmarks/speed.py --region-attention --json rmsa.json   # R-MSA vs dense mask vs LW-MSA
    python benchmarks/speed.py --amp bf16 --threads 2 --append-md        # bf16 on CPU (and fp32 alongside)
    python benchmarks/speed.py --symmetry --batch 1 --json sym.json      # SACA / SA-Swin step costs at 128³
    python benchmarks/speed.py --symmetry sa_swin --swin-feature-size 24   # only SA-Swin vs SwinUNETR
    python benchmarks/speed.py --loader --json loader.json --append-md   # store: batches vs items, 200 volumes
    python benchmarks/speed.py --gpu-ab --batch 24 --json ab.json        # old vs new step paths + 500-step asa-pretrain
    python benchmarks/speed.py --gpu-ab --dry-run                        # the same at toy sizes on the CPU
    python benchmarks/speed.py --parts finetune inference --batch 2 --swin-unetr --amp fp16   # vs UNETR, SwinUNETR

``--parts`` picks the measurements (pretrain, finetune, inference, case, loader; default all). On
CUDA a MONAI MaskedAutoEncoderViT that runs out of memory at ``--batch`` is measured at the largest
of batch/2, batch/4, ... that fits, and its out-of-memory batch is recorded (``monai_mae_oom_batch``).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import math
import os
import platform
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import monai
import torch
from monai.inferers import sliding_window_inference
from monai.networks.nets import UNETR, MaskedAutoEncoderViT, SwinUNETR
from torch import nn

import asa
from asa.eval.inference import predict_volume
from asa.losses import SegmentationLoss, patch_informativeness
from asa.models import (ASA, PRESETS, ASASegmenter, LinearWindowAttention, RegionAttention, SASwin, patch_regions,
                        patchify)
from asa.models.layout import channels_last_inference
from asa.train.optim import multi_tensor_kernel
from asa.train.precision import AMP_CHOICES, amp_name, resolve_amp

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # this checkout's benchmarks/, not installed with asa
    sys.path.append(str(Path(__file__).resolve().parents[1]))
from benchmarks.harness import (Workload, alternate, backward_step, datasheet_peak, fits, largest_fitting,  # noqa: E402
                                matmul_workload, release_memory, tensor_bytes)
from benchmarks.loader import format_loader_table, run_loader_benchmark  # noqa: E402
from benchmarks.report import append_loader_markdown, append_markdown, format_symmetry_table, format_table  # noqa: E402

PATCH = 8
MASK_RATIO = 0.75
IN_SEG, OUT_SEG = 4, 3  # BraTS: 4 modalities -> WT, TC, ET
UNETR_NOTE = "MONAI UNETR's ViT is fixed at 16³ patches and 12 layers (ASASegmenter: 8³ patches, preset depth)"
BENCHMARKS_MD = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"
CASE_SHAPE = (240, 240, 155)  # one BraTS case



# --- workloads ---------------------------------------------------------------------------------
@dataclass
class Setup:
    device: torch.device
    size: int
    batch: int
    preset: dict[str, int]
    dtype: torch.dtype | None = None  # autocast dtype of every model (None: fp32)

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.dtype) if self.dtype is not None else nullcontext()

    def at(self, dtype: torch.dtype | None) -> Setup:
        return Setup(self.device, self.size, self.batch, self.preset, dtype)

    def with_batch(self, batch: int) -> Setup:
        return Setup(self.device, self.size, batch, self.preset, self.dtype)


def train_workload(name: str, setup: Setup, model: nn.Module, optimizer: torch.optim.Optimizer,
                   loss_fn: Callable[[], torch.Tensor]) -> Workload:
    """fwd + bwd + optimizer step under the setup's autocast, with a GradScaler for fp16. Gradients
    are dropped after the step so that between steps the model holds only parameters and optimizer state."""
    scaler = torch.amp.GradScaler(setup.device.type) if setup.dtype == torch.float16 else None

    def run() -> None:
        try:
            with setup.autocast():
                loss = loss_fn()
            backward_step(loss, optimizer, scaler)
        finally:  # also after running out of memory half-way: no gradients left behind
            optimizer.zero_grad(set_to_none=True)

    return Workload(name, run, static=lambda: tensor_bytes(model) + tensor_bytes(optimizer.state_dict()["state"]))


def adamw(model: nn.Module, batch: int) -> torch.optim.Optimizer:
    """The paper's pretraining optimizer (Table 1): lr 1.5e-4 · batch / 256, β = (0.9, 0.95), wd 0.05, with
    the multi-tensor kernel ``asa-pretrain`` uses (fused on CPU and CUDA)."""
    params = list(model.parameters())
    return torch.optim.AdamW(params, lr=1.5e-4 * batch / 256, betas=(0.9, 0.95), weight_decay=0.05,
                             **multi_tensor_kernel(params))


def sgd(model: nn.Module) -> torch.optim.Optimizer:
    """The paper's fine-tuning optimizer: SGD, Nesterov momentum 0.99, lr 0.01, wd 3e-5 (fused, as in ``asa-finetune``)."""
    params = list(model.parameters())
    return torch.optim.SGD(params, lr=0.01, momentum=0.99, nesterov=True, weight_decay=3e-5,
                           **multi_tensor_kernel(params))


def asa_workloads(setup: Setup, x: torch.Tensor) -> tuple[Workload, Workload | None]:
    """The ASA pretrain step on ``x`` [B, 1, D, H, W] and, with reduced precision, the same ASA (same
    weights, own optimizer) in fp32 (else None)."""
    ours = ASA(img_size=setup.size, patch_size=PATCH, mask_ratio=MASK_RATIO, **setup.preset).to(setup.device)
    fp32 = None
    if setup.dtype is not None:
        fp32 = train_workload("asa_fp32", setup.at(None), ours, adamw(ours, setup.batch), lambda: ours(x).loss)
    return train_workload("asa", setup, ours, adamw(ours, setup.batch), lambda: ours(x).loss), fp32


def monai_mae_workload(setup: Setup, x: torch.Tensor) -> Workload:
    """MONAI's MaskedAutoEncoderViT of ASA's sizes (patch 8, mask ratio 0.75) on ``x``, with the loss
    over the masked patches."""
    p = setup.preset
    theirs = MaskedAutoEncoderViT(
        in_channels=1, img_size=setup.size, patch_size=PATCH, hidden_size=p["embed_dim"],
        mlp_dim=4 * p["embed_dim"], num_layers=p["depth"], num_heads=p["num_heads"], masking_ratio=MASK_RATIO,
        decoder_hidden_size=p["decoder_dim"], decoder_mlp_dim=4 * p["decoder_dim"],
        decoder_num_layers=p["decoder_depth"], decoder_num_heads=p["decoder_num_heads"], qkv_bias=True,
    ).to(setup.device)
    if setup.dtype is not None:
        # MONAI writes the decoder embedding into fp32 mask tokens by index_put, which needs equal
        # dtypes under autocast: hand it fp32 (the decoder's linear layers cast back to the amp dtype)
        theirs.decoder_embed.register_forward_hook(lambda module, args, out: out.float())
    target = patchify(x, PATCH)  # [B, N, s³]

    def monai_loss() -> torch.Tensor:
        pred, mask = theirs(x)  # [B, N, s³], [B, N] (1 = masked)
        per_patch = ((pred.float() - target) ** 2).mean(dim=-1)
        return (per_patch * mask).sum() / mask.sum()

    return train_workload("monai_mae", setup.with_batch(x.shape[0]), theirs, adamw(theirs, x.shape[0]), monai_loss)


def pretrain_workloads(setup: Setup, x: torch.Tensor) -> tuple[Workload, Workload, Workload | None]:
    """ASA vs MONAI's MaskedAutoEncoderViT at the same sizes, both fed ``x`` [B, 1, D, H, W]; with
    reduced precision also the same ASA (same weights, own optimizer) in fp32 (else None)."""
    ours, fp32 = asa_workloads(setup, x)
    return ours, monai_mae_workload(setup, x), fp32


def segmentation_models(setup: Setup) -> tuple[nn.Module, nn.Module]:
    """ASASegmenter (preset encoder) and MONAI UNETR of the same width and heads, 4 -> 3 channels."""
    p = setup.preset
    ours = ASASegmenter(
        img_size=setup.size, in_channels=IN_SEG, out_channels=OUT_SEG, patch_size=PATCH, embed_dim=p["embed_dim"],
        depth=p["depth"], num_heads=p["num_heads"], window_size=p["window_size"], feature_size=16,
    ).to(setup.device)
    theirs = UNETR(
        in_channels=IN_SEG, out_channels=OUT_SEG, img_size=setup.size, feature_size=16, hidden_size=p["embed_dim"],
        mlp_dim=4 * p["embed_dim"], num_heads=p["num_heads"], qkv_bias=True,
    ).to(setup.device)
    return ours, theirs


def finetune_workloads(setup: Setup, models: Sequence[nn.Module], x: torch.Tensor, y: torch.Tensor,
                       names: Sequence[str] = ("asa_seg", "unetr")) -> list[Workload]:
    """Fine-tune step of each model with Dice + BCE on multilabel targets ``y`` [B, 3, D, H, W]."""
    criterion = SegmentationLoss(multilabel=True)
    out = []
    for name, model in zip(names, models):
        model.train()
        out.append(train_workload(f"{name}_finetune", setup, model, sgd(model),
                                  lambda m=model: criterion(m(x), y)))
    return out


def inference_workloads(setup: Setup, models: tuple[nn.Module, nn.Module],
                        volume: torch.Tensor) -> tuple[Workload, Workload]:
    """Gaussian sliding-window inference (ROI = size³, overlap 0.5) over ``volume`` [1, 4, L, L, L]."""
    out = []
    for name, model in zip(("asa_seg", "unetr"), models):
        def run(m: nn.Module = model) -> None:
            m.eval()
            with torch.no_grad(), setup.autocast():
                sliding_window_inference(volume, (setup.size,) * 3, setup.batch, m, overlap=0.5, mode="gaussian")

        out.append(Workload(f"{name}_inference", run, static=lambda m=model: tensor_bytes(m)))
    return out[0], out[1]


def case_workload(setup: Setup, model: ASASegmenter, case: torch.Tensor, sw_batch: int | str = "auto",
                  name: str = "case_inference") -> Workload:
    """``predict_volume`` (Gaussian windows of size³, overlap 0.5) over one [4, *shape] case."""

    def run() -> None:
        model.eval()
        predict_volume(model, case, roi_size=(setup.size,) * 3, multilabel=True, overlap=0.5,
                       sw_batch_size=sw_batch, device=setup.device, amp_dtype=setup.dtype)

    return Workload(name, run, static=lambda: tensor_bytes(model) + tensor_bytes(case))


def loader_throughput(size: int, batch: int, workers: int = 2, volumes: int = 8) -> float:
    """Crops/s of the pretraining loader reading a store (``data.store``): ``volumes`` synthetic
    brains of 1.25 × 1.5 × 1.25 × ``size`` (160 × 192 × 160 at 128), brain-centred ``size``³ crops,
    ``workers`` processes, page cache warm, timed from the first batch on (`benchmarks.loader`)."""
    from asa.data import build_pretrain_dataset, discover
    from asa.data.store_writer import build_store
    from asa.data.preprocessing import PretrainPreprocess
    from benchmarks.loader import loader_epoch, write_synthetic_bids

    shape = (size * 5 // 4, size * 3 // 2, size * 5 // 4)
    with tempfile.TemporaryDirectory(prefix="asa-bench-") as tmp:
        cases = discover("bids", write_synthetic_bids(Path(tmp) / "bids", volumes, shape), validate="none")
        build_store(cases, Path(tmp) / "store", preprocessor=PretrainPreprocess(size), channels=("t1",),
                    workers=workers, progress=False)
        dataset = build_pretrain_dataset(cases * max(1, -(-4 * batch // volumes)), crop=size, augment=False,
                                         store=Path(tmp) / "store")
        return loader_epoch(dataset, batch=batch, workers=workers)["crops_per_s"]


# --- the run -----------------------------------------------------------------------------------
def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available here")
    return device


PARTS = ("pretrain", "finetune", "inference", "case", "loader")


def run_benchmark(*, size: int, batch: int, preset: str, device: torch.device, steps: int, warmup: int,
                  loader: bool = True, seed: int = 0, amp: str = "auto", case_shape: Sequence[int] | None = CASE_SHAPE,
                  parts: Sequence[str] = PARTS, finetune_batch: int | None = None, swin_unetr: bool = False,
                  swin_feature_size: int = 48, matmul_size: int | None = None, inference_volume: int | None = None,
                  log: Callable[[str], None] = print) -> dict[str, Any]:
    """All measurements at one setting; returns the flat result dict (times in s, memory in MiB).

    ``parts``: which of `PARTS` to measure (``loader=False`` or ``case_shape=None`` leave those out
    too). ``finetune_batch`` (default ``batch``): the batch of the fine-tune steps and the window
    batch of the sliding-window inference; ``swin_unetr`` adds MONAI's SwinUNETR (``swin_feature_size``)
    to the fine-tune rounds. ``matmul_size``: the edge of the reference matmul (default 8192 on CUDA,
    4096 on a CPU); ``inference_volume``: the edge of the sliding-window inference volume (default
    1.5 × ``size``: 8 windows). On CUDA a model whose pretrain step does not fit at ``batch`` is
    measured at the largest of batch/2, batch/4, ... that fits (``monai_mae_batch``,
    ``monai_mae_oom_batch``; ``speedup_vs_monai_mae`` then compares samples/s); the fp32 ASA step
    beside a reduced-precision run is left out when it does not fit (``asa_fp32_oom_batch``)."""
    if preset not in PRESETS:
        raise ValueError(f"--preset must be one of {sorted(PRESETS)}, got {preset!r}")
    if size % 16:
        raise ValueError(f"--size must be a multiple of 16 (UNETR's patch), got {size}")
    finetune_batch = batch if finetune_batch is None else finetune_batch
    if steps < 1 or warmup < 0 or batch < 1 or finetune_batch < 1:
        raise ValueError(f"need --steps >= 1, --warmup >= 0, --batch >= 1, --finetune-batch >= 1; got {steps}, "
                         f"{warmup}, {batch}, {finetune_batch}")
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise ValueError(f"--parts: unknown {unknown}; expected some of {', '.join(PARTS)}")
    parts = [x for x in PARTS if x in parts and not (x == "loader" and not loader)
             and not (x == "case" and case_shape is None)]
    if swin_unetr and size % 32:
        raise ValueError(f"--swin-unetr needs --size a multiple of 32 (SwinUNETR), got {size}")
    inference_volume = (3 * size) // 2 if inference_volume is None else inference_volume
    if inference_volume < size:
        raise ValueError(f"--inference-volume must be at least --size ({size}, one window), got {inference_volume}")
    if matmul_size is not None and matmul_size < 1:
        raise ValueError(f"--matmul-size must be positive, got {matmul_size}")
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    say = lambda msg: log(f"[bench {time.perf_counter() - t0:5.0f} s] {msg}")
    setup = Setup(device, size, batch, PRESETS[preset], resolve_amp(amp, device, option="--amp"))
    r: dict[str, Any] = {"amp": amp_name(setup.dtype), "parts": list(parts)}
    times: dict[str, list[float]] = {}

    if "pretrain" in parts:
        _pretrain_rows(setup, r, times, steps=steps, warmup=warmup, say=say, matmul_size=matmul_size)

    if "finetune" in parts or "inference" in parts:
        fsetup = setup.with_batch(finetune_batch)
        models = segmentation_models(fsetup)
        r["finetune_batch"] = finetune_batch
    if "finetune" in parts:
        names, nets = ["asa_seg", "unetr"], list(models)
        if swin_unetr:
            names.append("swin_unetr")
            nets.append(SwinUNETR(in_channels=IN_SEG, out_channels=OUT_SEG, feature_size=swin_feature_size).to(device))
            r["swin_feature_size"] = swin_feature_size
        say(f"fine-tune steps: ASASegmenter vs MONAI {' and '.join(n.upper().replace('SWIN_', 'Swin') for n in names[1:])},"
            f" batch {finetune_batch}")
        xs = torch.randn(finetune_batch, IN_SEG, size, size, size, device=device)
        ys = (torch.rand(finetune_batch, OUT_SEG, size, size, size, device=device) > 0.5).float()
        ft = finetune_workloads(fsetup, nets, xs, ys, names)
        alternate(ft, device, warmup=warmup, steps=steps)
        for name, w in zip(names, ft):
            key = "asa" if name == "asa_seg" else name
            r[f"{key}_finetune_step_s"], r[f"{key}_finetune_peak_mib"] = w.median, w.peak_mib
        r["finetune_speedup_vs_unetr"] = ft[1].median / ft[0].median
        if swin_unetr:
            r["finetune_speedup_vs_swin_unetr"] = ft[2].median / ft[0].median
        times.update({w.name: w.times for w in ft})
        del ft, xs, ys, nets

    if "inference" in parts:
        say("sliding-window inference: ASASegmenter vs MONAI UNETR")
        side = inference_volume
        volume = torch.randn(1, IN_SEG, side, side, side, device=device)
        inf = inference_workloads(fsetup, models, volume)
        # the fine-tune rounds, when they ran, already ran both on windows of this shape
        alternate(inf, device, warmup=0 if "finetune" in parts else warmup, steps=steps)
        r["asa_inference_s"], r["unetr_inference_s"] = inf[0].median, inf[1].median
        r["inference_speedup_vs_unetr"] = inf[1].median / inf[0].median
        r["asa_inference_peak_mib"], r["unetr_inference_peak_mib"] = inf[0].peak_mib, inf[1].peak_mib
        r["inference_volume"] = side
        times.update({w.name: w.times for w in inf})
        del inf, volume

    if "case" in parts:
        shape = tuple(int(n) for n in case_shape)
        say(f"whole-case inference: ASASegmenter over 4 × {' × '.join(map(str, shape))}, windows {size}³")
        net = segmentation_models(setup)[0] if "finetune" not in parts and "inference" not in parts else models[0]
        volume = torch.randn(IN_SEG, *shape)
        work = [case_workload(setup, net, volume, batch, "case_inference_contiguous")]
        if device.type == "cpu" and setup.dtype is not None:  # asa-predict lays the network out channels-last
            laid_out = copy.deepcopy(net)
            channels_last_inference(laid_out)
            work.insert(0, case_workload(setup, laid_out, volume))
        else:
            work.insert(0, case_workload(setup, net, volume))
        alternate(work, device, warmup=0, steps=1)  # one case: start-up costs are the user's too
        r["case_inference_s"], r["case_inference_peak_mib"] = work[0].median, work[0].peak_mib
        r["case_inference_contiguous_s"] = work[1].median
        r["case_inference_contiguous_peak_mib"] = work[1].peak_mib
        r["case_shape"] = list(shape)
        times.update({w.name: w.times for w in work})
    models = None

    if "loader" in parts:
        say("pretraining loader from a store of synthetic brains (2 workers, page cache warm)")
        r["loader_crops_per_s"] = loader_throughput(size, batch)
        if "asa_samples_per_s" in r:  # this machine's loader / its step
            r["loader_headroom"] = r["loader_crops_per_s"] / r["asa_samples_per_s"]
    r["unetr_note"] = UNETR_NOTE
    r["times"] = times
    return r


def _pretrain_rows(setup: Setup, r: dict[str, Any], times: dict[str, list[float]], *, steps: int, warmup: int,
                   say: Callable[[str], None], matmul_size: int | None = None) -> None:
    """ASA vs MONAI MaskedAutoEncoderViT pretrain steps, the matmul reference, the fp32 ASA step
    beside a reduced-precision run, and the AR weights; fills ``r`` and ``times``."""
    size, batch, device = setup.size, setup.batch, setup.device
    say(f"pretrain steps: ASA vs MONAI MaskedAutoEncoderViT, {size}³, batch {batch}, {r['amp']}")
    x = torch.randn(batch, 1, size, size, size, device=device)
    n = matmul_size or (8192 if device.type == "cuda" else 4096)
    matmul = matmul_workload(device, n, setup.dtype)
    asa_w, fp32_w = asa_workloads(setup, x)
    if not fits(asa_w, device):
        raise RuntimeError(f"the ASA pretrain step ({size}³, batch {batch}, {r['amp']}) does not fit in the memory "
                           f"of {device}: lower --batch")
    if fp32_w is not None and not fits(fp32_w, device):
        say(f"the fp32 ASA step does not fit at batch {batch}: left out")
        r["asa_fp32_oom_batch"], fp32_w = batch, None
        release_memory(device)
    mae_w, mae_batch, mae_oom = largest_fitting(lambda b: monai_mae_workload(setup, x[:b]), batch, device)
    if mae_oom is not None:
        r["monai_mae_oom_batch"] = mae_oom
        say(f"MONAI MaskedAutoEncoderViT runs out of memory at batch {mae_oom}"
            + (f"; measured at batch {mae_batch}" if mae_w is not None else " (batch 1 too): left out"))
    work = [matmul, asa_w] + ([mae_w] if mae_w is not None else []) + ([fp32_w] if fp32_w else [])
    alternate(work, device, warmup=warmup, steps=steps, count_flops=("asa", "monai_mae"))
    if fp32_w is not None:
        r["asa_fp32_step_s"] = fp32_w.median
        r[f"{r['amp']}_speedup"] = fp32_w.median / asa_w.median
        times["asa_fp32"] = fp32_w.times
    r["asa_step_s"], r["asa_samples_per_s"] = asa_w.median, batch / asa_w.median
    r["asa_step_flops"] = asa_w.flops
    r["matmul_size"], r["matmul_flops_per_s"] = n, matmul.flops / matmul.median
    r["matmul_frac"] = asa_w.flops / asa_w.median / r["matmul_flops_per_s"]
    peak = datasheet_peak(device, setup.dtype)
    r["datasheet_peak_flops_per_s"] = peak
    r["mfu"] = asa_w.flops / asa_w.median / peak if peak else None
    r["asa_pretrain_peak_mib"] = asa_w.peak_mib
    times.update({w.name: w.times for w in work if w is not fp32_w})
    if mae_w is not None:
        r["monai_mae_batch"], r["monai_mae_step_s"] = mae_batch, mae_w.median
        r["monai_mae_samples_per_s"] = mae_batch / mae_w.median
        r["speedup_vs_monai_mae"] = r["asa_samples_per_s"] / r["monai_mae_samples_per_s"]
        r["monai_mae_step_flops"] = mae_w.flops
        r["monai_mae_matmul_frac"] = mae_w.flops / mae_w.median / r["matmul_flops_per_s"]
        r["monai_mae_peak_mib"] = mae_w.peak_mib
    del asa_w, mae_w, fp32_w, work
    release_memory(device)

    say("attentive weights (patch_informativeness)")
    ar = Workload("ar_weights", lambda: patch_informativeness(x, PATCH))
    alternate([ar], device, warmup=1, steps=max(steps, 5))
    r["ar_weights_s"] = ar.median
    r["ar_weights_fraction"] = ar.median / r["asa_step_s"]
    times["ar_weights"] = ar.times


def phantom_regions(size: int, k: int = 3, seed: int = 0) -> torch.Tensor:
    """Patch regions [1, (size/8)³] of a phantom: k-means tissue classes (0 background), patch majority."""
    from asa.data import cluster_tissue, make_phantom
    from asa.data.preprocessing import brain_mask, normalize_in_brain

    image = make_phantom(size, seed=seed).images["t1"][None]
    mask = brain_mask(image)
    labels = cluster_tissue(normalize_in_brain(image, mask), mask, k, seed=seed)
    return patch_regions(torch.from_numpy(labels.astype("int64"))[None], PATCH)


def run_region_attention_benchmark(*, size: int, batch: int, preset: str, device: torch.device, steps: int,
                                   warmup: int, seed: int = 0, amp: str = "auto",
                                   log: Callable[[str], None] = print) -> dict[str, Any]:
    """One attention layer, forward + backward over ``(size/8)³`` tokens: R-MSA (chunked), R-MSA with
    the dense mask, LW-MSA; times in s, peak memory in MiB."""
    if preset not in PRESETS:
        raise ValueError(f"--preset must be one of {sorted(PRESETS)}, got {preset!r}")
    if size % PATCH or steps < 1 or warmup < 0 or batch < 1:
        raise ValueError(f"need --size a multiple of {PATCH}, --steps >= 1, --warmup >= 0, --batch >= 1")
    torch.manual_seed(seed)
    p = PRESETS[preset]
    dim, heads, s = p["embed_dim"], p["num_heads"], p["window_size"]
    setup = Setup(device, size, batch, p, resolve_amp(amp, device, option="--amp"))
    regions = phantom_regions(size, seed=seed).expand(batch, -1).to(device)
    n = regions.shape[1]
    log(f"[bench] attention layer over {n} tokens, width {dim}, {heads} heads, S = {s}, batch {batch}, "
        f"{amp_name(setup.dtype)}; {int(regions[0].unique().numel())} regions, sizes "
        f"{torch.bincount(regions[0]).tolist()}")
    x = torch.randn(batch, n, dim, device=device)
    layers = {
        "rmsa": RegionAttention(dim, heads, s),
        "rmsa_dense": RegionAttention(dim, heads, s, mode="dense"),
        "lw_msa": LinearWindowAttention(dim, heads, s),
    }

    def workload(name: str, layer: nn.Module) -> Workload:
        layer.to(device)
        takes_regions = isinstance(layer, RegionAttention)

        def run() -> None:
            xi = x.detach().requires_grad_()
            with setup.autocast():
                out = layer(xi, regions) if takes_regions else layer(xi)
            out.float().square().mean().backward()
            layer.zero_grad(set_to_none=True)

        return Workload(name, run, static=lambda: tensor_bytes(layer))

    layers["rmsa_dense"].load_state_dict(layers["rmsa"].state_dict())
    work = [workload(name, layer) for name, layer in layers.items()]
    with torch.no_grad():  # same weights, same rule: the chunked layer must reproduce the dense one
        diff = (layers["rmsa"](x, regions) - layers["rmsa_dense"](x, regions)).abs().max().item()
    alternate(work, device, warmup=warmup, steps=steps)
    w = {x.name: x for x in work}
    return {
        "amp": amp_name(setup.dtype), "tokens": n, "regions": int(regions[0].unique().numel()), "chunk": s,
        "rmsa_max_abs_diff_vs_dense": diff,
        **{f"{k}_step_s": v.median for k, v in w.items()},
        **{f"{k}_peak_mib": v.peak_mib for k, v in w.items()},
        "rmsa_vs_dense_speedup": w["rmsa_dense"].median / w["rmsa"].median,
        "rmsa_vs_dense_memory": w["rmsa_dense"].peak_mib / w["rmsa"].peak_mib,
        "rmsa_vs_lw_time": w["rmsa"].median / w["lw_msa"].median,
        "rmsa_vs_lw_memory": w["rmsa"].peak_mib / w["lw_msa"].peak_mib,
        "times": {k: v.times for k, v in w.items()},
    }


def run_symmetry_benchmark(*, size: int, batch: int, preset: str, device: torch.device, steps: int, warmup: int,
                           seed: int = 0, amp: str = "auto", swin_feature_size: int = 48, parts: str = "all",
                           log: Callable[[str], None] = print) -> dict[str, Any]:
    """ASA pretrain steps with ``saca`` none / decoder / encoder (``parts`` all or saca), and SwinUNETR
    vs SA-Swin fine-tune steps (same sizes, 4 -> 3 channels, Dice + BCE, SGD; ``parts`` all or
    sa_swin); each group alternated in one run."""
    if preset not in PRESETS:
        raise ValueError(f"--preset must be one of {sorted(PRESETS)}, got {preset!r}")
    if size % 32:
        raise ValueError(f"--symmetry needs --size a multiple of 32 (SwinUNETR), got {size}")
    torch.manual_seed(seed)
    setup = Setup(device, size, batch, PRESETS[preset], resolve_amp(amp, device, option="--amp"))
    r: dict[str, Any] = {"amp": amp_name(setup.dtype)}
    times: dict[str, list[float]] = {}
    r["times"] = times
    if parts in ("all", "saca"):
        _saca_rows(setup, r, steps=steps, warmup=warmup, log=log)
    if parts in ("all", "sa_swin"):
        _sa_swin_rows(setup, r, swin_feature_size, steps=steps, warmup=warmup, log=log)
    return r


def _saca_rows(setup: Setup, r: dict[str, Any], *, steps: int, warmup: int, log: Callable[[str], None]) -> None:
    size, batch, device, times = setup.size, setup.batch, setup.device, r["times"]
    log(f"[bench] ASA pretrain steps with saca none / decoder / encoder, {size}³, batch {batch}, {r['amp']}")
    x = torch.randn(batch, 1, size, size, size, device=device)
    pre = []
    for place in ("none", "decoder", "encoder"):
        model = ASA(img_size=size, patch_size=PATCH, mask_ratio=MASK_RATIO, saca=place, **setup.preset).to(device)
        pre.append(train_workload(f"asa_saca_{place}", setup, model, adamw(model, batch), lambda m=model: m(x).loss))
    alternate(pre, device, warmup=warmup, steps=steps)
    r["asa_step_s"], r["asa_saca_decoder_step_s"], r["asa_saca_encoder_step_s"] = (w.median for w in pre)
    r["saca_decoder_overhead"] = pre[1].median / pre[0].median
    r["saca_encoder_overhead"] = pre[2].median / pre[0].median
    log(f"[bench] ASA step saca none / decoder / encoder: {pre[0].median:.3f} / {pre[1].median:.3f} / "
        f"{pre[2].median:.3f} s")
    times.update({w.name: w.times for w in pre})


def _sa_swin_rows(setup: Setup, r: dict[str, Any], swin_feature_size: int, *, steps: int, warmup: int,
                  log: Callable[[str], None]) -> None:
    size, batch, device, times = setup.size, setup.batch, setup.device, r["times"]
    log(f"[bench] fine-tune steps: MONAI SwinUNETR vs SA-Swin, feature size {swin_feature_size}")
    criterion = SegmentationLoss(multilabel=True)
    xs = torch.randn(batch, IN_SEG, size, size, size, device=device)
    ys = (torch.rand(batch, OUT_SEG, size, size, size, device=device) > 0.5).float()
    ft = []
    for name, cls in (("swin_unetr", SwinUNETR), ("sa_swin", SASwin)):
        model = cls(in_channels=IN_SEG, out_channels=OUT_SEG, feature_size=swin_feature_size).to(device).train()
        ft.append(train_workload(f"{name}_finetune", setup, model, sgd(model), lambda m=model: criterion(m(xs), ys)))
    alternate(ft, device, warmup=warmup, steps=steps)
    r["swin_unetr_finetune_step_s"], r["sa_swin_finetune_step_s"] = ft[0].median, ft[1].median
    r["sa_swin_vs_swin_unetr"] = ft[1].median / ft[0].median
    r["swin_unetr_finetune_peak_mib"], r["sa_swin_finetune_peak_mib"] = ft[0].peak_mib, ft[1].peak_mib
    r["swin_feature_size"] = swin_feature_size
    times.update({w.name: w.times for w in ft})


def describe(device: torch.device, argv: Sequence[str]) -> dict[str, Any]:
    """Device, software and invocation facts recorded with every result."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo") as f:
                name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
        except (OSError, StopIteration):
            pass
        threads = torch.get_num_threads()
        name = f"{name} ({threads} thread{'s' if threads > 1 else ''})"
    return {
        "device": device.type,
        "device_name": name,
        "torch_version": torch.__version__,
        "monai_version": monai.__version__,
        "asa_version": getattr(asa, "__version__", "unknown"),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(["benchmarks/speed.py", *argv]),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=128, help="cubic input side in voxels, multiple of 16 (default 128)")
    p.add_argument("--batch", type=int, default=2, help="batch size (default 2; the paper uses 24 per GPU)")
    p.add_argument("--preset", default="base", choices=sorted(PRESETS), help="model sizes (default base)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--steps", type=int, default=3, help="timed repeats per measurement (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed repeats before timing (default 1)")
    p.add_argument("--amp", default="auto", choices=AMP_CHOICES,
                   help="precision of every model: auto (as trainer.amp=auto), off (fp32), bf16, fp16 (CUDA)")
    p.add_argument("--case-shape", type=int, nargs=3, default=list(CASE_SHAPE), metavar=("X", "Y", "Z"),
                   help="whole-case inference volume (default 240 240 155, one BraTS case)")
    p.add_argument("--skip-case", action="store_true", help="leave out the whole-case inference")
    p.add_argument("--skip-loader", action="store_true", help="leave out the data-loader measurement")
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), metavar="PART",
                   help=f"what to measure, some of {' '.join(PARTS)} (default: all)")
    p.add_argument("--finetune-batch", type=int,
                   help="batch of the fine-tune steps and window batch of the inference (default: --batch)")
    p.add_argument("--swin-unetr", action="store_true",
                   help="add MONAI SwinUNETR (--swin-feature-size) to the fine-tune steps")
    p.add_argument("--json", type=Path, help="write all results to this JSON file")
    p.add_argument("--append-md", nargs="?", const=BENCHMARKS_MD, type=Path, metavar="PATH",
                   help=f"append a row to BENCHMARKS.md (or PATH); default file {BENCHMARKS_MD.name}")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--region-attention", action="store_true",
                   help="only compare one attention layer: R-MSA (chunked) vs its dense mask vs LW-MSA")
    p.add_argument("--symmetry", nargs="?", const="all", choices=("all", "saca", "sa_swin"),
                   help="measure SACA in ASA (saca none/decoder/encoder) and/or SA-Swin vs SwinUNETR instead")
    p.add_argument("--swin-feature-size", type=int, default=48, help="SwinUNETR / SA-Swin feature size (default 48)")
    p.add_argument("--matmul-size", type=int,
                   help="edge of the reference matmul of matmul_frac (default 8192 on CUDA, 4096 on a CPU)")
    p.add_argument("--inference-volume", type=int,
                   help="edge of the sliding-window inference volume (default 1.5 × --size: 8 windows)")
    g = p.add_argument_group("--gpu-ab: old vs new code paths of the step, alternated, then the asa-pretrain loop")
    g.add_argument("--gpu-ab", action="store_true",
                   help="A/B of the optimizer kernel, the SLW-MSA partition and the CPU window kernel (old vs new in one process), the AR "
                        "weights' share, then asa-pretrain from a store (one command, < 9 min on an H100)")
    g.add_argument("--dry-run", action="store_true",
                   help="with --gpu-ab: every part at toy sizes on the CPU (tiny, 32³, batch 1, 4 loop steps)")
    g.add_argument("--loop-steps", type=int, default=500, help="asa-pretrain steps of --gpu-ab (default 500)")
    g.add_argument("--loop-batch", type=int, default=8, help="asa-pretrain batch of --gpu-ab (default 8)")
    g.add_argument("--loop-workers", type=int, default=8, help="its loader workers (default 8)")
    g.add_argument("--loop-volumes", type=int, default=64, help="synthetic brains in its store (default 64)")
    g = p.add_argument_group("--loader: the data path (crops of --size³, loader batch --batch)")
    g.add_argument("--loader", action="store_true",
                   help="measure the store loader instead: whole batches against item by item")
    g.add_argument("--loader-volumes", type=int, default=200, help="synthetic volumes (default 200)")
    g.add_argument("--loader-shape", type=int, nargs=3, default=[160, 192, 160], metavar=("X", "Y", "Z"),
                   help="their shape at 1 mm (default 160 192 160)")
    g.add_argument("--loader-workers", type=int, default=1, help="DataLoader workers timed (default 1: per worker)")
    g.add_argument("--loader-rounds", type=int, default=2, help="alternated rounds per path and mode (default 2)")
    g.add_argument("--index-cases", type=int, default=12000,
                   help="cases of the store index whose start-up is timed (default 12000; 0: skip)")
    g.add_argument("--no-cold", action="store_true", help="only the warm page cache")
    g.add_argument("--store-dtype", default="float16", choices=("float16", "float32"))
    g.add_argument("--tmp", type=Path, help="folder for the synthetic data (default: the system's temporary folder)")
    return p.parse_args(argv)


def run_gpu_ab(args: argparse.Namespace, device: torch.device, argv: Sequence[str], load_start: float,
               start: float) -> int:
    """``--gpu-ab``: `benchmarks.ab` at the run's setting (``--dry-run``: toy sizes on the CPU), then the
    asa-pretrain loop; prints and writes (``--json``) one result dict."""
    from benchmarks.ab import run_ab, run_pretrain_loop

    if args.dry_run:
        device = torch.device("cpu")
        torch.set_num_threads(1)
        size, batch, preset, steps, warmup = 32, 1, "tiny", 1, 0
        loop = dict(steps=4, batch=1, workers=0, volumes=4, threads=1)
    else:
        size, batch, preset, steps, warmup = args.size, args.batch, args.preset, args.steps, args.warmup
        loop = dict(steps=args.loop_steps, batch=args.loop_batch, workers=args.loop_workers,
                    volumes=args.loop_volumes, threads=args.threads)
    say = lambda msg: print(f"[bench {time.perf_counter() - start:5.0f} s] {msg}", flush=True)
    dtype = resolve_amp(args.amp, device, option="--amp")
    results = {**describe(device, argv), "size": size, "batch": batch, "preset": preset, "steps": steps,
               "warmup": warmup, "amp": amp_name(dtype), "load_avg_start": load_start}
    results.update(run_ab(size=size, batch=batch, preset=preset, device=device, dtype=dtype, steps=steps,
                          warmup=warmup, seed=args.seed, log=say))
    pretrain = run_pretrain_loop(size=size, preset=preset, device=device.type, log=say, **loop)
    results.update({f"loop_{k}": v for k, v in pretrain.items()})
    results.update(load_avg_end=os.getloadavg()[0], wall_s=time.perf_counter() - start)
    print(json.dumps({k: v for k, v in results.items() if k not in ("times", "loop_losses")}, indent=2))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"[bench] wrote {args.json}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    load_start = os.getloadavg()[0]
    if load_start > 0.5:
        print(f"[bench] warning: 1-min load average is {load_start:.2f} before the start; other processes "
              "competing for the cores slow many-small-op models most", file=sys.stderr)
    start = time.perf_counter()
    if args.loader:
        results = run_loader_benchmark(volumes=args.loader_volumes, shape=args.loader_shape, size=args.size,
                                       batch=args.batch, workers=args.loader_workers, rounds=args.loader_rounds,
                                       index_cases=args.index_cases, cold=not args.no_cold, dtype=args.store_dtype,
                                       tmp=args.tmp, log=lambda m: print(f"[bench {time.perf_counter() - start:5.0f} s] {m}"))
        results = {**describe(torch.device("cpu"), sys.argv[1:] if argv is None else argv), "cpus": os.cpu_count(),
                   "load_avg_start": load_start, **results, "load_avg_end": os.getloadavg()[0],
                   "wall_s": time.perf_counter() - start}
        print(format_loader_table(results))
        if args.json is not None:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, indent=2) + "\n")
            print(f"[bench] wrote {args.json}")
        if args.append_md is not None:
            print(f"[bench] appended a row to {append_loader_markdown(results, args.append_md)}")
        return 0
    if args.gpu_ab:
        if args.append_md is not None:
            raise SystemExit("--append-md is not available with --gpu-ab (use --json)")
        return run_gpu_ab(args, device, sys.argv[1:] if argv is None else argv, load_start, start)
    if args.dry_run:
        raise SystemExit("--dry-run goes with --gpu-ab")
    if args.region_attention:
        results = run_region_attention_benchmark(size=args.size, batch=args.batch, preset=args.preset, device=device,
                                                 steps=args.steps, warmup=args.warmup, seed=args.seed, amp=args.amp)
        results = {**describe(device, sys.argv[1:] if argv is None else argv), "size": args.size,
                   "batch": args.batch, "preset": args.preset, "threads": torch.get_num_threads(),
                   "load_avg_start": load_start, **results, "load_avg_end": os.getloadavg()[0]}
        print(json.dumps({k: v for k, v in results.items() if k != "times"}, indent=2))
        if args.json is not None:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, indent=2) + "\n")
        return 0
    if args.symmetry:
        if args.append_md is not None:
            raise SystemExit("--append-md is not available with --symmetry (use --json)")
        results = run_symmetry_benchmark(size=args.size, batch=args.batch, preset=args.preset, device=device,
                                         steps=args.steps, warmup=args.warmup, seed=args.seed, amp=args.amp,
                                         swin_feature_size=args.swin_feature_size, parts=args.symmetry)
        results = {**describe(device, sys.argv[1:] if argv is None else argv), "size": args.size,
                   "batch": args.batch, "preset": args.preset, "steps": args.steps, "warmup": args.warmup,
                   "threads": torch.get_num_threads(), "load_avg_start": load_start, **results,
                   "load_avg_end": os.getloadavg()[0], "wall_s": time.perf_counter() - start}
        print(format_symmetry_table(results))
        if args.json is not None:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, indent=2) + "\n")
            print(f"[bench] wrote {args.json}")
        return 0
    results = run_benchmark(size=args.size, batch=args.batch, preset=args.preset, device=device, steps=args.steps,
                            warmup=args.warmup, loader=not args.skip_loader, seed=args.seed, amp=args.amp,
                            case_shape=None if args.skip_case else args.case_shape, parts=args.parts,
                            finetune_batch=args.finetune_batch, swin_unetr=args.swin_unetr,
                            swin_feature_size=args.swin_feature_size, matmul_size=args.matmul_size,
                            inference_volume=args.inference_volume)
    facts = describe(device, sys.argv[1:] if argv is None else argv)
    results = {**facts, "size": args.size, "batch": args.batch, "preset": args.preset, "steps": args.steps,
               "warmup": args.warmup, "threads": torch.get_num_threads(), "load_avg_start": load_start, **results,
               "load_avg_end": os.getloadavg()[0], "wall_s": time.perf_counter() - start}
    print(format_table(results))
    bad = [k for k, v in results.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        print(f"[bench] warning: non-finite results: {bad}", file=sys.stderr)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"[bench] wrote {args.json}")
    if args.append_md is not None:
        if "asa_step_s" not in results:
            raise SystemExit("--append-md needs the pretrain part (a BENCHMARKS.md row is an ASA pretrain step)")
        print(f"[bench] appended a row to {append_markdown(results, args.append_md)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
