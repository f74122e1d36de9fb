"""ASA pretraining as a Python function: the job behind `asa-pretrain`."""
from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from asa.api.checks import as_config
from asa.api.dataset import check_crop_fits, dataset_root, load_cases, region_source, split_cases, write_splits
from asa.api.run import OptionError, TrainingRun, refusing
from asa.api.rundir import shell_path
from asa.api.schema import PretrainConfig
from asa.api.training import optimizer_and_config, trainer_config, training_ended
from asa.data import SEGMENTATION_LAYOUTS, build_pretrain_dataset, detect_layout, discover, ensure_demo_dataset, get_task
from asa.data.augmentation import apply_deferred_augmentation
from asa.eval.probe import build_probe_set, make_probe
from asa.methods import MethodContext, PretrainingMethod, get_method
from asa.train import Engine, FitResult
from asa.train.pretrain import export_encoder, make_validator

__all__ = ["pretrain"]

APP = "asa-pretrain"


def _method(cfg: PretrainConfig) -> PretrainingMethod:
    """The configured pretraining method (``cfg.method``), given its typed settings and the run's
    context; its checks run here, before the run folder is touched (it needs no cases)."""
    cls = get_method(cfg.method.name)
    settings = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls.Settings), asdict(cfg.method)))
    model = asdict(cfg.model)
    context = MethodContext(crop=int(cfg.data.crop), channels=tuple(cfg.data.channels),
                            batch_size=cfg.trainer.batch_size, model=model)
    return cls(settings, context)


def _probe(cfg: PretrainConfig, method: PretrainingMethod, regions=None):
    """probe(model) -> probe metrics (asa.eval.probe) of ``method``'s encoder tokens on ``cfg.probe``'s
    labeled cases, or None when off; ``regions``: the region source of an encoder with region attention."""
    pc = cfg.probe
    if pc.every < 1:
        return None
    if pc.data is None:
        root = ensure_demo_dataset("ibsr", cases=pc.cases, size=int(cfg.data.crop), seed=pc.seed,
                                   cache_dir=None if cfg.data.demo is None else cfg.data.demo.cache_dir)
        layout = "ibsr"
    else:
        root = Path(str(pc.data)).expanduser()
        if not root.exists():
            raise FileNotFoundError(f"probe.data={root}: no such folder (a labeled dataset: "
                                    f"{', '.join(SEGMENTATION_LAYOUTS)})")
        layout = detect_layout(root) if pc.layout == "auto" else pc.layout
    if layout not in SEGMENTATION_LAYOUTS:
        raise ValueError(f"probe.data={root}: layout {layout!r} has no labels; expected one of "
                         f"{', '.join(SEGMENTATION_LAYOUTS)}")
    task = get_task(layout, root=root)
    cases = [c for c in discover(layout, root) if c.label is not None][: pc.cases]
    try:
        probe_set = build_probe_set(cases, task, size=int(cfg.data.crop), channels=list(cfg.data.channels),
                                    patch_size=method.probe_patch_size, regions=regions)
    except ValueError as err:
        raise ValueError(f"probe.data={pc.data}: {err}. Point probe.data at a labeled folder with the pretraining "
                         f"channels, or turn the probes off with probe.every=0") from err
    return make_probe(probe_set, lam=pc.ridge, k=pc.knn_k, tokens_of=method.probe_tokens)


def _with_probe(validate, probe, every: int):
    """validate(model) extended by the probe metrics every ``every``-th validation round."""
    rounds = [0]

    def run(model):
        metrics = dict(validate(model)) if validate is not None else {}
        if rounds[0] % every == 0:
            metrics.update(probe(model))
        rounds[0] += 1
        return metrics

    return run


def pretrain(config: PretrainConfig | DictConfig) -> FitResult:
    """Pretrain as configured (asa-pretrain); returns the engine's FitResult (rank 0 writes every file).

    ``config``: the typed config (PretrainConfig, e.g. from ``load_config("pretrain")``) or a composed
    Hydra config; it is checked against the schema first."""
    with refusing():  # a key the schema does not know (e.g. added with +key=value): refused
        cfg = as_config(config, "pretrain")

    with TrainingRun(cfg, APP) as run:
        env = run.env
        data = cfg.data
        with refusing():  # every option is checked (and the network built) before the run folder is touched
            resolved = asdict(cfg)
            trainer_config(cfg)
            augment_on = data.augment_on  # one of AUGMENT_ON (the schema checks it)
            flip_axes = tuple(int(a) for a in data.flip_axes)
            if any(a not in (0, 1, 2) for a in flip_axes):
                raise OptionError(f"data.flip_axes: array axes 0, 1 or 2 of the crop, got {list(flip_axes)}")
            method = _method(cfg)
            needs = method.regions()
            regions = region_source(data, list(needs.needed_by), network=needs.network, env=env)
            if regions is not None and regions.source == "label":
                raise OptionError("data.regions.source=label: pretraining data have no label files; use cluster "
                                  "(k-means tissue classes) or file (data.regions.dir)")
            resolved["data"]["regions"]["source"] = "none" if regions is None else regions.source  # auto resolved
            if not method.uses_model_group:  # recorded and compared on resume only where it configures the run
                resolved.pop("model")
                resolved["resume_must_match"] = [k for k in resolved["resume_must_match"] if k != "model"]
            torch.manual_seed(cfg.seed)  # identical initial weights on every rank
            model = method.build_network()
            optimizer, lr, config = optimizer_and_config(cfg, model, env)
            probe_every = cfg.probe.every if method.probe_patch_size else 0
            if config.monitor.startswith("probe/") and probe_every != 1:
                raise ValueError(f"trainer.monitor={config.monitor} needs a probe in every validation round: "
                                 f"set probe.every=1 (it is {probe_every}"
                                 + ("" if method.probe_patch_size else f"; method={method.name} gives the probes no "
                                    "encoder tokens") + ")")
            probe = None if probe_every < 1 else _probe(cfg, method, regions if needs.network else None)
        run_dir = run.prepare_dir(resolved)
        out_dir = run_dir.path
        cases = load_cases(data, out_dir if env.is_main else None, env)
        check_crop_fits(int(data.crop), cases, store=data.store, hint="")
        splits = split_cases(cases, data, out_dir, env)
        common = dict(crop=int(data.crop), resample_mm=data.resample_mm,
                      channels=tuple(data.channels), regions=regions, store=data.store)
        train_ds = build_pretrain_dataset(splits["train"], augment=data.augment, flip_axes=flip_axes,
                                          augment_on=augment_on, **common)
        deferred = augment_on == "device" and (data.augment or bool(flip_axes))  # applied after the transfer
        val_ds = build_pretrain_dataset(splits["val"], augment=False, **common) if splits["val"] else None
        step_fn = method.step_of(cases, dataset_root(data)[0])
        run_dir.write_config(resolved)  # every check passed
        write_splits(cases, data, out_dir, env)

        if val_ds is not None and method.validation_group and len(val_ds) < method.validation_group:
            print(f"[asa] warning: method={method.name} scores validation in groups of "
                  f"{method.validation_group} volumes but the validation split has {len(val_ds)}: val/loss lacks "
                  "the terms that compare volumes (contrastive)", file=sys.stderr)
        validate = None if val_ds is None else make_validator(val_ds, batch_size=config.batch_size, env=env,
                                                              num_workers=data.num_workers, step_fn=step_fn,
                                                              group_size=method.validation_group)
        if val_ds is None and not config.monitor.startswith("probe/"):
            print(f"[asa] warning: data={data.name} has no validation cases: no best.pt, no early stopping, "
                  "no probes (unless trainer.monitor is a probe/ metric)", file=sys.stderr)
        elif probe is not None:
            validate = _with_probe(validate, probe, probe_every)
        sample = (val_ds or train_ds)[0] if (env.is_main and config.panel_every) else None
        engine = Engine(
            model, optimizer, step_fn, config=config, lr=lr, out_dir=out_dir, env=env, seed=cfg.seed,
            validate=validate,
            panel_fn=None if sample is None else method.panel(sample),
            run_config=resolved, resume=run_dir.resume,
            on_device=apply_deferred_augmentation if deferred else None,
        )
        result = engine.fit(train_ds)
        if training_ended(result, env, APP, unsaved=", no encoder.pt exported") and env.is_main:
            ckpts = out_dir / "checkpoints"
            source = ckpts / "best.pt" if (ckpts / "best.pt").is_file() else ckpts / "last.pt"
            export_encoder(source, ckpts / "encoder.pt", method.encoder_prefixes)
            print(f"[asa] pretraining finished at step {result.step}. Outputs in {out_dir}:\n"
                  f"  checkpoints: {ckpts}/last.pt, best.pt, encoder.pt and encoder.safetensors "
                  "(for asa-finetune, asa.load_encoder)\n"
                  f"  TensorBoard: tensorboard --logdir {shell_path(out_dir / 'tb')}\n"
                  f"  config: {out_dir / 'config.yaml'}, splits: {out_dir / 'splits.json'}", flush=True)
    return result

