"""``method=sa_swin``: SA-Swin's Symmetry-Aware Head on MONAI's SwinViT (docs/method.md §1.6b): rotation,
contrastive, inpainting and symmetry terms, its training step (`sah_step`) and its image panel
(`make_sah_panel_fn`). Its sizes are its own settings; the ``model`` group (SW-ViT) does not apply."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List

import torch
from torch import nn

from asa.data import diseased_labels
from asa.methods.base import MethodSettings, PanelFn, PretrainingMethod, StepFn, register_method
from asa.models import SWIN_SIZES, unwrap
from asa.models.swin.family import SWIN_PROBE_STRIDE, swin_tokens
from asa.models.zoo import build_network
from asa.train.panels import panel_centre, slice_grid

__all__ = ["SymmetryAwarePretraining", "SymmetryAwareSettings", "make_sah_panel_fn", "sah_step"]

SW_VIT_ONLY = ("saca", "region_attention")  # model options with no SwinViT counterpart


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


@dataclass
class SymmetryAwareSettings(MethodSettings):
    """`asa.models.SymmetryAwareHead` settings: MONAI SwinViT sizes (`asa.models.SWIN_SIZES` by default;
    ``asa-finetune model=sa_swin`` must use the same) and the head's terms,
    L = L_rot + L_con + L_rec + (L_sym(x1) + L_sym(x2)) / 2."""

    name: str = "sa_swin"
    feature_size: int = SWIN_SIZES["feature_size"]
    depths: List[int] = field(default_factory=lambda: list(SWIN_SIZES["depths"]))
    num_heads: List[int] = field(default_factory=lambda: list(SWIN_SIZES["num_heads"]))
    window_size: int = 7
    use_checkpoint: bool = False
    lr_axis: int = 0  # the mirrored (left-right) array axis (with the SwinViT sizes; model.lr_axis in asa-finetune)
    terms: List[str] = field(default_factory=lambda: ["rotation", "contrastive", "reconstruction", "symmetry"])
    temperature: float = 0.5  # NT-Xent
    contrastive_dim: int = 512
    symmetry_dim: int = 128  # width of the projection g in L_sym
    drop_ratio: float = 0.3  # fraction of drop_patch³ cubes zeroed before inpainting
    drop_patch: int = 16


@register_method
class SymmetryAwarePretraining(PretrainingMethod):
    """The Symmetry-Aware Head; y of L_sym from a ``diseased`` column (participants.tsv or the file
    list; 0 where absent). Its contrastive term takes negatives from the batch, so validation scores
    fixed pairs of volumes. The export keeps the SwinViT (``swinViT.*``). Probes read the SwinViT's
    stage output at stride 8 (`asa.models.swin.family.swin_tokens`), as ``asa-probe`` does."""

    name = "sa_swin"
    Settings = SymmetryAwareSettings
    validation_group = 2

    def check(self) -> None:
        unused = [f"model.{k}={self.context.model[k]}" for k in SW_VIT_ONLY
                  if str(self.context.model.get(k, "none")) != "none"]
        if unused:
            raise ValueError(f"method=sa_swin (experiment=sa_swin) trains MONAI's SwinViT, which has no "
                             f"{' or '.join(unused)}: those options set SW-ViT (method=asa); leave them at none")
        crop = self.context.crop
        if crop % 32:
            raise ValueError(f"data.crop={crop}: method=sa_swin needs crops that are a multiple of 32 "
                             "(SwinViT downsamples 5 times)")
        if "contrastive" in self.settings.terms and self.context.batch_size < 2:
            raise ValueError(f"trainer.batch_size={self.context.batch_size}: SA-Swin's contrastive term needs at "
                             "least 2 volumes per device (its negatives); raise it or drop 'contrastive' from "
                             "method.terms")

    def build_network(self) -> nn.Module:
        kwargs = {k: v for k, v in asdict(self.settings).items() if k != "name"}
        return build_network({"arch": "sa_swin_pretrain", "kwargs": {**kwargs, "in_channels": len(self.context.channels)}})

    def step_of(self, cases: Sequence, root: Path | None) -> StepFn:
        labels = diseased_labels(cases, root)
        if any(labels.values()):
            print(f"[asa] symmetry term: {int(sum(labels.values()))} of {len(labels)} cases marked diseased", flush=True)
        return sah_step(labels)

    def panel(self, sample: Mapping) -> PanelFn:
        return make_sah_panel_fn(sample["image"])

    def probe_tokens(self, model: nn.Module, x: torch.Tensor, patch_regions: torch.Tensor | None = None
                     ) -> torch.Tensor:
        return swin_tokens(unwrap(model).swinViT, x).float()

    def probe_stride(self, model: nn.Module) -> int:
        return SWIN_PROBE_STRIDE
