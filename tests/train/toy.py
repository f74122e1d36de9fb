"""Toy model, dataset and runner for engine tests (also run as a script by subprocess/torchrun tests)."""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from asa.train import Engine, TrainConfig, build_optimizer, check_training_checkpoint, cleanup_distributed, setup_distributed


class ToyNet(nn.Module):
    """x[B,8] -> y[B,1]; has a norm, biases, a "pos" token and optional dropout (RNG use)."""

    def __init__(self, dropout: float = 0.1) -> None:
        super().__init__()
        self.pos = nn.Parameter(torch.zeros(8))
        self.norm = nn.LayerNorm(8)
        self.fc1 = nn.Linear(8, 16)
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(16, 1)

    def no_weight_decay(self) -> set[str]:
        return {"pos"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(torch.tanh(self.fc1(self.norm(x + self.pos)))))


class ToyData(Dataset):
    """n fixed samples; __getitem__ adds numpy and torch noise (random augmentation)."""

    def __init__(self, n: int = 16, augment: bool = True, nan_items: tuple[int, ...] = ()) -> None:
        g = torch.Generator().manual_seed(123)
        self.x = torch.randn(n, 8, generator=g)
        self.y = self.x.sum(1, keepdim=True).sin()
        self.augment, self.nan_items = augment, set(nan_items)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        x = self.x[i].clone()
        if self.augment:
            x = x + 0.05 * torch.randn(8) + float(np.random.uniform(-0.05, 0.05))
        if i in self.nan_items:
            x[0] = math.nan
        return {"x": x, "y": self.y[i]}


def step_fn(model: nn.Module, batch: dict):
    loss = nn.functional.mse_loss(model(batch["x"]), batch["y"])
    return loss, {"mse": loss.detach()}


def make_engine(out_dir, *, config: TrainConfig, seed: int = 0, dropout: float = 0.1, resume: bool = False,
                validate=None, run_config=None, env=None, lr: float = 0.05, step=step_fn) -> Engine:
    """A toy engine; ``resume``: continue from ``out_dir/checkpoints/last.pt``, checked against
    ``run_config`` in its ``model`` keys (as `asa.api.machinery.rundir.prepare_run_dir` checks it for the jobs)."""
    torch.manual_seed(seed)
    model = ToyNet(dropout)
    opt = build_optimizer(model, name="adamw", lr=lr, weight_decay=0.05)
    run_config = run_config if run_config is not None else {"model": {"width": 16}}
    point = check_training_checkpoint(Path(out_dir) / "checkpoints" / "last.pt", run_config, ("model",)) if resume else None
    return Engine(model, opt, step, config=config, lr=lr, out_dir=out_dir, seed=seed, validate=validate,
                  run_config=run_config, resume=point, env=env)


def main(argv: list[str] | None = None) -> None:
    """One run; several in turn in this process (one process group, joined once) where ``--then`` separates their
    arguments: a torchrun launch pays its ranks' start-up (importing asa) once for them all."""
    argv = sys.argv[1:] if argv is None else list(argv)
    runs = [[]]
    for arg in argv:
        runs.append([]) if arg == "--then" else runs[-1].append(arg)
    for args in runs:
        _run(args)
    cleanup_distributed()


def _run(argv: list[str]) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--accum", type=int, default=1)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--ckpt-every", type=int, default=1)
    ap.add_argument("--ckpt-minutes", type=float, default=TrainConfig.ckpt_minutes)
    ap.add_argument("--sleep", type=float, default=0.0)
    ap.add_argument("--dropout", type=float, default=0.0)
    ap.add_argument("--resume", default="false")
    ap.add_argument("--amp", default="auto")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (gloo / NCCL under torchrun)")
    ap.add_argument("--no-augment", action="store_true")
    ap.add_argument("--fail-rank", type=int, default=-1, help="this rank raises at its 3rd step")
    args = ap.parse_args(argv)
    env = setup_distributed(args.device)
    cfg = TrainConfig(epochs=args.epochs, max_steps=args.max_steps, batch_size=args.batch_size,
                      accum_steps=args.accum, ckpt_every=args.ckpt_every, ckpt_minutes=args.ckpt_minutes, progress=False, log_every=1, amp=args.amp)
    engine = make_engine(args.out, config=cfg, dropout=args.dropout, resume=args.resume == "true", env=env)
    inner, calls = engine.step_fn, [0]

    def wrapped(model, batch):
        calls[0] += 1
        if env.rank == args.fail_rank and calls[0] == 3:
            raise RuntimeError("injected failure")
        time.sleep(args.sleep)
        return inner(model, batch)

    engine.step_fn = wrapped
    result = engine.fit(ToyData(args.n, augment=not args.no_augment))
    if env.is_main:
        print(json.dumps({"step": result.step, "epoch": result.epoch}))


if __name__ == "__main__":
    main()
