"""Whole-volume inference: Gaussian-blended sliding windows with optional flip test-time augmentation."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from monai.inferers import sliding_window_inference
from torch import nn


def flip_subsets(axes: Sequence[int]) -> list[tuple[int, ...]]:
    """Every subset of the spatial ``axes`` (the empty one first): 2^k flip combinations."""
    axes = tuple(sorted(set(int(a) for a in axes)))
    for a in axes:
        if a not in (0, 1, 2):
            raise ValueError(f"test-time flip axes must be spatial axes 0, 1, 2, got {a}")
    return [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]


@torch.no_grad()
def predict_volume(
    model: nn.Module,
    image: torch.Tensor,
    *,
    roi_size: Sequence[int],
    multilabel: bool,
    overlap: float = 0.5,
    sw_batch_size: int = 2,
    tta_axes: Sequence[int] = (),
    device: torch.device | str | None = None,
    amp_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Class or region probabilities of one whole volume.

    image: [C, X, Y, Z] (any size; MONAI pads what is smaller than ``roi_size``) -> [K, X, Y, Z]
    float32 on the CPU. Windows run on ``device`` (the model's by default); the blended output is
    accumulated on the CPU, so memory stays bounded by one window batch plus the output.
    Probabilities (sigmoid for ``multilabel``, else softmax) are averaged over every combination of
    flips along ``tta_axes``.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    activation = torch.sigmoid if multilabel else (lambda t: torch.softmax(t, dim=1))

    def predictor(window: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            return activation(model(window).float())

    x = image[None].float()  # [1, C, X, Y, Z]
    total = None
    flips = flip_subsets(tta_axes)
    for flip in flips:
        dims = [a + 2 for a in flip]
        xi = x.flip(dims) if dims else x
        probs = sliding_window_inference(
            xi, roi_size=list(roi_size), sw_batch_size=sw_batch_size, predictor=predictor, overlap=overlap,
            mode="gaussian", sw_device=device, device="cpu",
        )
        probs = probs.flip(dims) if dims else probs
        total = probs if total is None else total + probs
    return (total / len(flips))[0].float()
