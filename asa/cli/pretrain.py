"""`asa-pretrain`: Hydra entry point for ASA pretraining (configs in asa.configs / configs/)."""
from __future__ import annotations

import sys
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from asa.train import (
    Engine, FitResult, TrainConfig, build_optimizer, cleanup_distributed, scaled_lr, setup_distributed,
)
from asa.train.config_files import config_path
from asa.train.distributed import DistEnv, barrier
from asa.train.pretrain import export_encoder, mae_step, make_panel_fn, make_validator

__all__ = ["main", "run", "load_cases"]


def load_cases(data: DictConfig, out_dir: Path, env: DistEnv) -> list:
    """The cases of `data`: generated demo phantoms when data.root is null, else discovered under root."""
    from asa.data import detect_layout, discover, ensure_demo_dataset

    if data.root is None:
        if data.get("demo") is None:
            raise ValueError(f"data={data.name}: data.root is required (a {data.layout} folder)")
        demo = data.demo
        root = ensure_demo_dataset(demo.layout, cases=demo.cases, size=demo.size, seed=demo.seed,
                                   cache_dir=demo.get("cache_dir"))
        layout = demo.layout
    else:
        root = Path(str(data.root)).expanduser()
        if not root.exists():
            raise FileNotFoundError(f"data.root={root}: no such file or folder")
        layout = detect_layout(root) if data.layout == "auto" else data.layout
    report = out_dir / "bad_cases.json" if env.is_main else None
    cases = discover(layout, root, on_bad_case=data.on_bad_case, report_path=report)
    if not cases:
        raise ValueError(f"data.root={root}: no usable {layout} cases found")
    return cases


def _split(cases: list, data: DictConfig, out_dir: Path, env: DistEnv) -> dict[str, list]:
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
    return {name: [by_id[i] for i in ids[name]] for name in ("train", "val", "test")}


def _model_kwargs(cfg: DictConfig) -> dict:
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
        if env.is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
            tmp = out_dir / ".config.yaml.tmp"
            tmp.write_text(OmegaConf.to_yaml(OmegaConf.create(resolved)))
            tmp.replace(out_dir / "config.yaml")
        barrier(env)

        data = cfg.data
        if "size" not in data:
            raise ValueError(f"data={data.get('name')} is a fine-tuning dataset preset; asa-pretrain takes "
                             "data=demo, data=adni or data=oasis (or a preset with size/channels/augment)")
        splits = _split(load_cases(data, out_dir, env), data, out_dir, env)
        if not splits["train"]:
            raise ValueError(f"data={data.name}: the split left no training cases (data.split.ratios)")
        common = dict(size=int(data.size), cache_dir=data.cache_dir, resample_mm=data.resample_mm,
                      channels=tuple(data.channels))
        train_ds = build_pretrain_dataset(splits["train"], augment=bool(data.augment), **common)
        val_ds = build_pretrain_dataset(splits["val"], augment=False, **common) if splits["val"] else None

        torch.manual_seed(int(cfg.seed))  # identical initial weights on every rank
        model_kwargs = _model_kwargs(cfg)
        model = ASA(**model_kwargs)

        tr, opt = cfg.trainer, cfg.optim
        global_batch = int(tr.batch_size) * env.world_size * int(tr.accum_steps)
        lr = scaled_lr(float(opt.base_lr), global_batch) if opt.scale_lr else float(opt.base_lr)
        optimizer = build_optimizer(
            model, name=opt.name, lr=lr, weight_decay=float(opt.weight_decay),
            betas=tuple(opt.get("betas", (0.9, 0.95))), momentum=float(opt.get("momentum", 0.99)),
            nesterov=bool(opt.get("nesterov", True)),
        )
        config = TrainConfig.from_dict({
            **OmegaConf.to_container(tr, resolve=True), "num_workers": int(data.num_workers),
            "schedule": opt.schedule, "min_lr": float(opt.min_lr), "power": float(opt.power),
        })
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
        return result
    finally:
        cleanup_distributed()


@hydra.main(config_path=config_path(), config_name="pretrain", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
