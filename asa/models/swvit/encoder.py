"""The SW-ViT encoder with its patch embedding and position code: what ASA pretrains and the segmenter
takes over; and its settings as network specs record them (:class:`EncoderSettings`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, Optional

import torch

from asa.choices import in_range, one_of
from asa.models.blocks.patch import PatchEmbed, patch_grid
from asa.models.blocks.saca import SACA_PLACES, check_mirror_windows, mirror_index
from asa.models.blocks.sizes import to_3tuple
from asa.models.keys import EncoderKeys
from asa.models.presets import DEFAULT_CROP, PRESETS
from asa.models.registry import NetworkSettings
from asa.models.blocks.position import brain_frame_encoding, symmetric_position_encoding
from asa.models.blocks.position import POSITION_MODES
from asa.models.swvit.swvit import REGION_LAYOUTS, SWBlock, SWViT, sw_blocks

# the attribute under which ASA and ASASegmenter hold the encoder; its keys are what a file transfers
ENCODER_PREFIX = "encoder."
# the transfer keys of every network on the SW-ViT encoder: the encoder, its patch embedding (the stem) and its
# projection, which takes the input channels
SWVIT_KEYS = EncoderKeys("encoder", "encoder.patch_embed", ("encoder.patch_embed.proj",))

_BASE = PRESETS["base"]


class SWViTEncoder(SWViT):
    """Patch embedding + SPE + SW-ViT (docs/method.md §1.2–1.3), shared by :class:`ASA` and :class:`ASASegmenter`.

    Built from its parts: the patch embedding, the SW blocks (:func:`asa.models.swvit.swvit.sw_blocks`)
    and the geometry: input ``img_size``, position code ``pos_mode`` folded along ``lr_axis``,
    ``reference_grid`` (default this grid). :meth:`EncoderSettings.encoder` builds it from flat settings.

    ``encode(x)`` embeds a volume x [B, C, D, H, W] into tokens [B, N, C], adds the position code of
    the reference frame and runs the blocks. Pretraining (``ids_keep``) keeps only the visible
    tokens, at offset 0: the pretraining crop is the reference grid. Fine-tuning passes every
    token, per-crop patch ``offsets`` [B, 3] from the reference grid and asks for
    ``hidden_indices``. ``forward`` is :class:`SWViT`'s, on tokens.

    With SACA blocks (docs/method.md §1.6b) ``encode`` gives them each token's left–right mirror
    (:meth:`mirror_tokens`), in the brain frame with offsets.
    """

    def __init__(
        self,
        patch_embed: PatchEmbed,
        blocks: Sequence[SWBlock],
        *,
        img_size: int | Sequence[int],
        pos_mode: str,
        lr_axis: int,
        reference_grid: int | Sequence[int] | None = None,
        grad_checkpointing: bool = False,
    ) -> None:
        super().__init__(blocks, grad_checkpointing=grad_checkpointing)
        if patch_embed.proj.out_channels != self.embed_dim:
            raise ValueError(f"the patch embedding gives {patch_embed.proj.out_channels} channels, the blocks take "
                             f"{self.embed_dim}")
        self.patch_embed = patch_embed
        self.img_size = to_3tuple(img_size, "img_size")
        self.patch_size = patch_embed.patch_size
        self.grid = patch_grid(self.img_size, self.patch_size)
        self.pos_mode = pos_mode
        self.lr_axis = lr_axis
        self.reference_grid = self.grid if reference_grid is None else to_3tuple(reference_grid, "reference_grid")
        self.register_buffer(
            "pos_embed",
            symmetric_position_encoding(self.grid, self.embed_dim, mode=pos_mode, lr_axis=lr_axis,
                                        reference_grid=self.reference_grid),
            persistent=False,
        )
        if self.saca:
            window = next(block.saca.window_size for block in self.blocks if block.uses_mirror)
            check_mirror_windows(self.grid, lr_axis, window, f"encoder(img_size={self.img_size}, saca)")
        # offset 0 of the reference grid, like pos_embed: the crop's own mirror when the crop is the reference
        mirror = (mirror_index(self.grid, lr_axis) if self.reference_grid == self.grid
                  else self._brain_mirror(torch.zeros(1, 3, dtype=torch.long))[0])
        self.register_buffer("token_mirror", mirror, persistent=False)

    @property
    def symmetric_parts(self) -> tuple[str, ...]:
        """The settings of this encoder that rely on the brain's left–right symmetry (empty: none)."""
        parts = () if self.pos_mode == "none" else (f"model.pos_mode={self.pos_mode} (the symmetric position code)",)
        return parts + (("model.saca (cross-attention to the mirror window)",) if self.saca else ())

    def mirror_tokens(self, offsets: torch.Tensor | None = None, ids_keep: torch.Tensor | None = None) -> torch.Tensor:
        """Sequence position of each token's left–right mirror, for SACA, mirrored about the reference
        grid's centre along ``lr_axis`` as the position code folds (−1 where the mirror falls outside
        the crop): [N] at offset 0; [B, N] at patch ``offsets`` [B, 3] (brain frame); [B, N_vis] in
        the visible sequence of ``ids_keep`` (pretraining, where the crop is the reference grid: every
        visible token's mirror must be visible, mirror-consistent masking)."""
        if ids_keep is not None:
            b, n_vis = ids_keep.shape
            position = torch.full((b, self.token_mirror.numel()), -1, dtype=torch.long, device=ids_keep.device)
            position.scatter_(1, ids_keep, torch.arange(n_vis, device=ids_keep.device).expand(b, -1))
            mirror = torch.gather(position, 1, self.token_mirror.to(ids_keep.device)[ids_keep])
            if (mirror < 0).any():
                raise ValueError("encoder SACA needs mirror-consistent masking: a visible token's mirror is masked")
            return mirror
        if offsets is None:
            return self.token_mirror
        return self._brain_mirror(offsets)

    def _brain_mirror(self, offsets: torch.Tensor) -> torch.Tensor:
        """[B, N] sequence position of each token's mirror about the reference centre, −1 outside the crop."""
        g = self.grid[self.lr_axis]
        coords = torch.stack(torch.meshgrid(*(torch.arange(n, device=offsets.device) for n in self.grid),
                                            indexing="ij"), -1).view(-1, 3)  # [N, 3]
        a = coords[:, self.lr_axis]
        # reference coordinate w = a + o mirrors to W − 1 − w, i.e. crop coordinate W − 1 − 2o − a
        mirrored = (self.reference_grid[self.lr_axis] - 1 - 2 * offsets[:, self.lr_axis].long())[:, None] - a  # [B, N]
        inside = (mirrored >= 0) & (mirrored < g)
        stride = (self.grid[1] * self.grid[2], self.grid[2], 1)[self.lr_axis]
        index = torch.arange(coords.shape[0], device=offsets.device) + (mirrored - a) * stride
        return torch.where(inside, index, torch.full_like(index, -1))

    def position_codes(self, offsets: torch.Tensor | None = None) -> torch.Tensor:
        """[N, C] at offset 0 (no offsets) or [B, N, C] at the patch offsets [B, 3] (brain frame)."""
        if offsets is None:
            return self.pos_embed
        return brain_frame_encoding(self.grid, self.embed_dim, offsets.to(self.pos_embed.device),
                                    mode=self.pos_mode, lr_axis=self.lr_axis, reference_grid=self.reference_grid)

    def encode(
        self,
        x: torch.Tensor,
        *,
        offsets: torch.Tensor | None = None,
        ids_keep: torch.Tensor | None = None,
        hidden_indices: Sequence[int] = (),
        patch_ids: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """x [B, C, D, H, W] -> normed tokens [B, N, C] (N_vis with ``ids_keep`` [B, N_vis]), with the
        hidden states of ``hidden_indices`` as in :meth:`SWViT.forward`. ``patch_ids`` [B, N]: the
        region of every patch, for R-MSA blocks; kept with the tokens under ``ids_keep``."""
        tokens = self.patch_embed(x)  # [B, N, C]; the position codes in its dtype (autocast's: the stream stays in it)
        tokens = tokens + self.position_codes(offsets).to(tokens.dtype)
        if ids_keep is not None:
            tokens = torch.gather(tokens, 1, ids_keep.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
            patch_ids = None if patch_ids is None else torch.gather(patch_ids, 1, ids_keep)  # [B, N_vis]
        mirror = self.mirror_tokens(offsets, ids_keep) if self.saca else None
        return self(tokens, hidden_indices=hidden_indices, regions=patch_ids, mirror=mirror)



@dataclass(frozen=True)
class EncoderSettings:
    """The SW-ViT encoder's settings as the network specs of ``asa_pretrain`` (:class:`ASA`) and ``swvit_unetr``
    (:class:`ASASegmenter`) record them, flat; the defaults are the ``base`` preset (the paper's sizes).

    ``window_size``, ``mlp_ratio``, ``shift_mask``, ``rel_pos_bias``, ``region_attention`` and
    ``grad_checkpointing`` describe the blocks, which ASA's decoder shares at its own width
    (:meth:`blocks`); the rest the encoder (:meth:`encoder`).
    """

    img_size: int | Sequence[int] = DEFAULT_CROP
    in_channels: int = 1
    patch_size: int = 8
    embed_dim: int = _BASE["embed_dim"]
    depth: int = _BASE["depth"]
    num_heads: int = _BASE["num_heads"]
    window_size: int = _BASE["window_size"]
    mlp_ratio: float = 4.0
    pos_mode: str = "mirror"
    lr_axis: int = 0
    shift_mask: bool = True
    rel_pos_bias: bool = True
    grad_checkpointing: bool = False
    region_attention: str = "none"

    def __post_init__(self) -> None:
        object.__setattr__(self, "img_size", to_3tuple(self.img_size, "img_size"))
        if self.region_attention not in REGION_LAYOUTS:
            raise ValueError(f"region_attention must be one of {REGION_LAYOUTS}, got {self.region_attention!r}")

    @classmethod
    def of(cls, network: str, settings: Mapping[str, Any]) -> EncoderSettings:
        """The encoder settings among a network's keyword arguments ``settings`` (all of them must be)."""
        known = {f.name for f in fields(cls)}
        unknown = [key for key in settings if key not in known]
        if unknown:
            raise TypeError(f"{network}() got an unexpected keyword argument {unknown[0]!r}")
        return cls(**settings)

    def spec(self) -> dict[str, Any]:
        """The settings as a network spec records them (``img_size`` as a list of 3 ints)."""
        return {**asdict(self), "img_size": list(self.img_size)}

    def blocks(self, dim: int, depth: int, num_heads: int, *, saca: bool = False,
               dropout: float = 0.0) -> list[SWBlock]:
        """SW blocks of these settings at width ``dim`` (the encoder's, or a decoder's)."""
        return sw_blocks(dim, depth, num_heads, self.window_size, mlp_ratio=self.mlp_ratio, shift_mask=self.shift_mask,
                         rel_pos_bias=self.rel_pos_bias, region_attention=self.region_attention, saca=saca,
                         dropout=dropout)

    def encoder(self, *, saca: bool = False, dropout: float = 0.0,
                reference_grid: int | Sequence[int] | None = None) -> SWViTEncoder:
        """The encoder of these settings; ``saca`` puts windowed SACA in every block."""
        # the stem draws its initial weights from the RNG before the blocks do (a seed fixes both)
        patch_embed = PatchEmbed(self.in_channels, self.embed_dim, self.patch_size)
        blocks = self.blocks(self.embed_dim, self.depth, self.num_heads, saca=saca, dropout=dropout)
        return SWViTEncoder(patch_embed, blocks, img_size=self.img_size, pos_mode=self.pos_mode, lr_axis=self.lr_axis,
                            reference_grid=reference_grid, grad_checkpointing=self.grad_checkpointing)


@dataclass
class EncoderOptions:
    """The SW-ViT options a run config sets (the ``model`` section of both entry points), with their
    choices: the sizes of the ``model=tiny|small|base`` presets (`asa.models.PRESETS`; the defaults
    are the base preset's, :class:`EncoderSettings`'), the blocks, ``saca`` (windowed symmetry-aware
    cross-attention: none | decoder | encoder | all) and the symmetric position code ``pos_mode`` on the
    mirrored array axis ``lr_axis`` (docs/method.md §1.2). Null ``pos_mode`` / ``lr_axis``: fine-tuning takes the
    pretrained file's, else mirror / 0 (pretraining states them)."""

    patch_size: int = in_range(EncoderSettings.patch_size, 1)
    embed_dim: int = in_range(EncoderSettings.embed_dim, 1)
    depth: int = in_range(EncoderSettings.depth, 1)
    num_heads: int = in_range(EncoderSettings.num_heads, 1)
    window_size: int = in_range(EncoderSettings.window_size, 1)
    mlp_ratio: float = in_range(EncoderSettings.mlp_ratio, 0.01)
    shift_mask: bool = EncoderSettings.shift_mask  # mask the wrap-around window after the SLW-MSA roll
    rel_pos_bias: bool = EncoderSettings.rel_pos_bias  # learned relative position bias per window
    grad_checkpointing: bool = EncoderSettings.grad_checkpointing  # activation checkpointing: less memory, slower
    region_attention: str = one_of(EncoderSettings.region_attention, REGION_LAYOUTS)  # none | alternate (LW, R, SLW, R, ...) | all: R-MSA blocks (need data.regions)
    saca: str = one_of("none", SACA_PLACES)  # none | decoder | encoder | all: windowed SACA in these SW-ViTs
    pos_mode: Optional[str] = one_of(None, POSITION_MODES)  # none | mirror | paper
    lr_axis: Optional[int] = in_range(None, 0, 2)


@dataclass
class SWViTSettings(EncoderOptions, NetworkSettings):
    """The ``model`` section of the SW-ViT networks (the case head ``case_head``; the U-Net ``swvit_unetr``
    adds its decoder's, `asa.models.swvit.segmenter.SWViTUNetSettings`): the encoder's options and
    ``dropout`` in its blocks."""

    dropout: float = in_range(0.0, 0.0, 1.0)

    def region_option(self) -> str | None:
        return None if self.region_attention == "none" else f"model.region_attention={self.region_attention}"
