"""Masked-convolution pretraining of the residual-encoder U-Net (``resenc_pretrain``; DESIGN §1.8).

SparK's recipe (ICLR 2023; nnssl's Spark3D) in dense form, which ConvNeXt-V2 shows equals sparse
convolution, so no sparse-convolution library: a binary mask on blocks whose edge is the encoder's
total stride, exactly round(ratio·n) blocks masked per sample; the input zeroed in masked blocks; every
encoder convolution's output multiplied by the mask at its stage's resolution; instance-norm mean and
variance over visible voxels only. Before decoding, each skip's masked positions take a learned mask
token of that stage, then a "densify" norm and 1³ convolution; the U-Net decoder reconstructs the input
and the loss is the squared error over masked blocks: uniform (MAE) or ASA's attentive weight per block
(DESIGN §1.5, the orientation histograms over each block's voxels; `asa.models.PatchReconstruction`).

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
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from asa.choices import one_of
from asa.models.cnn.resenc import RESENC_SIZES, ResEncPlan, ResEncUNet, resolve_plan
from asa.models.declared import Capabilities
from asa.models.registry import record_spec, register_network
from asa.models.swvit.objective import PatchReconstruction
from asa.models.swvit.patch import patchify
from asa.models.swvit.saca import mirror_index

__all__ = ["MaskedConv3d", "MaskedInstanceNorm3d", "ResEncMaskedAutoencoder", "ResEncMAEOutput", "VisibleMask",
           "max_mirror_visible"]

LOSS_WEIGHTINGS = ("uniform", "attentive")


class VisibleMask:
    """The visible-voxel mask of the current forward pass, shared by every masked module of one network:
    ``blocks`` [B, 1, g, g, g] (1 = visible) on the block grid, or None (a dense pass); `at` gives it at a
    stage's resolution (nearest upsampling: every stage's voxel lies inside one block), once per size."""

    def __init__(self) -> None:
        self.blocks: torch.Tensor | None = None
        self._cache: dict[tuple, torch.Tensor] = {}

    def set(self, blocks: torch.Tensor | None) -> None:
        self.blocks, self._cache = blocks, {}

    def at(self, size: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """The mask [B, 1, *size] in ``dtype``."""
        key = (*size, dtype)
        if key not in self._cache:
            self._cache[key] = F.interpolate(self.blocks, size=size, mode="nearest").to(dtype)
        return self._cache[key]


class MaskedConv3d(nn.Conv3d):
    """A ``Conv3d`` whose output is multiplied by the visible mask at its resolution (`VisibleMask`)."""

    visible: VisibleMask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        if self.visible.blocks is None:
            return out
        return out.mul_(self.visible.at(tuple(out.shape[2:]), out.dtype))  # in place: conv backward needs no output


class MaskedInstanceNorm3d(nn.InstanceNorm3d):
    """An ``InstanceNorm3d`` whose mean and variance are over visible voxels only, its output zero elsewhere.
    Its input must be zero at masked voxels (in the encoder every norm follows a `MaskedConv3d`)."""

    visible: VisibleMask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.visible.blocks is None:
            return super().forward(x)
        m = self.visible.at(tuple(x.shape[2:]), x.dtype)  # [B, 1, D, H, W]
        # x is a masked convolution's output, zero at masked voxels: its plain sums are the visible voxels' sums
        count = m.sum(dim=(2, 3, 4), keepdim=True).clamp_min(1.0)
        mean = x.sum(dim=(2, 3, 4), keepdim=True, dtype=torch.float32) / count
        var = ((x.float() * x).sum(dim=(2, 3, 4), keepdim=True) / count - mean * mean).clamp_min(0.0)
        scale = torch.rsqrt(var + self.eps)  # [B, C, 1, 1, 1]
        if self.affine:
            scale = scale * self.weight.view(1, -1, 1, 1, 1)
        shift = -mean * scale + (self.bias.view(1, -1, 1, 1, 1) if self.affine else 0.0)
        return torch.addcmul(shift.to(x.dtype), x, scale.to(x.dtype)).mul_(m)


def mask_encoder(encoder: nn.Module, visible: VisibleMask) -> None:
    """Swap every ``Conv3d`` / ``InstanceNorm3d`` of ``encoder`` for its masked form in place (same parameters)."""
    for module in encoder.modules():
        if type(module) is nn.Conv3d:
            module.__class__ = MaskedConv3d
        elif type(module) is nn.InstanceNorm3d:
            module.__class__ = MaskedInstanceNorm3d
        else:
            continue
        module.visible = visible


def max_mirror_visible(num_blocks: int, num_masked: int) -> float:
    """The largest fraction of masked blocks that can keep a visible mirror: each needs its own visible block."""
    return min(1.0, (num_blocks - num_masked) / num_masked)


@dataclass
class ResEncMAEOutput:
    """loss: scalar; pred: [B, C, D, H, W] the reconstruction; mask: [B, n] (1 = masked block, raster order);
    weights: [B, n] each block's loss weight (0 on visible blocks)."""

    loss: torch.Tensor
    pred: torch.Tensor
    mask: torch.Tensor
    weights: torch.Tensor


class ResEncMaskedAutoencoder(ResEncUNet):
    """The residual-encoder U-Net as a masked autoencoder (see the module): the encoder and decoder are
    `ResEncUNet`'s (decoder output = the image channels), plus ``mask_tokens`` and ``densify`` per stage.

    forward(x [B, C, D, H, W]) -> `ResEncMAEOutput`.
    """

    def __init__(self, plan: ResEncPlan, *, in_channels: int, img_size: tuple[int, int, int], mask_ratio: float,
                 loss_weighting: str, bins: int, normalize: str, mirror_visible: float | None, coord_channel: bool,
                 lr_axis: int) -> None:
        super().__init__(plan, in_channels=in_channels, out_channels=in_channels, img_size=img_size,
                         deep_supervision=False, coord_channel=coord_channel, lr_axis=lr_axis)
        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must lie in (0, 1), got {mask_ratio}")
        if loss_weighting not in LOSS_WEIGHTINGS:
            raise ValueError(f"loss_weighting must be one of {LOSS_WEIGHTINGS} for resenc, got {loss_weighting!r}")
        self.block = plan.total_stride
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
        self.mask_tokens = nn.ParameterList([nn.Parameter(torch.zeros(1, c, 1, 1, 1)) for c in plan.features])
        for token in self.mask_tokens:
            nn.init.trunc_normal_(token, std=0.02)
        self.densify = nn.ModuleList([
            nn.Sequential(nn.InstanceNorm3d(c, eps=1e-5, affine=True), nn.Conv3d(c, c, kernel_size=1))
            for c in plan.features])
        self.objective = PatchReconstruction(self.block, weighting=loss_weighting, norm_pix_loss=False, bins=bins,
                                             normalize=normalize)
        self.loss_weighting = loss_weighting
        self.capabilities = Capabilities()

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
        visible = self.block_mask(mask)
        self.visible.set(visible)
        try:
            x = self.with_coordinates(x)
            return self.encoder(x * self.visible.at(tuple(x.shape[2:]), x.dtype))
        finally:
            self.visible.set(None)

    def forward_decoder(self, skips: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        """Mask tokens into each skip's masked positions, densify, decode -> the reconstruction [B, C, D, H, W]."""
        visible = self.block_mask(mask)
        dense = []
        for skip, token, densify in zip(skips, self.mask_tokens, self.densify):
            m = F.interpolate(visible, size=skip.shape[2:], mode="nearest").to(skip.dtype)
            dense.append(densify(skip * m + token.to(skip.dtype) * (1 - m)))
        self.decoder.deep_supervision = False
        return self.decoder(dense)

    def forward_loss(self, x: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """Squared error over masked blocks, uniform or attentive per block -> (loss, weights [B, n])."""
        return self.objective(x, patchify(pred, self.block), mask)

    def forward(self, x: torch.Tensor, offsets: torch.Tensor | None = None) -> ResEncMAEOutput:  # type: ignore[override]
        if tuple(x.shape[1:]) != (self.in_channels, *self.img_size):
            raise ValueError(f"resenc_pretrain expects input [B, {self.in_channels}, "
                             f"{', '.join(map(str, self.img_size))}], got {list(x.shape)}")
        mask = self.random_masking(x.shape[0], x.device)
        pred = self.forward_decoder(self.forward_encoder(x, mask), mask)
        loss, weights = self.forward_loss(x, pred.float(), mask)
        return ResEncMAEOutput(loss=loss, pred=pred, mask=mask, weights=weights)

    def no_weight_decay(self) -> set[str]:
        """The mask tokens carry no weight decay (norms and biases never do)."""
        return {name for name, _ in self.named_parameters() if name.startswith("mask_tokens")}

    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights a `ResEncUNet` takes over: stem and stages, as ``encoder.*``."""
        return self.encoder.state_dict(prefix="encoder.")


@dataclass
class ResEncPretrainModel:
    """``model=resenc`` in pretraining: nnU-Net's residual-encoder U-Net (`asa.models.cnn.resenc`), its
    topology planned from the crop; the masking and loss are the method's (``method=mae|asa``)."""

    arch: str = "resenc"
    size: str = one_of("tiny", tuple(RESENC_SIZES))  # tiny (CPU tests) | M | L (nnU-Net's ResEnc presets)
    lr_axis: int = 0  # the left-right axis (RAS+: 0), for mirror_visible and coord_channel


@register_network("resenc_pretrain", task="pretraining", encoder="encoder", masked_of="resenc",
                  pretrain_settings=ResEncPretrainModel)
def resenc_pretrain(
    *,
    img_size: Any,
    in_channels: int = 1,
    size: str = "tiny",
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
) -> ResEncMaskedAutoencoder:
    """The masked residual-encoder U-Net for crops of ``img_size`` (see the module).

    Args:
        img_size: the crop, one edge or three equal ones.
        in_channels: image channels (reconstructed; the coordinate channel comes on top).
        size: ``tiny`` | ``M`` | ``L`` (`asa.models.cnn.resenc.RESENC_SIZES`).
        mask_ratio: fraction of blocks masked (exactly round(ratio·n) per sample).
        loss_weighting: ``uniform`` (MAE) | ``attentive`` (ASA's per-block weight).
        bins, normalize: the attentive weight's histogram bins and normalisation (DESIGN §1.5).
        mirror_visible: fraction of masked blocks whose mirror stays visible (None: uniform masking).
        coord_channel: append the mirror-symmetric coordinate channel.
        lr_axis: the left–right axis.
        features, strides, blocks, decoder_convs: an explicit plan (as a spec records it); None: planned.
    """
    edge, plan = resolve_plan("resenc_pretrain", img_size, size, features, strides, blocks, decoder_convs)
    net = ResEncMaskedAutoencoder(plan, in_channels=int(in_channels), img_size=(edge,) * 3, mask_ratio=mask_ratio,
                                  loss_weighting=loss_weighting, bins=bins, normalize=normalize,
                                  mirror_visible=mirror_visible, coord_channel=coord_channel, lr_axis=lr_axis)
    return record_spec(net, "resenc_pretrain", {
        "img_size": [edge] * 3, "in_channels": int(in_channels), "size": size, "mask_ratio": mask_ratio,
        "loss_weighting": loss_weighting, "bins": bins, "normalize": normalize, "mirror_visible": mirror_visible,
        "coord_channel": bool(coord_channel), "lr_axis": int(lr_axis),
        **{key: list(value) for key, value in plan._asdict().items()}})


def _check_options(*, loss_weighting: str = "attentive", mirror_visible: float | None = None, **_: Any) -> None:
    """What the masked network refuses before it is built, as ``<option>=<value>: why`` (the method names
    its section)."""
    if loss_weighting not in LOSS_WEIGHTINGS:
        raise ValueError(f"loss_weighting={loss_weighting}: model=resenc takes {' or '.join(LOSS_WEIGHTINGS)}")
    if mirror_visible is not None and not 0.0 <= mirror_visible <= 1.0:
        raise ValueError(f"mirror_visible={mirror_visible}: a fraction in [0, 1], or null (uniform masking)")


resenc_pretrain.check_options = _check_options  # type: ignore[attr-defined]

