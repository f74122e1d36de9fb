"""``method=asa`` and ``method=mae``: the masked autoencoder on the network of the ``model`` group.

On the SW-ViT (``model=tiny|small|base``; docs/method.md §1) it is the paper's `asa.models.ASA`: MAE, A-SSL, SPE-SSL,
ASA and the RAT variants are settings of it (``experiment=`` presets). On nnU-Net's residual-encoder U-Net
(``model=resenc``; docs/method.md §1.8, beyond the paper) it is masked-convolution pretraining
(`asa.models.cnn.masked`), with ASA's attentive weight per mask block; the masking and the symmetry options
(``model.mirror_visible``, ``model.coord_channel``) are the network's, in its ``model`` section. ``method=mae`` is the same method with the uniform loss by default:
on the residual-encoder U-Net, the CVPR 2025 recipe; on the SW-ViT the position code stays ``model.pos_mode``
(``experiment=mae`` also sets that to ``none``, the paper's MAE row). Its training step (`mae_step`) and its
image panels (`make_panel_fn`) are here too."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from torch import nn

from asa.losses.informativeness import NORMALIZATIONS
from asa.losses.reconstruction import weight_spread
from asa.methods.base import MethodSettings, PanelFn, PretrainingMethod, RegionNeeds, StepFn, register_method
from asa.models import LOSS_WEIGHTINGS
from asa.models.family import DEFAULT_FAMILY, families, masked_network, pretrain_model_sections
from asa.models import unwrap
from asa.models.registry import keyword_options, network_record
from asa.models.twin import MaskedOutput, twin_class
from asa.models.zoo import build_network
from asa.choices import in_range, one_of
from asa.train.panels import panel_centre, slice_grid

__all__ = ["MAEPretraining", "MAESettings", "MaskedAutoencoderPretraining", "MaskedAutoencoderSettings", "PANEL_ROWS",
           "mae_step", "make_panel_fn"]


def mae_step(model: nn.Module, batch: Mapping) -> tuple[torch.Tensor, dict]:
    """One masked-autoencoder step of a masked twin (`asa.models.twin.MaskedTwin`): batch["image"] [B,C,D,H,W]
    (and "region" [B,1,D,H,W] when the data has region maps) -> (loss, logs)."""
    out: MaskedOutput = model(batch["image"], batch.get("region"))
    spread = weight_spread(out.weights, out.units)  # over the masked units the loss weights (patches or sub-blocks)
    return out.loss, {"weights/cv": spread["cv"], "weights/effective_share": spread["effective_share"]}


PANEL_ROWS = ("1_input", "2_masked", "3_reconstruction", "4_ar_weights")
_WEIGHT_NAMES = {"attentive": "AR weights", "uniform": "loss weights (uniform)", "focal_region": "focal weights"}


def make_panel_fn(
    sample: torch.Tensor, regions: torch.Tensor | None = None
) -> Callable[[nn.Module, int], dict[str, torch.Tensor]]:
    """panel(model, step) -> {"pretrain/<row>": [1, h, w]}, one labelled image per row (`PANEL_ROWS`):
    the input, the masked input, the reconstruction and the loss-weight map (AR or focal region
    weights) of the first channel of one fixed sample; sagittal, coronal and axial slices through the
    centre of mass of the loss weights inside the brain (else of the brain), captioned with their
    index (`asa.train.panels.slice_grid`). ``regions`` [1, D, H, W]: the sample's region map, for
    models that use one."""

    def panel(model: nn.Module, step: int) -> dict[str, torch.Tensor]:
        core = unwrap(model)
        device = next(core.parameters()).device
        x = sample[None].to(device).float()  # [1,C,D,H,W]
        out: MaskedOutput = core(x, None if regions is None else regions[None].to(device))
        values = out.pred.shape[-1]
        recon = core.unpatchify(out.pred.float())
        mask = core.unpatchify(out.mask.float()[..., None].expand(-1, -1, values))
        weights = out.weights.float()
        weights = weights / weights.max().clamp_min(1e-12)
        wmap = core.unpatchify(weights[..., None].expand(-1, -1, values))
        lo, hi = x.min(), x.max()

        def scale(v: torch.Tensor) -> torch.Tensor:
            return ((v - lo) / (hi - lo).clamp_min(1e-6)).clamp(0, 1)

        brain = (x[0] != 0).any(0).float()  # z-scored inputs are 0 outside the brain
        at = panel_centre(x.shape, wmap[0, 0] * brain, brain)
        names = ("input", "masked input", "reconstruction", _WEIGHT_NAMES.get(getattr(core, "loss_weighting", ""),
                                                                               "loss weights"))
        rows = [scale(x)[0, 0], (scale(x) * (1 - mask))[0, 0], scale(recon)[0, 0], wmap[0, 0].clamp(0, 1)]
        return {f"pretrain/{tag}": slice_grid({name: row}, at) for tag, name, row in zip(PANEL_ROWS, names, rows)}

    return panel


@dataclass
class MaskedAutoencoderSettings(MethodSettings):
    """``asa.models.ASA`` settings beyond the encoder / decoder sizes of the ``model`` group."""

    name: str = "asa"
    # the masked network's input channels are the data's (len(data.channels)), as every method reads them: no
    # setting here (method.in_channels was one, refused naming data.channels: asa.api.configuration.compat)
    mask_ratio: float = 0.75
    # uniform | attentive (AR-loss, docs/method.md §1.5) | focal_region (RAT, docs/method.md §1.6b)
    loss_weighting: str = one_of("attentive", LOSS_WEIGHTINGS)
    norm_pix_loss: bool = False
    bins: int = in_range(8, 1)  # orientation bins per angle of the attentive weight (b × b, docs/method.md §1.5)
    normalize: str = one_of("l2", NORMALIZATIONS)  # l2 | none
    focal_beta: float = in_range(1.0, 0.0)  # focal_region: weight β of the region error term
    # the masking and the attentive weight's unit on a CNN, and ASA's symmetry there, are the network's own
    # options (model.mask_block, model.densify, model.weight_patch, model.weight_power, model.mirror_visible,
    # model.coord_channel with model=resenc: asa.models.cnn.masked.ResEncPretrainModel)


@dataclass
class MAESettings(MaskedAutoencoderSettings):
    """``method=mae``: the masked autoencoder with the uniform loss (MAE; on model=resenc SparK's recipe)."""

    name: str = "mae"
    loss_weighting: str = one_of("uniform", LOSS_WEIGHTINGS)


@register_method
class MaskedAutoencoderPretraining(PretrainingMethod):
    """The masked autoencoder: `asa.models.ASA` with its reconstruction loss (uniform, attentive or
    focal region weights); probes read the encoder's tokens through the family's face
    (`asa.models.face.EncoderFace.twin_tokens`)."""

    name = "asa"
    Settings = MaskedAutoencoderSettings
    uses_model_group = True

    @classmethod
    def pretrained_families(cls) -> tuple[str, ...]:
        """Every ``model.arch`` whose family declared a masked twin (`asa.models.family.Family`'s ``masked``)."""
        return tuple(pretrain_model_sections())

    @property
    def family(self) -> str:
        """The ``model.arch`` of the ``model`` group (the SW-ViT sizes: ``swvit``)."""
        return str(self.context.model.get("arch", DEFAULT_FAMILY))

    @property
    def masked_arch(self) -> str:
        """The masked twin the family declared."""
        return str(masked_network(self.family))

    def check(self) -> None:
        """Refuse a method option the family's masked network does not take, set to other than its default
        (naming the families whose network does), then what that network's ``check_options`` refuses."""
        s, defaults = self.settings, type(self.settings)()
        taken = keyword_options(self.masked_arch)
        for key in (f.name for f in fields(s) if f.name != "name" and f.name not in taken):
            if getattr(s, key) != getattr(defaults, key):
                others = [f for f in self.pretrained_families() if key in keyword_options(str(masked_network(f)))]
                raise ValueError(f"method.{key}={getattr(s, key)}: an option of "
                                 f"{' or '.join(f'model={f}' for f in others) or 'no masked network'}; the masked "
                                 f"network of model.arch={self.family} ({self.masked_arch}) does not take it")
        check_options = getattr(twin_class(network_record(self.masked_arch).builder), "check_options", None)
        if check_options is not None:
            try:
                check_options(**self._own_options())
            except ValueError as err:
                raise ValueError(f"method.{err}") from None
        channels = self.context.channels
        if len(channels) != 1 and "in_channels" not in taken:
            raise ValueError(f"data.channels={list(channels)}: {len(channels)} channels, but the masked network of "
                             f"model.arch={self.family} ({self.masked_arch}) takes one (it has no in_channels)")

    def _own_options(self) -> dict:
        """The method settings the masked network takes, in the settings' order."""
        taken = keyword_options(self.masked_arch)
        return {k: v for k, v in asdict(self.settings).items() if k != "name" and k in taken}

    def network_kwargs(self) -> dict:
        """The keyword arguments of the masked network: the ``model`` group, these settings, the crop and the
        data's channel count (``len(data.channels)``, for a network that takes ``in_channels``)."""
        model = {k: v for k, v in self.context.model.items() if k != "arch"}
        channels = {"in_channels": len(self.context.channels)} if "in_channels" in keyword_options(self.masked_arch) \
            else {}
        return {**model, **self._own_options(), **channels, "img_size": self.context.crop}

    def build_network(self) -> nn.Module:
        try:
            return build_network({"arch": self.masked_arch, "kwargs": self.network_kwargs()})
        except ValueError as err:  # the network names its own argument: said as the option that set it
            for section, keys in (("method", tuple(self._own_options())), ("model", tuple(self.context.model))):
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
        # the panels show a reconstruction of patch tokens: for a masked network that unpatchifies them
        patches = callable(getattr(network_record(self.masked_arch).builder, "unpatchify", None))
        return make_panel_fn(sample["image"], sample.get("region")) if patches else None

    def probe_tokens(self, model: nn.Module, x: torch.Tensor, patch_regions: torch.Tensor | None = None
                     ) -> torch.Tensor:
        return families()[self.family].face.twin_tokens(unwrap(model), x, patch_regions).float()

    def probe_stride(self, model: nn.Module) -> int | None:
        """The token stride of the family's face on the masked twin (a CNN's: its encoder's total stride)."""
        face = families()[self.family].face
        return None if face is None else face.twin_stride(unwrap(model))


@register_method
class MAEPretraining(MaskedAutoencoderPretraining):
    """``method=mae``: `MaskedAutoencoderPretraining` with the uniform loss by default (`MAESettings`)."""

    name = "mae"
    Settings = MAESettings
