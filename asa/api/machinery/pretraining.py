"""Pretraining as a training job (`asa.api.machinery.job.TrainingJob`): the configured method's network, loss and
validation on unlabeled scans, the frozen-encoder probes beside the validation, and the encoder exported
when training ends — what `asa.api.pretrain` runs."""
from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

import torch
from omegaconf import OmegaConf

from asa.api.machinery.cohort import COHORT_FILE, pretraining_cohort, recorded_cohort
from asa.api.machinery.dataset import check_crop_fits, dataset_root, region_source
from asa.api.machinery.job import JobRun, TrainingJob
from asa.api.machinery.run import OptionError
from asa.api.machinery.rundir import shell_path
from asa.api.configuration.schema import PretrainConfig
from asa.data import SEGMENTATION_LAYOUTS, build_pretrain_dataset, detect_layout, discover, ensure_demo_dataset, get_task
from asa.data.augmentation import apply_deferred_augmentation
from asa.eval.probe import build_probe_set, make_probe
from asa.io.hub import COHORT_LIST
from asa.methods import MethodContext, PretrainingMethod, get_method
from asa.models import unwrap
from asa.models.keys import encoder_keys
from asa.train import FitResult
from asa.train.optim import STATE_COPIES
from asa.train.pretrain import export_encoder, make_validator

__all__ = ["PretrainJob"]

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


def _probe_source(cfg: PretrainConfig) -> tuple[Path | None, str]:
    """(folder, layout) of ``cfg.probe``'s labeled cases, checked without reading them; folder None: the demo
    phantoms, made at the crop's size once the crop is checked against the volumes (`PretrainJob.datasets`)."""
    pc = cfg.probe
    if pc.data is None:
        return None, "ibsr"
    root = Path(str(pc.data)).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"probe.data={root}: no such folder (a labeled dataset: "
                                f"{', '.join(SEGMENTATION_LAYOUTS)})")
    layout = detect_layout(root) if pc.layout == "auto" else pc.layout
    if layout not in SEGMENTATION_LAYOUTS:
        raise ValueError(f"probe.data={root}: layout {layout!r} has no labels; expected one of "
                         f"{', '.join(SEGMENTATION_LAYOUTS)}")
    return root, layout


def _probe(cfg: PretrainConfig, method: PretrainingMethod, stride: int, regions=None):
    """probe(model) -> probe metrics (asa.eval.probe) of ``method``'s encoder tokens, one per patch of edge
    ``stride``, on ``cfg.probe``'s labeled cases, or None when off; ``regions``: the region source of an encoder
    with region attention."""
    pc = cfg.probe
    if pc.every < 1:
        return None
    root, layout = _probe_source(cfg)
    if root is None:
        root = ensure_demo_dataset(layout, cases=pc.cases, size=int(cfg.data.crop), seed=pc.seed,
                                   cache_dir=None if cfg.data.demo is None else cfg.data.demo.cache_dir)
    task = get_task(layout, root=root)
    cases = [c for c in discover(layout, root) if c.label is not None][: pc.cases]
    try:
        probe_set = build_probe_set(cases, task, size=int(cfg.data.crop), channels=list(cfg.data.channels),
                                    patch_size=stride, regions=regions)
    except ValueError as err:  # after the run folder was locked: a refusal all the same (exit 2)
        raise OptionError(f"probe.data={pc.data}: {err}. Point probe.data at a labeled folder with the pretraining "
                          f"channels, or turn the probes off with probe.every=0") from err
    return make_probe(probe_set, lam=pc.ridge, k=pc.knn_k, tokens_of=method.probe_tokens)


def checkpoint_bytes(model: torch.nn.Module, *, optimizer: str, keep_last: int) -> dict[str, int]:
    """The bytes of the tensors each file of a pretraining run's checkpoints/ holds (pickling adds kilobytes): last.pt
    the weights and the ``optimizer``'s state (`STATE_COPIES` tensors per trained parameter), best.pt the weights,
    encoder.pt and encoder.safetensors the encoder's, and ``keep_last`` step checkpoints as last.pt together."""
    state = model.state_dict()
    weights = sum(t.numel() * t.element_size() for t in state.values())
    trained = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    prefixes = tuple(encoder_keys(model).prefixes)
    encoder = sum(t.numel() * t.element_size() for k, t in state.items() if k.startswith(prefixes))
    last = weights + STATE_COPIES[optimizer] * trained
    return {"last.pt": last, "best.pt": weights, "encoder.pt": encoder, "encoder.safetensors": encoder,
            "step_*.pt": keep_last * last}


def size_note(model: torch.nn.Module, cfg: PretrainConfig) -> str | None:
    """What the run's checkpoints take on disk, said where it reaches a gigabyte (None below)."""
    sizes = checkpoint_bytes(model, optimizer=cfg.optim.name, keep_last=cfg.trainer.keep_last)
    if sum(sizes.values()) < 1e9:
        return None
    params = sum(p.numel() for p in model.parameters())
    files = ", ".join(f"{name} {size / 1e9:.2f}" for name, size in sizes.items() if size)
    return (f"the network's {params / 1e6:.1f} M parameters make about {sum(sizes.values()) / 1e9:.1f} GB of "
            f"checkpoints in {cfg.output_dir}/checkpoints (GB: {files}; last.pt with {cfg.optim.name}'s state)")


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


class PretrainJob(TrainingJob):
    """`asa-pretrain` as a training job (`asa.api.machinery.job.TrainingJob`): the configured method's network, loss
    and validation on unlabeled scans, the frozen-encoder probes beside the validation, and the encoder
    exported when training ends."""

    app = APP
    unsaved = ", no encoder.pt exported"

    def check(self, run: JobRun) -> None:
        cfg, data = run.cfg, run.cfg.data
        self.flip_axes = tuple(int(a) for a in data.flip_axes)
        if cfg.export_step is not None and cfg.export_step < 1:
            raise OptionError(f"export_step={cfg.export_step}: expected an optimiser step >= 1 whose encoder is "
                              "exported, or null for the lowest held-out round (best.pt)")
        if any(a not in (0, 1, 2) for a in self.flip_axes):
            raise OptionError(f"data.flip_axes: array axes 0, 1 or 2 of the crop, got {list(self.flip_axes)}")
        self.method = method = _method(cfg)
        self.needs = needs = method.regions()
        self.regions = region_source(data, list(needs.needed_by), network=needs.network, env=run.env)
        if self.regions is not None and self.regions.source == "label":
            raise OptionError("data.regions.source=label: pretraining data have no label files; use cluster "
                              "(k-means tissue classes) or file (data.regions.dir)")

    def record(self, run: JobRun) -> dict:
        resolved = asdict(run.cfg)
        resolved["data"]["regions"]["source"] = "none" if self.regions is None else self.regions.source  # auto resolved
        if not self.method.uses_model_group:  # recorded and compared on resume only where it configures the run
            resolved.pop("model")
            resolved["resume_must_match"] = [k for k in resolved["resume_must_match"] if k != "model"]
        return resolved

    def network(self, run: JobRun, splits) -> torch.nn.Module:
        cfg, method = run.cfg, self.method
        model = method.build_network()
        if run.env.is_main and (note := size_note(model, cfg)) is not None:  # a large preset says what it writes
            print(f"[asa] note: {note}", file=sys.stderr, flush=True)
        self.probe_stride = stride = method.probe_stride(model)
        self.probe_every = cfg.probe.every if stride else 0
        monitor = cfg.trainer.monitor
        if monitor.startswith("probe/") and self.probe_every != 1:
            raise ValueError(f"trainer.monitor={monitor} needs a probe in every validation round: "
                             f"set probe.every=1 (it is {self.probe_every}"
                             + ("" if stride else f"; method={method.name} gives the probes no encoder tokens") + ")")
        if self.probe_every > 0:
            _probe_source(cfg)  # its cases are read at the crop's size once `cases` checked the crop
        return model

    def cases(self, run: JobRun, cases: list) -> list:
        check_crop_fits(int(run.cfg.data.crop), cases, store=run.cfg.data.store, hint="")
        return cases

    def datasets(self, run: JobRun, splits):
        data = run.cfg.data
        self.probe = None if self.probe_every < 1 else _probe(run.cfg, self.method, self.probe_stride,
                                                              self.regions if self.needs.network else None)
        common = dict(crop=int(data.crop), resample_mm=data.resample_mm,
                      channels=tuple(data.channels), regions=self.regions, store=data.store)
        train = build_pretrain_dataset(splits["train"], augment=data.augment, flip_axes=self.flip_axes,
                                       augment_on=data.augment_on, **common)
        # augmentation applied on the device, after the transfer
        self.deferred = data.augment_on == "device" and (data.augment or bool(self.flip_axes))
        val = build_pretrain_dataset(splits["val"], augment=False, **common) if splits["val"] else None
        return train, val

    def training_step(self, run: JobRun):
        return self.method.step_of(run.cases, dataset_root(run.cfg.data)[0])

    def no_validation(self, run: JobRun) -> str | None:
        if run.config.monitor.startswith("probe/"):
            return None
        return "no best.pt, no early stopping, no probes (unless trainer.monitor is a probe/ metric)"

    def validation(self, run: JobRun, dataset):
        method, data = self.method, run.cfg.data
        if dataset is not None and method.validation_group and len(dataset) < method.validation_group:
            print(f"[asa] warning: method={method.name} scores validation in groups of "
                  f"{method.validation_group} volumes but the validation split has {len(dataset)}: val/loss lacks "
                  "the terms that compare volumes (contrastive)", file=sys.stderr)
        validate = None if dataset is None else make_validator(dataset, batch_size=run.config.batch_size, env=run.env,
                                                               num_workers=data.num_workers, step_fn=run.step,
                                                               group_size=method.validation_group)
        if self.probe is not None and (dataset is not None or run.config.monitor.startswith("probe/")):
            validate = _with_probe(validate, self.probe, self.probe_every)
        return validate

    def engine_options(self, run: JobRun, train_dataset, val_dataset) -> dict:
        sample = (val_dataset or train_dataset)[0] if (run.env.is_main and run.config.panel_every) else None
        return dict(panel_fn=None if sample is None else self.method.panel(sample),
                    on_device=apply_deferred_augmentation if self.deferred else None)

    def finish(self, run: JobRun, result: FitResult) -> None:
        ckpts = run.out_dir / "checkpoints"
        source = ckpts / "best.pt" if (ckpts / "best.pt").is_file() else ckpts / "last.pt"
        if run.cfg.export_step is not None:  # kept by the engine (trainer_config adds it to trainer.keep_steps)
            source = ckpts / f"kept_{run.cfg.export_step:08d}.pt"
        try:  # the cohort's content digests (cohort.json), which the encoder export carries for the overlap checks
            cohort = pretraining_cohort(run.out_dir, workers=max(1, int(run.cfg.data.num_workers)))
            print(f"[asa] pretraining cohort: {len(cohort['cases'])} case(s) with their image digests in "
                  f"{run.out_dir / COHORT_FILE}", flush=True)
        except (OSError, ValueError) as err:
            print(f"[asa] warning: the pretraining cohort was not recorded ({err}); the encoder export carries none "
                  f"(asa-cohort {shell_path(run.out_dir)} records it later)", file=sys.stderr, flush=True)
        # the encoder and its stem, as the network declares them (asa.models.keys)
        export_encoder(source, ckpts / "encoder.pt", encoder_keys(unwrap(run.model)).prefixes,
                       cohort=recorded_cohort(source))
        listed = (f", with the cohort's list {COHORT_LIST} beside them (the weights name it: keep them together)"
                  if (ckpts / COHORT_LIST).is_file() else "")
        print(f"[asa] pretraining finished at step {result.step}. Outputs in {run.out_dir}:\n"
              f"  checkpoints: {ckpts}/last.pt, best.pt, encoder.pt and encoder.safetensors "
              f"(for asa-finetune, asa.load_encoder){listed}\n"
              f"  TensorBoard: tensorboard --logdir {shell_path(run.out_dir / 'tb')}\n"
              f"  config: {run.out_dir / 'config.yaml'}, splits: {run.out_dir / 'splits.json'}", flush=True)
