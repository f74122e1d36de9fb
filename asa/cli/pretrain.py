"""`asa-pretrain`: Hydra entry point for ASA pretraining (configs in asa.configs / configs/)."""
from __future__ import annotations

import sys
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from asa.cli.common import load_cases, optimizer_and_config, split_cases, write_run_config
from asa.train import Engine, FitResult, cleanup_distributed, setup_distributed
from asa.train.config_files import config_path
from asa.train.pretrain import export_encoder, mae_step, make_panel_fn, make_validator

__all__ = ["main", "run"]


def _model_kwargs(cfg: DictConfig) -> dict:
    arch = cfg.model.get("arch", "asa")
    if arch != "asa":
        raise ValueError(f"model={arch} is a fine-tuning baseline; asa-pretrain takes model=tiny, small or base")
    return {**OmegaConf.to_container(cfg.model, resolve=True), **OmegaConf.to_container(cfg.mae, resolve=True),
            "img_size": int(cfg.data.size)}


def run(cfg: DictConfig) -> FitResult:
    """Pretrain as configured; returns the engine's FitResult (rank 0 writes every file)."""
    from asa.data import build_pretrain_dataset
    from asa.models import ASA

    env = setup_distributed(cfg.device)
    try:
        out_dir = Path(str(cfg.output_dir)).expanduser().absolute()
        resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
        write_run_config(resolved, out_dir, env)

        data = cfg.data
        if "size" not in data:
            raise ValueError(f"data={data.get('name')} is a fine-tuning dataset preset; asa-pretrain takes "
                             "data=demo, data=adni or data=oasis (or a preset with size/channels/augment)")
        cases = load_cases(data, out_dir / "bad_cases.json" if env.is_main else None)
        splits = split_cases(cases, data, out_dir, env)
        common = dict(size=int(data.size), cache_dir=data.cache_dir, resample_mm=data.resample_mm,
                      channels=tuple(data.channels))
        train_ds = build_pretrain_dataset(splits["train"], augment=bool(data.augment), **common)
        val_ds = build_pretrain_dataset(splits["val"], augment=False, **common) if splits["val"] else None

        torch.manual_seed(int(cfg.seed))  # identical initial weights on every rank
        model_kwargs = _model_kwargs(cfg)
        model = ASA(**model_kwargs)

        optimizer, lr, config = optimizer_and_config(cfg, model, env)
        if val_ds is None:
            print(f"[asa] warning: data={data.name} has no validation cases: no best.pt, no early stopping",
                  file=sys.stderr)
        sample = (val_ds or train_ds)[0]["image"] if (env.is_main and config.panel_every) else None
        engine = Engine(
            model, optimizer, mae_step, config=config, lr=lr, out_dir=out_dir, env=env, seed=int(cfg.seed),
            validate=None if val_ds is None else make_validator(val_ds, batch_size=config.batch_size, env=env,
                                                               num_workers=int(data.num_workers)),
            panel_fn=None if sample is None else make_panel_fn(sample),
            run_config=resolved, compat_keys=list(cfg.resume_must_match), resume=cfg.resume,
        )
        result = engine.fit(train_ds)
        if env.is_main:
            ckpts = out_dir / "checkpoints"
            source = ckpts / "best.pt" if (ckpts / "best.pt").is_file() else ckpts / "last.pt"
            export_encoder(source, ckpts / "encoder.pt", model_kwargs)
            print(f"[asa] pretraining finished at step {result.step}. Outputs in {out_dir}:\n"
                  f"  checkpoints: {ckpts}/last.pt, best.pt, encoder.pt (for asa-finetune)\n"
                  f"  TensorBoard: tensorboard --logdir {out_dir / 'tb'}\n"
                  f"  config: {out_dir / 'config.yaml'}, splits: {out_dir / 'splits.json'}", flush=True)
    except BaseException:
        cleanup_distributed(finished=False)
        raise
    cleanup_distributed()
    return result


@hydra.main(config_path=config_path(), config_name="pretrain", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
