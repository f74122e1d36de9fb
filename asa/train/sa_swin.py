"""SA-Swin pretraining pieces for the engine: the Symmetry-Aware Head step and its image panel."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from asa.models import unwrap

from .panels import panel_centre, slice_grid

__all__ = ["sah_step", "make_sah_panel_fn"]


def _diseased(batch: Mapping, labels: Mapping[str, float], device: torch.device) -> torch.Tensor:
    """y [B] of the batch's subjects (0 for a subject without a value)."""
    ids = batch["id"]
    ids = [ids] if isinstance(ids, str) else list(ids)
    return torch.tensor([float(labels.get(i, 0.0)) for i in ids], device=device)


def sah_step(labels: Mapping[str, float]) -> Callable[[nn.Module, Mapping], tuple[torch.Tensor, dict]]:
    """step(model, batch) -> (loss, {"sah/<term>": value}); y of each case from ``labels`` (case id ->
    1 diseased / 0 healthy). Also the validation loss function (only its loss is used there)."""

    def step(model: nn.Module, batch: Mapping) -> tuple[torch.Tensor, dict]:
        x = batch["image"]
        out = model(x, _diseased(batch, labels, x.device))
        return out.loss, {f"sah/{name}": value.detach() for name, value in out.terms.items()}

    return step


def make_sah_panel_fn(sample: torch.Tensor) -> Callable[[nn.Module, int], dict[str, torch.Tensor]]:
    """panel(model, step) -> {"inpainting/panel": [1, h, w]}: rows are the rotated view, the view after
    patch drop-out and its reconstruction (first channel of one fixed sample), in sagittal, coronal and
    axial slices through the centre of the view's brain, labelled (`asa.train.panels.slice_grid`)."""

    def panel(model: nn.Module, step: int) -> dict[str, torch.Tensor]:
        core = unwrap(model)
        device = next(core.parameters()).device
        x = sample[None].to(device).float().expand(2, *sample.shape)  # the contrastive term needs two volumes
        out = core(x)
        if out.reconstruction is None:
            return {}
        lo, hi = out.view.min(), out.view.max()

        def scale(v: torch.Tensor) -> torch.Tensor:
            return ((v.float() - lo) / (hi - lo).clamp_min(1e-6)).clamp(0, 1)[0, 0]

        at = panel_centre(out.view.shape, (out.view[0] != 0).any(0))  # z-scored: 0 outside the brain
        return {"inpainting/panel": slice_grid({"rotated view": scale(out.view), "patches dropped": scale(out.dropped),
                                                "reconstruction": scale(out.reconstruction)}, at)}

    return panel
