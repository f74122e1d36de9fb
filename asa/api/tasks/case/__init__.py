"""The case task (``data.task=case``): one target per case — diagnosis classification or brain-age
regression — learnt by a pooled-token head on the (pretrained) encoder. Its four jobs — training (the hooks
of `asa.api.tasks.FinetuneTask.finetune`, with the task's loss (class-weighted cross-entropy; MSE or Huber on
standardised values), step and validation with the case metrics of `asa.eval`), prediction (one
``predictions.csv``), evaluation (metrics with bootstrap intervals) and the case probes — and its own settings
(``task.*``, `Settings`).

The task's package holds what only it uses: a case's test-time crops (`crops`), the datasets of cases with
their targets (`dataset`) and the case outputs and ``predictions.csv`` (`outputs`). What it shares stays where the
others read it: the targets table (`asa.data.targets`: the probes, the demo data), the case metrics
(`asa.eval.case_metrics`: the probes), the case networks (`asa.models.heads`: registered as every network is)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from asa.api.machinery.dataset import cases_of_split, dataset_root, default_crop
from asa.api.machinery.networks import build_case_network, case_arch
from asa.api.machinery.prediction import PredictSetup
from asa.api.machinery.run import OptionError
from asa.api.configuration.schema import EvaluateConfig, FrozenProbeConfig, PredictConfig
from asa.api.configuration.tasks import TaskSettings
from asa.api.tasks import FinetuneRun, FinetuneTask, ProbeTargets, register_finetune_task
from asa.api.machinery.training import record_geometry
from asa.api.tasks.case.crops import CASE_CROPS, DEFAULT_CASE_CROPS
from asa.api.tasks.case.dataset import build_case_crops_dataset, build_target_dataset
from asa.api.tasks.case.outputs import (PREDICTIONS_CSV, case_crop_lattice, case_output, case_row, case_summary,
                                        read_case_predictions, write_case_predictions)
from asa.choices import one_of
from asa.data import Targets, detect_layout, discover, read_targets, subject_groups
from asa.data.case import match_channels
from asa.data.preprocessing import PERCENTILES
from asa.data.targets import TARGET_KINDS
from asa.eval.case_metrics import CLASSIFICATION_METRICS, HIGHER_IS_BETTER, REGRESSION_METRICS, case_metric
from asa.eval.frozen import FrozenEncoder, pooled_features, prepare_cases
from asa.eval.probe_cv import case_probes
from asa.io import atomic_write_json
from asa.models import POOLINGS, build_network, unwrap
from asa.train.distributed import DistEnv, resolve_device

__all__ = ["CASE_TASK", "REGRESSION_LOSSES", "CaseLoss", "CaseTask", "HeadSettings", "Settings", "case_metrics_of",
           "case_step", "class_weights", "default_monitor", "make_case_validator", "predict_cases"]

CASE_TASK = "case"
SEGMENTATION_MONITOR = "val/dice"  # the trainer presets' default: a case run follows its own default instead

# --- the loss, the training step and the validation ------------------------------------------------
REGRESSION_LOSSES = ("mse", "huber")


def case_metrics_of(kind: str) -> tuple[str, ...]:
    """The validation metrics of a target kind (``val/<name>``)."""
    return REGRESSION_METRICS if kind == "continuous" else CLASSIFICATION_METRICS


def default_monitor(kind: str) -> tuple[str, str]:
    """(trainer.monitor, trainer.mode) that ``best.pt`` follows by default: balanced accuracy (max)
    for classes, MAE (min) for continuous targets."""
    name = "mae" if kind == "continuous" else "balanced_accuracy"
    return f"val/{name}", "max" if HIGHER_IS_BETTER[name] else "min"


def class_weights(labels: Sequence[int], num_classes: int, names: Sequence[str] = ()) -> torch.Tensor:
    """Inverse-frequency weights ``w_k = N / (K · n_k)`` (1 for every class when balanced); a class
    absent from ``labels`` is an error (its weight would be infinite), naming it by ``names`` (the
    class names in index order) when given."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)
    if (counts == 0).any():
        absent = [k for k in range(num_classes) if counts[k] == 0]
        shown = ", ".join(repr(str(names[k])) for k in absent) if len(names) == num_classes else str(absent)
        raise ValueError(f"no training case of class(es) {shown}: the class-weighted loss needs every class "
                         "(change data.split or the targets, or set task.class_weighted=false)")
    return torch.tensor(counts.sum() / (num_classes * counts), dtype=torch.float32)


class CaseLoss(nn.Module):
    """Classification: cross-entropy of logits [B, K] against class indices [B], with ``weights`` [K]
    (None: unweighted). Regression: ``mse`` or ``huber`` (``delta``, in standard deviations) between
    predictions [B, 1] and values [B], both standardised by ``shift`` / ``scale`` (the network's
    ``target_shift`` / ``target_scale``), so the loss does not depend on the target's units."""

    def __init__(self, kind: str, *, weights: torch.Tensor | None = None, regression: str = "mse",
                 delta: float = 1.0, shift: float = 0.0, scale: float = 1.0) -> None:
        super().__init__()
        if regression not in REGRESSION_LOSSES:
            raise ValueError(f"task.regression={regression!r}: expected one of {REGRESSION_LOSSES}")
        self.kind, self.regression, self.delta, self.shift, self.scale = kind, regression, delta, shift, scale
        self.register_buffer("weights", weights, persistent=False)

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.kind != "continuous":
            weights = None if self.weights is None else self.weights.to(output.device)
            return F.cross_entropy(output.float(), target.long(), weight=weights)
        pred = (output.float().view(-1) - self.shift) / self.scale
        true = (target.float().view(-1) - self.shift) / self.scale
        if self.regression == "huber":
            return F.huber_loss(pred, true, delta=self.delta)
        return F.mse_loss(pred, true)


def case_step(criterion: nn.Module) -> Callable[[nn.Module, Mapping], tuple[torch.Tensor, dict]]:
    """step_fn(model, batch) -> (loss, logs) for batches ``{"image": [B, C, ...], "target": [B]}``
    (the brain-centred pretraining crop: patch offset 0, the network's default)."""

    def step(model: nn.Module, batch: Mapping) -> tuple[torch.Tensor, dict]:
        return criterion(model(batch["image"]), batch["target"]), {}

    return step


@torch.no_grad()
def predict_cases(model: nn.Module, dataset: Dataset, indices: Sequence[int], *, kind: str,
                  device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """(truth [n], output) over ``dataset[i]`` for ``i`` in ``indices`` (items of
    `asa.data.build_case_crops_dataset` with targets): class probabilities [n, K] or predicted
    values [n], each averaged over the case's test-time crops as asa-predict does (`case_output`)."""
    net = unwrap(model)
    truth, outputs = [], []
    for i in indices:
        item = dataset[i]
        outputs.append(case_output(net, item["image"], item["offset"], kind=kind, device=device).numpy())
        truth.append(item["target"].item())
    return np.asarray(truth), np.stack(outputs) if outputs else np.zeros((0,))


def make_case_validator(dataset: Dataset, *, kind: str, env: DistEnv) -> Callable[[nn.Module], dict[str, float]]:
    """validate(model) -> {metric: value} for `case_metrics_of(kind)` over every validation case
    (each rank scores all of them: the metrics are not sums over cases, and a validation set of
    whole cases is small); a metric undefined on these cases (e.g. AUROC with one class) is NaN
    (`asa.eval.classification`, `asa.eval.regression`)."""
    names = case_metrics_of(kind)
    indices = list(range(len(dataset)))  # type: ignore[arg-type]

    def validate(model: nn.Module) -> dict[str, float]:
        truth, output = predict_cases(model, dataset, indices, kind=kind, device=env.device)
        return {name: case_metric(name, truth, output) for name in names}

    return validate


# --- the task --------------------------------------------------------------------------------------


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
    # the target: classification or regression of one value per case (asa.data.read_targets)
    target: Optional[str] = "diagnosis"  # the column of the targets table (e.g. diagnosis, age)
    target_kind: str = one_of("auto", ("auto", *TARGET_KINDS))  # auto | binary | multiclass | continuous
    targets: Optional[str] = None  # the table (participants.tsv, a CSV/TSV, dataset.json); null: data.root's
    classes: Optional[List[str]] = None  # class names in index order (binary: the positive class last); null: sorted
    # validation: a case's outputs averaged over its test-time crops, as asa-predict's crops (asa.api.configuration.schema.PredictConfig)
    crops: str = one_of(DEFAULT_CASE_CROPS, CASE_CROPS)


def _no_target(data_task: str, job: str) -> str:
    return (f"data.task={data_task} needs task.target: the column of the targets table to {job} "
            "(e.g. task.target=diagnosis or task.target=age)")


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
    ``task.target`` with a pooled-token head. Its network's outputs (the number of classes, the targets'
    standardisation) follow the training split, so it is built once the cases are split; a subject's
    sessions stay in one part of the split. Writes ``targets.json`` (what was read and skipped)."""

    name = CASE_TASK
    Settings = Settings
    by_subject = True
    network_from_split = True

    @classmethod
    def claims(cls, data_task: str) -> bool:
        return data_task == cls.name

    def targets_table(self, settings: Settings, root: Path, data_task: str, job: str) -> Targets:
        """The table of ``task.target`` (``task.targets``, else the dataset's own under ``root``), as every job
        of the task reads it; ``job``: what the target is for, said when none is given."""
        if settings.target is None:
            raise ValueError(_no_target(data_task, job))
        return read_targets(settings.targets if settings.targets is not None else root, str(settings.target),
                            kind=settings.target_kind, classes=None if settings.classes is None else list(settings.classes))

    # --- training: the hooks of FinetuneTask.finetune ---------------------------------------------------
    def check(self, run: FinetuneRun) -> None:
        cfg, data = run.cfg, run.cfg.data
        if cfg.task.target is None:
            raise ValueError(_no_target(data.task, "learn"))
        case_arch(cfg.model)  # a case network, and a pretrained file only for one that loads it
        if data.channels is not None:
            raise ValueError(f"data.channels={list(data.channels)}: data.task=case reads each case's T1 alone; "
                             "leave data.channels unset")
        if tuple(data.percentiles) != PERCENTILES:  # its crops are pretraining's, clipped as pretraining clipped them
            raise ValueError(f"data.percentiles={list(data.percentiles)}: data.task=case preprocesses each case as "
                             f"pretraining does (clipped to its brain's {PERCENTILES[0]:g}-{PERCENTILES[1]:g} "
                             "percentiles); leave data.percentiles unset")
        if cfg.model.region_option() is not None:
            raise ValueError("model.region_attention needs region maps, which data.task=case does not read; "
                             "leave it at none")
        self.root = dataset_root(data)[0]
        self.table = self.targets_table(cfg.task, self.root, data.task, "learn")
        _resolve_monitor(cfg, self.table.kind)

    def cases(self, run: FinetuneRun, cases: list) -> list:
        self.targets = self.table.for_cases(cases)
        if run.env.is_main:
            print(f"[asa] targets: {self.targets.summary()}", file=sys.stderr, flush=True)
        cases = [c for c in cases if c.id in self.targets.values]
        if not cases:
            raise OptionError(f"task.target={run.cfg.task.target}: no case of {self.root} has a target in "
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
        return model, {"name": self.name, "kind": kind, "target": str(settings.target), "classes": list(targets.names),
                       "target_shift": self.shift, "target_scale": self.scale}

    def datasets(self, run: FinetuneRun, splits: Mapping[str, list]) -> tuple[Any, Any | None]:
        data = run.cfg.data
        train = build_target_dataset(splits["train"], self.targets, augment=True, crop=run.crop, seed=run.cfg.seed,
                                     store=data.store)
        # validation scores what asa-predict writes: each case's outputs averaged over its test-time crops
        val = build_case_crops_dataset(splits["val"], crop=run.crop, lattice=case_crop_lattice(run.model),
                                       crops=run.cfg.task.crops, targets=self.targets,
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
    def load_predictor(self, cfg: PredictConfig, state: dict, checkpoint: Path, setup: PredictSetup) -> None:
        self.outputs = state["config"]["outputs"]
        self.model = build_network(state["network"])
        self.model.load_state_dict(state["model"])
        self.model = self.model.to(setup.device).eval()

    def prediction_cases(self, cfg: PredictConfig, inputs: list[str] | str) -> list:
        """The cases of a dataset folder (BIDS, CAPS or a file list), as ``data.root`` of asa-finetune."""
        if not isinstance(inputs, str) or not Path(inputs).expanduser().is_dir():
            raise OptionError(f"input={inputs}: a case head predicts the cases of a dataset folder (BIDS, CAPS or "
                              "a file list), as data.root of asa-finetune")
        root = Path(inputs).expanduser()
        layout = detect_layout(root) if cfg.layout == "auto" else cfg.layout
        return discover(layout, root, require_labels=False, on_bad_case=cfg.on_bad_case)

    def prediction_files(self, out: Path) -> list[str]:
        return [PREDICTIONS_CSV] if (out / PREDICTIONS_CSV).exists() else []

    def describe(self, cfg: PredictConfig, cases: list, setup: PredictSetup) -> str:
        return (f"[asa] predicting {self.outputs['target']} ({self.outputs['kind']}) for {len(cases)} case(s) on "
                f"{setup.device}, outputs averaged over crops={cfg.crops}")

    def prediction_settings(self, cfg: PredictConfig, setup: PredictSetup) -> dict[str, Any]:
        return {"crops": cfg.crops}

    def start(self, cfg: PredictConfig, out: Path, kept: set[str]) -> None:
        """The rows of the kept cases, read back from ``predictions.csv`` (a resumed prediction)."""
        held = read_case_predictions(out / PREDICTIONS_CSV) if kept else {}
        self.rows = {cid: row for cid, row in held.items() if cid in kept}

    def predict_case(self, cfg: PredictConfig, case: Any, out: Path, setup: PredictSetup) -> list[Path]:
        """The case's row (its outputs averaged over its test-time crops), ``predictions.csv`` written again
        with every row so far (the kept ones first)."""
        self.rows[case.id] = case_row(self.model, case, self.outputs, device=setup.device, crops=cfg.crops)
        return [write_case_predictions(list(self.rows.values()), out / PREDICTIONS_CSV)]

    def summary(self, out: Path, written: int, kept: int) -> str:
        return (f"[asa] wrote {written} prediction(s) of {self.outputs['target']} to {out / PREDICTIONS_CSV}"
                f"{f', kept {kept} from before' if kept else ''}")

    def evaluate(self, cfg: EvaluateConfig) -> dict:
        """Score ``<pred>/predictions.csv`` against ``task.target`` (summary with bootstrap intervals,
        `asa.api.tasks.case.outputs.case_summary`), written to ``<output>/summary.json``."""
        data = cfg.data
        if cfg.pred is None:
            raise ValueError(f"asa-evaluate with data.task={data.task} needs pred=DIR (holding asa-predict's "
                             "predictions.csv)")
        if cfg.reliance.checkpoint is not None:
            raise ValueError("reliance.checkpoint: the encoder-reliance diagnostic is for segmenters, not case heads")
        root, layout = dataset_root(data)
        cases = discover(layout, root, require_labels=False, on_bad_case=data.on_bad_case, option="data.on_bad_case")
        cases = cases_of_split(cases, cfg.split_file, cfg.subset, where=str(root))
        targets = self.targets_table(cfg.task, root, data.task, "score").for_cases(cases)
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
        print(f"[asa] {summary['n']} case(s), {cfg.task.target} ({targets.kind}): " + "; ".join(lines)
              + f"\n[asa] wrote {out / 'summary.json'}", flush=True)
        return summary

    def probe_targets(self, cfg: FrozenProbeConfig, root: Path, layout: str) -> ProbeTargets:
        """The cases with a value of ``task.target``; each encoder's pooled features, fitted with the case
        probes (ridge / logistic / k-NN, `asa.eval.probe_cv.case_probes`)."""
        data = cfg.data
        table = self.targets_table(cfg.task, root, data.task, "probe")
        cases = discover(layout, root, require_labels=False, on_bad_case=data.on_bad_case, option="data.on_bad_case")
        cases = cases_of_split(cases, cfg.split_file, cfg.subset, where=str(root))
        targets = table.for_cases(cases)
        cases = [c for c in cases if c.id in targets.values]
        target = {"column": str(cfg.task.target), "kind": targets.kind, "classes": list(targets.names),
                  "source": table.source, "skipped": dict(targets.skipped)}
        channels = match_channels(cfg.channels, list(cases[0].images), option="channels",
                                  where=f"case {cases[0].id} of data.root={root}") if cases else list(cfg.channels)
        device = resolve_device(cfg.device)
        prepared: dict = {}  # inputs per encoder input size, prepared once

        def score(enc: FrozenEncoder, groups: Sequence[str], common: Mapping) -> tuple[dict, torch.Tensor]:
            if enc.size not in prepared:
                prepared[enc.size] = prepare_cases(cases, size=enc.size, channels=channels)
            features = pooled_features(enc, prepared[enc.size], batch_size=cfg.batch_size, device=device)
            result = case_probes(features, [targets.values[c.id] for c in cases], kind=targets.kind, groups=groups,
                                 names=targets.names, logistic=cfg.logistic,
                                 logistic_steps=cfg.logistic_steps, **common)
            return result, features

        note = (f"{len(targets.skipped)} case(s) without a target left out (listed in probe.json)"
                if targets.skipped else None)
        return ProbeTargets(cases, target, "continuous" if targets.kind == "continuous" else "classes", score, note)
