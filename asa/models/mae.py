"""ASA: the masked autoencoder with SW-ViT encoder/decoder, SPE and the attentive loss (paper §2)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from asa.losses import AttentiveReconstructionLoss, FocalRegionLoss, patch_informativeness
from asa.losses.reconstruction import WEIGHTINGS
from asa.models.encoder import ENCODER_PREFIX, SWViTEncoder
from asa.models.patch import patch_grid, patchify, to_3tuple, unpatchify
from asa.models.position import symmetric_position_encoding
from asa.models.region_attention import patch_regions
from asa.models.registry import record_spec, register_network
from asa.models.saca import SACA_PLACES, check_mirror_windows, mirror_index
from asa.models.swvit import SWViT

LOSS_WEIGHTINGS = (*WEIGHTINGS, "focal_region")


@dataclass
class MAEOutput:
    """loss: scalar; pred: [B, N, C·s³]; mask: [B, N] (1 = masked); weights: [B, N] loss weights."""

    loss: torch.Tensor
    pred: torch.Tensor
    mask: torch.Tensor
    weights: torch.Tensor


@register_network("asa_pretrain", task="pretraining", encoder="encoder")
class ASA(nn.Module):
    """Attentive Symmetric Autoencoder.

    The rows of the paper's Table 4 are configurations of this class: MAE
    (``pos_mode="none", loss_weighting="uniform"``), A-SSL (``none``, ``attentive``), SPE+SSL
    (``mirror``, ``uniform``) and ASA (``mirror``, ``attentive``).

    RAT's parts (DESIGN §1.6b): ``region_attention`` (``alternate`` | ``all``) puts R-MSA blocks in
    the encoder and decoder; ``loss_weighting="focal_region"`` replaces the masked MSE by the focal
    region loss (β = ``focal_beta``) over the masked patches. Both need a region map per input
    (``forward(x, regions)``, one integer label per voxel); R-MSA takes each patch's majority label.

    ``saca`` (``none | decoder | encoder | all``) adds windowed symmetry-aware cross-attention to the
    blocks of the chosen SW-ViTs (DESIGN §1.6b). With the encoder among them the masking is
    mirror-consistent: a token and its left–right mirror are masked together, still exactly
    round(mask_ratio·N) tokens, so every visible token's mirror is visible too.
    """

    def __init__(
        self,
        *,
        img_size: int | tuple[int, int, int] = 128,
        in_channels: int = 1,
        patch_size: int = 8,
        embed_dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        decoder_dim: int = 384,
        decoder_depth: int = 8,
        decoder_num_heads: int = 6,
        window_size: int = 32,
        mlp_ratio: float = 4.0,
        mask_ratio: float = 0.75,
        pos_mode: str = "mirror",
        lr_axis: int = 0,
        loss_weighting: str = "attentive",
        norm_pix_loss: bool = False,
        bins: int = 8,
        normalize: str = "l2",
        shift_mask: bool = True,
        rel_pos_bias: bool = True,
        grad_checkpointing: bool = False,
        region_attention: str = "none",
        focal_beta: float = 1.0,
        saca: str = "none",
    ) -> None:
        super().__init__()
        spec = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        if loss_weighting not in LOSS_WEIGHTINGS:
            raise ValueError(f"loss_weighting must be one of {LOSS_WEIGHTINGS}, got {loss_weighting!r}")
        if saca not in SACA_PLACES:
            raise ValueError(f"saca must be one of {SACA_PLACES}, got {saca!r}")
        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must lie in (0, 1), got {mask_ratio}")
        self.img_size = to_3tuple(img_size, "img_size")
        record_spec(self, "asa_pretrain", {**spec, "img_size": list(self.img_size)})
        self.grid = patch_grid(self.img_size, patch_size)
        self.num_patches = self.grid[0] * self.grid[1] * self.grid[2]
        self.num_masked = round(mask_ratio * self.num_patches)
        if not 0 < self.num_masked < self.num_patches:
            raise ValueError(
                f"mask_ratio {mask_ratio} of {self.num_patches} patches leaves no visible or no masked patch"
            )
        self.in_channels = in_channels
        self.patch_size = patch_size
        self.bins = bins
        self.normalize = normalize
        self.saca = saca
        self.mirror_masking = saca in ("encoder", "all")
        if saca != "none":
            check_mirror_windows(self.grid, lr_axis, window_size, f"ASA(img_size={self.img_size}, saca={saca})")
        if self.mirror_masking and (self.grid[lr_axis] % 2 or self.num_masked % 2):
            raise ValueError(
                f"saca={saca} masks mirror pairs together: needs an even grid size along lr_axis {lr_axis} "
                f"(grid {self.grid}) and an even number of masked tokens (round({mask_ratio}·{self.num_patches}) "
                f"= {self.num_masked})"
            )
        self.register_buffer("token_mirror", mirror_index(self.grid, lr_axis), persistent=False)
        block_args = dict(mlp_ratio=mlp_ratio, shift_mask=shift_mask, rel_pos_bias=rel_pos_bias,
                          grad_checkpointing=grad_checkpointing, region_attention=region_attention)

        self.encoder = SWViTEncoder(img_size=self.img_size, in_channels=in_channels, patch_size=patch_size,
                                    embed_dim=embed_dim, depth=depth, num_heads=num_heads, window_size=window_size,
                                    pos_mode=pos_mode, lr_axis=lr_axis, saca=self.mirror_masking,
                                    **block_args)

        self.decoder_embed = nn.Linear(embed_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.register_buffer(
            "decoder_pos_embed",
            symmetric_position_encoding(self.grid, decoder_dim, mode=pos_mode, lr_axis=lr_axis),
            persistent=False,
        )
        self.decoder = SWViT(decoder_dim, decoder_depth, decoder_num_heads, window_size,
                             saca=saca in ("decoder", "all"), **block_args)
        self.decoder_pred = nn.Linear(decoder_dim, patch_size**3 * in_channels)
        nn.init.xavier_uniform_(self.decoder_embed.weight)
        nn.init.zeros_(self.decoder_embed.bias)
        nn.init.xavier_uniform_(self.decoder_pred.weight)
        nn.init.zeros_(self.decoder_pred.bias)
        nn.init.normal_(self.mask_token, std=0.02)

        self.loss_weighting = loss_weighting
        self.norm_pix_loss = norm_pix_loss
        if loss_weighting == "focal_region":
            self.criterion: nn.Module = FocalRegionLoss(focal_beta)
        else:
            self.criterion = AttentiveReconstructionLoss(loss_weighting, norm_pix_loss)
        self.uses_regions = self.encoder.uses_regions or loss_weighting == "focal_region"

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
        # the residual stream stays fp32 under autocast: promote the visible tokens, keep the table
        full = (self.mask_token + self.decoder_pos_embed).float().expand(b, -1, -1)
        return full.scatter(1, ids_keep.unsqueeze(-1).expand(-1, -1, c), visible.float())

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
        if self.loss_weighting == "focal_region":
            return self.focal_region_loss(x, pred, mask, regions)
        informativeness = None
        if self.criterion.weighting == "attentive":
            informativeness = patch_informativeness(x, self.patch_size, self.bins, self.normalize)
        return self.criterion(pred, self.patchify(x), mask, informativeness)

    def focal_region_loss(
        self, x: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor, regions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Focal region loss over the voxels of masked patches -> (loss, weights [B, N]: the mean
        focal weight w of each masked patch)."""
        target = self.patchify(x).float()  # [B, N, s³·C]
        if self.norm_pix_loss:
            target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
        voxel_ids = patchify(regions.long(), self.patch_size)  # [B, N, s³]
        voxel_ids = voxel_ids.repeat_interleave(self.in_channels, dim=-1)  # values ordered (s, s, s, C)
        loss, w = self.criterion(pred, target, voxel_ids, mask[..., None])
        return loss, w.mean(-1) * mask

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
        patch_ids = patch_regions(regions, self.patch_size) if self.encoder.uses_regions else None  # [B, N]
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
