"""The brain frame's patch lattice (docs/method.md §1.2): reference grid, lattice padding, lattice crops.

The reference grid is a box of the pretraining crop size centred on the brain centre recorded at
preprocessing, placed exactly as the pretraining crop is (`reference_origin`). Its patch lattice
extends over the whole volume. Padding a volume in front by ``(-origin) mod s`` puts a lattice
point at index 0, so every crop or window that starts at a multiple of s starts on the lattice,
at the integer patch offset ``(start - padded origin) / s`` from the reference grid.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import MapTransform, RandFlipd, Randomizable
from monai.transforms.utils import generate_pos_neg_label_crop_centers, map_binary_to_indices

__all__ = ["reference_origin", "mirrored_origin", "lattice_padding", "pad_to_lattice", "class_indices", "forced_crops",
           "crop_start_bounds", "LatticeCropd", "LatticeFlipd", "SAMPLINGS", "OVERSAMPLINGS", "FOREGROUND_FRACTION"]

# how fine-tuning crops find the labels: classes (nnU-Net's: a forced share of crops centred on a voxel of a class
# drawn uniformly among the classes present, the rest placed uniformly) | foreground (the pos/neg draw of MONAI's
# RandCropByPosNegLabeld: a share centred on any labelled voxel, the rest on an unlabelled one)
SAMPLINGS = ("classes", "foreground")
# the forced share by sampling: nnU-Net's oversample_foreground_percent 0.33; asa's earlier 2/3
FOREGROUND_FRACTION = {"classes": 0.33, "foreground": 2 / 3}
# which crops are forced: batch (nnU-Net's: the last B - round(B·(1 - share)) crops of every batch of B, a fixed
# number per batch) | crop (asa's earlier: each crop forced with probability share, the share only in expectation)
OVERSAMPLINGS = ("batch", "crop")


def forced_crops(position: int, batch_size: int, crops: int, share: float) -> list[bool]:
    """Which of an item's ``crops`` crops are forced onto a class, nnU-Net's way: the item at ``position`` of a
    batch of ``batch_size`` items holds the batch's crops ``position·crops`` to ``position·crops + crops - 1``, and
    of a batch's n crops the last ``n - round(n·(1 - share))`` are forced (nnU-Net's
    ``_oversample_last_XX_percent``, Python's rounding: at n = 2 and share 0.33, the second)."""
    n = int(batch_size) * int(crops)
    first = round(n * (1.0 - float(share)))
    return [position * crops + k >= first for k in range(crops)]


def reference_origin(centre: Sequence[float], size: Sequence[int]) -> np.ndarray:
    """Integer voxel origin [3] of a ``size`` box centred on ``centre``: round(centre - (size - 1) / 2),
    halves rounded up (a centre on a half-integer lands exactly in the middle of an even box)."""
    return np.array([int(np.floor(float(c) - (n - 1) / 2 + 0.5 + 1e-6)) for c, n in zip(centre, size)], dtype=np.int64)


def mirrored_origin(
    origin: Sequence[int], shape: Sequence[int], size: Sequence[int], axes: Sequence[int]
) -> np.ndarray:
    """The reference origin [3] in a volume of ``shape`` flipped along ``axes``: the mirror image of
    the ``size`` box at ``origin``, which starts at ``shape - size - origin`` along a flipped axis.

    Recomputing the origin from the flipped brain centre is not the same: when the box's
    unrounded start is a half voxel (an even box on a whole-voxel centre), rounding half up moves
    the flipped box one voxel off the mirror of the unflipped one, and with it every patch.
    """
    out = np.asarray(origin, dtype=np.int64).copy()
    for a in axes:
        out[a] = int(shape[a]) - int(size[a]) - out[a]
    return out


def lattice_padding(
    shape: Sequence[int], origin: Sequence[int], patch: int, min_size: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """(before [3], after [3]) zero padding that puts a lattice point (origin + k·patch) at index 0 and
    makes every side a multiple of ``patch`` and at least ``min_size``."""
    before = np.mod(-np.asarray(origin, dtype=np.int64), patch)
    total = np.maximum(before + np.asarray(shape), np.asarray(min_size))
    total = -(-total // patch) * patch
    return before, total - before - np.asarray(shape)


def pad_to_lattice(
    image: torch.Tensor, origin: Sequence[int], *, patch: int, min_size: Sequence[int]
) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """image [..., X, Y, Z] with the reference grid at voxel ``origin`` [3] (`reference_origin`) ->
    (padded image, ``before`` padding [3], reference origin in the padded volume [3], a multiple of
    ``patch``). Undo with ``out[..., b0:b0+X, b1:b1+Y, b2:b2+Z]``."""
    shape = image.shape[-3:]
    origin = np.asarray(origin, dtype=np.int64)
    before, after = lattice_padding(shape, origin, patch, min_size)
    pad = [int(v) for a in (2, 1, 0) for v in (before[a], after[a])]  # F.pad wants the last axis first
    return F.pad(image, pad), before, origin + before


def class_indices(target: Any) -> list[np.ndarray]:
    """The increasing flat indices of the voxels of each class present in ``target`` [C, X, Y, Z]: with one
    channel, of each value > 0 (a softmax task's classes; -1, ignored, is none); with several, of each
    channel's voxels > 0 (a multilabel task's regions, as nnU-Net samples regions). Absent classes are left out."""
    t = np.asarray(target)
    if t.shape[0] == 1:
        flat = t[0].reshape(-1)
        return [np.flatnonzero(flat == v) for v in np.unique(flat) if v > 0]
    return [idx for c in t if (idx := np.flatnonzero(c.reshape(-1) > 0)).size]


def crop_start_bounds(shape: Sequence[int], size: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(lowest [3], highest [3]) start of a ``size`` crop in a volume of ``shape``, nnU-Net's
    (``nnUNetDataLoader.get_bbox``): ``need = max(size - shape, 0)`` voxels are missing, and the bounds are
    ``-ceil(need / 2)`` and ``shape - size + ceil(need / 2)``. A volume at least the crop: 0 and ``shape - size``;
    a smaller one: the crop holds the whole volume, in its middle (a start that leaves an odd ``need`` is one of
    two). nnU-Net's training loader draws an enlarged patch and its spatial transform cuts the network's patch
    from the middle: the network's patch then has these bounds (to a voxel, by parity); asa crops at the
    network's size and rotates and zooms the crop itself."""
    shape, size = np.asarray(shape, dtype=np.int64), np.asarray(size, dtype=np.int64)
    need = np.maximum(size - shape, 0)
    return -need // 2, shape - size + need // 2 + need % 2


def _window(x: torch.Tensor, start: Sequence[int], size: Sequence[int]) -> torch.Tensor:
    """x [C, X, Y, Z] -> [C, *size] from voxel ``start`` (any integer: what lies outside ``x`` is 0)."""
    inside, pad = [], []
    for n, a, s in zip(x.shape[1:], start, size):
        lo = min(max(int(a), 0), n)
        hi = min(max(int(a) + s, lo), n)
        before = min(max(-int(a), 0), s)
        inside.append(slice(lo, hi))
        pad.append((before, s - before - (hi - lo)))
    out = x[(slice(None), *inside)]
    if any(b or e for b, e in pad):
        out = F.pad(out, [v for b, e in reversed(pad) for v in (b, e)])  # F.pad wants the last axis first
    return out


class LatticeCropd(Randomizable, MapTransform):
    """Foreground-oversampled random crops that start on the brain frame's patch lattice.

    ``sampling="classes"`` (nnU-Net's, the default): a share ``pos`` of the crops (nnU-Net's
    oversample_foreground_percent, 0.33) is centred on a voxel of a class drawn uniformly among the classes
    present in the case (`class_indices` of ``class_key``, the target), the rest placed uniformly; the class is
    drawn as `monai.transforms.RandCropByLabelClassesd` draws it, with ratios (1 − pos, pos / n, …, pos / n) over
    the uniform placements and the n classes present (a forced crop draws with ratios (0, 1 / n, …, 1 / n), an
    unforced one is placed uniformly). Where the crop may lie is nnU-Net's (``nnUNetDataLoader.get_bbox``,
    `crop_start_bounds`): an unforced crop starts anywhere from the lowest to the highest start, inside the
    volume (a volume smaller than the crop sits in the crop's middle); a forced crop starts ``size // 2`` before
    its voxel (the voxel at index ``size // 2``: the middle, or for an even size the upper of the two middle
    voxels) and no lower than the lowest start, with no upper bound: near the volume's far border it runs past
    it, near the near border it starts at the border. What lies past the volume is 0: the image as nnU-Net pads
    it, and the target as nnU-Net trains on it (its loader pads the segmentation with -1 and its transforms
    turn -1 into 0, background, before the loss), so a padded voxel is background, not asa's ignored -1.

    ``sampling="foreground"`` (asa's earlier): centres drawn as `monai.transforms.RandCropByPosNegLabeld` draws
    them (a forced crop centred on a ``label_key`` voxel > 0, any class, an unforced one on a voxel = 0), each
    crop moved inside the (lattice-padded) volume, as MONAI moves it.

    Which crops are forced: ``oversampling="batch"`` (nnU-Net's, the default) forces a fixed number of each batch
    (`forced_crops`): the loader tells the transform where its item sits in the batch (``batch_slot``, set by
    `asa.data.CaseDataset.item_in_batch`); an item read on its own is a batch of its ``num_samples`` crops.
    ``oversampling="crop"`` (asa's earlier) forces each crop with probability ``pos``: the share holds only in
    expectation (at batch 2, 45 % of the batches hold no forced crop and 11 % two; nnU-Net's hold one each).

    Either way each crop's start is then moved to the nearest lattice point (a forced crop's no lower than the
    lattice point at or below the lowest start), so with a lattice a forced voxel lies within ``patch / 2`` of
    the crop's middle; with ``patch=1`` (a network with no patch lattice) starts are any voxel, nnU-Net's crops.
    Each output gets ``"offset"``: int64 [3], its origin in patches from the reference grid's origin.
    Input: channel-first tensors [C, X, Y, Z] under ``keys``, ``label_key`` and ``class_key``, ``"centre"`` [3].
    """

    def __init__(self, keys: Sequence[str], *, label_key: str, spatial_size: Sequence[int], patch: int,
                 reference_size: Sequence[int], pos: float | None = None, num_samples: int = 1,
                 sampling: str = "classes", class_key: str = "label", oversampling: str = "batch") -> None:
        MapTransform.__init__(self, keys)
        if sampling not in SAMPLINGS:
            raise ValueError(f"LatticeCropd: sampling={sampling!r}: expected one of {', '.join(SAMPLINGS)}")
        if oversampling not in OVERSAMPLINGS:
            raise ValueError(f"LatticeCropd: oversampling={oversampling!r}: expected one of {', '.join(OVERSAMPLINGS)}")
        self.sampling, self.class_key, self.oversampling = sampling, class_key, oversampling
        self.batch_slot: tuple[int, int] | None = None  # (position, batch size) of the item being read, if known
        self.label_key = label_key
        self.spatial_size = tuple(int(s) for s in spatial_size)
        if any(s % patch for s in self.spatial_size):
            raise ValueError(f"crop size {self.spatial_size} must be a multiple of the patch size {patch}")
        self.patch = int(patch)
        self.reference_size = tuple(int(s) for s in reference_size)
        self.pos = FOREGROUND_FRACTION[sampling] if pos is None else float(pos)
        if not 0.0 <= self.pos <= 1.0:
            raise ValueError(f"LatticeCropd: the foreground fraction pos={self.pos} must be in [0, 1]")
        self.num_samples = int(num_samples)

    def randomize(self, data: Any = None) -> None:  # the draws happen in __call__ (they need the data)
        pass

    def forced(self) -> list[bool] | None:
        """Which of the next item's crops are forced (``oversampling="batch"``), or None: each crop forced with
        probability ``pos`` (``"crop"``)."""
        if self.oversampling == "crop":
            return None
        position, size = self.batch_slot if self.batch_slot is not None else (0, 1)
        return forced_crops(position, size, self.num_samples, self.pos)

    def draw_starts(self, shape: Sequence[int], fg: Any, bg: Any) -> list[list[int]]:
        """Crop starts (lattice points) in the padded volume of ``shape``, from its foreground and
        background flat indices (``len`` and indexing suffice): centres drawn as MONAI draws them,
        each start moved to the nearest lattice point that keeps the crop inside."""
        if len(fg) == 0 and len(bg) == 0:
            raise ValueError("LatticeCropd: empty label volume")
        forced = self.forced()
        if forced is None:
            pos = self.pos if len(fg) else 0.0
            pos = pos if len(bg) else 1.0
            centres = generate_pos_neg_label_crop_centers(self.spatial_size, self.num_samples, pos, shape, fg, bg,
                                                          self.R)
        else:  # a forced crop on a labelled voxel (none: an unlabelled one), an unforced one on an unlabelled voxel
            centres = [generate_pos_neg_label_crop_centers(self.spatial_size, 1, float(f and len(fg) > 0 or not len(bg)),
                                                           shape, fg, bg, self.R)[0] for f in forced]
        return self._on_lattice(centres, shape)

    def draw_class_starts(self, padded: Sequence[int], classes: Sequence[Any], *, shape: Sequence[int],
                          before: Sequence[int]) -> list[list[int]]:
        """Crop starts (lattice points) in the lattice-padded volume of shape ``padded``, nnU-Net's way.

        A forced crop is centred on a voxel of a class drawn uniformly among those present (none present: placed
        uniformly, as nnU-Net does), an unforced one placed uniformly, within nnU-Net's bounds
        (`crop_start_bounds`; the class draw and the placement consume the random state as MONAI's
        `generate_label_classes_crop_centers` does).

        Args:
            padded: the padded volume's shape [3].
            classes: the flat indices (in ``padded``) of each class present; ``len`` and indexing suffice.
            shape: the volume's own shape [3], before the lattice padding.
            before: the lattice padding in front [3] (`lattice_padding`).
        """
        present = [c for c in classes if len(c)]
        lowest, highest = crop_start_bounds(shape, self.spatial_size)
        p = self.patch
        # the lattice points around nnU-Net's bounds (a volume at least the crop: the padded volume's first and last)
        lo = (np.asarray(before) + lowest) // p * p
        hi = -(-(np.asarray(before) + highest) // p) * p
        places = tuple(int(n) for n in hi - lo + 1)
        half = np.asarray(self.spatial_size) // 2

        def draw(count: int, share: float) -> list[list[int]]:
            ratios = np.asarray([1.0 - share, *[share / len(present)] * len(present)] if present else [1.0])
            picks = self.R.choice(len(ratios), size=count, p=ratios / np.sum(ratios))
            starts = []
            for i in picks:
                if i == 0:  # uniform: any start between the bounds, on its nearest lattice point
                    start = lo + np.asarray(np.unravel_index(self.R.randint(int(np.prod(places))), places))
                    starts.append([int(round(v / p)) * p for v in start])
                else:  # forced: centred on the voxel, no lower than the lowest start, past the far border if need be
                    idx = present[i - 1]
                    voxel = np.asarray(np.unravel_index(int(idx[self.R.randint(len(idx))]), tuple(padded)))
                    starts.append([max(int(round(v / p)) * p, int(b)) for v, b in zip(voxel - half, lo)])
            return starts

        forced = self.forced()
        if forced is None:
            return draw(self.num_samples, self.pos)
        return [draw(1, 1.0 if f else 0.0)[0] for f in forced]

    def _on_lattice(self, centres: Sequence[Sequence[int]], shape: Sequence[int]) -> list[list[int]]:
        """Each centre's crop start moved to the nearest lattice point that keeps the crop inside."""
        starts = []
        for centre in centres:
            start = [int(c) - s // 2 for c, s in zip(centre, self.spatial_size)]
            starts.append([min(max(int(round(v / self.patch)) * self.patch, 0), n - s)
                           for v, n, s in zip(start, shape, self.spatial_size)])
        return starts

    def __call__(self, data: Mapping[Hashable, Any]) -> list[dict]:
        d = dict(data)
        padded = {}
        box = reference_origin(d["centre"], self.reference_size)
        for key in dict.fromkeys((*self.keys, self.label_key, self.class_key)):
            padded[key], before, origin = pad_to_lattice(torch.as_tensor(d[key]), box, patch=self.patch,
                                                    min_size=self.spatial_size)
        shape = padded[self.label_key].shape[1:]
        if self.sampling == "classes":
            starts = self.draw_class_starts(shape, class_indices(padded[self.class_key]),
                                            shape=torch.as_tensor(d[self.label_key]).shape[1:], before=before)
        else:
            starts = self.draw_starts(shape, *map_binary_to_indices(padded[self.label_key] > 0))
        out = []
        for start in starts:
            sample = {k: v for k, v in d.items() if k not in padded}
            for key in self.keys:  # a crop past the padded volume: 0 there (the class docstring says why)
                sample[key] = _window(padded[key], start, self.spatial_size)
            sample["offset"] = torch.as_tensor((np.asarray(start) - origin) // self.patch, dtype=torch.int64)
            out.append(sample)
        return out


class LatticeFlipd(RandFlipd):
    """`RandFlipd` that keeps ``"offset"`` true: a flip along ``lr_axis`` turns a crop into its
    contralateral mirror, whose offset is ``W - G - o`` (W, G: reference and crop patches along that
    axis), so mirrored anatomy keeps its (symmetric) codes. Flips along other axes keep the offset."""

    def __init__(self, keys: Sequence[str], *, spatial_axis: int, prob: float, lr_axis: int,
                 reference_patches: int, crop_patches: int) -> None:
        super().__init__(keys=keys, spatial_axis=spatial_axis, prob=prob)
        self.axis, self.lr_axis = int(spatial_axis), int(lr_axis)
        self.reference_patches, self.crop_patches = int(reference_patches), int(crop_patches)

    def __call__(self, data: Mapping[Hashable, Any], lazy: bool | None = None) -> dict:
        d = super().__call__(data, lazy=lazy)
        if self._do_transform and self.axis == self.lr_axis and "offset" in d:
            offset = torch.as_tensor(d["offset"]).clone()
            offset[self.axis] = self.reference_patches - self.crop_patches - offset[self.axis]
            d["offset"] = offset
        return d
