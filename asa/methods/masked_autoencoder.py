"""``method=asa``: the masked autoencoder on SW-ViT (DESIGN §1). MAE, A-SSL, SPE-SSL, ASA and the
RAT variants are settings of it (``experiment=`` presets); the encoder and decoder sizes come from the
``model`` group."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from asa.eval.probe import encode_tokens
from asa.losses.informativeness import NORMALIZATIONS
from asa.methods.base import MethodSettings, PanelFn, PretrainingMethod, RegionNeeds, StepFn, register_method
from asa.models.swvit.encoder import ENCODER_PREFIX
from asa.models.swvit.mae import LOSS_WEIGHTINGS
from asa.models.zoo import build_network
from asa.choices import one_of
from asa.train.pretrain import mae_step, make_panel_fn

__all__ = ["MaskedAutoencoderPretraining", "MaskedAutoencoderSettings"]


@dataclass
class MaskedAutoencoderSettings(MethodSettings):
    """``asa.models.ASA`` settings beyond the encoder / decoder sizes of the ``model`` group."""

    name: str = "asa"
    in_channels: int = 1
    mask_ratio: float = 0.75
    loss_weighting: str = one_of("attentive", LOSS_WEIGHTINGS)  # uniform | attentive (AR-loss, §1.5) | focal_region (RAT, §1.6b)
    norm_pix_loss: bool = False
    bins: int = 8
    normalize: str = one_of("l2", NORMALIZATIONS)  # l2 | none
    focal_beta: float = 1.0  # focal_region: weight β of the region error term


@register_method
class MaskedAutoencoderPretraining(PretrainingMethod):
    """The masked autoencoder: `asa.models.ASA` with its reconstruction loss (uniform, attentive or
    focal region weights); the encoder export keeps ``encoder.*``; probes read the encoder's tokens."""

    name = "asa"
    Settings = MaskedAutoencoderSettings
    encoder_prefixes = (ENCODER_PREFIX,)
    uses_model_group = True

    def network_kwargs(self) -> dict:
        """The keyword arguments of `asa.models.ASA`: the ``model`` group, these settings, the crop."""
        own = {k: v for k, v in asdict(self.settings).items() if k != "name"}
        return {**self.context.model, **own, "img_size": self.context.crop}

    def build_network(self) -> nn.Module:
        return build_network({"arch": "asa_pretrain", "kwargs": self.network_kwargs()})

    def step_of(self, cases: Sequence, root: Path | None) -> StepFn:
        return mae_step

    def regions(self) -> RegionNeeds:
        attention = str(self.context.model.get("region_attention", "none"))
        network = None if attention == "none" else f"model.region_attention={attention}"
        needed = [network] if network else []
        if self.settings.loss_weighting == "focal_region":
            needed.append("method.loss_weighting=focal_region")
        return RegionNeeds(tuple(needed), network)

    def panel(self, sample: Mapping) -> PanelFn:
        return make_panel_fn(sample["image"], sample.get("region"))

    def probe_tokens(self, model: nn.Module, x: torch.Tensor, patch_regions: torch.Tensor | None = None
                     ) -> torch.Tensor:
        return encode_tokens(model, x, patch_regions)

    @property
    def probe_patch_size(self) -> int:
        return int(self.context.model["patch_size"])
