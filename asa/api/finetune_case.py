"""Case-level fine-tuning (``data.task=case``): diagnosis classification or brain-age regression on the
(pretrained) SW-ViT encoder with a pooled-token head — the job `asa-finetune` runs for such a preset."""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import torch

from asa.api.common import (OptionError, TrainingRun, dataset_root, default_crop, load_cases, optimizer_and_config,
                             record_geometry, split_cases, report_fine_tuning, trainer_config, training_ended,
                             write_splits)
from asa.api.schema import FinetuneConfig
from asa.data import build_case_crops_dataset, build_target_dataset, read_targets
from asa.eval.case_metrics import HIGHER_IS_BETTER
from asa.eval.case_outputs import case_crop_lattice
from asa.io import atomic_write_json
from asa.api.networks import build_case_network, case_arch
from asa.train import Engine, FitResult
from asa.train.case_targets import CaseLoss, case_metrics_of, case_step, class_weights, default_monitor, make_case_validator

__all__ = ["finetune_case"]

APP = "asa-finetune"
CASE_TASK = "case"
SEGMENTATION_MONITOR = "val/dice"  # the trainer presets' default: a case run follows its own default instead


def _check_options(cfg: FinetuneConfig) -> None:
    """Refuse the segmentation-only options a case run would otherwise ignore."""
    data = cfg.data
    if data.target is None:
        raise ValueError("data.task=case needs data.target: the column of the targets table to learn "
                         "(e.g. data.target=diagnosis or data.target=age)")
    case_arch(cfg.model)  # a case network, and a pretrained file only for one that loads it
    if data.samples_per_case != 1:
        raise ValueError(f"data.samples_per_case={data.samples_per_case}: data.task=case takes one brain-centred crop "
                         "per case; set it to 1")
    if cfg.loss.focal_weight > 0 or cfg.model.region_option() is not None:
        raise ValueError("loss.focal_weight / model.region_attention need region maps, which data.task=case does not "
                         "read; leave them at 0 / none")


def _resolve_monitor(cfg: FinetuneConfig, kind: str) -> None:
    """Set ``trainer.monitor`` / ``trainer.mode`` for a case run before the config is saved: the
    segmentation default (``val/dice``) becomes the kind's default (`default_monitor`); any other
    monitor must be one of the kind's case metrics, with the mode of its direction."""
    tr = cfg.trainer
    names = case_metrics_of(kind)
    if tr.monitor == SEGMENTATION_MONITOR:
        tr.monitor, tr.mode = default_monitor(kind)
        return
    name = tr.monitor.removeprefix("val/")
    if name not in names:
        raise ValueError(f"trainer.monitor={tr.monitor}: a {kind} target is validated with "
                         f"{', '.join('val/' + n for n in names)}; pick one of them")
    mode = "max" if HIGHER_IS_BETTER[name] else "min"
    if tr.mode != mode:
        raise ValueError(f"trainer.mode={tr.mode} with trainer.monitor={tr.monitor}: {name} is better when "
                         f"{'higher' if mode == 'max' else 'lower'}; set trainer.mode={mode}")


def finetune_case(cfg: FinetuneConfig) -> FitResult:
    """Fine-tune a case head as configured (a checked config with ``data.task=case``); rank 0 writes
    every file: config.yaml, splits.json, targets.json (what was read and skipped), checkpoints/."""
    with TrainingRun(cfg, APP) as run:
        env = run.env
        data = cfg.data
        _check_options(cfg)
        root, _ = dataset_root(data)
        source = data.targets if data.targets is not None else root
        table = read_targets(source, str(data.target), kind=data.target_kind,
                             classes=None if data.classes is None else list(data.classes))
        kind = table.kind
        _resolve_monitor(cfg, kind)
        trainer_config(cfg)  # bad trainer values stop the run before its folder is touched
        resolved = dataclasses.asdict(cfg)
        run_dir = run.prepare_dir(resolved)
        out_dir = run_dir.path
        all_cases = load_cases(data, out_dir if env.is_main else None, env)
        targets = table.for_cases(all_cases)
        if env.is_main:
            print(f"[asa] targets: {targets.summary()}", file=sys.stderr, flush=True)
        cases = [c for c in all_cases if c.id in targets.values]
        if not cases:
            raise OptionError(f"data.target={data.target}: no case of {root} has a target in {table.source}")
        splits = split_cases(cases, data, out_dir, env, by_subject=True)  # no subject in two parts
        train_values = np.asarray([targets.values[c.id] for c in splits["train"]], dtype=np.float64)
        weights, shift, scale = None, 0.0, 1.0
        if kind == "continuous":
            shift, scale = float(train_values.mean()), float(train_values.std()) or 1.0
            out_channels = 1
        else:
            out_channels = targets.num_classes
            if cfg.loss.class_weighted:
                weights = class_weights(train_values.astype(np.int64), out_channels, targets.names)
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        head = cfg.head
        model = build_case_network(cfg.model, in_channels=1, out_channels=out_channels,
                                   crop=None if data.crop is None else int(data.crop),
                                   default_crop=default_crop(data), pooling=head.pooling,
                                   hidden_dim=head.hidden_dim, head_dropout=head.dropout,
                                   target_shift=shift, target_scale=scale)
        crop = record_geometry(resolved, model)  # the effective crop (and SW-ViT's position code, axis, grid)
        # asa-predict / asa-evaluate read the task from the checkpoint's run config
        resolved["task"] = {"name": CASE_TASK, "kind": kind, "target": str(data.target), "classes": list(targets.names),
                            "target_shift": shift, "target_scale": scale}
        optimizer, lr, config = optimizer_and_config(cfg, model, env)
        common = dict(crop=crop, seed=cfg.seed, store=data.store)
        train_ds = build_target_dataset(splits["train"], targets, augment=True, **common)
        # validation scores what asa-predict writes: each case's outputs averaged over its test-time crops
        val_ds = build_case_crops_dataset(splits["val"], crop=crop, lattice=case_crop_lattice(model),
                                          crops=cfg.validation.crops, targets=targets,
                                          store=data.store) if splits["val"] else None
        run_dir.write_config(resolved)  # every check passed
        write_splits(cases, data, out_dir, env, by_subject=True)
        if env.is_main:
            atomic_write_json(out_dir / "targets.json", {**targets.to_dict(), "kind": kind})
        if val_ds is None:
            print(f"[asa] warning: data={data.name} has no validation cases: no best.pt, no early stopping",
                  file=sys.stderr)
        validate = None if val_ds is None else make_case_validator(val_ds, kind=kind, env=env)
        criterion = CaseLoss(kind, weights=weights, regression=cfg.loss.regression,
                             delta=cfg.loss.huber_delta, shift=shift, scale=scale)
        engine = Engine(model, optimizer, case_step(criterion), config=config, lr=lr, out_dir=out_dir, env=env,
                        seed=cfg.seed, validate=validate, run_config=resolved, resume=run_dir.resume)
        result = engine.fit(train_ds)
        if training_ended(result, env, APP) and env.is_main:
            report_fine_tuning(result, out_dir, f"{config.monitor}, {config.mode}")
    return result
