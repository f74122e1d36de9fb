"""Old-versus-new measurements of the step-time changes, each pair alternated round by round in one
process (``benchmarks/speed.py --gpu-ab``), and the end-to-end ``asa-pretrain`` loop reading a store.

- ``optimizer``: ``optimizer.step()`` of the ASA's AdamW with torch's default kernel choice (the
  per-parameter loop on a CPU, ``foreach`` on CUDA) vs the fused kernel ``asa-pretrain`` takes;
- ``partition``: the ASA pretrain step with SLW-MSA's windows cut by ``roll`` vs by one gather;
- ``kernel``: the same step with LW-/SLW-MSA through ``scaled_dot_product_attention`` vs the CPU window
  kernel (`asa.models.swvit.window_kernel`; on CUDA both run SDPA, so the ratio is 1 up to noise);
- ``ar_weights``: ``patch_informativeness`` of the batch, alternated with the (new) step, as a
  fraction of it;
- ``pretrain_loop``: ``python -m asa.cli.pretrain`` on a store of synthetic brains with the real
  loader, the samples/s of its progress windows after the first.
"""

from __future__ import annotations

import copy
import math
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from benchmarks.harness import Workload, alternate, backward_step
from benchmarks.loader import write_synthetic_bids
from asa.data import discover
from asa.data.store_writer import build_store
from asa.data.preprocessing import PretrainPreprocess
from asa.losses import patch_informativeness
from asa.models import ASA, PRESETS, LinearWindowAttention
from asa.train.optim import multi_tensor_kernel

PATCH, MASK_RATIO = 8, 0.75
PROGRESS = re.compile(r"step (\d+)/(\d+) epoch (\d+): loss ([^,]+), lr ([^,]+), ([^ ]+) samples/s")


def _autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def _adamw(params: list[torch.Tensor], batch: int, kernel: dict[str, bool]) -> torch.optim.AdamW:
    return torch.optim.AdamW(params, lr=1.5e-4 * batch / 256, betas=(0.9, 0.95), weight_decay=0.05, **kernel)


def _step(model: ASA, optimizer: torch.optim.Optimizer, x: torch.Tensor, device: torch.device,
          dtype: torch.dtype | None) -> Callable[[], None]:
    """fwd + bwd + optimizer step (GradScaler with fp16), gradients dropped after the step."""
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None

    def run() -> None:
        with _autocast(device, dtype):
            loss = model(x).loss
        backward_step(loss, optimizer, scaler)
        optimizer.zero_grad(set_to_none=True)

    return run


def _set_partition(model: torch.nn.Module, partition: str, kernel: str = "auto") -> int:
    layers = [m for m in model.modules() if isinstance(m, LinearWindowAttention)]
    for layer in layers:
        layer.partition = partition
        layer.kernel = kernel
    return sum(1 for m in layers if m.shift)


def run_ab(*, size: int, batch: int, preset: str, device: torch.device, dtype: torch.dtype | None, steps: int,
           warmup: int, seed: int = 0, log: Callable[[str], None] = print) -> dict[str, Any]:
    """The ``optimizer``, ``partition``, ``kernel`` and ``ar_weights`` comparisons at one setting (times
    in s; a ratio > 1 means the new code is faster)."""
    if preset not in PRESETS:
        raise ValueError(f"--preset must be one of {sorted(PRESETS)}, got {preset!r}")
    torch.manual_seed(seed)
    r: dict[str, Any] = {}
    x = torch.randn(batch, 1, size, size, size, device=device)
    base = ASA(img_size=size, patch_size=PATCH, mask_ratio=MASK_RATIO, **PRESETS[preset]).to(device)

    log(f"[ab] optimizer.step(): torch's default kernel vs fused, {preset} ({sum(p.numel() for p in base.parameters()) / 1e6:.1f} M parameters)")
    with _autocast(device, dtype):
        loss = base(x).loss
    loss.float().backward()
    work, new_kernel = [], multi_tensor_kernel(list(base.parameters()))
    for name, kernel in (("optimizer_old", {}), ("optimizer_new", new_kernel)):
        params = [p.detach().clone().requires_grad_() for p in base.parameters()]
        for p, q in zip(params, base.parameters()):
            p.grad = q.grad.clone()
        work.append(Workload(name, _adamw(params, batch, kernel).step))
    alternate(work, device, warmup=warmup, steps=steps)
    r.update(optimizer_old_s=work[0].median, optimizer_new_s=work[1].median,
             optimizer_speedup=work[0].median / work[1].median, optimizer_new_kernel=next(iter(new_kernel)))
    base.zero_grad(set_to_none=True)
    del work

    log(f"[ab] pretrain step: SLW-MSA windows by roll vs by gather; LW-MSA by SDPA vs the window kernel, {size}³, "
        f"batch {batch}")
    models = {p: copy.deepcopy(base) for p in ("roll", "gather", "sdpa")}
    r["shifted_layers"] = _set_partition(models["roll"], "roll")
    _set_partition(models["gather"], "gather")
    _set_partition(models["sdpa"], "gather", "sdpa")
    names = {"roll": "partition_roll", "gather": "partition_gather", "sdpa": "kernel_sdpa"}
    work = [Workload(names[p], _step(m, _adamw(list(m.parameters()), batch, multi_tensor_kernel(list(m.parameters()))),
                                     x, device, dtype))
            for p, m in models.items()]
    work.append(Workload("ar_weights", lambda: patch_informativeness(x, PATCH)))
    alternate(work, device, warmup=warmup, steps=steps)
    roll, gather, sdpa, ar = (w.median for w in work)
    r.update(partition_roll_step_s=roll, partition_gather_step_s=gather, partition_speedup=roll / gather,
             kernel_sdpa_step_s=sdpa, kernel_speedup=sdpa / gather, ar_weights_s=ar, ar_weights_fraction=ar / gather)
    r["times"] = {w.name: w.times for w in work}
    return r


def run_pretrain_loop(*, size: int, batch: int, preset: str, device: str, steps: int, workers: int, volumes: int,
                      threads: int | None = None, tmp: Path | None = None, timeout_s: float = 420.0,
                      log: Callable[[str], None] = print) -> dict[str, Any]:
    """``asa-pretrain`` for ``steps`` steps from a store of ``volumes`` synthetic brains (1.25 × 1.5 ×
    1.25 × size), ``workers`` loader processes; samples/s of every progress window after the first
    (which carries the start-up), the losses, and the wall time of the run."""
    shape = (size * 5 // 4, size * 3 // 2, size * 5 // 4)
    with tempfile.TemporaryDirectory(prefix="asa-ab-", dir=tmp) as folder:
        work = Path(folder)
        begin = time.perf_counter()
        bids = write_synthetic_bids(work / "bids", volumes, shape)
        build_store(discover("bids", bids, validate="none"), work / "store", preprocessor=PretrainPreprocess(size),
                    channels=("t1",), workers=max(workers, 1), progress=False)
        store_s = time.perf_counter() - begin
        train = max(1, int(volumes * 0.95) // batch)  # batches per epoch of the default 0.95 train split
        log_every = max(1, min(50, steps // 10))
        overrides = [
            "data=bids", f"data.root={bids}", f"data.store={work / 'store'}", f"data.crop={size}",
            f"data.num_workers={workers}", f"model={preset}", f"output_dir={work / 'run'}", f"device={device}",
            f"trainer.batch_size={batch}", f"trainer.max_steps={steps}", f"trainer.epochs={-(-steps // train)}",
            f"trainer.log_every={log_every}", f"trainer.val_every={10 * steps}", "trainer.panel_every=0",
            "trainer.progress=false", "trainer.warmup_steps=10", "trainer.deterministic=false", "probe.every=0",
        ] + ([f"trainer.threads={threads}"] if threads is not None else [])
        log(f"[ab] asa-pretrain {steps} steps from a store of {volumes} volumes ({store_s:.0f} s to build)")
        begin = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "asa.cli.pretrain", *overrides], capture_output=True, text=True,
                              timeout=timeout_s)
        wall = time.perf_counter() - begin
    text = done.stdout + done.stderr
    if done.returncode != 0:
        raise RuntimeError(f"asa-pretrain failed (exit {done.returncode}):\n{text[-3000:]}")
    windows = [(int(m.group(1)), float(m.group(4)), float(m.group(6))) for m in PROGRESS.finditer(text)]
    steady = [w[2] for w in windows[1:]] or [w[2] for w in windows]
    return {
        "command": "python -m asa.cli.pretrain " + " ".join(overrides), "steps": steps, "volumes": volumes,
        "workers": workers, "store_build_s": store_s, "wall_s": wall,
        "samples_per_s": statistics.median(steady) if steady else math.nan,
        "last_step": windows[-1][0] if windows else 0,
        "loss_first": windows[0][1] if windows else math.nan, "loss_last": windows[-1][1] if windows else math.nan,
        "losses": [(w[0], w[1]) for w in windows],
    }
