"""The pretrained SW-ViT encoder as a module on volumes: what `asa.load_encoder` returns for the SW-ViT family."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from asa.models.swvit.encoder import SWViTEncoder
from asa.models.swvit.region_attention import patch_regions

__all__ = ["VolumeEncoder"]


class VolumeEncoder(nn.Module):
    """The pretrained SW-ViT encoder (patch embedding + symmetric position code + blocks + final
    norm) as a module on volumes.

    ``forward(x [B, C, D, H, W])`` -> the final normed tokens [B, N, E], N = G0·G1·G2 patches of the
    ``grid`` (``img_size`` / ``patch_size``) in raster order (axis 2 fastest), E = ``embed_dim``.
    With ``hidden_indices`` it returns ``(tokens, [hidden state [B, N, E] of each listed block,
    before the final norm])``, as the segmenter's skips use them. D, H, W must be ``img_size`` (the
    position code is the pretraining grid's). ``offsets`` [B, 3]: the crop's patch offset from the
    brain-centred reference grid (docs/method.md §1.2; None = the reference grid itself, as in
    pretraining). ``regions`` [B, 1, D, H, W]: an integer label per voxel, needed by encoders with
    region attention. :meth:`to_volume` turns tokens into a feature map [B, E, G0, G1, G2].

    Its state-dict keys are the export's (``encoder.*``), so ``load_state_dict`` takes an export's
    tensors as they are.
    """

    def __init__(self, encoder: SWViTEncoder, *, spe_frame: str = "brain") -> None:
        super().__init__()
        self.encoder = encoder
        self.spe_frame = spe_frame  # "crop": one table per crop, offsets ignored (as ASASegmenter does)
        self.img_size, self.grid, self.patch_size = encoder.img_size, encoder.grid, encoder.patch_size
        self.in_channels = encoder.patch_embed.proj.in_channels
        self.embed_dim = encoder.embed_dim

    def forward(
        self, x: torch.Tensor, offsets: torch.Tensor | None = None, *, hidden_indices: Sequence[int] = (),
        regions: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        if x.ndim != 5 or tuple(x.shape[1:]) != (self.in_channels, *self.img_size):
            raise ValueError(f"the encoder expects input [B, {self.in_channels}, {', '.join(map(str, self.img_size))}] "
                             f"(its pretraining crop), got {list(x.shape)}")
        patch_ids = None
        if self.encoder.uses_regions:
            if regions is None:
                raise ValueError("this encoder has region attention: forward needs regions [B, 1, D, H, W]")
            patch_ids = patch_regions(regions, self.patch_size)  # [B, N]
        return self.encoder.encode(x, offsets=None if self.spe_frame == "crop" else offsets,
                                   hidden_indices=hidden_indices, patch_ids=patch_ids)

    def to_volume(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, N, E] -> feature map [B, E, G0, G1, G2]."""
        return tokens.transpose(1, 2).reshape(tokens.shape[0], self.embed_dim, *self.grid)
