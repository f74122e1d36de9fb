"""ASA: the masked autoencoder with SW-ViT encoder/decoder, SPE and the attentive loss (paper §2).

:class:`MaskedAutoencoder` is the network from its parts; :class:`ASA` builds it from the flat
settings a network spec (``asa_pretrain``) records.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn

from asa.choices import one_of
from asa.models.blocks.objective import LOSS_WEIGHTINGS, reconstruction_objective
from asa.models.blocks.patch import patchify, unpatchify
from asa.models.blocks.saca import SACA_PLACES, check_mirror_windows, mirror_index
from asa.models.declared import Capabilities
from asa.models.presets import PRESETS
from asa.models.registry import record_spec, register_network
from asa.models.swvit.encoder import ENCODER_PREFIX, SWVIT_KEYS, EncoderOptions, EncoderSettings, SWViTEncoder
from asa.models.blocks.position import POSITION_MODES, symmetric_position_encoding
from asa.models.swvit.region_attention import patch_regions
from asa.models.swvit.swvit import SWViT
from asa.models.twin import MaskedOutput

__all__ = ["ASA", "LOSS_WEIGHTINGS", "MAEOutput", "MaskedAutoencoder"]

@dataclass
class MAEOutput(MaskedOutput):
    """The SW-ViT twin's output (`MaskedOutput`): pred [B, N, C·s³] patch tokens; mask and weights [B, N] per
    patch."""


class MaskedAutoencoder(nn.Module):
    """The masked autoencoder (docs/method.md §1.4) from its parts, in the order a volume passes them:

    - ``encoder``: :class:`SWViTEncoder` (patch embedding, SPE, SW-ViT) on the visible patches;
    - ``decoder_embed``: linear map from the encoder width to the decoder width;
    - ``decoder``: :class:`SWViT` on the full sequence (projected visible tokens, mask token + SPE
      elsewhere, in raster order);
    - ``decoder_pred``: linear map from the decoder width to the patch values (s³·C);
    - ``objective``: the reconstruction loss (:mod:`asa.models.blocks.objective`).

    ``mask_ratio`` of the patches are masked, exactly round(mask_ratio·N) per sample. When the
    encoder has SACA blocks the masking is mirror-consistent: a token and its left–right mirror
    are masked together, so every visible token's mirror is visible too.
    """

    key_to_encoder, key_to_stem, keys_to_in_proj = SWVIT_KEYS  # its transfer keys (asa.models.keys)

    def __init__(
        self,
        encoder: SWViTEncoder,
        decoder_embed: nn.Linear,
        decoder: SWViT,
        decoder_pred: nn.Linear,
        objective: nn.Module,
        *,
        mask_ratio: float,
    ) -> None:
        super().__init__()
        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must lie in (0, 1), got {mask_ratio}")
        self.img_size, self.grid, self.patch_size = encoder.img_size, encoder.grid, encoder.patch_size
        self.in_channels = encoder.patch_embed.in_channels
        widths = (decoder_embed.in_features, decoder_embed.out_features, decoder_pred.in_features,
                  decoder_pred.out_features)
        expected = (encoder.embed_dim, decoder.embed_dim, decoder.embed_dim, self.patch_size**3 * self.in_channels)
        if widths != expected:
            raise ValueError(f"decoder_embed must map {expected[0]} -> {expected[1]} channels and decoder_pred "
                             f"{expected[2]} -> {expected[3]} (s³·C), got {widths[0]} -> {widths[1]} and "
                             f"{widths[2]} -> {widths[3]}")
        self.num_patches = self.grid[0] * self.grid[1] * self.grid[2]
        self.num_masked = round(mask_ratio * self.num_patches)
        if not 0 < self.num_masked < self.num_patches:
            raise ValueError(
                f"mask_ratio {mask_ratio} of {self.num_patches} patches leaves no visible or no masked patch"
            )
        self.saca = {(False, False): "none", (False, True): "decoder", (True, False): "encoder",
                     (True, True): "all"}[encoder.saca, decoder.saca]
        self.mirror_masking = encoder.saca
        lr_axis = encoder.lr_axis
        if decoder.saca:
            window = next(block.saca.window_size for block in decoder.blocks if block.uses_mirror)
            check_mirror_windows(self.grid, lr_axis, window, f"ASA(img_size={self.img_size}, saca={self.saca})")
        if self.mirror_masking and (self.grid[lr_axis] % 2 or self.num_masked % 2):
            raise ValueError(
                f"saca={self.saca} masks mirror pairs together: needs an even grid size along lr_axis {lr_axis} "
                f"(grid {self.grid}) and an even number of masked tokens (round({mask_ratio}·{self.num_patches}) "
                f"= {self.num_masked})"
            )
        self.register_buffer("token_mirror", mirror_index(self.grid, lr_axis), persistent=False)
        self.encoder = encoder
        self.decoder_embed = decoder_embed
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder.embed_dim))
        self.register_buffer(
            "decoder_pos_embed",
            symmetric_position_encoding(self.grid, decoder.embed_dim, mode=encoder.pos_mode, lr_axis=lr_axis),
            persistent=False,
        )
        self.decoder = decoder
        self.decoder_pred = decoder_pred
        nn.init.normal_(self.mask_token, std=0.02)
        self.objective = objective
        self.loss_weighting = objective.weighting  # uniform | attentive | focal_region: what out.weights are
        self.uses_regions = encoder.uses_regions or decoder.uses_regions or objective.uses_regions
        self.capabilities = Capabilities(regions=self.uses_regions)

    # --- shapes -------------------------------------------------------------------------
    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C, D, H, W] -> [B, N, s³·C]."""
        return patchify(x, self.patch_size)

    def unpatchify(self, p: torch.Tensor) -> torch.Tensor:
        """p: [B, N, s³·C] -> [B, C, D, H, W]."""
        return unpatchify(p, self.patch_size, self.grid, self.in_channels)

    # --- algorithm ----------------------------------------------------------------------
    def random_masking(self, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask exactly round(ratio·N) patches per sample, uniformly at random.

        Returns (mask [B, N] float, 1 = masked; ids_keep [B, N_vis], visible indices sorted so the
        encoder sees them in raster order). Mirror-consistent (see the class) when the encoder has SACA.
        """
        if self.mirror_masking:
            return self.mirror_consistent_masking(batch, device)
        noise = torch.rand(batch, self.num_patches, device=device)
        order = noise.argsort(dim=1)
        ids_keep = order[:, self.num_masked :].sort(dim=1).values
        mask = torch.ones(batch, self.num_patches, device=device)
        mask.scatter_(1, ids_keep, 0.0)
        return mask, ids_keep

    def mirror_consistent_masking(self, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask round(ratio·N)/2 random mirror pairs per sample (uniform over pairs); same returns as
        :meth:`random_masking`."""
        first_half = (self.token_mirror > torch.arange(self.num_patches, device=self.token_mirror.device))
        reps = first_half.nonzero().flatten().to(device)  # one token of each pair, [N/2]
        order = torch.rand(batch, reps.numel(), device=device).argsort(dim=1)
        chosen = reps[order[:, : self.num_masked // 2]]  # [B, N_mask/2]
        mask = torch.zeros(batch, self.num_patches, device=device)
        mask.scatter_(1, chosen, 1.0)
        mask.scatter_(1, self.token_mirror.to(device)[chosen], 1.0)
        ids_keep = mask.argsort(dim=1, stable=True)[:, : self.num_patches - self.num_masked]  # zeros first, in order
        return mask, ids_keep

    def forward_encoder(
        self, x: torch.Tensor, ids_keep: torch.Tensor, patch_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Embed, add SPE, keep the visible patches and encode. -> [B, N_vis, embed_dim].

        patch_ids: [B, N] region of every patch (R-MSA); the visible ones are kept like the tokens."""
        return self.encoder.encode(x, ids_keep=ids_keep, patch_ids=patch_ids)

    def assemble_decoder_input(self, latent: torch.Tensor, ids_keep: torch.Tensor) -> torch.Tensor:
        """Full decoder sequence in raster order: projected encoder output at visible positions,
        mask token + SPE at masked ones. latent: [B, N_vis, C] -> [B, N, C_dec]."""
        visible = self.decoder_embed(latent)  # [B, N_vis, C_dec]
        b, _, c = visible.shape
        # in the visible tokens' dtype (the autocast dtype under autocast): the residual stream stays in it
        full = (self.mask_token + self.decoder_pos_embed).to(visible.dtype).expand(b, -1, -1)
        return full.scatter(1, ids_keep.unsqueeze(-1).expand(-1, -1, c), visible)

    def forward_decoder(
        self, latent: torch.Tensor, ids_keep: torch.Tensor, patch_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """-> pred [B, N, s³·C] for every patch. patch_ids: [B, N] region of every patch."""
        mirror = self.token_mirror if self.decoder.saca else None
        return self.decoder_pred(self.decoder(self.assemble_decoder_input(latent, ids_keep), regions=patch_ids,
                                              mirror=mirror))

    def forward_loss(
        self, x: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor, regions: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstruction loss on masked patches -> (loss, weights [B, N]); regions: [B, 1, D, H, W]."""
        return self.objective(x, pred, mask, regions)

    def _voxel_regions(self, x: torch.Tensor, regions: torch.Tensor | None) -> torch.Tensor | None:
        """regions [B, D, H, W] or [B, 1, D, H, W] -> [B, 1, D, H, W] int64, checked."""
        if not self.uses_regions:
            return None
        if regions is None:
            raise ValueError("this ASA model uses region maps (region_attention or loss_weighting=focal_region): "
                             "forward needs regions [B, 1, D, H, W] (data.regions in the run config)")
        regions = regions if regions.dim() == 5 else regions[:, None]
        if regions.shape != (x.shape[0], 1, *x.shape[2:]) or regions.is_floating_point():
            raise ValueError(f"regions must be integer labels [B, 1, {', '.join(map(str, x.shape[2:]))}], "
                             f"got {regions.dtype} {list(regions.shape)}")
        return regions.long()

    def forward(self, x: torch.Tensor, regions: torch.Tensor | None = None) -> MAEOutput:
        """x: [B, C, D, H, W] with (D, H, W) = img_size; regions: [B, 1, D, H, W] integer labels,
        needed with R-MSA or the focal region loss."""
        if tuple(x.shape[1:]) != (self.in_channels, *self.img_size):
            raise ValueError(
                f"ASA expects input [B, {self.in_channels}, {self.img_size[0]}, {self.img_size[1]}, "
                f"{self.img_size[2]}], got {list(x.shape)}"
            )
        regions = self._voxel_regions(x, regions)
        uses_patch_ids = self.encoder.uses_regions or self.decoder.uses_regions
        patch_ids = patch_regions(regions, self.patch_size) if uses_patch_ids else None  # [B, N]
        mask, ids_keep = self.random_masking(x.shape[0], x.device)
        latent = self.forward_encoder(x, ids_keep, patch_ids)
        pred = self.forward_decoder(latent, ids_keep, patch_ids)
        loss, weights = self.forward_loss(x, pred, mask, regions)
        return MAEOutput(loss=loss, pred=pred, mask=mask, weights=weights)

    # --- helpers for training and fine-tuning ---------------------------------------------
    def no_weight_decay(self) -> set[str]:
        """Parameters exempt from weight decay besides norms and biases: mask token, relative bias."""
        return {"mask_token"} | {name for name, _ in self.named_parameters() if name.endswith("rel_pos_bias")}

    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights a segmentation network takes over: the encoder module's, as ``encoder.*``."""
        return self.encoder.state_dict(prefix=ENCODER_PREFIX)


_BASE = PRESETS["base"]


@dataclass
class PretrainModelConfig(EncoderOptions):
    """asa-pretrain's ``model`` section of the SW-ViT sizes (``model=tiny|small|base``, ``model.arch`` swvit):
    the encoder plus the pretraining decoder (group ``sizes/decoder``)."""

    decoder_dim: int = _BASE["decoder_dim"]
    decoder_depth: int = _BASE["decoder_depth"]
    decoder_num_heads: int = _BASE["decoder_num_heads"]
    pos_mode: str = one_of(EncoderSettings.pos_mode, POSITION_MODES)  # none | mirror | paper
    lr_axis: int = EncoderSettings.lr_axis


@register_network("asa_pretrain", kind="pretraining", family="swvit")
class ASA(MaskedAutoencoder):
    """Attentive Symmetric Autoencoder, built from the flat settings of its network spec
    (``asa_pretrain``): ``ASA(img_size=128, **PRESETS["base"])``.

    The rows of the paper's Table 4 are configurations of this class: MAE
    (``pos_mode="none", loss_weighting="uniform"``), A-SSL (``none``, ``attentive``), SPE+SSL
    (``mirror``, ``uniform``) and ASA (``mirror``, ``attentive``).

    ``**encoder`` are the encoder's settings (:class:`EncoderSettings`: ``img_size``,
    ``in_channels``, ``patch_size``, ``embed_dim``, ``depth``, ``num_heads``, ``window_size``,
    ``mlp_ratio``, ``pos_mode``, ``lr_axis``, ``shift_mask``, ``rel_pos_bias``,
    ``grad_checkpointing``, ``region_attention``); the decoder is an SW-ViT of the same blocks at
    ``decoder_dim`` × ``decoder_depth`` with ``decoder_num_heads`` heads, under the same position code.

    RAT's parts (docs/method.md §1.6b): ``region_attention`` (``alternate`` | ``all``) puts R-MSA blocks in
    the encoder and decoder; ``loss_weighting="focal_region"`` replaces the masked MSE by the focal
    region loss (β = ``focal_beta``) over the masked patches. Both need a region map per input
    (``forward(x, regions)``, one integer label per voxel); R-MSA takes each patch's majority label.

    ``saca`` (``none | decoder | encoder | all``) adds windowed symmetry-aware cross-attention to the
    blocks of the chosen SW-ViTs (docs/method.md §1.6b); with the encoder among them the masking is
    mirror-consistent (see :class:`MaskedAutoencoder`).
    """

    keyword_options = frozenset(f.name for f in fields(EncoderSettings))  # what ``**encoder`` takes

    def __init__(
        self,
        *,
        decoder_dim: int = _BASE["decoder_dim"],
        decoder_depth: int = _BASE["decoder_depth"],
        decoder_num_heads: int = _BASE["decoder_num_heads"],
        mask_ratio: float = 0.75,
        loss_weighting: str = "attentive",
        norm_pix_loss: bool = False,
        bins: int = 8,
        normalize: str = "l2",
        focal_beta: float = 1.0,
        saca: str = "none",
        **encoder: Any,
    ) -> None:
        settings = EncoderSettings.of("ASA", encoder)
        if saca not in SACA_PLACES:
            raise ValueError(f"saca must be one of {SACA_PLACES}, got {saca!r}")
        objective = reconstruction_objective(loss_weighting, patch_size=settings.patch_size,
                                             norm_pix_loss=norm_pix_loss, bins=bins, normalize=normalize,
                                             focal_beta=focal_beta)
        # made in this order (encoder, projection, decoder, prediction, then their Xavier draws and the
        # mask token's): the order fixes what a seed initialises
        net_encoder = settings.encoder(saca=saca in ("encoder", "all"))
        decoder_embed = nn.Linear(settings.embed_dim, decoder_dim)
        decoder = SWViT(settings.blocks(decoder_dim, decoder_depth, decoder_num_heads, saca=saca in ("decoder", "all")),
                        grad_checkpointing=settings.grad_checkpointing)
        decoder_pred = nn.Linear(decoder_dim, settings.patch_size**3 * settings.in_channels)
        for layer in (decoder_embed, decoder_pred):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
        super().__init__(net_encoder, decoder_embed, decoder, decoder_pred, objective, mask_ratio=mask_ratio)
        record_spec(self, "asa_pretrain", {
            **settings.spec(), "decoder_dim": decoder_dim, "decoder_depth": decoder_depth,
            "decoder_num_heads": decoder_num_heads, "mask_ratio": mask_ratio, "loss_weighting": loss_weighting,
            "norm_pix_loss": norm_pix_loss, "bins": bins, "normalize": normalize, "focal_beta": focal_beta,
            "saca": saca})
