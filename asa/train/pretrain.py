"""Pretraining pieces for the engine: the MAE step, validation, image panels and the encoder export."""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from asa.models.encoder import ENCODER_PREFIX, upgrade_legacy_keys

from .checkpoint import load_checkpoint, save_checkpoint
from .distributed import DistEnv

__all__ = ["mae_step", "make_validator", "make_panel_fn", "mid_slice_grid", "export_encoder", "PANEL_ROWS"]


def _core(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


def mae_step(model: nn.Module, batch: Mapping) -> tuple[torch.Tensor, dict]:
    """One masked-autoencoder step: batch["image"] [B,C,D,H,W] (and "region" [B,1,D,H,W] when the
    data has region maps) -> (loss, logs)."""
    out = model(batch["image"], batch.get("region"))
    return out.loss, {}


def make_validator(
    dataset: Dataset, *, batch_size: int, env: DistEnv, num_workers: int = 0,
    step_fn: Callable[[nn.Module, Mapping], tuple[torch.Tensor, Mapping]] | None = None,
) -> Callable[[nn.Module], dict[str, float]]:
    """validate(model) -> {"loss": mean pretraining loss over the whole validation set}.

    Each rank takes every world_size-th case; sums and counts are all-reduced, so the value is the
    exact per-sample mean whatever the number of ranks. ``step_fn`` (default: :func:`mae_step`)
    gives the loss of a batch.
    """
    step_fn = step_fn or mae_step
    shard = Subset(dataset, list(range(env.rank, len(dataset), env.world_size)))  # type: ignore[arg-type]

    def validate(model: nn.Module) -> dict[str, float]:
        total = torch.zeros(2, dtype=torch.float64, device=env.device)
        for batch in DataLoader(shard, batch_size=batch_size, num_workers=num_workers):
            x = batch["image"].to(env.device, non_blocking=True)
            batch = {**batch, "image": x}
            if "region" in batch:
                batch["region"] = batch["region"].to(env.device)
            loss, _ = step_fn(model, batch)
            total[0] += float(loss) * x.shape[0]
            total[1] += x.shape[0]
        if env.distributed and dist.is_initialized():
            dist.all_reduce(total)
        return {"loss": float(total[0] / total[1].clamp_min(1))}

    return validate


def _mid_slices(v: torch.Tensor, size: int) -> list[torch.Tensor]:
    """v [D,H,W] in RAS -> sagittal, coronal, axial mid slices, superior/anterior up, padded to size²."""
    d, h, w = v.shape
    slices = [v[d // 2, :, :], v[:, h // 2, :], v[:, :, w // 2]]
    out = []
    for s in slices:
        s = s.T.flip(0)  # second array axis up
        pad = torch.zeros(size, size, dtype=s.dtype)
        pad[: s.shape[0], : s.shape[1]] = s
        out.append(pad)
    return out


def mid_slice_grid(rows: list[torch.Tensor]) -> torch.Tensor:
    """rows: volumes [D,H,W] scaled to [0,1] -> image [1, rows·S, 3·S] of their three mid slices."""
    size = max(max(r.shape) for r in rows)
    return torch.cat([torch.cat(_mid_slices(r.float().cpu(), size), dim=1) for r in rows], dim=0)[None]


PANEL_ROWS = ("1_input", "2_masked", "3_reconstruction", "4_ar_weights")


def make_panel_fn(
    sample: torch.Tensor, regions: torch.Tensor | None = None
) -> Callable[[nn.Module, int], dict[str, torch.Tensor]]:
    """panel(model, step) -> {"pretrain/<row>": [1, S, 3S]}, one labelled image per row: the input, the
    masked input, the reconstruction and the loss-weight map (AR or focal region weights; first
    channel of one fixed sample; sagittal, coronal and axial mid slices side by side). ``regions``
    [1, D, H, W]: the sample's region map, for models that use one."""

    def panel(model: nn.Module, step: int) -> dict[str, torch.Tensor]:
        core = _core(model)
        device = next(core.parameters()).device
        x = sample[None].to(device)  # [1,C,D,H,W]
        out = core(x, None if regions is None else regions[None].to(device))
        values = out.pred.shape[-1]
        recon = core.unpatchify(out.pred.float())
        mask = core.unpatchify(out.mask.float()[..., None].expand(-1, -1, values))
        weights = out.weights.float()
        weights = weights / weights.max().clamp_min(1e-12)
        wmap = core.unpatchify(weights[..., None].expand(-1, -1, values))
        lo, hi = x.min(), x.max()

        def scale(v: torch.Tensor) -> torch.Tensor:
            return ((v - lo) / (hi - lo).clamp_min(1e-6)).clamp(0, 1)

        rows = [scale(x)[0, 0], (scale(x) * (1 - mask))[0, 0], scale(recon)[0, 0], wmap[0, 0].clamp(0, 1)]
        return {f"pretrain/{name}": mid_slice_grid([row]) for name, row in zip(PANEL_ROWS, rows)}

    return panel


def export_encoder(checkpoint: str | os.PathLike, out: str | os.PathLike, prefixes: tuple[str, ...] = (ENCODER_PREFIX,)
                   ) -> Path:
    """Write {"encoder": the weights under ``prefixes`` (ASA: the encoder module's ``encoder.*``;
    SA-Swin: ``swinViT.*``), "network": the pretraining
    network's spec, "source", "step"} taken from a training checkpoint; a checkpoint written before
    network specs passes its run config on as "config" instead.
    ``load_pretrained`` of `asa.models.ASASegmenter` / `asa.models.SASwin` reads the file."""
    state = load_checkpoint(checkpoint)
    weights = upgrade_legacy_keys({k.removeprefix("module."): v for k, v in state["model"].items()})
    encoder = {k: v for k, v in weights.items() if k.startswith(prefixes)}
    if not encoder:
        raise ValueError(f"checkpoint {checkpoint}: no weights starting with {prefixes}")
    recorded = {"network": state["network"]} if state.get("network") else {"config": dict(state.get("config") or {})}
    return save_checkpoint(out, {"encoder": encoder, **recorded, "source": str(Path(checkpoint).name),
                                 "step": int(state.get("step", 0))})
