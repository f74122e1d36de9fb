"""``primus_pretrain``: Primus as a masked autoencoder, as nnssl pretrains it (token masking): a random
``mask_ratio`` of the patch tokens is hidden from EVA, the kept ones encoded at their grid positions (Primus's learned
code and RoPE, and asa's symmetric code with ``pos_mode=mirror``), the hidden ones refilled with a learned mask token,
a small EVA decoder (``decoder_depth`` blocks) runs over the whole grid (Primus's patch decoder is patch-local: it
alone could not fill a hidden patch from its neighbours) and Primus's patch decoder reconstructs the volume; the loss is asa's reconstruction objective over the masked patches
(`asa.models.blocks.objective`: uniform for ``method=mae``, the attentive weight at the token patch for
``method=asa``, docs/method.md §1.5). Its files initialise ``model=primus`` (the same keys: Primus's)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from asa.models.blocks.objective import reconstruction_objective
from asa.models.blocks.patch import patchify, unpatchify
from asa.models.blocks.sizes import to_3tuple
from asa.models.primus.network import DEFAULT_SIZE, PRIMUS_SIZES, PrimusNet, PrimusOptions, dna_class
from asa.models.registry import record_spec, register_network
from asa.models.twin import MaskedOutput

__all__ = ["LOSS_WEIGHTINGS", "PrimusMAE", "PrimusPretrainModel"]

LOSS_WEIGHTINGS = ("uniform", "attentive")  # focal_region needs region maps, which this twin does not read


@dataclass
class _Arch:
    arch: str = "primus"  # first in the section, as a fine-tuning section's


@dataclass
class PrimusPretrainModel(PrimusOptions, _Arch):
    """asa-pretrain's ``model=primus`` section: Primus's settings (:class:`PrimusOptions`) and the decoder's depth."""

    decoder_depth: int = 2  # EVA blocks of the pretraining decoder (not transferred)


@register_network("primus_pretrain", kind="pretraining", family="primus")
class PrimusMAE(PrimusNet):
    """Primus as a masked autoencoder (see the module), built from the flat settings of its spec.

    Args:
        img_size: the crop, one edge or three.
        in_channels: image channels (reconstructed).
        size, patch_size, pos_mode, lr_axis: as :class:`PrimusNet`'s.
        decoder_depth: EVA blocks of the pretraining decoder (its width and heads the encoder's).
        mask_ratio: the fraction of tokens masked (exactly round(ratio·N) per sample).
        loss_weighting: ``uniform`` (MAE) | ``attentive`` (ASA's weight per token patch).
        norm_pix_loss: normalise each target patch first.
        bins, normalize: the attentive weight's histogram bins and normalisation.

    forward(x [B, C, *img_size], extra=None) -> `asa.models.twin.MaskedOutput`: pred [B, N, s³·C] patches,
    mask and weights [B, N] per token.
    """

    def __init__(self, *, img_size: Any, in_channels: int = 1, size: str = DEFAULT_SIZE, patch_size: int = 8,
                 pos_mode: str = "none", lr_axis: int = 0, decoder_depth: int = 2, mask_ratio: float = 0.75,
                 loss_weighting: str = "attentive", norm_pix_loss: bool = False, bins: int = 8,
                 normalize: str = "l2") -> None:
        self.check_options(loss_weighting=loss_weighting, mask_ratio=mask_ratio)
        sizes = to_3tuple(img_size, "img_size")
        super().__init__(img_size=sizes, in_channels=in_channels, out_channels=in_channels, size=size,
                         patch_size=patch_size, pos_mode=pos_mode, lr_axis=lr_axis)
        heads = PRIMUS_SIZES[size]["eva_numheads"]
        self.decoder_mask_token = nn.Parameter(torch.zeros(1, 1, self.embed_dim))
        nn.init.normal_(self.decoder_mask_token, std=0.02)
        self.decoder_eva = dna_class("Eva")(embed_dim=self.embed_dim, depth=int(decoder_depth), num_heads=heads,
                                            ref_feat_shape=self.grid)
        self.mask_ratio, self.loss_weighting = float(mask_ratio), loss_weighting
        self.num_masked = int(round(self.mask_ratio * self.num_patches))
        self.objective = reconstruction_objective(loss_weighting, patch_size=self.patch_size,
                                                  norm_pix_loss=norm_pix_loss, bins=bins, normalize=normalize,
                                                  focal_beta=1.0)
        record_spec(self, "primus_pretrain", {
            "img_size": list(sizes), "in_channels": int(in_channels), "size": size, "patch_size": int(patch_size),
            "pos_mode": pos_mode, "lr_axis": int(lr_axis), "decoder_depth": int(decoder_depth),
            "mask_ratio": float(mask_ratio),
            "loss_weighting": loss_weighting, "norm_pix_loss": bool(norm_pix_loss), "bins": int(bins),
            "normalize": normalize})

    @staticmethod
    def check_options(*, loss_weighting: str = "attentive", mask_ratio: float = 0.75, **_: Any) -> None:
        """What the masked network refuses before it is built, as ``<option>=<value>: why``."""
        if loss_weighting not in LOSS_WEIGHTINGS:
            raise ValueError(f"loss_weighting={loss_weighting}: model=primus takes {' or '.join(LOSS_WEIGHTINGS)}")
        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"mask_ratio={mask_ratio}: a fraction in (0, 1)")

    def random_masking(self, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(mask [B, N], 1 = masked; keep [B, N - round(ratio·N)], the visible tokens in raster order)."""
        order = torch.rand(batch, self.num_patches, device=device).argsort(dim=1)
        keep = order[:, self.num_masked:].sort(dim=1).values
        mask = torch.ones(batch, self.num_patches, device=device).scatter_(1, keep, 0.0)
        return mask, keep

    def refill(self, latent: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """The visible tokens' encodings [B, n, E] at their positions, the mask token elsewhere -> [B, N, E]."""
        full = self.decoder_mask_token.to(latent.dtype).expand(latent.shape[0], self.num_patches, -1)
        return full.scatter(1, keep[..., None].expand(-1, -1, latent.shape[-1]), latent)

    def no_weight_decay(self) -> set[str]:
        """The mask token carries no weight decay (norms and biases never do)."""
        return {"decoder_mask_token"}

    def unpatchify(self, patches: torch.Tensor) -> torch.Tensor:
        """[B, N, s³·C] -> [B, C, *img_size] (for the image panels)."""
        return unpatchify(patches, self.patch_size, self.grid, self.in_channels)

    def forward(self, x: torch.Tensor, extra: torch.Tensor | None = None) -> MaskedOutput:
        if tuple(x.shape[1:]) != (self.in_channels, *self.img_size):
            raise ValueError(f"primus_pretrain expects input [B, {self.in_channels}, "
                             f"{', '.join(map(str, self.img_size))}], got {list(x.shape)}")
        mask, keep = self.random_masking(x.shape[0], x.device)
        latent = self.encode(self.embed(x), keep)  # [B, n, E]
        tokens = self.encode(self.refill(latent, keep), eva=self.decoder_eva)  # [B, N, E], the whole grid
        pred = patchify(self.decode(tokens), self.patch_size)  # [B, N, s³·C]
        loss, weights = self.objective(x, pred.float(), mask)
        return MaskedOutput(loss=loss, pred=pred, mask=mask, weights=weights)
