"""Fine-tuning pieces for the engine: the segmentation step and sliding-window Dice validation."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset

from asa.eval.inference import predict_volume
from asa.eval.metrics import dice
from asa.train.distributed import DistEnv


def segmentation_step(criterion: nn.Module) -> Callable[[nn.Module, Mapping], tuple[torch.Tensor, dict]]:
    """step_fn(model, batch) -> (loss, logs) for batches {"image": [B,C,...], "label": target}."""

    def step(model: nn.Module, batch: Mapping) -> tuple[torch.Tensor, dict]:
        return criterion(model(batch["image"]), batch["label"]), {}

    return step


def output_masks(probs: torch.Tensor, target: torch.Tensor, multilabel: bool) -> list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    """(predicted mask, reference mask, ignore mask) per output region/class (background excluded).

    probs: [K, ...]; target: multilabel [K, ...] float, softmax [1, ...] int64 with -1 = ignore.
    """
    if multilabel:
        pred = (probs > 0.5).numpy()
        ref = (target > 0.5).cpu().numpy()
        return [(pred[k], ref[k], None) for k in range(probs.shape[0])]
    cls = probs.argmax(0).numpy()
    tgt = target[0].cpu().numpy()
    ignore = tgt == -1
    return [(cls == k, tgt == k, ignore) for k in range(1, probs.shape[0])]


def make_dice_validator(
    dataset: Dataset,
    *,
    names: Sequence[str],
    multilabel: bool,
    roi_size: Sequence[int],
    env: DistEnv,
    overlap: float = 0.5,
    sw_batch_size: int = 2,
) -> Callable[[nn.Module], dict[str, float]]:
    """validate(model) -> {"dice": mean Dice over outputs and cases, "dice_<name>": per output}.

    Each rank predicts every world_size-th whole validation volume; per-output sums and the case
    count are all-reduced, so every rank returns the exact mean over all cases (also when a rank
    has no case of its own).
    """
    indices = list(range(env.rank, len(dataset), env.world_size))  # type: ignore[arg-type]

    def validate(model: nn.Module) -> dict[str, float]:
        totals = torch.zeros(len(names) + 1, dtype=torch.float64)  # per-output Dice sums, case count
        for i in indices:
            item = dataset[i]
            probs = predict_volume(model, item["image"], roi_size=roi_size, multilabel=multilabel,
                                   overlap=overlap, sw_batch_size=sw_batch_size, device=env.device)
            scores = [dice(p, r, ignore=ig) for p, r, ig in output_masks(probs, item["label"], multilabel)]
            totals += torch.tensor([*scores, 1.0], dtype=torch.float64)
        if env.distributed and dist.is_initialized():
            totals = totals.to(env.device)
            dist.all_reduce(totals)
            totals = totals.cpu()
        per_output = (totals[:-1] / totals[-1].clamp_min(1)).tolist()
        return {"dice": sum(per_output) / len(per_output), **{f"dice_{n}": v for n, v in zip(names, per_output)}}

    return validate
