"""`asa-finetune`: Hydra entry point for segmentation fine-tuning (configs in asa.configs / configs/)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from asa.cli.common import dataset_root, load_cases, optimizer_and_config, split_cases, write_run_config
from asa.train import Engine, FitResult, cleanup_distributed, setup_distributed
from asa.train.config_files import config_path

__all__ = ["build_network", "main", "run"]

ASA_ONLY = ("decoder_dim", "decoder_depth", "decoder_num_heads")  # pretraining decoder sizes


def _pretrained_pos_mode(path: str) -> str | None:
    """The position encoding the pretrained encoder was trained with, when its file records it."""
    from asa.train import load_checkpoint

    blob = load_checkpoint(path)
    config = blob.get("config") or {}
    return (config.get("mae") or {}).get("pos_mode") or config.get("pos_mode")


def build_network(model_cfg: dict[str, Any], segmenter_cfg: dict[str, Any], *, task: Any, patch_size: int) -> torch.nn.Module:
    """The segmentation network of a resolved config (``model`` and ``segmenter`` sections)."""
    from asa.models import build_segmentation_network

    kwargs = dict(model_cfg)
    arch = kwargs.pop("arch", "asa")
    pretrained = kwargs.pop("pretrained", None)
    if arch == "asa":
        for key in ASA_ONLY:
            kwargs.pop(key, None)
        pos_mode = segmenter_cfg.get("pos_mode")
        if pos_mode is None:
            pos_mode = (_pretrained_pos_mode(pretrained) if pretrained else None) or "mirror"
        kwargs.update(pos_mode=pos_mode, lr_axis=segmenter_cfg.get("lr_axis", 0),
                      feature_size=segmenter_cfg.get("feature_size", 16))
    elif pretrained:
        raise ValueError(f"model.pretrained is only supported for model arch 'asa', not {arch!r}")
    net = build_segmentation_network(arch, img_size=(patch_size,) * 3, in_channels=len(task.channels),
                                     out_channels=task.num_outputs, **kwargs)
    if pretrained:
        net.load_pretrained(pretrained)
    return net


def run(cfg: DictConfig) -> FitResult:
    """Fine-tune as configured; returns the engine's FitResult (rank 0 writes every file)."""
    from asa.data import build_segmentation_dataset, get_task
    from asa.losses import SegmentationLoss
    from asa.train.finetune import make_dice_validator, segmentation_step

    env = setup_distributed(cfg.device)
    try:
        out_dir = Path(str(cfg.output_dir)).expanduser().absolute()
        data = cfg.data
        if "task" not in data or data.task is None:
            raise ValueError(f"data={data.get('name')} is a pretraining preset; asa-finetune takes data=brats, "
                             "data=ibsr, data=wmh or data=msd")
        cases = load_cases(data, out_dir / "bad_cases.json" if env.is_main else None)
        task = get_task(str(data.task), root=dataset_root(data)[0])
        resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
        resolved["task"] = dataclasses.asdict(task)  # asa-predict rebuilds the task from the checkpoint
        write_run_config(resolved, out_dir, env)
        splits = split_cases(cases, data, out_dir, env)
        patch = int(data.patch_size)
        train_ds = build_segmentation_dataset(
            splits["train"], task, train=True, patch_size=patch, cache_dir=data.cache_dir,
            samples_per_case=int(data.samples_per_case), seed=int(cfg.seed),
        )
        val_ds = (build_segmentation_dataset(splits["val"], task, train=False, cache_dir=data.cache_dir)
                  if splits["val"] else None)

        torch.manual_seed(int(cfg.seed))  # identical initial weights on every rank
        model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
        model = build_network(model_cfg, OmegaConf.to_container(cfg.segmenter, resolve=True), task=task,
                              patch_size=patch)

        optimizer, lr, config = optimizer_and_config(cfg, model, env, monitor="val/dice", mode="max", panel_every=0)
        if val_ds is None:
            print(f"[asa] warning: data={data.name} has no validation cases: no best.pt, no early stopping",
                  file=sys.stderr)
        validate = None if val_ds is None else make_dice_validator(
            val_ds, names=task.output_names, multilabel=task.multilabel, roi_size=(patch,) * 3, env=env,
            overlap=float(cfg.validation.overlap), sw_batch_size=int(cfg.validation.sw_batch_size),
        )
        collate = None
        if int(data.samples_per_case) > 1:
            from monai.data import list_data_collate

            collate = list_data_collate
        engine = Engine(
            model, optimizer, segmentation_step(SegmentationLoss(task.multilabel)), config=config, lr=lr,
            out_dir=out_dir, env=env, seed=int(cfg.seed), validate=validate, run_config=resolved,
            compat_keys=list(cfg.resume_must_match), resume=cfg.resume, collate_fn=collate,
        )
        result = engine.fit(train_ds)
        if env.is_main:
            ckpts = out_dir / "checkpoints"
            print(f"[asa] fine-tuning finished at step {result.step}. Outputs in {out_dir}:\n"
                  f"  checkpoints: {ckpts}/last.pt, best.pt (mean validation Dice)\n"
                  f"  TensorBoard: tensorboard --logdir {out_dir / 'tb'}\n"
                  f"  next: asa-predict checkpoint={ckpts / 'best.pt'} input=DIR output=PRED", flush=True)
    except BaseException:
        cleanup_distributed(finished=False)
        raise
    cleanup_distributed()
    return result


@hydra.main(config_path=config_path(), config_name="finetune", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
