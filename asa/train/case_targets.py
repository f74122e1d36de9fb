"""Case-level fine-tuning pieces for the engine: the loss (class-weighted cross-entropy; MSE or Huber
on standardised values), the training step, and validation with the case metrics of `asa.eval`."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from asa.eval.case_metrics import CLASSIFICATION_METRICS, HIGHER_IS_BETTER, REGRESSION_METRICS, case_metric
from asa.eval.case_outputs import case_output
from asa.models import unwrap
from asa.train.distributed import DistEnv

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
