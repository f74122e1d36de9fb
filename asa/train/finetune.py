"""Fine-tuning pieces for the engine: the segmentation step and sliding-window Dice validation."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset

from asa.data.labels import Task
from asa.eval.inference import predict_volume
from asa.eval.metrics import dice
from asa.models import capabilities
from asa.train.distributed import DistEnv
from asa.train.panels import panel_centre, slice_grid


def segmentation_step(criterion: nn.Module) -> Callable[[nn.Module, Mapping], tuple[torch.Tensor, dict]]:
    """step_fn(model, batch) -> (loss, logs) for batches {"image": [B,C,...], "label": target,
    "offset": [B, 3]} and, with region maps, "region" [B,1,...]: a brain-frame network gets the
    crops' patch offsets, a network with region attention and the criterion the region maps."""

    def step(model: nn.Module, batch: Mapping) -> tuple[torch.Tensor, dict]:
        kwargs = {}
        if capabilities(model).offsets and "offset" in batch:
            kwargs["offsets"] = batch["offset"]
        regions = batch.get("region")
        if capabilities(model).regions:
            kwargs["regions"] = regions
        logits = model(batch["image"], **kwargs)
        if regions is None:
            return criterion(logits, batch["label"]), {}
        return criterion(logits, batch["label"], regions), {}

    return step


def output_masks(probs: torch.Tensor, target: torch.Tensor, task: Task) -> list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    """(predicted mask, reference mask, ignore mask) per output region/class, as ``asa-evaluate``
    scores them: the prediction is decoded to labels (``task.prediction_to_label``, e.g. nested
    BraTS regions) and cut into ``task.region_masks``; the reference masks and ignore mask come
    from the target (identical to the raw label's region masks and ignore mask).

    probs: [K, ...]; target: multilabel [K, ...] float, softmax [1, ...] int64 with -1 = ignore.
    """
    pred = task.region_masks(task.prediction_to_label(probs))
    pred = [pred[n] for n in task.output_names]
    if task.multilabel:
        ref = (target > 0.5).cpu().numpy()
        return [(pred[k], ref[k], None) for k in range(len(pred))]
    tgt = target[0].cpu().numpy()
    ignore = tgt == -1
    return [(pred[k - 1], tgt == k, ignore) for k in range(1, len(pred) + 1)]


def make_dice_validator(
    dataset: Dataset,
    *,
    task: Task,
    roi_size: Sequence[int],
    env: DistEnv,
    overlap: float = 0.5,
    sw_batch_size: int = 2,
) -> Callable[[nn.Module], dict[str, float]]:
    """validate(model) -> {"dice": mean Dice over outputs and cases, "dice_<name>": per output}.

    Whole volumes go through `predict_volume` (the path ``asa-predict`` takes, brain frame included:
    items may carry their ``"centre"``); Dice is computed on decoded labels as ``asa-evaluate`` does.
    Each rank predicts every world_size-th whole validation volume; per-output sums and the case
    count are all-reduced, so every rank returns the exact mean over all cases (also when a rank
    has no case of its own).
    """
    names = task.output_names
    indices = list(range(env.rank, len(dataset), env.world_size))  # type: ignore[arg-type]

    def validate(model: nn.Module) -> dict[str, float]:
        totals = torch.zeros(len(names) + 1, dtype=torch.float64)  # per-output Dice sums, case count
        for i in indices:
            item = dataset[i]
            probs = predict_volume(model, item["image"], roi_size=roi_size, multilabel=task.multilabel,
                                   overlap=overlap, sw_batch_size=sw_batch_size, device=env.device,
                                   centre=item.get("centre"),
                                   regions=item.get("region") if capabilities(model).regions else None)
            scores = [dice(p, r, ignore=ig) for p, r, ig in output_masks(probs, item["label"], task)]
            totals += torch.tensor([*scores, 1.0], dtype=torch.float64)
        if env.distributed and dist.is_initialized():
            totals = totals.to(env.device)
            dist.all_reduce(totals)
            totals = totals.cpu()
        per_output = (totals[:-1] / totals[-1].clamp_min(1)).tolist()
        return {"dice": sum(per_output) / len(per_output), **{f"dice_{n}": v for n, v in zip(names, per_output)}}

    return validate


def make_segmentation_panel_fn(
    item: Mapping, *, multilabel: bool, roi_size: Sequence[int], overlap: float = 0.5, sw_batch_size: int = 2,
) -> Callable[[nn.Module, int], dict[str, torch.Tensor]]:
    """panel(model, step) -> {"finetune/1_image", "finetune/2_label", "finetune/3_prediction": [1, h, w]}
    on one validation case: its first channel, label and prediction (label maps scaled so class k is
    k/K), each a labelled image of sagittal, coronal and axial slices through the centre of mass of
    the label's foreground (else of the brain), captioned with their index
    (`asa.train.panels.slice_grid`), so that an off-centre lesion is on the panel."""
    image, target = item["image"], item["label"]

    def as_map(t: torch.Tensor, k: int) -> torch.Tensor:  # multilabel [K,...] or [1,...] classes -> [X,Y,Z]
        if multilabel:
            t = (t > 0.5).float()
            return (t * torch.arange(1, k + 1, dtype=t.dtype).view(-1, 1, 1, 1)).amax(0) / k
        return t[0].float().clamp_min(0) / max(k - 1, 1)

    foreground = (target > 0.5).any(0) if multilabel else target[0] > 0  # ignore (-1) is not foreground
    at = panel_centre(image.shape, foreground, (image != 0).any(0))

    def panel(model: nn.Module, step: int) -> dict[str, torch.Tensor]:
        device = next(model.parameters()).device
        probs = predict_volume(model, image, roi_size=roi_size, multilabel=multilabel, overlap=overlap,
                               sw_batch_size=sw_batch_size, device=device, centre=item.get("centre"),
                               regions=item.get("region"))
        k = probs.shape[0]
        pred = probs if multilabel else probs.argmax(0, keepdim=True)
        img = image[0].float()
        img = (img - img.min()) / (img.max() - img.min()).clamp_min(1e-6)
        return {"finetune/1_image": slice_grid({"image": img}, at),
                "finetune/2_label": slice_grid({"label": as_map(target, k)}, at),
                "finetune/3_prediction": slice_grid({"prediction": as_map(pred, k)}, at)}

    return panel
