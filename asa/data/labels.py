"""Label schemes of the segmentation datasets (`data.task`: brats, ibsr, wmh, msd): channels, outputs and the
label <-> network-target conversions. (A fine-tuning task, what a run trains, is `asa.api.tasks`.)

BraTS is multilabel (sigmoid outputs for the nested regions WT = {1, 2, 4}, TC = {1, 4}, ET = {4});
IBSR, WMH and MSD tasks are softmax over classes including background, unless an nnU-Net v2
``dataset.json`` declares regions (then multilabel, like BraTS). WMH label 2 ("other pathology") is
ignored: it becomes -1 in the target and is excluded from metrics via `ignore_mask`.

Region outputs are decoded as nnU-Net v2 does: the regions are painted in output order, region i
with ``regions_class_order[i]``, a later region overwriting an earlier one. For BraTS
(WT, TC, ET painted 2, 1, 4) and for any nested set such as ``[1, 2, 3] ⊃ [2, 3] ⊃ [3]``
(painted 1, 2, 3) that makes label -> region targets -> label the identity.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["Task", "get_task", "non_mri_channels", "painting_order", "TASKS"]

Array = Any  # np.ndarray | torch.Tensor


def painting_order(regions: tuple[tuple[int, ...], ...]) -> tuple[int, ...] | None:
    """The ``regions_class_order`` that decodes every label map back to itself, or None if there is none.

    Painting region i with ``order[i]`` in order, a voxel of label v ends with the value of the last
    region holding v; so the order exists when each region is the last one for exactly one label
    value (nested regions, disjoint regions), and then it is unique: ``[1, 2, 3] ⊃ [2, 3] ⊃ [3]``
    -> (1, 2, 3); BraTS (1, 2, 4) ⊃ (1, 4) ⊃ (4,) -> (2, 1, 4). Overlapping regions such as
    ``[1, 2], [2, 3]`` have none (labels 2 and 3 both end in the second region).
    """
    last: dict[int, int] = {}
    for index, region in enumerate(regions):
        for value in region:
            last[int(value)] = index
    ends: list[list[int]] = [[] for _ in regions]
    for value, index in last.items():
        ends[index].append(value)
    if any(len(values) != 1 for values in ends):
        return None
    return tuple(values[0] for values in ends)


def _check_regions_class_order(regions: tuple[tuple[int, ...], ...], order: tuple[int, ...], *, where: str) -> None:
    """Raise ValueError (prefixed with ``where``) unless ``order`` paints each region with one of its own labels."""
    if len(order) != len(regions):
        raise ValueError(f"{where}: regions_class_order {list(order)} has {len(order)} entries for "
                         f"{len(regions)} regions {[list(r) for r in regions]}")
    for index, (value, region) in enumerate(zip(order, regions)):
        if value not in region:
            raise ValueError(f"{where}: regions_class_order[{index}] = {value} is not a label of region {index} "
                             f"{list(region)}; each region is painted with one of its own labels")


@dataclass(frozen=True)
class Task:
    """What a fine-tuning task reads and predicts.

    ``regions`` (multilabel): raw label values making up each output region, in output order.
    ``regions_class_order`` (multilabel): the label each region is painted with when a prediction
    is decoded (nnU-Net v2's key; regions painted in order, later ones overwrite earlier ones). Left
    empty it is derived when an order decodes every label map back to itself (`painting_order`:
    nested or disjoint regions); otherwise it must be given. A ``dataset.json`` must state it, as
    nnU-Net requires. ``class_values`` (softmax): raw label value of each output class, background first.
    """

    name: str
    channels: tuple[str, ...]
    output_names: tuple[str, ...]
    multilabel: bool
    num_outputs: int
    label_values: tuple[int, ...]
    ignore_label: int | None = None
    regions: tuple[tuple[int, ...], ...] = ()
    class_values: tuple[int, ...] = ()
    regions_class_order: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not self.multilabel:
            return
        if len(self.regions) != self.num_outputs:
            raise ValueError(f"task {self.name}: {self.num_outputs} outputs but {len(self.regions)} regions")
        order = tuple(self.regions_class_order)
        if not order:
            order = painting_order(self.regions)
            if order is None:
                raise ValueError(f"task {self.name}: regions {[list(r) for r in self.regions]} need regions_class_order "
                                 "(the label each region is painted with when decoding); no order gives the labels back")
            object.__setattr__(self, "regions_class_order", order)
        _check_regions_class_order(self.regions, order, where=f"task {self.name}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Task":
        """Inverse of ``dataclasses.asdict`` after a trip through YAML/JSON (lists back to tuples)."""

        def tuples(v: Any) -> Any:
            return tuple(tuples(x) for x in v) if isinstance(v, (list, tuple)) else v

        return cls(**{k: tuples(v) for k, v in values.items()})

    # ---- label -> target -------------------------------------------------------------------
    def label_to_target(self, label: Array) -> Array:
        """Raw label map [...] -> training target.

        Multilabel: float32 [K, ...] region masks. Softmax: int64 class map [...] (index into
        ``class_values``; ``ignore_label`` voxels -> -1). Returns the input's type (numpy/torch).
        """
        is_torch = isinstance(label, torch.Tensor)
        lab = label.detach().cpu().numpy() if is_torch else np.asarray(label)
        if self.multilabel:
            out = np.stack([np.isin(lab, r) for r in self.regions]).astype(np.float32)
        else:
            out = np.full(lab.shape, -1, dtype=np.int64)
            for index, value in enumerate(self.class_values):
                out[lab == value] = index
            unknown = out == -1
            if self.ignore_label is not None:
                unknown &= lab != self.ignore_label
            if unknown.any():
                bad = sorted(set(np.unique(lab[unknown]).tolist()))
                raise ValueError(f"task {self.name}: label values {bad} outside the expected {self.label_values}")
        return torch.from_numpy(out) if is_torch else out

    # ---- prediction -> label ---------------------------------------------------------------
    def prediction_to_label(self, probs: Array, threshold: float = 0.5) -> np.ndarray:
        """Network probabilities [K, ...] (sigmoid for multilabel, softmax otherwise) -> raw labels [...].

        Multilabel: each region above ``threshold`` painted with ``regions_class_order[i]``, in
        output order, later regions over earlier ones (nnU-Net v2); BraTS: WT -> 2, then TC -> 1,
        then ET -> 4, back to 0/1/2/4.
        """
        p = probs.detach().float().cpu().numpy() if isinstance(probs, torch.Tensor) else np.asarray(probs)
        if p.shape[0] != self.num_outputs:
            raise ValueError(f"task {self.name}: expected {self.num_outputs} output channels, got shape {p.shape}")
        dtype = np.uint8 if max(self.label_values) < 256 else np.int16
        if self.multilabel:
            out = np.zeros(p.shape[1:], dtype=dtype)
            for value, pk in zip(self.regions_class_order, p):
                out[pk > threshold] = value
            return out
        return np.asarray(self.class_values, dtype=dtype)[p.argmax(axis=0)]

    # ---- evaluation --------------------------------------------------------------------------
    def region_masks(self, label: Array) -> dict[str, np.ndarray]:
        """Raw label map [...] -> {output name: bool mask [...]} (what Dice/HD95 are computed on)."""
        lab = label.cpu().numpy() if isinstance(label, torch.Tensor) else np.asarray(label)
        if self.multilabel:
            return {n: np.isin(lab, r) for n, r in zip(self.output_names, self.regions)}
        return {n: lab == v for n, v in zip(self.output_names, self.class_values[1:])}

    def ignore_mask(self, label: Array) -> np.ndarray:
        """Bool mask [...] of voxels excluded from loss and metrics (all False without an ignore label)."""
        lab = label.cpu().numpy() if isinstance(label, torch.Tensor) else np.asarray(label)
        if self.ignore_label is None:
            return np.zeros(lab.shape, dtype=bool)
        return lab == self.ignore_label


TASKS: dict[str, Task] = {
    "brats": Task(
        name="brats",
        channels=("t1", "t1ce", "t2", "flair"),
        output_names=("WT", "TC", "ET"),
        multilabel=True,
        num_outputs=3,
        label_values=(0, 1, 2, 4),
        regions=((1, 2, 4), (1, 4), (4,)),
        regions_class_order=(2, 1, 4),
    ),
    "ibsr": Task(
        name="ibsr",
        channels=("t1",),
        output_names=("CSF", "GM", "WM"),
        multilabel=False,
        num_outputs=4,
        label_values=(0, 1, 2, 3),
        class_values=(0, 1, 2, 3),
    ),
    "wmh": Task(
        name="wmh",
        channels=("t1", "flair"),
        output_names=("WMH",),
        multilabel=False,
        num_outputs=2,
        label_values=(0, 1, 2),
        ignore_label=2,
        class_values=(0, 1),
    ),
}


def _msd_task(root: Path) -> Task:
    """Task from an MSD (``modality``, ``labels`` {"0": "background"}) or nnU-Net v2 (``channel_names``,
    ``labels`` {"background": 0}, region lists allowed) ``dataset.json``."""
    path = root / "dataset.json"
    if not path.is_file():
        raise FileNotFoundError(f"get_task('msd'): {path} not found (msd tasks are read from dataset.json)")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    chans = meta.get("channel_names", meta.get("modality"))
    labels = meta.get("labels")
    if not isinstance(chans, dict) or not isinstance(labels, dict):
        raise ValueError(f"{path}: expected 'channel_names' (or 'modality') and 'labels' objects")
    channels = tuple(str(chans[k]) for k in sorted(chans, key=int))
    first_key = next(iter(labels))
    if str(first_key).isdigit():  # MSD: {"0": "background", "1": "edema"}
        pairs = sorted((int(k), str(v)) for k, v in labels.items())
        by_name: dict[str, Any] = {name: value for value, name in pairs}
    else:  # nnU-Net v2: {"background": 0, "edema": 1} or regions {"whole": [1, 2, 3]}
        by_name = dict(labels)
    regionwise = any(isinstance(v, (list, tuple)) for v in by_name.values())
    names = tuple(n for n, v in by_name.items() if v not in (0, [0]))
    if regionwise:
        return _region_task(path, meta, channels, {n: by_name[n] for n in names})
    values = tuple(sorted(int(v) for v in by_name.values()))
    ignore = by_name.get("ignore")
    classes = tuple(v for v in values if v != ignore)
    names = tuple(n for n, v in sorted(by_name.items(), key=lambda kv: kv[1]) if v not in (0, ignore))
    return Task("msd", channels, names, False, len(classes), values, ignore, class_values=classes)


def _region_task(path: Path, meta: dict[str, Any], channels: tuple[str, ...], by_name: dict[str, Any]) -> Task:
    """Multilabel task of an nnU-Net v2 region-based ``dataset.json`` (``labels`` {name: [values]},
    ``regions_class_order``). Like nnU-Net, the painting order is required, not guessed."""
    if "ignore" in by_name:
        raise ValueError(f"{path}: an 'ignore' label with region-based labels is not supported "
                         "(region outputs are trained with Dice + BCE on every voxel)")
    names = tuple(by_name)
    regions = tuple(tuple(int(x) for x in (v if isinstance(v, (list, tuple)) else [v])) for v in by_name.values())
    order = meta.get("regions_class_order")
    if order is None:
        derived = painting_order(regions)
        hint = (f'; for these regions "regions_class_order": {list(derived)} decodes every label map back to itself'
                if derived is not None else "")
        raise ValueError(f"{path}: region-based labels {dict(zip(names, map(list, regions)))} need "
                         f'"regions_class_order", the label each region is painted with when a prediction is decoded '
                         f"(nnU-Net v2 requires it too: regions are painted in order, later ones over earlier ones){hint}")
    if not isinstance(order, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in order):
        raise ValueError(f'{path}: "regions_class_order" must be a list of integer labels, got {order!r}')
    _check_regions_class_order(regions, tuple(order), where=str(path))
    values = tuple(sorted({0, *(x for r in regions for x in r)}))
    return Task("msd", channels, names, True, len(names), values, None, regions=regions,
                regions_class_order=tuple(order))


# how MRI sequences are named in dataset.json files (MSD: "FLAIR", "T1w", "t1gd", "T2w", "ADC", "MRI"; nnU-Net v2
# adds free names such as "T2_FLAIR"); "CT", "PET", "US" or a normalisation scheme ("zscore", "noNorm") are not
_MRI_NAME = re.compile(r"^(t1|t2|flair|pd|dwi|dti|adc|swi|mprage|mr|bold|asl|dce|dsc|stir)", re.IGNORECASE)


def non_mri_channels(channels: tuple[str, ...]) -> tuple[str, ...]:
    """The channel names that do not name an MRI sequence (empty when all of them do).

    ``("FLAIR", "T1w", "t1gd", "T2w")`` -> ``()``; ``("CT",)`` -> ``("CT",)``; ``("T2", "ADC")`` -> ``()``.
    """
    return tuple(c for c in channels if not _MRI_NAME.match(re.sub(r"[^0-9a-z]", "", str(c).lower())))


def get_task(name: str, root: str | Path | None = None) -> Task:
    """Task by name: "brats", "ibsr", "wmh", or "msd" (read from ``root``/dataset.json)."""
    key = name.lower()
    if key == "msd":
        if root is None:
            raise ValueError("get_task('msd') needs root= the dataset folder holding dataset.json")
        return _msd_task(Path(root))
    if key not in TASKS:
        raise ValueError(f"unknown task {name!r}; expected one of {sorted([*TASKS, 'msd'])}")
    return TASKS[key]
