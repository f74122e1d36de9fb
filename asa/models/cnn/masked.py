"""Masked-convolution pretraining of the residual-encoder U-Net (``resenc_pretrain``; docs/method.md §1.8).

SparK's recipe (ICLR 2023; nnssl's Spark3D) in dense form, which ConvNeXt-V2 shows equals sparse
convolution, so no sparse-convolution library: a binary mask on blocks of ``mask_block`` voxels (the
methods' default 16, nnssl's; the builder's own default the encoder's total stride), exactly
round(ratio·n) blocks masked per sample; the input zeroed in masked blocks; every encoder convolution's
output multiplied by the mask at its stage's resolution (stages coarser than the block stay dense);
instance-norm mean and variance over visible voxels only. Before decoding, each masked skip's masked
positions take a learned mask token of that stage, then a "densify" step (``densify``: ``spark``, nnssl's
visible-only norm before the tokens and a 3³ convolution after, the methods' default; ``asa``, a norm and a
1³ convolution after the tokens); the U-Net decoder reconstructs
the input and the loss is the squared error over masked voxels: uniform (MAE) or ASA's attentive weight
per ``weight_patch``³ unit (docs/method.md §1.5, the orientation histograms over each unit's voxels,
raised to ``weight_power``; `asa.models.PatchReconstruction`).

Invariant (tested): changing the input inside masked blocks changes no encoder output at a visible position.

ASA's symmetry, beyond the paper (each an option): ``mirror_visible`` = q (None: uniform masking, where a
masked block's mirror is visible by chance about as often as any block is) keeps, for a fraction q of the
masked blocks, the left–right mirror block visible (at ratio r at most (1 − r)/r of them can be, since each
needs its own visible mirror), so the contralateral side is evidence; ``coord_channel`` appends the
mirror-symmetric coordinate channel (`asa.models.cnn.resenc.coordinate_channel`).

The masked modules are the package's own ``Conv3d`` and ``InstanceNorm3d`` with a mask-reading forward
(their class swapped in place), so the state-dict keys stay ``encoder.stem.*`` / ``encoder.stages.*`` and
the encoder export loads into `asa.models.cnn.resenc.ResEncUNet` and nnU-Net's network unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from asa.choices import in_range, one_of
from asa.losses.informativeness import patch_informativeness
from asa.losses.reconstruction import AttentiveReconstructionLoss
from asa.models.blocks.patch import patchify
from asa.models.blocks.saca import mirror_index
from asa.models.cnn.resenc import ResEncOptions, ResEncPlan, ResEncUNet, resolve_plan
from asa.models.declared import Capabilities
from asa.models.keys import encoder_keys
from asa.models.twin import MaskedOutput
from asa.models.registry import record_spec, register_network

__all__ = ["MaskedConv3d", "MaskedInstanceNorm3d", "ResEncMaskedAutoencoder", "ResEncMAEOutput", "VisibleMask",
           "max_mirror_visible"]

LOSS_WEIGHTINGS = ("uniform", "attentive")
DENSIFY_FORMS = ("asa", "spark")


class VisibleMask:
    """The visible-voxel mask of the current forward pass, shared by every masked module of one network:
    ``blocks`` [B, 1, g, g, g] (1 = visible) on the block grid, or None (a dense pass); `at` gives it at a
    stage's resolution (nearest upsampling: every stage's voxel lies inside one block), once per size, and
    None at a resolution coarser than the block grid (such a stage runs dense, as nnssl's)."""

    def __init__(self) -> None:
        self.blocks: torch.Tensor | None = None
        self._cache: dict[tuple, torch.Tensor] = {}

    def set(self, blocks: torch.Tensor | None) -> None:
        self.blocks, self._cache = blocks, {}

    def at(self, size: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor | None:
        """The mask [B, 1, *size] in ``dtype``; None in a dense pass or below the block grid's resolution."""
        if self.blocks is None or any(s < g for s, g in zip(size, self.blocks.shape[2:])):
            return None
        key = (*size, dtype)
        if key not in self._cache:
            self._cache[key] = F.interpolate(self.blocks, size=size, mode="nearest").to(dtype)
        return self._cache[key]


class _MaskBeforeNorm(torch.autograd.Function):
    """out·m in place for a convolution whose output only a visible-only norm reads: that norm's input gradient is
    zero at masked voxels already, so the product's backward (grad·m) would return its gradient as it is: skipped
    (a read of the gradient and of the mask and a write per convolution)."""

    @staticmethod
    def forward(ctx, out: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        ctx.mark_dirty(out)
        return out.mul_(m)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


class MaskedConv3d(nn.Conv3d):
    """A ``Conv3d`` whose output is multiplied by the visible mask at its resolution (`VisibleMask`). Where its
    output's only reader is a `MaskedInstanceNorm3d` (``reader``, set by `mask_encoder`; not a submodule) whose input
    gradient is zero at masked voxels (``zero_gradient_at_masked``), the product's backward is skipped
    (`_MaskBeforeNorm`)."""

    visible: VisibleMask
    reader: nn.Module | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        m = self.visible.at(tuple(out.shape[2:]), out.dtype)
        if m is None:
            return out
        if getattr(self.reader, "zero_gradient_at_masked", False):
            return _MaskBeforeNorm.apply(out, m)
        return out.mul_(m)  # in place: conv backward needs no output


_DIMS = (2, 3, 4)


def sum_of_squares(x: torch.Tensor) -> torch.Tensor:
    """Σ x² over the spatial dimensions [B, C, 1, 1, 1], fp32: the squared 2-norm, one reduction that squares and
    adds in fp32 (on CUDA it reads bf16/fp16 as they are; ``x.square().sum()`` writes the squares and reads them
    again, each rounded to x's dtype first)."""
    return torch.linalg.vector_norm(x, 2, dim=_DIMS, keepdim=True, dtype=torch.float32).square()


class _VisibleNorm(torch.autograd.Function):
    """The visible-only instance norm, y = ((x − μ)·r·γ + β)·m with μ, r over the visible voxels, and its gradient
    written out (a batch norm's over the visible voxels): autograd's, through the sums, the square and the
    scale-and-shift, moves the activation about ten more times per norm (benchmarks.resenc --traffic)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, m: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                eps: float) -> torch.Tensor:
        # x is a masked convolution's output, zero at masked voxels: its plain sums are the visible voxels' sums,
        # accumulated in fp32 (`sum_of_squares`); no fp32 copy of the activation is kept for the backward pass.
        count = m.sum(dim=_DIMS, keepdim=True, dtype=torch.float32).clamp_min(1.0)
        mean = x.sum(dim=_DIMS, keepdim=True, dtype=torch.float32) / count
        var = (sum_of_squares(x) / count - mean * mean).clamp_min(0.0)
        rstd = torch.rsqrt(var + eps)  # [B, C, 1, 1, 1]
        scale = rstd if weight is None else rstd * weight.view(1, -1, 1, 1, 1)
        shift = -mean * scale + (0.0 if bias is None else bias.view(1, -1, 1, 1, 1))
        ctx.save_for_backward(x, m, mean, rstd, count, weight)
        ctx.has_bias = bias is not None
        return torch.addcmul(shift.to(x.dtype), x, scale.to(x.dtype)).mul_(m)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, m, mean, rstd, count, weight = ctx.saved_tensors
        g = grad * m  # the output is zero at masked voxels: so is its gradient
        sum_g = g.sum(dim=_DIMS, keepdim=True, dtype=torch.float32)
        sum_gxhat = rstd * ((g * x).sum(dim=_DIMS, keepdim=True, dtype=torch.float32) - mean * sum_g)  # Σ g·x̂
        a = rstd if weight is None else rstd * weight.view(1, -1, 1, 1, 1).float()  # ∂y/∂x at fixed statistics
        # dx = a·(g − Σg/n − x̂·Σ(g·x̂)/n) on visible voxels = a·g + b·x + c, 0 at masked voxels (where autograd's
        # gradient holds the mean's share, which the convolution's mask before the norm zeroes: no weight's
        # gradient differs)
        b = -a * rstd * sum_gxhat / count
        c = -a * sum_g / count - b * mean
        dx = (g * a.to(g.dtype)).addcmul_(x, b.to(g.dtype)).addcmul_(m, c.to(g.dtype))
        dweight = None if weight is None else sum_gxhat.sum(0).view(-1).to(weight.dtype)
        dbias = sum_g.sum(0).view(-1).to(weight.dtype if weight is not None else sum_g.dtype) if ctx.has_bias else None
        return dx, None, dweight, dbias, None


class MaskedInstanceNorm3d(nn.InstanceNorm3d):
    """An ``InstanceNorm3d`` whose mean and variance are over visible voxels only, its output zero elsewhere.
    Its input must be zero at masked voxels (in the encoder every norm follows a `MaskedConv3d`); its input gradient
    is zero there too (``zero_gradient_at_masked``: a subclass with another gradient says otherwise)."""

    visible: VisibleMask
    zero_gradient_at_masked = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.visible.at(tuple(x.shape[2:]), x.dtype)  # [B, 1, D, H, W]
        if m is None:
            return super().forward(x)
        return _VisibleNorm.apply(x, m, self.weight if self.affine else None, self.bias if self.affine else None,
                                  self.eps)


def mask_encoder(encoder: nn.Module, visible: VisibleMask) -> None:
    """Swap every ``Conv3d`` / ``InstanceNorm3d`` of ``encoder`` for its masked form in place (same parameters); a
    convolution that a sequence hands straight to a norm (dropout between them aside: nnU-Net's conv, dropout, norm,
    nonlinearity) gets that norm as its ``reader``."""
    for module in encoder.modules():
        if type(module) is nn.Conv3d:
            module.__class__ = MaskedConv3d
        elif type(module) is nn.InstanceNorm3d:
            module.__class__ = MaskedInstanceNorm3d
        else:
            continue
        module.visible = visible
    for sequence in encoder.modules():
        if isinstance(sequence, nn.Sequential):
            layers = [layer for layer in sequence if not isinstance(layer, nn.Dropout3d | nn.Dropout)]
            for conv, norm in zip(layers, layers[1:]):
                if isinstance(conv, MaskedConv3d) and isinstance(norm, MaskedInstanceNorm3d):
                    conv.__dict__["reader"] = norm  # a plain attribute: no submodule, no state-dict key


def max_mirror_visible(num_blocks: int, num_masked: int) -> float:
    """The largest fraction of masked blocks that can keep a visible mirror: each needs its own visible block."""
    return min(1.0, (num_blocks - num_masked) / num_masked)


@dataclass
class ResEncMAEOutput(MaskedOutput):
    """The masked convolution's output (`MaskedOutput`): pred [B, C, D, H, W] the reconstruction; mask [B, n]
    (1 = masked block, raster order); weights [B, n_w] each weight unit's loss weight (0 on visible units; the
    units are the blocks unless ``weight_patch`` is finer); weight_units [B, n_w] (1 = a masked unit)."""

    weight_units: torch.Tensor

    @property
    def units(self) -> torch.Tensor:
        return self.weight_units


class ResEncMaskedAutoencoder(ResEncUNet):
    """The residual-encoder U-Net as a masked autoencoder (see the module): the encoder and decoder are
    `ResEncUNet`'s (decoder output = the image channels), plus ``mask_tokens`` and ``densify`` per stage.

    forward(x [B, C, D, H, W]) -> `ResEncMAEOutput`.
    """

    def __init__(self, plan: ResEncPlan, *, in_channels: int, img_size: tuple[int, int, int], mask_ratio: float,
                 loss_weighting: str, bins: int, normalize: str, mirror_visible: float | None, coord_channel: bool,
                 lr_axis: int, mask_block: int | None = None, densify: str = "asa", weight_patch: int | None = None,
                 weight_power: float = 1.0) -> None:
        super().__init__(plan, in_channels=in_channels, out_channels=in_channels, img_size=img_size,
                         deep_supervision=False, coord_channel=coord_channel, lr_axis=lr_axis)
        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must lie in (0, 1), got {mask_ratio}")
        if loss_weighting not in LOSS_WEIGHTINGS:
            raise ValueError(f"loss_weighting must be one of {LOSS_WEIGHTINGS} for resenc, got {loss_weighting!r}")
        self.block = plan.total_stride if mask_block is None else int(mask_block)
        if self.block < 1 or self.block & (self.block - 1) or any(e % self.block for e in self.img_size):
            raise ValueError(f"mask_block={mask_block}: a power of two that divides the crop {self.img_size[0]} "
                             f"(null: the total stride {plan.total_stride})")
        if densify not in DENSIFY_FORMS:
            raise ValueError(f"densify must be one of {DENSIFY_FORMS}, got {densify!r}")
        self.weight_patch = self.block if weight_patch is None else int(weight_patch)
        if self.weight_patch < 1 or self.block % self.weight_patch:
            raise ValueError(f"weight_patch={weight_patch}: the attentive weight's unit must divide the mask block "
                             f"{self.block} (null: the mask block itself)")
        if not weight_power > 0:
            raise ValueError(f"weight_power must be > 0 (1: the paper's weights), got {weight_power}")
        self.densify_form, self.weight_power = densify, float(weight_power)
        self.block_grid = tuple(s // self.block for s in self.img_size)
        self.num_blocks = self.block_grid[0] * self.block_grid[1] * self.block_grid[2]
        self.num_masked = round(mask_ratio * self.num_blocks)
        if not 0 < self.num_masked < self.num_blocks:
            raise ValueError(f"mask_ratio {mask_ratio} of {self.num_blocks} blocks leaves no visible or no masked block")
        self.mirror_visible = None if mirror_visible is None else float(mirror_visible)
        if self.mirror_visible is not None and not 0.0 <= self.mirror_visible <= 1.0:
            raise ValueError(f"mirror_visible must lie in [0, 1] (or None: uniform masking), got {mirror_visible}")
        self.one_sided = 0
        if self.mirror_visible is not None:
            if self.block_grid[lr_axis] % 2:
                raise ValueError(f"mirror_visible: the block grid {self.block_grid} must be even along lr_axis {lr_axis}"
                                 " (blocks pair with their mirrors): take a crop with an even number of blocks")
            most = max_mirror_visible(self.num_blocks, self.num_masked)
            if self.mirror_visible > most + 1e-9:
                raise ValueError(f"mirror_visible={mirror_visible}: at mask_ratio {mask_ratio} at most {most:.3f} of the "
                                 f"masked blocks can keep a visible mirror ({self.num_blocks - self.num_masked} visible "
                                 f"of {self.num_blocks})")
            k = round(self.mirror_visible * self.num_masked)
            k += (self.num_masked - k) % 2  # the rest are masked as whole pairs
            self.one_sided = k if k <= self.num_blocks - self.num_masked else k - 2
        self.register_buffer("block_mirror", mirror_index(self.block_grid, lr_axis), persistent=False)
        self.visible = VisibleMask()
        mask_encoder(self.encoder, self.visible)
        # one token per stage at least as fine as the block grid (the prefix of the stages); coarser stages run dense
        stride, masked_stages = 1, 0
        for s in plan.strides:
            stride *= s
            masked_stages += stride <= self.block
        self.mask_tokens = nn.ParameterList([nn.Parameter(torch.zeros(1, c, 1, 1, 1))
                                             for c in plan.features[:masked_stages]])
        spark = densify == "spark"
        for token in self.mask_tokens:  # SparK / nnssl truncate at ±0.02, torch's default at ±2
            nn.init.trunc_normal_(token, std=0.02, **({"a": -0.02, "b": 0.02} if spark else {}))
        self.densify = nn.ModuleList([self._densify_stage(i, c, spark) for i, c in enumerate(plan.features)])
        self.criterion = AttentiveReconstructionLoss(loss_weighting)
        self.bins, self.normalize = bins, normalize
        self.loss_weighting = loss_weighting
        self.capabilities = Capabilities()

    def _densify_stage(self, stage: int, channels: int, spark: bool) -> nn.Sequential:
        """``asa``: a dense instance norm and a 1³ convolution after the mask tokens; ``spark`` (SparK, nnssl's
        Spark3D): a visible-only norm before them, then a 3³ convolution (none at full resolution)."""
        if not spark:
            return nn.Sequential(nn.InstanceNorm3d(channels, eps=1e-5, affine=True), nn.Conv3d(channels, channels, 1))
        norm = MaskedInstanceNorm3d(channels, eps=1e-5, affine=True)
        norm.visible = self.visible
        proj = nn.Identity() if stage == 0 else nn.Conv3d(channels, channels, 3, padding=1)
        return nn.Sequential(norm, proj)

    def weight_units(self, mask: torch.Tensor) -> torch.Tensor:
        """mask [B, n] on the block grid (1 = masked) -> [B, n_w] on the weight grid (raster order; a unit is
        masked when the block holding it is)."""
        f = self.block // self.weight_patch
        if f == 1:
            return mask
        grid = mask.view(mask.shape[0], *self.block_grid)
        for axis in (1, 2, 3):
            grid = grid.repeat_interleave(f, dim=axis)
        return grid.reshape(mask.shape[0], -1)

    # --- algorithm ----------------------------------------------------------------------
    def random_masking(self, batch: int, device: torch.device) -> torch.Tensor:
        """mask [B, n] float (1 = masked), exactly `num_masked` blocks per sample: uniformly at random, or with
        `mirror_visible` = q as `one_sided` ≈ q·`num_masked` masked blocks whose mirror stays visible plus whole
        masked pairs (q = 0: every masked block's mirror masked too)."""
        n = self.num_blocks
        if self.mirror_visible is None:
            order = torch.rand(batch, n, device=device).argsort(dim=1)
            return torch.zeros(batch, n, device=device).scatter_(1, order[:, : self.num_masked], 1.0)
        mirror = self.block_mirror.to(device)
        reps = (mirror > torch.arange(n, device=device)).nonzero().flatten()  # one block of each pair, [n/2]
        order = reps[torch.rand(batch, reps.numel(), device=device).argsort(dim=1)]  # pairs in random order
        single, pairs = order[:, : self.one_sided], order[:, self.one_sided: self.one_sided
                                                          + (self.num_masked - self.one_sided) // 2]
        side = torch.rand(single.shape, device=device) < 0.5
        single = torch.where(side, mirror[single], single)  # either side of the pair is the masked one
        mask = torch.zeros(batch, n, device=device)
        for ids in (single, pairs, mirror[pairs]):
            mask.scatter_(1, ids, 1.0)
        return mask

    def block_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """mask [B, n] (1 = masked) -> visible [B, 1, g0, g1, g2] (1 = visible) on the block grid (raster order)."""
        return (1.0 - mask).view(mask.shape[0], 1, *self.block_grid)

    def forward_encoder(self, x: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        """The masked encoder's skips [B, C_s, *S_s], stage by stage, zero at masked positions."""
        self.visible.set(self.block_mask(mask))
        try:
            x = self.with_coordinates(x)
            # where, not a product: a non-finite voxel inside a masked block must not leak (0 · inf)
            return self.encoder(torch.where(self.visible.at(tuple(x.shape[2:]), torch.bool), x, 0.0))
        finally:
            self.visible.set(None)

    def forward_decoder(self, skips: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        """Mask tokens into each skip's masked positions, densify, decode -> the reconstruction [B, C, D, H, W]."""
        self.visible.set(self.block_mask(mask))
        try:
            dense = []
            for stage, (skip, densify) in enumerate(zip(skips, self.densify)):
                m = self.visible.at(tuple(skip.shape[2:]), skip.dtype)  # None: a stage coarser than the mask, dense
                token = self.mask_tokens[stage] if m is not None else None
                if self.densify_form == "spark":
                    norm, proj = densify
                    filled = norm(skip)  # statistics of the visible voxels
                    if m is not None:
                        filled = torch.where(m.bool(), filled, token.to(filled.dtype))
                    dense.append(proj(filled))
                else:
                    dense.append(densify(skip if m is None else skip * m + token.to(skip.dtype) * (1 - m)))
        finally:
            self.visible.set(None)
        self.decoder.deep_supervision = False
        return self.decoder(dense)

    def forward_loss(self, x: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """Squared error over the masked units (sub-blocks of edge ``weight_patch``), uniform or attentive
        (ASA's Ḡ of each unit, raised to ``weight_power``) -> (loss, weights [B, n_w])."""
        informativeness = None
        if self.loss_weighting == "attentive":
            informativeness = patch_informativeness(x, self.weight_patch, self.bins, self.normalize)
            if self.weight_power != 1.0:
                informativeness = informativeness.pow(self.weight_power)
        return self.criterion(patchify(pred, self.weight_patch), patchify(x, self.weight_patch),
                              self.weight_units(mask), informativeness)

    def forward(self, x: torch.Tensor, offsets: torch.Tensor | None = None) -> ResEncMAEOutput:  # type: ignore[override]
        if tuple(x.shape[1:]) != (self.in_channels, *self.img_size):
            raise ValueError(f"resenc_pretrain expects input [B, {self.in_channels}, "
                             f"{', '.join(map(str, self.img_size))}], got {list(x.shape)}")
        mask = self.random_masking(x.shape[0], x.device)
        pred = self.forward_decoder(self.forward_encoder(x, mask), mask)
        loss, weights = self.forward_loss(x, pred.float(), mask)
        return ResEncMAEOutput(loss=loss, pred=pred, mask=mask, weights=weights, weight_units=self.weight_units(mask))

    @staticmethod
    def check_options(*, loss_weighting: str = "attentive", mirror_visible: float | None = None, **_: Any) -> None:
        """What the masked network refuses before it is built, as ``<option>=<value>: why`` (the method names
        its section)."""
        if loss_weighting not in LOSS_WEIGHTINGS:
            raise ValueError(f"loss_weighting={loss_weighting}: model=resenc takes {' or '.join(LOSS_WEIGHTINGS)}")
        if mirror_visible is not None and not 0.0 <= mirror_visible <= 1.0:
            raise ValueError(f"mirror_visible={mirror_visible}: a fraction in [0, 1], or null (uniform masking)")

    def no_weight_decay(self) -> set[str]:
        """The mask tokens carry no weight decay (norms and biases never do)."""
        return {name for name, _ in self.named_parameters() if name.startswith("mask_tokens")}

    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights a `ResEncUNet` takes over: stem and stages, under the keys the network declares
        (dynamic-network-architectures' ``key_to_encoder``, ``key_to_stem``)."""
        return encoder_keys(self).state(self)


@dataclass
class _Arch:
    arch: str = "resenc"  # first in the section, as a fine-tuning section's


@dataclass
class ResEncPretrainModel(ResEncOptions, _Arch):
    """``model=resenc`` of asa-pretrain: the residual-encoder U-Net's options (`asa.models.cnn.resenc.ResEncOptions`,
    as in fine-tuning) with its masking and ASA's mirror masking (the loss is the method's: ``method=mae|asa``)."""

    # fraction of masked blocks whose mirror block stays visible; null: uniform masking
    mirror_visible: Optional[float] = in_range(None, 0.0, 1.0)
    # the mask block's edge (nnssl's 16; half the crop when the crop is under 32); stages coarser than its grid
    # run dense; null: the encoder's total stride (asa's form before nnssl's)
    mask_block: Optional[int] = 16
    densify: str = one_of("spark", DENSIFY_FORMS)  # spark: SparK / nnssl's Spark3D | asa: the earlier form
    weight_patch: Optional[int] = 8  # the attentive weight's unit (the paper's 8³ patch); null: one per mask block
    weight_power: float = 1.0  # p ∝ Ḡ^γ (1: the paper's); > 1 sharpens the attentive weights


@register_network("resenc_pretrain", kind="pretraining", family="resenc")
def resenc_pretrain(
    *,
    img_size: Any,
    in_channels: int = 1,
    size: str = "M",
    mask_ratio: float = 0.75,
    loss_weighting: str = "attentive",
    bins: int = 8,
    normalize: str = "l2",
    mirror_visible: float | None = None,
    coord_channel: bool = False,
    lr_axis: int = 0,
    features: list[int] | None = None,
    strides: list[int] | None = None,
    blocks: list[int] | None = None,
    decoder_convs: list[int] | None = None,
    mask_block: int | None = None,
    densify: str = "asa",
    weight_patch: int | None = None,
    weight_power: float = 1.0,
) -> ResEncMaskedAutoencoder:
    """The masked residual-encoder U-Net for crops of ``img_size`` (see the module).

    Args:
        img_size: the crop, one edge or three equal ones.
        in_channels: image channels (reconstructed; the coordinate channel comes on top).
        size: ``tiny`` | ``M`` | ``L`` (`asa.models.cnn.resenc.RESENC_SIZES`).
        mask_ratio: fraction of blocks masked (exactly round(ratio·n) per sample).
        loss_weighting: ``uniform`` (MAE) | ``attentive`` (ASA's per-block weight).
        bins, normalize: the attentive weight's histogram bins and normalisation (docs/method.md §1.5).
        mirror_visible: fraction of masked blocks whose mirror stays visible (None: uniform masking).
        coord_channel: append the mirror-symmetric coordinate channel.
        lr_axis: the left–right axis.
        features, strides, blocks, decoder_convs: an explicit plan (as a spec records it); None: planned.
        mask_block: the mask block's edge, a power of two dividing the crop (nnssl: 16), at most half the crop
            (a larger one is taken as half); stages coarser than the block grid run dense. None: the encoder's
            total stride (the form before this option).
        densify: ``spark`` (SparK / nnssl: visible-only norm, mask token, 3³ convolution, none at full
            resolution) | ``asa`` (mask token, dense norm, 1³ convolution: the form before this option).
        weight_patch: the edge of the units the loss weights (the paper's 8: the SW-ViT's patch); it divides
            the mask block. None: the mask block (one weight per block, the form before this option).
        weight_power: γ of p ∝ Ḡ^γ (1: the paper's; > 1 sharpens the attentive weights).
    The defaults rebuild a network recorded before these options existed; the pretraining method's settings
    choose nnssl's masking and the paper's weight granularity.
    """
    edge, plan = resolve_plan("resenc_pretrain", img_size, size, features, strides, blocks, decoder_convs)
    if mask_block is not None:  # two blocks per axis at least (the spec records the block used)
        mask_block = min(int(mask_block), edge // 2)
    net = ResEncMaskedAutoencoder(plan, in_channels=int(in_channels), img_size=(edge,) * 3, mask_ratio=mask_ratio,
                                  loss_weighting=loss_weighting, bins=bins, normalize=normalize,
                                  mirror_visible=mirror_visible, coord_channel=coord_channel, lr_axis=lr_axis,
                                  mask_block=mask_block, densify=densify, weight_patch=weight_patch,
                                  weight_power=weight_power)
    return record_spec(net, "resenc_pretrain", {
        "img_size": [edge] * 3, "in_channels": int(in_channels), "size": size, "mask_ratio": mask_ratio,
        "loss_weighting": loss_weighting, "bins": bins, "normalize": normalize, "mirror_visible": mirror_visible,
        "coord_channel": bool(coord_channel), "lr_axis": int(lr_axis), "mask_block": net.block, "densify": densify,
        "weight_patch": net.weight_patch, "weight_power": float(weight_power),
        **{key: list(value) for key, value in plan._asdict().items()}})


