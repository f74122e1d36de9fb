"""Fine-tuning as a Python function: the job behind `asa-finetune`, which runs the fine-tuning task
``data.task`` names (`asa.api.tasks`); segmentation's training is here (`finetune_segmentation`)."""

from __future__ import annotations

import dataclasses
import math
import sys

import torch
from omegaconf import DictConfig

from asa.api.common import (OptionError, TrainingRun, check_crop_fits, dataset_root, default_crop, load_cases,
                             optimizer_and_config, record_geometry, refusing, region_source, report_fine_tuning,
                             split_cases, trainer_config, training_ended, write_splits)
from asa.api.schema import FinetuneConfig, as_config
from asa.api.tasks import finetune_task
from asa.data import build_segmentation_dataset, get_task, non_mri_channels
from asa.losses import DeepSupervisionLoss, SegmentationLoss
from asa.api.networks import build_from_config
from asa.models import Capabilities, capabilities
from asa.train import Engine, FitResult
from asa.train.finetune import make_dice_validator, make_segmentation_panel_fn, segmentation_step

__all__ = ["finetune", "finetune_segmentation"]

APP = "asa-finetune"


def symmetry_warning(declared: Capabilities, channels: tuple[str, ...], source: str) -> str | None:
    """Why a network's symmetric parts may not fit the data (channels that are no MRI sequence), or None.

    ``declared``: the network's capabilities (its ``symmetry`` parts); ``channels``: the task's channel
    names; ``source``: where they were read (the dataset.json or the data preset)."""
    other = non_mri_channels(channels)
    if not declared.symmetry or not other:
        return None
    return (f"{source} names the channels {list(channels)}, of which {list(other)} name no MRI sequence: "
            f"{' and '.join(declared.symmetry)} assume a left-right symmetric brain MRI with its mid-sagittal plane "
            "at the crop centre, which may not hold on these data (a network without these parts makes no such "
            "assumption)")


def finetune(config: FinetuneConfig | DictConfig) -> FitResult:
    """Fine-tune as configured (asa-finetune); returns the engine's FitResult (rank 0 writes every file).

    ``config``: the typed config (FinetuneConfig, e.g. from ``load_config("finetune")``) or a composed
    Hydra config; it is checked against the schema first."""
    with refusing():  # a key the schema does not know (e.g. added with +key=value): refused
        cfg = as_config(config, "finetune")
        task = finetune_task(cfg.data.task)
    return task.finetune(cfg)


def finetune_segmentation(cfg: FinetuneConfig) -> FitResult:
    """Fine-tune a segmentation network as configured (a checked config whose ``data.task`` is a
    segmentation task, `asa.data.get_task`); rank 0 writes every file."""
    with TrainingRun(cfg, APP) as run:
        env = run.env
        data = cfg.data
        focal_weight = cfg.loss.focal_weight
        needed_by = []  # the options that need a region map per case
        network = cfg.model.region_option()  # the one that feeds it into the network (never a map made from the labels)
        if network is not None:
            needed_by.append(network)
        if focal_weight > 0:
            needed_by.append(f"loss.focal_weight={focal_weight}")
        regions = region_source(data, needed_by, network=network, env=env)
        root = dataset_root(data)[0]
        task = get_task(data.task, root=root)
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        model = build_from_config(cfg.model, cfg.segmenter,
                                  in_channels=len(task.channels), out_channels=task.num_outputs,
                                  crop=None if data.crop is None else int(data.crop),
                                  default_crop=default_crop(data))  # one grid: the pretraining crop
        source = str(root / "dataset.json") if task.name == "msd" else f"data={data.name}"
        if env.is_main and (warning := symmetry_warning(capabilities(model), task.channels, source)):
            print(f"[asa] warning: {warning}", file=sys.stderr, flush=True)
        resolved = dataclasses.asdict(cfg)
        resolved["task"] = dataclasses.asdict(task)  # asa-predict rebuilds the task from the checkpoint
        crop = record_geometry(resolved, model)  # the effective crop, position code, axis and reference grid
        if (fault := capabilities(model).crop_fault(crop)) is not None:  # before anything is written
            raise OptionError(f"data.crop={crop}: {fault}")
        resolved["data"]["regions"]["source"] = "none" if regions is None else regions.source  # auto resolved
        # crops start on the brain frame's patch lattice; a network without one (DynUNet) on the coarsest
        # lattice of up to 8 voxels that its crop allows: any crop its own checks take
        lattice = dict(lattice=math.gcd(crop, 8))
        if (grid := capabilities(model).lattice) is not None:
            lattice = dict(lattice=grid[0], lr_axis=resolved["model"]["lr_axis"], reference_size=grid[1])
        trainer_config(cfg)  # bad trainer values stop the run before its folder is touched
        optimizer, lr, config = optimizer_and_config(cfg, model, env)
        run_dir = run.prepare_dir(resolved)
        out_dir = run_dir.path
        cases = load_cases(data, out_dir if env.is_main else None, env)
        check_crop_fits(crop, cases)
        splits = split_cases(cases, data, out_dir, env)
        train_ds = build_segmentation_dataset(
            splits["train"], task, train=True, crop=crop, store=data.store,
            samples_per_case=data.samples_per_case, seed=cfg.seed, regions=regions, **lattice,
        )
        val_ds = (build_segmentation_dataset(splits["val"], task, train=False,
                                             store=data.store,
                                             regions=regions if capabilities(model).regions else None)
                  if splits["val"] else None)
        run_dir.write_config(resolved)  # every check passed
        write_splits(cases, data, out_dir, env)

        if val_ds is None:
            print(f"[asa] warning: data={data.name} has no validation cases: no best.pt, no early stopping",
                  file=sys.stderr)
        validate = None if val_ds is None else make_dice_validator(
            val_ds, task=task, roi_size=(crop,) * 3, env=env,
            overlap=cfg.validation.overlap, sw_batch_size=int(cfg.validation.sw_batch_size),
        )
        panel_fn = None
        if val_ds is not None and env.is_main and config.panel_every:
            panel_fn = make_segmentation_panel_fn(val_ds[0], multilabel=task.multilabel, roi_size=(crop,) * 3,
                                                  overlap=cfg.validation.overlap,
                                                  sw_batch_size=int(cfg.validation.sw_batch_size))
        collate = None
        if data.samples_per_case > 1:
            from monai.data import list_data_collate

            collate = list_data_collate
        criterion = SegmentationLoss(task.multilabel, focal_weight=focal_weight, focal_beta=cfg.loss.focal_beta)
        if capabilities(model).deep_supervision:  # training outputs at several resolutions (model=dynunet)
            criterion = DeepSupervisionLoss(criterion, capabilities(model).deep_supervision)
        engine = Engine(
            model, optimizer, segmentation_step(criterion), config=config, lr=lr,
            out_dir=out_dir, env=env, seed=cfg.seed, validate=validate, run_config=resolved,
            resume=run_dir.resume, collate_fn=collate,
            panel_fn=panel_fn,
        )
        result = engine.fit(train_ds)
        if training_ended(result, env, APP) and env.is_main:
            report_fine_tuning(result, out_dir, "mean validation Dice")
    return result

