"""``method=asa`` and ``method=mae``: the masked autoencoder on the network of the ``model`` group.

On the SW-ViT (``model=tiny|small|base``; DESIGN §1) it is the paper's `asa.models.ASA`: MAE, A-SSL, SPE-SSL,
ASA and the RAT variants are settings of it (``experiment=`` presets). On nnU-Net's residual-encoder U-Net
(``model=resenc``; DESIGN §1.8, beyond the paper) it is masked-convolution pretraining
(`asa.models.cnn.masked`), with ASA's attentive weight per mask block and the symmetry options
``mirror_visible`` and ``coord_channel``. ``method=mae`` is the same method with the uniform loss by default:
on the residual-encoder U-Net, the CVPR 2025 recipe; on the SW-ViT the position code stays ``model.pos_mode``
(``experiment=mae`` also sets that to ``none``, the paper's MAE row)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from asa.eval.probe import encode_tokens
from asa.losses.informativeness import NORMALIZATIONS
from asa.methods.base import MethodSettings, PanelFn, PretrainingMethod, RegionNeeds, StepFn, register_method
from asa.models.swvit.encoder import ENCODER_PREFIX
from asa.models.swvit.mae import LOSS_WEIGHTINGS
from asa.models.zoo import build_network
from asa.choices import in_range, one_of
from asa.train.pretrain import mae_step, make_panel_fn

__all__ = ["MAEPretraining", "MAESettings", "MaskedAutoencoderPretraining", "MaskedAutoencoderSettings"]

# the model group's network (``model.arch``; the SW-ViT sizes name none) -> the masked network pretrained on it
MASKED_NETWORKS = {"swvit": "asa_pretrain", "resenc": "resenc_pretrain"}
CNN_ONLY = ("mirror_visible", "coord_channel")  # settings the SW-ViT's masked autoencoder does not take
CNN_OPTIONS = ("in_channels", "mask_ratio", "loss_weighting", "bins", "normalize", *CNN_ONLY)


@dataclass
class MaskedAutoencoderSettings(MethodSettings):
    """``asa.models.ASA`` settings beyond the encoder / decoder sizes of the ``model`` group."""

    name: str = "asa"
    in_channels: int = in_range(1, 1)
    mask_ratio: float = 0.75
    loss_weighting: str = one_of("attentive", LOSS_WEIGHTINGS)  # uniform | attentive (AR-loss, §1.5) | focal_region (RAT, §1.6b)
    norm_pix_loss: bool = False
    bins: int = in_range(8, 1)  # orientation bins per angle of the attentive weight (b × b, §1.5)
    normalize: str = one_of("l2", NORMALIZATIONS)  # l2 | none
    focal_beta: float = in_range(1.0, 0.0)  # focal_region: weight β of the region error term
    # model=resenc only (the SW-ViT has the symmetric position code and SACA's mirror-consistent masking instead):
    mirror_visible: Optional[float] = in_range(None, 0.0, 1.0)  # fraction of masked blocks whose mirror block stays visible; null: uniform
    coord_channel: bool = False  # the mirror-symmetric coordinate channel |x - x_mid| / (X/2) as an extra input


@dataclass
class MAESettings(MaskedAutoencoderSettings):
    """``method=mae``: the masked autoencoder with the uniform loss (MAE; on model=resenc SparK's recipe)."""

    name: str = "mae"
    loss_weighting: str = one_of("uniform", LOSS_WEIGHTINGS)


@register_method
class MaskedAutoencoderPretraining(PretrainingMethod):
    """The masked autoencoder: `asa.models.ASA` with its reconstruction loss (uniform, attentive or
    focal region weights); the encoder export keeps ``encoder.*``; probes read the encoder's tokens."""

    name = "asa"
    Settings = MaskedAutoencoderSettings
    encoder_prefixes = (ENCODER_PREFIX,)
    uses_model_group = True
    model_families = tuple(MASKED_NETWORKS)

    @property
    def family(self) -> str:
        """The network family of the ``model`` group: ``swvit`` or ``resenc``."""
        return str(self.context.model.get("arch", "swvit"))

    def check(self) -> None:
        s = self.settings
        if self.family == "swvit":
            for key in CNN_ONLY:
                if getattr(s, key) != getattr(type(s)(), key):
                    raise ValueError(f"method.{key}={getattr(s, key)}: an option of model=resenc; the SW-ViT's symmetry "
                                     "is its position code (model.pos_mode) and SACA (model.saca)")
            return
        if s.loss_weighting not in ("uniform", "attentive"):
            raise ValueError(f"method.loss_weighting={s.loss_weighting}: model=resenc takes uniform or attentive")
        if s.norm_pix_loss:
            raise ValueError("method.norm_pix_loss=true: model=resenc reconstructs the voxels themselves (false)")

    def network_kwargs(self) -> dict:
        """The keyword arguments of the masked network: the ``model`` group, these settings, the crop."""
        own = {k: v for k, v in asdict(self.settings).items() if k != "name"}
        if self.family == "swvit":
            return {**self.context.model, **{k: v for k, v in own.items() if k not in CNN_ONLY},
                    "img_size": self.context.crop}
        model = {k: v for k, v in self.context.model.items() if k != "arch"}
        return {**model, **{k: own[k] for k in CNN_OPTIONS}, "img_size": self.context.crop}

    def build_network(self) -> nn.Module:
        try:
            return build_network({"arch": MASKED_NETWORKS[self.family], "kwargs": self.network_kwargs()})
        except ValueError as err:  # the network names its own argument: said as the option that set it
            for section, keys in (("method", CNN_OPTIONS), ("model", tuple(self.context.model))):
                if any(str(err).startswith((f"{k}=", f"{k} ", f"{k}:")) for k in keys):
                    raise ValueError(f"{section}.{err}") from None
            raise

    def step_of(self, cases: Sequence, root: Path | None) -> StepFn:
        return mae_step

    def regions(self) -> RegionNeeds:
        attention = str(self.context.model.get("region_attention", "none"))
        network = None if attention == "none" else f"model.region_attention={attention}"
        needed = [network] if network else []
        if self.settings.loss_weighting == "focal_region":
            needed.append("method.loss_weighting=focal_region")
        return RegionNeeds(tuple(needed), network)

    def panel(self, sample: Mapping) -> PanelFn | None:
        return make_panel_fn(sample["image"], sample.get("region")) if self.family == "swvit" else None

    def probe_tokens(self, model: nn.Module, x: torch.Tensor, patch_regions: torch.Tensor | None = None
                     ) -> torch.Tensor:
        return encode_tokens(model, x, patch_regions)

    @property
    def probe_patch_size(self) -> int | None:
        return int(self.context.model["patch_size"]) if self.family == "swvit" else None


@register_method
class MAEPretraining(MaskedAutoencoderPretraining):
    """``method=mae``: `MaskedAutoencoderPretraining` with the uniform loss by default (`MAESettings`)."""

    name = "mae"
    Settings = MAESettings
