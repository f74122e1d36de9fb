"""The case task (``data.task=case``): one target per case — diagnosis classification or brain-age
regression — learnt by a pooled-token head on the (pretrained) encoder. Its four jobs — training (the hooks
of `asa.api.tasks.FinetuneTask.finetune`), prediction (one ``predictions.csv``), evaluation (metrics with
bootstrap intervals) and the case probes — and its own settings (``task.*``, `Settings`)."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from asa.api.dataset import cases_of_split, dataset_root, default_crop
from asa.api.networks import build_case_network, case_arch
from asa.api.run import OptionError, refusing
from asa.api.rundir import RunDirError, check_writable, move_aside
from asa.api.schema import EvaluateConfig, FrozenProbeConfig, PredictConfig
from asa.api.task_registry import TaskSettings
from asa.api.tasks import FinetuneRun, FinetuneTask, PredictSetup, ProbeTargets, register_finetune_task
from asa.api.training import record_geometry
from asa.choices import one_of
from asa.data import (build_case_crops_dataset, build_target_dataset, detect_layout, discover, read_targets,
                      subject_groups)
from asa.eval.case_metrics import HIGHER_IS_BETTER
from asa.eval.case_outputs import (PREDICTIONS_CSV, case_crop_lattice, case_summary, predict_case_rows,
                                   read_case_predictions, write_case_predictions)
from asa.eval.frozen import FrozenEncoder, pooled_features, prepare_cases
from asa.eval.probe_cv import case_probes
from asa.io import atomic_write_json
from asa.models import build_network
from asa.models.heads.case_head import POOLINGS
from asa.train.case_targets import (REGRESSION_LOSSES, CaseLoss, case_metrics_of, case_step, class_weights,
                                    default_monitor, make_case_validator)
from asa.train.distributed import resolve_device

__all__ = ["CASE_TASK", "CaseTask", "HeadSettings", "Settings"]

CASE_TASK = "case"
SEGMENTATION_MONITOR = "val/dice"  # the trainer presets' default: a case run follows its own default instead


@dataclass
class HeadSettings:
    """The case head (`asa.models.ASACaseHead`): pooled encoder tokens, then an MLP."""

    pooling: str = one_of("mean", POOLINGS)  # mean | attention
    hidden_dim: int = 256
    dropout: float = 0.0


@dataclass
class Settings(TaskSettings):
    """``task.*`` of a case run."""

    name: str = CASE_TASK
    class_weighted: bool = True  # classes: cross-entropy weighted N / (K n_k) by training counts
    regression: str = one_of("mse", REGRESSION_LOSSES)  # continuous: mse | huber (on standardised targets)
    huber_delta: float = 1.0  # in standard deviations of the training targets
    head: HeadSettings = field(default_factory=HeadSettings)


def _resolve_monitor(cfg, kind: str) -> None:
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


@register_finetune_task
class CaseTask(FinetuneTask):
    """One target per case (``data.task=case``): diagnosis classification or brain-age regression from
    ``data.target`` with a pooled-token head. Its network's outputs (the number of classes, the targets'
    standardisation) follow the training split, so it is built once the cases are split; a subject's
    sessions stay in one part of the split. Writes ``targets.json`` (what was read and skipped)."""

    name = CASE_TASK
    Settings = Settings
    by_subject = True
    network_from_split = True

    @classmethod
    def claims(cls, data_task: str) -> bool:
        return data_task == CASE_TASK

    # --- training: the hooks of FinetuneTask.finetune ---------------------------------------------------
    def check(self, run: FinetuneRun) -> None:
        cfg, data = run.cfg, run.cfg.data
        if data.target is None:
            raise ValueError("data.task=case needs data.target: the column of the targets table to learn "
                             "(e.g. data.target=diagnosis or data.target=age)")
        case_arch(cfg.model)  # a case network, and a pretrained file only for one that loads it
        if cfg.model.region_option() is not None:
            raise ValueError("model.region_attention needs region maps, which data.task=case does not read; "
                             "leave it at none")
        self.root = dataset_root(data)[0]
        source = data.targets if data.targets is not None else self.root
        self.table = read_targets(source, str(data.target), kind=data.target_kind,
                                  classes=None if data.classes is None else list(data.classes))
        _resolve_monitor(cfg, self.table.kind)

    def cases(self, run: FinetuneRun, cases: list) -> list:
        self.targets = self.table.for_cases(cases)
        if run.env.is_main:
            print(f"[asa] targets: {self.targets.summary()}", file=sys.stderr, flush=True)
        cases = [c for c in cases if c.id in self.targets.values]
        if not cases:
            raise OptionError(f"data.target={run.cfg.data.target}: no case of {self.root} has a target in "
                              f"{self.table.source}")
        return cases

    def build_network(self, run: FinetuneRun, splits: Mapping[str, list] | None) -> tuple[torch.nn.Module, dict]:
        cfg, data, settings, targets, kind = run.cfg, run.cfg.data, run.cfg.task, self.targets, self.table.kind
        train_values = np.asarray([targets.values[c.id] for c in splits["train"]], dtype=np.float64)
        self.weights, self.shift, self.scale = None, 0.0, 1.0
        if kind == "continuous":
            self.shift, self.scale = float(train_values.mean()), float(train_values.std()) or 1.0
            out_channels = 1
        else:
            out_channels = targets.num_classes
            if settings.class_weighted:
                self.weights = class_weights(train_values.astype(np.int64), out_channels, targets.names)
        head = settings.head
        model = build_case_network(cfg.model, in_channels=1, out_channels=out_channels,
                                   crop=None if data.crop is None else int(data.crop),
                                   default_crop=default_crop(data), pooling=head.pooling,
                                   hidden_dim=head.hidden_dim, head_dropout=head.dropout,
                                   target_shift=self.shift, target_scale=self.scale)
        run.crop = record_geometry(run.resolved, model)  # the effective crop (and SW-ViT's position code, axis, grid)
        return model, {"name": CASE_TASK, "kind": kind, "target": str(data.target), "classes": list(targets.names),
                       "target_shift": self.shift, "target_scale": self.scale}

    def datasets(self, run: FinetuneRun, splits: Mapping[str, list]) -> tuple[Any, Any | None]:
        data = run.cfg.data
        train = build_target_dataset(splits["train"], self.targets, augment=True, crop=run.crop, seed=run.cfg.seed,
                                     store=data.store)
        # validation scores what asa-predict writes: each case's outputs averaged over its test-time crops
        val = build_case_crops_dataset(splits["val"], crop=run.crop, lattice=case_crop_lattice(run.model),
                                       crops=run.cfg.validation.crops, targets=self.targets,
                                       store=data.store) if splits["val"] else None
        return train, val

    def write_records(self, run: FinetuneRun) -> None:
        super().write_records(run)
        atomic_write_json(run.out_dir / "targets.json", {**self.targets.to_dict(), "kind": self.table.kind})

    def validator(self, run: FinetuneRun, dataset: Any):
        return make_case_validator(dataset, kind=self.table.kind, env=run.env)

    def training_step(self, run: FinetuneRun):
        settings = run.cfg.task
        return case_step(CaseLoss(self.table.kind, weights=self.weights, regression=settings.regression,
                                  delta=settings.huber_delta, shift=self.shift, scale=self.scale))

    # --- the other jobs ------------------------------------------------------------------------------
    def predict(self, cfg: PredictConfig, state: dict, checkpoint: Path, inputs: list[str] | str,
                setup: PredictSetup) -> list[Path]:
        """Write ``<output>/predictions.csv`` for the cases of ``inputs`` (a BIDS / CAPS / file-list
        folder; ``split_file`` + ``subset`` select a run's split) with the case head in ``state`` (the
        checkpoint's content); returns ``[that file]``. An output holding one is refused unless
        ``overwrite=true`` (moved aside). Every check runs before its one file is written."""
        with refusing():
            outputs = state["config"]["outputs"]
            if bool(cfg.resume):
                raise OptionError("resume=true: a case head writes one predictions.csv per run; predict again instead")
            if not isinstance(inputs, str) or not Path(inputs).expanduser().is_dir():
                raise OptionError(f"input={inputs}: a case head predicts the cases of a dataset folder (BIDS, CAPS or "
                                  "a file list), as data.root of asa-finetune")
            root = Path(inputs).expanduser()
            layout = detect_layout(root) if cfg.layout == "auto" else cfg.layout
            cases = discover(layout, root, require_labels=False, on_bad_case=cfg.on_bad_case)
            cases = cases_of_split(cases, cfg.split_file, cfg.subset, where=f"input={inputs}")
            out = Path(cfg.output).expanduser().absolute()
            target = out / PREDICTIONS_CSV
            if target.exists() and not cfg.overwrite:
                raise RunDirError(f"output={out} already holds {PREDICTIONS_CSV}; use overwrite=true (it is moved "
                                  "aside) or another output")
            check_writable(out, "output")
            model = build_network(state["network"])
            model.load_state_dict(state["model"])
            print(f"[asa] predicting {outputs['target']} ({outputs['kind']}) for {len(cases)} case(s) on "
                  f"{setup.device}, outputs averaged over crops={cfg.crops}", flush=True)
            rows = predict_case_rows(model, cases, outputs, device=setup.device, crops=cfg.crops)
            if target.exists():
                print(f"[asa] overwrite=true: moved the previous predictions to {move_aside(out)}", file=sys.stderr,
                      flush=True)
            out.mkdir(parents=True, exist_ok=True)
            write_case_predictions(rows, target)
        print(f"[asa] wrote {len(rows)} prediction(s) of {outputs['target']} to {target}", flush=True)
        return [target]

    def evaluate(self, cfg: EvaluateConfig) -> dict:
        """Score ``<pred>/predictions.csv`` against ``data.target`` (summary with bootstrap intervals,
        `asa.eval.case_outputs.case_summary`), written to ``<output>/summary.json``."""
        data = cfg.data
        if cfg.pred is None or data.target is None:
            raise ValueError("asa-evaluate with data.task=case needs pred=DIR (holding asa-predict's predictions.csv) "
                             "and data.target=COLUMN")
        if cfg.reliance.checkpoint is not None:
            raise ValueError("reliance.checkpoint: the encoder-reliance diagnostic is for segmenters, not case heads")
        root, layout = dataset_root(data)
        cases = discover(layout, root, require_labels=False, on_bad_case=data.on_bad_case, option="data.on_bad_case")
        cases = cases_of_split(cases, cfg.split_file, cfg.subset, where=str(root))
        table = read_targets(data.targets if data.targets is not None else root, str(data.target),
                             kind=data.target_kind, classes=None if data.classes is None else list(data.classes))
        targets = table.for_cases(cases)
        predictions = read_case_predictions(Path(str(cfg.pred)).expanduser() / PREDICTIONS_CSV)
        missing = sorted(c.id for c in cases if c.id in targets.values and c.id not in predictions)
        if missing and cfg.on_missing == "error":
            raise FileNotFoundError(f"pred={cfg.pred}: no prediction for {len(missing)} case(s) with a target "
                                    f"({', '.join(missing[:5])}); on_missing=skip scores the others")
        summary = case_summary({c.id: predictions[c.id] for c in cases if c.id in predictions}, targets,
                               groups=subject_groups(cases))  # sessions of a subject are resampled together
        summary["n_expected"] = len([c for c in cases if c.id in targets.values])
        summary["missing_predictions"] = missing
        out = Path(cfg.output).absolute()
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "summary.json", summary)
        lines = [f"{name} {m['value']:.4g}" + (f" [{m['ci_low']:.4g}, {m['ci_high']:.4g}]"
                                               if m["ci_low"] is not None else "")
                 if m["value"] is not None else f"{name} undefined" for name, m in summary["metrics"].items()]
        print(f"[asa] {summary['n']} case(s), {data.target} ({targets.kind}): " + "; ".join(lines)
              + f"\n[asa] wrote {out / 'summary.json'}", flush=True)
        return summary

    def probe_targets(self, cfg: FrozenProbeConfig, root: Path, layout: str) -> ProbeTargets:
        """The cases with a value of ``data.target``; each encoder's pooled features, fitted with the case
        probes (ridge / logistic / k-NN, `asa.eval.probe_cv.case_probes`)."""
        data = cfg.data
        if data.target is None:
            raise ValueError("data.task=case needs data.target: the column of the targets table to probe "
                             "(e.g. data.target=age)")
        cases = discover(layout, root, require_labels=False, on_bad_case=data.on_bad_case, option="data.on_bad_case")
        cases = cases_of_split(cases, cfg.split_file, cfg.subset, where=str(root))
        table = read_targets(data.targets if data.targets is not None else root, str(data.target),
                             kind=data.target_kind, classes=None if data.classes is None else list(data.classes))
        targets = table.for_cases(cases)
        cases = [c for c in cases if c.id in targets.values]
        target = {"column": str(data.target), "kind": targets.kind, "classes": list(targets.names),
                  "source": table.source, "skipped": dict(targets.skipped)}
        device = resolve_device(cfg.device)
        prepared: dict = {}  # inputs per encoder input size, prepared once

        def score(enc: FrozenEncoder, groups: Sequence[str], common: Mapping) -> tuple[dict, torch.Tensor]:
            if enc.size not in prepared:
                prepared[enc.size] = prepare_cases(cases, size=enc.size, channels=list(cfg.channels))
            features = pooled_features(enc, prepared[enc.size], batch_size=cfg.batch_size, device=device)
            result = case_probes(features, [targets.values[c.id] for c in cases], kind=targets.kind, groups=groups,
                                 names=targets.names, logistic=cfg.logistic,
                                 logistic_steps=cfg.logistic_steps, **common)
            return result, features

        note = (f"{len(targets.skipped)} case(s) without a target left out (listed in probe.json)"
                if targets.skipped else None)
        return ProbeTargets(cases, target, "continuous" if targets.kind == "continuous" else "classes", score, note)
