"""Labelled image panels for TensorBoard: three orthogonal slices through a chosen voxel.

A panel is a grid: one row per volume (input, reconstruction, AR weights, label, prediction, …),
named at its left, and one column per slice — sagittal, coronal, axial — captioned with the axis
and index it cuts (``sagittal x=41``: index 41 along array axis 0). Volumes are on the canonical
RAS+ grid; each slice is shown with its second array axis up (superior in sagittal and coronal
slices, anterior in axial ones). The voxel is chosen where something happens, not at the volume
centre: the centre of mass of the label (fine-tuning) or of the loss weights in the brain
(pretraining), so that an off-centre lesion is on the panel (`panel_centre`).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

__all__ = ["AXES", "centre_of_mass", "panel_centre", "slice_captions", "slice_grid"]

AXES = (("sagittal", "x"), ("coronal", "y"), ("axial", "z"))  # the plane normal to array axis 0, 1, 2
_GAP = 2  # pixels between columns


def centre_of_mass(weights: torch.Tensor) -> tuple[int, int, int] | None:
    """Voxel (rounded half up) at the centre of mass of weights [D, H, W] >= 0; None when they sum to 0."""
    w = weights.detach().double().cpu().clamp_min(0)
    total = float(w.sum())
    if total <= 0:
        return None
    out = []
    for axis, n in enumerate(w.shape):
        profile = w.sum(dim=[a for a in range(3) if a != axis])  # [n]
        c = float((profile * torch.arange(n, dtype=torch.float64)).sum()) / total
        out.append(min(max(int(math.floor(c + 0.5)), 0), n - 1))
    return tuple(out)  # type: ignore[return-value]


def panel_centre(shape: Sequence[int], *weights: torch.Tensor | None) -> tuple[int, int, int]:
    """The voxel a panel cuts through: the centre of mass of the first of ``weights`` [D, H, W] that
    is not None and not all zero (e.g. the label, then the brain), else the centre of ``shape``."""
    for w in weights:
        if w is not None:
            found = centre_of_mass(w.float())
            if found is not None:
                return found
    return tuple(int(n) // 2 for n in shape[-3:])  # type: ignore[return-value]


def slice_captions(at: Sequence[int]) -> list[str]:
    """Column captions of a panel cut through voxel ``at``: ``["sagittal x=.", "coronal y=.", "axial z=."]``."""
    return [f"{plane} {axis}={int(i)}" for (plane, axis), i in zip(AXES, at)]


def _slices(v: torch.Tensor, at: Sequence[int]) -> list[torch.Tensor]:
    """v [D, H, W] -> its sagittal, coronal and axial slices through ``at``, second array axis up."""
    i, j, k = (int(a) for a in at)
    return [s.T.flip(0) for s in (v[i, :, :], v[:, j, :], v[:, :, k])]


def _text(text: str) -> torch.Tensor:
    """``text`` rendered white on black: float [h, w] in [0, 1] (Pillow's built-in font, no file needed)."""
    font = ImageFont.load_default()
    left, top, right, bottom = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((0, 0), text, font=font)
    img = Image.new("L", (right - min(left, 0) + 2, bottom - min(top, 0) + 2))
    ImageDraw.Draw(img).text((1 - min(left, 0), 1 - min(top, 0)), text, fill=255, font=font)
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)


def _place(canvas: torch.Tensor, tile: torch.Tensor, top: int, left: int, height: int, width: int) -> None:
    """Paste ``tile`` centred in the box (top, left, height, width) of ``canvas``."""
    t = top + (height - tile.shape[0]) // 2
    l_ = left + (width - tile.shape[1]) // 2
    canvas[t:t + tile.shape[0], l_:l_ + tile.shape[1]] = tile


def slice_grid(rows: Mapping[str, torch.Tensor], at: Sequence[int]) -> torch.Tensor:
    """rows: name -> volume [D, H, W] scaled to [0, 1] (all one shape) -> image [1, height, width]:
    one row per volume, named at its left; sagittal, coronal and axial slices through voxel ``at``
    in columns captioned by `slice_captions`."""
    vols = [v.detach().float().cpu() for v in rows.values()]
    shapes = {tuple(v.shape) for v in vols}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3:
        raise ValueError(f"slice_grid: rows must be volumes [D, H, W] of one shape, got {sorted(shapes)}")
    shape = next(iter(shapes))
    if len(at) != 3 or not all(0 <= int(a) < n for a, n in zip(at, shape)):
        raise ValueError(f"slice_grid: voxel {list(at)} is outside the volume {list(shape)}")
    names = [_text(str(name)) for name in rows]
    captions = [_text(c) for c in slice_captions(at)]
    size = max(shape)
    col = max(size, *(c.shape[1] for c in captions))
    row_h = max(size, *(n.shape[0] for n in names))
    head = max(c.shape[0] for c in captions)
    left = max(n.shape[1] for n in names) + _GAP
    canvas = torch.zeros(head + len(vols) * (row_h + _GAP), left + 3 * (col + _GAP))
    for c, caption in enumerate(captions):
        _place(canvas, caption, 0, left + c * (col + _GAP), head, col)
    for r, (name, v) in enumerate(zip(names, vols)):
        top = head + _GAP + r * (row_h + _GAP)
        _place(canvas, name, top, 0, row_h, left - _GAP)
        for c, s in enumerate(_slices(v.clamp(0, 1), at)):
            _place(canvas, s, top, left + c * (col + _GAP), row_h, col)
    return canvas[None]
