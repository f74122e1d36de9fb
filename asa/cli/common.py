"""What the training entry points share: data from a preset, splits, the run config, the optimiser."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from asa.train import TrainConfig, build_optimizer
from asa.train.optim import LOW_LR, describe_lr
from asa.train.distributed import DistEnv, barrier

__all__ = ["dataset_root", "load_cases", "optimizer_and_config", "split_cases", "write_run_config"]


def dataset_root(data: DictConfig) -> tuple[Path, str]:
    """(folder, layout) of a data preset: ``data.root``, or the generated demo dataset when it is null."""
    from asa.data import detect_layout, ensure_demo_dataset

    if data.root is None:
        if data.get("demo") is None:
            raise ValueError(f"data={data.name}: data.root is required (a {data.layout} folder)")
        demo = data.demo
        root = ensure_demo_dataset(demo.layout, cases=demo.cases, size=demo.size, seed=demo.seed,
                                   cache_dir=demo.get("cache_dir"))
        return root, str(demo.layout)
    root = Path(str(data.root)).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"data.root={root}: no such file or folder")
    return root, (detect_layout(root) if data.layout == "auto" else str(data.layout))


def load_cases(data: DictConfig, report_path: Path | None = None) -> list:
    """The validated cases of a data preset; bad cases are skipped or raise per ``data.on_bad_case``,
    and listed in ``report_path`` when given."""
    from asa.data import discover

    root, layout = dataset_root(data)
    return discover(layout, root, on_bad_case=str(data.on_bad_case), report_path=report_path)


def split_cases(cases: list, data: DictConfig, out_dir: Path, env: DistEnv) -> dict[str, list]:
    """Train/val/test cases from ``<out_dir>/splits.json`` (written by rank 0 on first use, reused after)."""
    from asa.data import make_splits

    ratios = None if data.split.ratios is None else list(data.split.ratios)
    path = out_dir / "splits.json"

    def call() -> dict[str, list[str]]:
        return make_splits([c.id for c in cases], dataset=data.name, seed=data.split.seed,
                           counts_or_ratios=ratios, path=path)

    if env.is_main:
        ids = call()
    barrier(env)
    if not env.is_main:
        ids = call()  # reads the file rank 0 wrote
    by_id = {c.id: c for c in cases}
    splits = {name: [by_id[i] for i in ids[name]] for name in ("train", "val", "test")}
    if not splits["train"]:
        raise ValueError(f"data={data.name}: the split left no training cases (data.split.ratios)")
    return splits


def write_run_config(resolved: dict[str, Any], out_dir: Path, env: DistEnv) -> None:
    """Create the run directory and write the resolved config to ``<out_dir>/config.yaml`` (rank 0)."""
    from asa.data import atomic_write_text

    if env.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(resolved)))
    barrier(env)


def optimizer_and_config(
    cfg: DictConfig, model: torch.nn.Module, env: DistEnv, **trainer_overrides: Any
) -> tuple[torch.optim.Optimizer, float, TrainConfig]:
    """Optimiser (``cfg.optim``), its peak learning rate — scaled by the global batch
    (per-device batch × world size × accumulation) / 256 when ``optim.scale_lr`` — and the engine settings.

    The peak lr is printed with the rule that produced it (rank 0), with a warning below 1e-5."""
    tr, opt = cfg.trainer, cfg.optim
    global_batch = int(tr.batch_size) * env.world_size * int(tr.accum_steps)
    lr, rule = describe_lr(float(opt.base_lr), global_batch, bool(opt.scale_lr))
    if env.is_main:
        print(f"[asa] peak learning rate: {rule}", file=sys.stderr, flush=True)
        if lr < LOW_LR:
            print(f"[asa] warning: the peak learning rate {lr:.3g} is below {LOW_LR:g}: the run will barely learn. "
                  f"Raise optim.base_lr, or set optim.scale_lr=false to use optim.base_lr as given",
                  file=sys.stderr, flush=True)
    optimizer = build_optimizer(
        model, name=opt.name, lr=lr, weight_decay=float(opt.weight_decay),
        betas=tuple(opt.get("betas", (0.9, 0.95))), momentum=float(opt.get("momentum", 0.99)),
        nesterov=bool(opt.get("nesterov", True)), encoder_lr_scale=float(opt.get("encoder_lr_scale", 1.0)),
        layer_decay=float(opt.get("layer_decay", 1.0)), freeze_encoder_epochs=int(opt.get("freeze_encoder_epochs", 0)),
    )
    config = TrainConfig.from_dict({
        **OmegaConf.to_container(tr, resolve=True), "num_workers": int(cfg.data.num_workers),
        "schedule": opt.schedule, "min_lr": float(opt.min_lr), "power": float(opt.power), **trainer_overrides,
    })
    return optimizer, lr, config
