"""``method=rpl``: 3D relative patch location (Taleb et al., NeurIPS 2020) on the shared SW-ViT encoder:
name which of its 26 neighbours a block is, from the features of the centre block and of that
neighbour (`asa.models.heads.puzzles`). The encoder's sizes come from the ``model`` group."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from asa.methods.base import MethodSettings, PretrainingMethod, StepFn, register_method
from asa.models import unwrap
from asa.models import EncoderSettings
from asa.models.heads.puzzles import RPL_GRID, block_layout
from asa.models.zoo import build_network

__all__ = ["RelativePatchLocationPretraining", "RelativePatchLocationSettings", "encoder_options", "puzzle_step"]

SW_VIT_ONLY = ("saca", "region_attention")  # model options a block cut from the crop cannot have


@dataclass
class RelativePatchLocationSettings(MethodSettings):
    """`asa.models.RelativePatchLocation` settings beyond the encoder sizes of the ``model`` group: 3 × 3 × 3
    cells of ⌊data.crop / 3⌋ voxels, 26 classes."""

    name: str = "rpl"
    block: Optional[int] = None  # block edge in patches; null: the most that leave `jitter` voxels of play in a cell
    jitter: int = 4  # least random shift (voxels) of a block in its cell (Taleb's jitter; the gap is 0..2x the play)
    pairs: int = 4  # neighbours per volume (Taleb: 1), each its own 26-way example
    hidden_dim: int = 256  # the classification head's hidden width
    shift: int = 0  # largest random offset (voxels per axis) of the volume before cutting: crops not brain-centred
    block_norm: bool = False  # normalise each block to mean 0, std 1: its brightness no longer tells its place


def encoder_options(method: str, model: Mapping[str, Any]) -> dict[str, Any]:
    """The encoder's settings among the ``model`` group's (its decoder sizes do not apply); SACA and
    region attention, which need the whole crop, are refused naming the option."""
    unused = [f"model.{k}={model[k]}" for k in SW_VIT_ONLY if str(model.get(k, "none")) != "none"]
    if unused:
        raise ValueError(f"method={method} encodes blocks cut from the crop, which have no left-right mirror or region "
                         f"map: {' and '.join(unused)} cannot apply; leave them at none")
    known = {f.name for f in fields(EncoderSettings)}
    return {k: v for k, v in model.items() if k in known}


def puzzle_step(name: str) -> StepFn:
    """step(model, batch) -> (cross-entropy, {"<name>/accuracy": share of examples classified right})."""

    def step(model: nn.Module, batch: Mapping) -> tuple[torch.Tensor, dict]:
        out = model(batch["image"])
        return out.loss, {f"{name}/accuracy": out.accuracy.detach()}

    return step


class BlockPuzzleMethod(PretrainingMethod):
    """What RPL and Jigsaw share: the network from the ``model`` group's encoder sizes and the method's
    settings at the crop; probes read the encoder over the whole crop."""

    uses_model_group = True
    arch: str  # the network (`asa.models.heads.puzzles`)
    grid: int  # its cells per axis

    def check(self) -> None:
        block_layout(self.context.crop, self.grid, int(self.context.model.get("patch_size", 8)),
                     block=self.settings.block, jitter=self.settings.jitter)
        self.network_kwargs()

    def network_kwargs(self) -> dict[str, Any]:
        own = {k: v for k, v in asdict(self.settings).items() if k != "name"}
        return {**encoder_options(self.name, self.context.model), **own, "img_size": self.context.crop,
                "in_channels": len(self.context.channels)}

    def build_network(self) -> nn.Module:
        return build_network({"arch": self.arch, "kwargs": self.network_kwargs()})

    def step_of(self, cases: Sequence, root: Path | None) -> StepFn:
        return puzzle_step(self.name)

    @torch.no_grad()
    def probe_tokens(self, model: nn.Module, x: torch.Tensor, patch_regions: torch.Tensor | None = None
                     ) -> torch.Tensor:
        """The encoder over the whole crop at offset 0 (as fine-tuning and `asa.load_encoder` run it):
        [B, N, E]."""
        return unwrap(model).encoder.encode(x).float()

    def probe_stride(self, model: nn.Module) -> int:
        return int(self.context.model["patch_size"])


@register_method
class RelativePatchLocationPretraining(BlockPuzzleMethod):
    """3D-RPL (`asa.models.RelativePatchLocation`)."""

    name = "rpl"
    Settings = RelativePatchLocationSettings
    arch = "rpl_pretrain"
    grid = RPL_GRID
