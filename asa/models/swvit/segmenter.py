"""The segmentation network on the SW-ViT encoder: a UNETR-style U-Net (docs/method.md §1.6), from parts
(:class:`SWViTSegmenter`) or from a network spec's flat settings (:class:`ASASegmenter`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import warnings

import torch
from monai.networks.blocks import UnetOutBlock, UnetrBasicBlock, UnetrPrUpBlock, UnetrUpBlock
from torch import nn

from asa.choices import in_range, one_of
from asa.models.weights import load_weights
from asa.models.blocks.encoder_weights import LoadReport, match_encoder_weights
from asa.models.blocks.patch import patch_grid
from asa.models.blocks.saca import SACA_PLACES
from asa.models.blocks.sizes import to_3tuple
from asa.models.declared import Capabilities
from asa.models.registry import current_spec, network_record, record_spec, register_network
from asa.models.swvit.encoder import ENCODER_PREFIX, SWVIT_KEYS, EncoderSettings, SWViTEncoder, SWViTSettings
from asa.models.swvit.region_attention import patch_regions


SPE_FRAMES = ("brain", "crop")
INPUT_SKIPS = ("full", "none")


@dataclass
class SWViTUNetSettings(SWViTSettings):
    """The ``model`` section of the SW-ViT U-Net (``swvit_unetr``, the ``model=tiny|small|base`` presets):
    the encoder's options (:class:`SWViTSettings`) and its decoder's (once a ``segmenter`` section)."""

    feature_size: int = in_range(16, 1)  # decoder width (UNETR blocks)
    # full (paper) | none | a factor in [0, 1]: the decoder's full-resolution path from the raw image
    input_skip: Any = one_of("full", INPUT_SKIPS, number=(0, 1))
    # brain (codes of the brain frame, crops/windows on its patch lattice) | crop (one fixed table per crop, ablation)
    spe_frame: str = one_of("brain", SPE_FRAMES)


SW_VIT_GEOMETRY = ("img_size", "patch_size", "pos_mode", "lr_axis")  # what a spec records of an SW-ViT encoder


def recorded_pretraining(checkpoint: dict, source: str | Path) -> dict:
    """What the pretraining checkpoint or encoder export ``source`` (its content: ``checkpoint``)
    records about its network, from its network spec (``{"arch", "kwargs"}``): ``img_size`` (3 ints),
    ``patch_size``, ``pos_mode``, ``lr_axis``. Any pretraining or segmentation network of the SW-ViT family
    (registered with ``family="swvit"``) counts when its spec records the encoder's settings flat,
    as `EncoderSettings.spec` gives them (``asa_pretrain``, ``swvit_unetr``, ``rpl_pretrain``,
    ``jigsaw_pretrain`` and a network registered from outside that keeps to it). A file without a
    spec, or with a spec of another network (an SA-Swin file, a case network), raises ``ValueError``
    naming ``source``."""
    spec = checkpoint.get("network")
    if spec is None:
        raise ValueError(f"{source}: records no network spec ('network': {{'arch', 'kwargs'}}), so the pretraining "
                         "grid and position code are unknown; use a checkpoint or the encoder.pt written by asa-pretrain")
    spec = current_spec(spec)
    arch, kwargs = spec.get("arch"), spec.get("kwargs") or {}
    record = network_record(arch) if isinstance(arch, str) else None
    if (record is None or record.family != "swvit" or record.kind == "case"
            or not all(key in kwargs for key in SW_VIT_GEOMETRY)):
        raise ValueError(f"{source}: the pretrained file holds a {arch!r} network, not an ASA encoder (an SW-ViT "
                         "network whose spec records its encoder's settings flat, such as asa_pretrain, swvit_unetr, "
                         "rpl_pretrain or jigsaw_pretrain); an SA-Swin file initialises model=sa_swin")
    return {"img_size": to_3tuple(kwargs["img_size"], "img_size"), "patch_size": kwargs["patch_size"],
            "pos_mode": kwargs["pos_mode"], "lr_axis": kwargs["lr_axis"]}


SYMMETRY_KEYS = ("pos_mode", "lr_axis")  # model.* settings of the symmetric encoders; null: not set


class SWViTSegmenter(nn.Module):
    """UNETR-style U-Net on an SW-ViT encoder (docs/method.md §1.6), from its parts: the ``encoder``
    (:class:`SWViTEncoder`, over all tokens, its patch size 8 and depth at least 4) and the
    decoder's settings; four evenly spaced hidden states of the encoder form the skips.
    :class:`ASASegmenter` builds it from the flat settings of a network spec.

    Position codes (docs/method.md §1.2): with ``spe_frame="brain"`` each crop's codes are those of the
    encoder's reference grid (the pretraining grid) at the crop's patch offset, folded about the
    brain's mid-sagittal plane; ``forward`` takes the offsets. ``spe_frame="crop"`` (ablation)
    uses one fixed table per crop and ignores offsets: the table of the crop's own grid (the
    encoder's reference grid must be its own grid), folded about the crop's centre like SACA's
    mirror; ``reference_grid`` then only places the lattice that crops and windows start on
    (default: the crop's grid). In the brain frame ``reference_grid``, if given, must be the
    encoder's.

    With patch size 8 the token grid sits at 1/8 resolution. Skips: the input itself (full
    resolution), hidden state 1 upsampled ×4 (1/2), hidden state 2 upsampled ×2 (1/4); hidden
    state 3 and the final (normed) encoder output form the 1/8 bottleneck. Decoding goes up with
    MONAI's UNETR blocks (``feature_size`` channels at full resolution, ``norm_name`` norms) to
    full resolution.

    Encoder blocks with SACA attend from each window to its left–right mirror window, in the brain
    frame when ``offsets`` are given (tokens whose mirror lies outside the crop get no SACA term).

    x: [B, C, D, H, W] (D, H, W = img_size) -> logits [B, out_channels, D, H, W].

    ``input_skip`` sets the full-resolution skip from the raw image, the one path that bypasses
    the encoder: ``"full"`` (UNETR, the paper), ``"none"`` (zeros in its place, so the decoder sees
    the image only through the encoder), or a number α scaling its features (a fixed factor the
    decoder may learn to undo; use ``"none"`` for a clean ablation).

    With region attention (R-MSA blocks, see `SWViT`) forward also needs ``regions``
    [B, 1, D, H, W], an integer label per voxel; each patch takes its majority label.
    """

    key_to_encoder, key_to_stem, keys_to_in_proj = SWVIT_KEYS  # its transfer keys (asa.models.keys)

    def __init__(
        self,
        encoder: SWViTEncoder,
        *,
        out_channels: int,
        feature_size: int,
        norm_name: str,
        input_skip: str | float,
        spe_frame: str,
        reference_grid: int | tuple[int, int, int] | None = None,
    ) -> None:
        super().__init__()
        self.input_skip = _check_input_skip(input_skip)
        if spe_frame not in SPE_FRAMES:
            raise ValueError(f"spe_frame must be one of {SPE_FRAMES}, got {spe_frame!r}")
        if encoder.patch_size != 8:
            raise ValueError(f"ASASegmenter's decoder is laid out for patch_size 8, got {encoder.patch_size}")
        depth = len(encoder.blocks)
        if depth < 4:
            raise ValueError(f"ASASegmenter needs an encoder of at least 4 blocks, got depth {depth}")
        lattice = None if reference_grid is None else to_3tuple(reference_grid, "reference_grid")
        if spe_frame == "brain" and lattice not in (None, encoder.reference_grid):
            raise ValueError(f"spe_frame=brain: reference_grid {lattice} must be the encoder's "
                             f"{encoder.reference_grid}")
        if spe_frame == "crop" and encoder.reference_grid != encoder.grid:
            raise ValueError(f"spe_frame=crop: the encoder's reference grid {encoder.reference_grid} must be its own "
                             f"grid {encoder.grid} (one table per crop)")
        self.encoder = encoder
        # the geometry as the encoder checked and resolved it (img_size and reference_grid as 3-tuples)
        self.img_size, self.grid = encoder.img_size, encoder.grid
        self.reference_grid = lattice or encoder.reference_grid
        self.in_channels, self.embed_dim, self.patch_size = (encoder.patch_embed.in_channels, encoder.embed_dim,
                                                             encoder.patch_size)
        self.pos_mode, self.lr_axis, self.spe_frame = encoder.pos_mode, encoder.lr_axis, spe_frame
        self.hidden_indices = tuple((k + 1) * depth // 4 - 1 for k in range(3))  # e.g. 2, 5, 8 of 12
        self.num_encoder_layers = depth + 1  # patch embedding = layer 0, block i = i + 1, final norm = depth + 1
        self._zero_encoder = False
        self.capabilities = Capabilities(regions=encoder.uses_regions, offsets=spe_frame == "brain",
                                         patch_size=self.patch_size, reference_grid=self.reference_grid,
                                         zero_encoder=True, symmetry=encoder.symmetric_parts)
        f, embed_dim, in_channels = feature_size, encoder.embed_dim, self.in_channels
        conv = dict(spatial_dims=3, kernel_size=3, norm_name=norm_name)
        self.feature_size = f
        self.skip0 = (None if self.input_skip == "none" else
                      UnetrBasicBlock(in_channels=in_channels, out_channels=f, stride=1, res_block=True, **conv))
        self.skip1 = UnetrPrUpBlock(
            in_channels=embed_dim, out_channels=2 * f, num_layer=1, stride=1, upsample_kernel_size=2,
            conv_block=True, res_block=True, **conv,
        )
        self.skip2 = UnetrPrUpBlock(
            in_channels=embed_dim, out_channels=4 * f, num_layer=0, stride=1, upsample_kernel_size=2,
            conv_block=True, res_block=True, **conv,
        )
        self.bottleneck = UnetrBasicBlock(
            in_channels=2 * embed_dim, out_channels=8 * f, stride=1, res_block=True, **conv
        )
        self.up2 = UnetrUpBlock(in_channels=8 * f, out_channels=4 * f, upsample_kernel_size=2, res_block=True, **conv)
        self.up1 = UnetrUpBlock(in_channels=4 * f, out_channels=2 * f, upsample_kernel_size=2, res_block=True, **conv)
        self.up0 = UnetrUpBlock(in_channels=2 * f, out_channels=f, upsample_kernel_size=2, res_block=True, **conv)
        self.head = UnetOutBlock(spatial_dims=3, in_channels=f, out_channels=out_channels)

    def _to_volume(self, tokens: torch.Tensor) -> torch.Tensor:
        """[B, N, C] -> [B, C, G0, G1, G2]."""
        b = tokens.shape[0]
        return tokens.transpose(1, 2).reshape(b, self.embed_dim, *self.grid)

    def position_codes(self, offsets: torch.Tensor | None) -> torch.Tensor:
        """[N, C] (crop frame, or no offsets: offset 0) or [B, N, C] (brain frame, offsets [B, 3])."""
        return self.encoder.position_codes(None if self.spe_frame == "crop" else offsets)

    def forward(
        self, x: torch.Tensor, offsets: torch.Tensor | None = None, *, regions: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x: [B, C, D, H, W]; offsets: [B, 3] crop origins in patches from the reference grid's origin
        (brain frame), or None (offset 0: the crop is the reference grid); regions: [B, 1, D, H, W]
        integer labels (region attention) -> logits [B, K, D, H, W]."""
        if tuple(x.shape[1:]) != (self.in_channels, *self.img_size):
            raise ValueError(
                f"ASASegmenter expects input [B, {self.in_channels}, {', '.join(map(str, self.img_size))}], "
                f"got {list(x.shape)}"
            )
        if offsets is not None and offsets.shape != (x.shape[0], 3):
            raise ValueError(f"ASASegmenter offsets must be [B, 3] = [{x.shape[0]}, 3], got {list(offsets.shape)}")
        patch_ids = None
        if self.capabilities.regions:
            if regions is None:
                raise ValueError("this ASASegmenter has region attention: forward needs regions [B, 1, D, H, W]")
            patch_ids = patch_regions(regions, self.encoder.patch_size)  # [B, N]
        out, hidden = self.encoder.encode(x, offsets=None if self.spe_frame == "crop" else offsets,
                                          hidden_indices=self.hidden_indices,
                                          patch_ids=patch_ids)
        if self._zero_encoder:  # encoder-reliance diagnostic: the decoder gets no encoder information
            out, hidden = torch.zeros_like(out), [torch.zeros_like(h) for h in hidden]
        z1, z2, z3 = (self._to_volume(h) for h in hidden)
        z4 = self._to_volume(out)
        d = self.bottleneck(torch.cat([z3, z4], dim=1))  # 1/8
        d = self.up2(d, self.skip2(z2))  # 1/4
        d = self.up1(d, self.skip1(z1))  # 1/2
        d = self.up0(d, self._input_skip(x))  # 1/1
        return self.head(d)

    def no_weight_decay(self) -> set[str]:
        """Parameters exempt from weight decay besides norms and biases: the relative position biases."""
        return {name for name, _ in self.named_parameters() if name.endswith("rel_pos_bias")}

    def check_grid(self, recorded: dict, source: str | Path, *, allow_grid_change: bool = False) -> None:
        """Raise unless the pretraining grid recorded in ``recorded`` (see `recorded_pretraining`) is
        this network's grid (``allow_grid_change`` turns that error into a warning) and its reference
        grid (always an error: the brain frame's reference grid is the pretraining grid, docs/method.md §1.2)."""
        img, patch = recorded.get("img_size"), recorded.get("patch_size") or self.patch_size
        if img is None:
            return
        grid = patch_grid(img, int(patch))
        name = lambda g: "x".join(map(str, g))  # noqa: E731
        if grid != self.grid:
            message = (f"{source} was pretrained on a {name(grid)} patch grid ({name(img)} voxels), this segmenter "
                       f"has a {name(self.grid)} grid ({name(self.img_size)} voxels): the position codes and the 1D "
                       "windows would mean other places. Fine-tune with the pretraining crop size (data.crop) "
                       "or set segmenter.allow_grid_change=true")
            if not allow_grid_change:
                raise ValueError(message)
            warnings.warn(message.split(": the position")[0] + " (segmenter.allow_grid_change=true)", stacklevel=2)
        if grid != self.reference_grid:
            raise ValueError(
                f"{source} was pretrained on a {name(grid)} patch grid ({name(img)} voxels), but "
                f"segmenter.reference_grid is {name(self.reference_grid)}: the brain frame's reference grid is the "
                "pretraining grid, and on another one every position code would change. Leave "
                f"segmenter.reference_grid null (it follows the pretrained file) or set it to {list(grid)}")

    def _input_skip(self, x: torch.Tensor) -> torch.Tensor:
        """Full-resolution skip features [B, f, D, H, W] from the raw image (per ``input_skip``)."""
        if self.skip0 is None:
            return x.new_zeros(x.shape[0], self.feature_size, *x.shape[2:])
        skip = self.skip0(x)
        return skip if self.input_skip == "full" else skip * self.input_skip

    @contextlib.contextmanager
    def zero_encoder_states(self) -> Iterator[SWViTSegmenter]:
        """Inside this context every encoder hidden state the decoder receives (the three skips and
        the final output) is replaced by zeros: what is left is what the decoder does without the
        transformer (the encoder-reliance diagnostic)."""
        previous, self._zero_encoder = self._zero_encoder, True
        try:
            yield self
        finally:
            self._zero_encoder = previous

    def encoder_layer_id(self, name: str) -> int | None:
        """Depth of a parameter for layer-wise lr decay: 0 patch embedding, i + 1 encoder block i,
        ``num_encoder_layers`` the final encoder norm, None outside the encoder (the decoder)."""
        if name.startswith(ENCODER_PREFIX + "patch_embed."):
            return 0
        if name.startswith(ENCODER_PREFIX + "blocks."):
            return int(name.split(".")[2]) + 1
        if name.startswith(ENCODER_PREFIX):
            return self.num_encoder_layers
        return None

    def load_pretrained(
        self, path: str | Path, *, checkpoint: dict | None = None, verbose: bool = True,
        allow_grid_change: bool = False,
    ) -> LoadReport:
        """Initialise the encoder module from a pretraining checkpoint or an encoder export.

        Accepts ``{"model": ASA state dict}`` (pretraining checkpoint, DDP ``module.`` prefixes
        allowed) or ``{"encoder": {...}}`` (encoder export, ``encoder.pt`` or ``encoder.safetensors``,
        `asa.models.load_weights`); ``checkpoint`` is the file's content
        when the caller has read it already. A 1-channel stem is adapted to this network's k
        channels by repeating its weights and dividing by k, which keeps the response to a volume
        replicated over the channels. Any other shape mismatch raises ``ValueError``, and so does a
        recorded pretraining grid other than this network's, unless ``allow_grid_change`` (warning),
        or other than its ``reference_grid`` (always).
        """
        path = Path(path)
        if checkpoint is None:
            checkpoint = load_weights(path)
        blob = checkpoint
        if not ({"model", "encoder"} & blob.keys()):
            raise ValueError(f"{path} holds neither a 'model' nor an 'encoder' state dict")
        self.check_grid(recorded_pretraining(blob, path), path, allow_grid_change=allow_grid_change)
        source = blob["encoder"] if "encoder" in blob else blob["model"]
        update, report = match_encoder_weights(self.encoder.state_dict(prefix=ENCODER_PREFIX), source,
                                               (ENCODER_PREFIX,), ENCODER_PREFIX + "patch_embed.proj.weight", path)
        self.encoder.load_state_dict({k.removeprefix(ENCODER_PREFIX): v for k, v in update.items()}, strict=False)
        if verbose:
            print(f"pretrained encoder from {path}:\n{report}")
        return report



@register_network("swvit_unetr", kind="segmentation",
                  settings=SWViTUNetSettings, family="swvit")
class ASASegmenter(SWViTSegmenter):
    """The segmentation network on the SW-ViT encoder (:class:`SWViTSegmenter`), built from the flat
    settings of its network spec (``swvit_unetr``, named ``asa`` before 2026-11-23): ``ASASegmenter(img_size=128, in_channels=4, out_channels=3)``.

    ``**encoder`` are the encoder's settings (:class:`EncoderSettings`); ``dropout`` applies in its
    blocks. ``reference_grid`` (default: the crop's own grid, the pretraining grid) is the brain
    frame's reference grid with ``spe_frame="brain"``, and only the crop lattice's with ``crop``.
    ``saca`` as in :class:`ASA`: with ``encoder`` or ``all`` every encoder block adds windowed
    symmetry-aware cross-attention; ``decoder`` concerns only the pretraining decoder, so the
    segmenter has none.
    """

    def __init__(
        self,
        *,
        out_channels: int = 2,
        feature_size: int = 16,
        norm_name: str = "instance",
        dropout: float = 0.0,
        spe_frame: str = "brain",
        reference_grid: int | tuple[int, int, int] | None = None,
        input_skip: str | float = "full",
        saca: str = "none",
        **encoder: Any,
    ) -> None:
        settings = EncoderSettings.of("ASASegmenter", encoder)
        if saca not in SACA_PLACES:
            raise ValueError(f"saca must be one of {SACA_PLACES}, got {saca!r}")
        net_encoder = settings.encoder(saca=saca in ("encoder", "all"), dropout=dropout,
                                       reference_grid=reference_grid if spe_frame == "brain" else None)
        super().__init__(net_encoder, out_channels=out_channels, feature_size=feature_size, norm_name=norm_name,
                         input_skip=input_skip, spe_frame=spe_frame, reference_grid=reference_grid)
        record_spec(self, "swvit_unetr", {
            **settings.spec(), "out_channels": out_channels, "feature_size": feature_size, "norm_name": norm_name,
            "dropout": dropout, "spe_frame": spe_frame, "reference_grid": list(self.reference_grid),
            "input_skip": self.input_skip, "saca": saca})



def _check_input_skip(value: str | float) -> str | float:
    """``"full"``, ``"none"`` or a number in [0, 1] (strings of numbers accepted, as from the command line)."""
    if isinstance(value, str) and value not in INPUT_SKIPS:
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"model.input_skip={value!r}: expected one of {INPUT_SKIPS} or a number in [0, 1]") from None
    if not isinstance(value, str):
        if isinstance(value, bool) or not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"model.input_skip={value!r}: expected one of {INPUT_SKIPS} or a number in [0, 1]")
        value = float(value)
    return value
