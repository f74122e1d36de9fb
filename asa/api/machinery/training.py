"""The training settings and report of a run: the optimiser and its peak learning rate, the engine
settings, how training ended, a fine-tuning run's closing lines and the geometry recorded in its config."""

from __future__ import annotations

import dataclasses
import signal
import sys
from pathlib import Path
from typing import Any

import torch

from asa.api.machinery.rundir import command_line, override, shell_path
from asa.api.configuration.schema import FinetuneConfig, PretrainConfig
from asa.models import SYMMETRY_KEYS, network_spec
from asa.models.blocks.sizes import to_3tuple
from asa.train import TrainConfig, build_optimizer
from asa.train.distributed import DistEnv
from asa.train.optim import LOW_LR, describe_lr
from asa.train.preemption import mark_finished

__all__ = ["encoder_lr_scale", "optimizer_and_config", "peak_base_lr", "record_geometry", "report_fine_tuning", "trainer_config",
           "training_ended"]


def optimizer_and_config(cfg: PretrainConfig | FinetuneConfig, model: torch.nn.Module,
                         env: DistEnv) -> tuple[torch.optim.Optimizer, float, TrainConfig]:
    """Optimiser (``cfg.optim``), its peak learning rate — scaled by the global batch
    (per-device batch × world size × accumulation) / 256 when ``optim.scale_lr`` — and the engine
    settings (``cfg.trainer``, whose schedule keys interpolate ``optim``).

    The peak lr is printed with the rule that produced it (rank 0), with a warning below 1e-5."""
    tr, opt = cfg.trainer, cfg.optim
    global_batch = tr.batch_size * env.world_size * tr.accum_steps
    base_lr, key = peak_base_lr(cfg)
    if not 0 < base_lr < float("inf"):  # before any word about it: the optimiser would refuse it in its own
        raise ValueError(f"{key}={base_lr:g}: expected a positive learning rate (e.g. {key}=1e-4)")
    lr, rule = describe_lr(base_lr, global_batch, opt.scale_lr, key=key)
    if env.is_main:
        print(f"[asa] peak learning rate: {rule}", file=sys.stderr, flush=True)
        if lr < LOW_LR:
            unscaled = ", or set optim.scale_lr=false to use it as given" if opt.scale_lr else ""
            print(f"[asa] warning: the peak learning rate {lr:.3g} is below {LOW_LR:g}: the run will barely learn. "
                  f"Raise {key}{unscaled}", file=sys.stderr, flush=True)
    extra = {k: v for k, v in dataclasses.asdict(opt).items()
             if k in ("betas", "momentum", "nesterov", "encoder_lr_scale", "layer_decay", "freeze_encoder_epochs")
             and v is not None}
    if "betas" in extra:
        extra["betas"] = tuple(extra["betas"])
    if isinstance(cfg, FinetuneConfig):
        extra["encoder_lr_scale"] = encoder_lr_scale(cfg)
        if env.is_main and extra["encoder_lr_scale"] != 1.0:
            source = "pretrained" if cfg.model.pretrained else "from scratch"
            print(f"[asa] encoder learning rate: {lr:.3g} × {extra['encoder_lr_scale']:g} = "
                  f"{lr * extra['encoder_lr_scale']:.3g} (encoder {source}; the rest of the network at {lr:.3g})",
                  file=sys.stderr, flush=True)
    optimizer = build_optimizer(model, name=opt.name, lr=lr, weight_decay=opt.weight_decay, **extra)
    return optimizer, lr, trainer_config(cfg)


def peak_base_lr(cfg: PretrainConfig | FinetuneConfig) -> tuple[float, str]:
    """(base lr, the option it comes from): ``optim.scratch_base_lr`` for a fine-tuning run without
    ``model.pretrained`` where it is set (nnU-Net's PretrainedTrainer: 1e-3 pretrained, 1e-2 from scratch),
    else ``optim.base_lr``."""
    opt = cfg.optim
    if isinstance(cfg, FinetuneConfig) and not cfg.model.pretrained and opt.scratch_base_lr is not None:
        return float(opt.scratch_base_lr), "optim.scratch_base_lr"
    return float(opt.base_lr), "optim.base_lr"


def encoder_lr_scale(cfg: FinetuneConfig) -> float:
    """The encoder's lr multiplier of a fine-tuning run: ``optim.encoder_lr_scale`` for an encoder
    initialised from ``model.pretrained``, else ``optim.scratch_encoder_lr_scale`` (null: the same)."""
    opt = cfg.optim
    if cfg.model.pretrained or opt.scratch_encoder_lr_scale is None:
        return opt.encoder_lr_scale
    return float(opt.scratch_encoder_lr_scale)


def trainer_config(cfg: PretrainConfig | FinetuneConfig) -> TrainConfig:
    """The engine settings: ``cfg.trainer`` plus the DataLoader workers of ``cfg.data`` and the
    schedule of ``cfg.optim`` (their keys and types were checked against the schema when composed)."""
    opt, trainer = cfg.optim, dataclasses.asdict(cfg.trainer)
    if isinstance(cfg, PretrainConfig) and cfg.export_step is not None:  # its state kept to be exported
        trainer["keep_steps"] = sorted({*trainer["keep_steps"], cfg.export_step})
    return TrainConfig(**trainer, num_workers=cfg.data.num_workers,
                       schedule=opt.schedule, min_lr=opt.min_lr, power=opt.power,
                       warmup_fraction=opt.warmup_fraction)


def training_ended(result: Any, env: DistEnv, app: str, *, unsaved: str = "") -> bool:
    """After `Engine.fit`: True when training finished (a stop signal from here on no longer stops
    the job: nothing is left to save); when a stop signal ended it, rank 0 prints where it stopped
    and the resume command (``unsaved``: what the stopped run did not write) and this is False."""
    if not result.preempted:
        mark_finished()
        return True
    if env.is_main:
        what = signal.Signals(result.signal).name if result.signal else "a stop signal on another rank"
        print(f"[asa] stopped early at step {result.step} ({what}); last.pt saved{unsaved}. "
              f"Resume with: {command_line(app)} resume=true", file=sys.stderr, flush=True)
    return False


def report_fine_tuning(result: Any, out_dir: Path, best: str) -> None:
    """Rank 0's closing lines of a fine-tuning run: its checkpoints (``best``: what best.pt follows),
    TensorBoard and the asa-predict command for the checkpoint to use."""
    ckpts = out_dir / "checkpoints"
    if (ckpts / "best.pt").is_file():
        written, use = f"last.pt, best.pt ({best})", ckpts / "best.pt"
    else:
        written, use = "last.pt only (no validation cases, so no best.pt: last.pt is the final weights)", ckpts / "last.pt"
    print(f"[asa] fine-tuning finished at step {result.step}. Outputs in {out_dir}:\n"
          f"  checkpoints: {ckpts}/{written}\n"
          f"  TensorBoard: tensorboard --logdir {shell_path(out_dir / 'tb')}\n"
          f"  next: asa-predict {override('checkpoint', use)} input=DIR output=PRED", flush=True)


def record_geometry(resolved: dict, model: torch.nn.Module) -> int:
    """Record in the run config ``resolved`` the geometry ``model`` was built with, read from its
    network spec (the settings left null follow the pretrained file, `asa.models.swvit.family.pretrained_geometry`):
    the crop ``data.crop``, ``model.pos_mode`` / ``model.lr_axis`` where the network has them and
    an SW-ViT's ``segmenter.reference_grid``. Returns the crop edge."""
    spec = network_spec(model)
    if spec is None:
        raise TypeError(f"{type(model).__name__} records no network spec, so its geometry is unknown")
    kwargs = spec["kwargs"]
    crop = int(to_3tuple(kwargs["img_size"], "img_size")[0])
    resolved["data"]["crop"] = crop
    resolved["model"].update({key: kwargs[key] for key in SYMMETRY_KEYS if key in kwargs})
    if kwargs.get("reference_grid") is not None:
        resolved["segmenter"]["reference_grid"] = list(kwargs["reference_grid"])
    return crop
