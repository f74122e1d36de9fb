"""nnU-Net's residual-encoder U-Net (``resenc``), from the package nnU-Net v2 and nnssl build it from.

:func:`plan_resenc` is nnU-Net's ResEnc rule for an isotropic crop as one pure function: stride 2 per
stage until the feature map is about 4 voxels (at most 5 halvings, 6 stages), 3³ kernels, features
32 doubling per stage capped at 320, one residual block in the first stage and (3, 4, 6, 6, 6) after
(nnU-Net's ResEnc M and L: the two presets share this rule and differ in the GPU-memory target their
patch is planned for, here the crop ``data.crop``; at 6 stages the network has ResEnc-L's 102.3 M
parameters). ``tiny`` is the same rule at a quarter of the width with one block per stage, for CPU tests.

The network is `dynamic_network_architectures`' ``ResidualEncoderUNet`` itself, so the state-dict keys
are that package's (``encoder.stem.*``, ``encoder.stages.*``, ``decoder.*``) and weights move to and
from nnU-Net v2 and nnssl unchanged. Its spec records the resolved plan, so a checkpoint rebuilds the
network it was trained with whatever this rule becomes.

The optional mirror-symmetric coordinate channel (docs/method.md §1.8, beyond the paper) is
``c(v) = |x(v) − x_mid| / (X/2)`` along the left–right axis of the brain frame: one value for a voxel
and its mirror, the CNN counterpart of the symmetric position code. It is appended to the image
channels; ``offsets`` (the crop's origin in voxels on the brain frame, as sliding-window inference and
the fine-tuning crops give it) place the crop in the frame, and without them the crop is taken to be
the brain-centred reference box (pretraining crops are).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet
from torch import nn

from asa.choices import in_range, one_of
from asa.models.cnn.transfer import load_resenc_encoder
from asa.models.declared import Capabilities
from asa.models.registry import NetworkSettings, record_spec, register_network

__all__ = ["RESENC_SIZES", "ResEncOptions", "ResEncPlan", "ResEncSettings", "ResEncUNet", "coordinate_channel",
           "plan_resenc", "resenc_unet", "resolve_plan"]

MAX_HALVINGS = 5  # nnU-Net 3D: at most 6 stages
MIN_FEATURE_SIZE = 4  # an axis is halved while it keeps >= 4 voxels
# size -> (features of the first stage, their cap, residual blocks per stage: first, then every later one)
RESENC_SIZES: dict[str, tuple[int, int, tuple[int, ...]]] = {
    "tiny": (8, 64, (1, 1, 1, 1, 1, 1)),
    "S": (32, 256, (1, 1, 1, 1, 1, 1)),
    "M": (32, 320, (1, 3, 4, 6, 6, 6)),
    "L": (32, 320, (1, 3, 4, 6, 6, 6)),
}


class ResEncPlan(NamedTuple):
    """A residual-encoder U-Net topology, one entry per stage (input stage first, bottleneck last).

    features: channels per stage; strides: the stride of each stage's first block (1, then 2);
    blocks: residual blocks per encoder stage; decoder_convs: convolutions per decoder stage (one fewer entry).
    """

    features: list[int]
    strides: list[int]
    blocks: list[int]
    decoder_convs: list[int]

    @property
    def total_stride(self) -> int:
        """Voxels per bottleneck voxel along each axis: the product of the strides."""
        out = 1
        for s in self.strides:
            out *= s
        return out


def plan_resenc(crop: int, size: str = "M") -> ResEncPlan:
    """nnU-Net's ResEnc topology for an isotropic crop of edge ``crop`` voxels at 1 mm.

    Halving stops when the next map would be under 4 voxels, the edge is odd, or after 5 halvings.
    A crop that allows fewer than 2 halvings is refused (a U-Net of one stage below the input is not one).

    Args:
        crop: the crop edge in voxels.
        size: ``tiny`` | ``M`` | ``L`` (`RESENC_SIZES`).
    """
    if size not in RESENC_SIZES:
        raise ValueError(f"resenc: size must be one of {tuple(RESENC_SIZES)}, got {size!r}")
    if int(crop) != crop or crop < 1:
        raise ValueError(f"resenc: the crop must be a positive whole number of voxels, got {crop!r}")
    edge, halvings = int(crop), 0
    while halvings < MAX_HALVINGS and edge % 2 == 0 and edge // 2 >= MIN_FEATURE_SIZE:
        edge //= 2
        halvings += 1
    if halvings < 2:
        raise ValueError(f"resenc: crop {crop} allows {halvings} halving(s) down to {MIN_FEATURE_SIZE} voxels; the "
                         "U-Net needs at least 2: take a crop that is a multiple of 16 (e.g. 32, 64, 128)")
    base, cap, per_stage = RESENC_SIZES[size]
    stages = halvings + 1
    return ResEncPlan(features=[min(base * 2**s, cap) for s in range(stages)], strides=[1] + [2] * halvings,
                      blocks=list(per_stage[:stages]), decoder_convs=[1] * halvings)


def resolve_plan(name: str, img_size: Any, size: str, features: Sequence[int] | None, strides: Sequence[int] | None,
                 blocks: Sequence[int] | None, decoder_convs: Sequence[int] | None) -> tuple[int, ResEncPlan]:
    """(crop edge, plan) of a network spec ``name``: the plan given (all four lists, as a spec records it) or
    :func:`plan_resenc` of the crop and ``size``; a crop that is not isotropic or not a multiple of the plan's
    total stride is refused."""
    sizes = [int(img_size)] * 3 if isinstance(img_size, (int, float)) else [int(s) for s in img_size]
    if len(sizes) != 3 or len(set(sizes)) != 1:
        raise ValueError(f"{name}: img_size must be one edge or three equal ones (an isotropic crop), got {img_size!r}")
    given = [v is not None for v in (features, strides, blocks, decoder_convs)]
    if any(given) and not all(given):
        raise ValueError(f"{name}: give features, strides, blocks and decoder_convs together (an explicit plan), or none")
    plan = (plan_resenc(sizes[0], size) if features is None else
            ResEncPlan([int(f) for f in features], [int(s) for s in strides], [int(b) for b in blocks],
                       [int(c) for c in decoder_convs]))
    if sizes[0] % plan.total_stride:
        raise ValueError(f"{name}: crop {sizes[0]} is not a multiple of the plan's total stride {plan.total_stride}")
    return sizes[0], plan


def coordinate_channel(shape: Sequence[int], *, lr_axis: int = 0, reference: int | None = None,
                       offsets: torch.Tensor | None = None, device: torch.device | None = None) -> torch.Tensor:
    """The mirror-symmetric coordinate ``|x − x_mid| / (X/2)`` of every voxel of a batch of crops.

    Args:
        shape: (B, D, H, W) of the batch.
        lr_axis: the left–right axis among (D, H, W).
        reference: X, the edge of the brain-centred reference box along ``lr_axis`` (None: the crop's).
        offsets: [B, 3] each crop's origin in voxels relative to the reference box (None: zeros).
    Returns [B, 1, D, H, W] float32: voxels i and X−1−i of the reference box share a value, 1 at the box's
    faces, 1/X beside the mid-sagittal plane.
    """
    b, *spatial = (int(s) for s in shape)
    edge = spatial[lr_axis]
    half = (reference if reference is not None else edge) / 2.0
    x = torch.arange(edge, device=device, dtype=torch.float32) + 0.5  # voxel centres
    x = x.expand(b, edge) + (offsets[:, lr_axis, None].to(x) if offsets is not None else 0.0)
    code = (x - half).abs() / half  # [B, X]
    view = [b, 1, 1, 1, 1]
    view[2 + lr_axis] = edge
    return code.view(view).expand(b, 1, *spatial).contiguous()


@dataclass
class ResEncOptions:
    """The residual-encoder U-Net's options in both trees, declared once: the ``model=resenc`` section of
    asa-pretrain (`asa.models.cnn.masked.ResEncPretrainModel`, with the masking) and of asa-finetune
    (:class:`ResEncSettings`, with deep supervision) start from these; the topology is planned from the crop
    (:func:`plan_resenc`), and the same names reach the network's spec and file."""

    size: str = one_of("M", tuple(RESENC_SIZES))  # M (nnU-Net's ResEnc M, model=resenc's) | L | S (CPU) | tiny (tests)
    # the mirror-symmetric coordinate channel |x - x_mid| / (X/2) as an extra input (a fine-tuning network needs it
    # when its encoder was pretrained with it)
    coord_channel: bool = False
    lr_axis: int = in_range(0, 0, 2)  # the left-right axis of the brain frame (RAS+: 0), for the symmetry options


@dataclass
class ResEncSettings(ResEncOptions, NetworkSettings):
    """``model=resenc`` of asa-finetune: :class:`ResEncOptions` and nnU-Net's deep supervision
    (:func:`resenc_unet`)."""

    deep_supervision: bool = True  # nnU-Net's deep supervision: weights 1, 1/2, 1/4 ... normalised


class ResEncUNet(ResidualEncoderUNet):
    """``ResidualEncoderUNet`` with asa's contract: eval mode returns full-resolution logits, training with
    deep supervision a list finest first (nnU-Net's lowest-resolution output, weight 0, left out), an
    optional coordinate channel, and :meth:`load_pretrained` for an encoder export.

    forward(x [B, C, D, H, W], offsets [B, 3] | None) -> logits [B, K, D, H, W] (or the list)."""

    def __init__(self, plan: ResEncPlan, *, in_channels: int, out_channels: int, img_size: Sequence[int],
                 deep_supervision: bool = True, coord_channel: bool = False, lr_axis: int = 0) -> None:
        super().__init__(
            int(in_channels) + int(coord_channel), len(plan.features), plan.features, nn.Conv3d, 3, plan.strides,
            plan.blocks, int(out_channels), plan.decoder_convs, conv_bias=True, norm_op=nn.InstanceNorm3d,
            norm_op_kwargs={"eps": 1e-5, "affine": True}, nonlin=nn.LeakyReLU,
            nonlin_kwargs={"negative_slope": 0.01, "inplace": True}, deep_supervision=bool(deep_supervision))
        self.apply(self.initialize)
        self.plan, self.img_size = plan, tuple(int(s) for s in img_size)
        self.in_channels, self.coord_channel, self.lr_axis = int(in_channels), bool(coord_channel), int(lr_axis)
        self.supervised_outputs = len(plan.features) - 2 if deep_supervision else 0
        for head in self.unused_heads():
            head.requires_grad_(False)  # no loss reads them: trained, they would stall DDP's gradient reduction
        self._zero_encoder = False
        self.capabilities = Capabilities(
            offsets=self.coord_channel, deep_supervision=self.supervised_outputs if self.supervised_outputs > 1 else 0,
            patch_size=1 if self.coord_channel else None,
            reference_grid=self.img_size if self.coord_channel else None,  # type: ignore[arg-type]
            crop_multiple=plan.total_stride, crop_min=plan.total_stride * 2, zero_encoder=True,
            symmetry=("model.coord_channel",) if self.coord_channel else ())

    def unused_heads(self) -> list[nn.Module]:
        """The decoder's segmentation heads that no output reaches, hence no loss: with deep supervision the
        lowest-resolution one (nnU-Net's lowest output, weight 0), without it every head but the top one
        (nnU-Net then computes the top head only). They stay in the state dict under nnU-Net's keys
        (``decoder.seg_layers.*``, which nnU-Net loads strictly) and are frozen at their initial values, which
        is what an unused head keeps in a one-process run (it never has a gradient); trainable, they would
        be parameters outside the loss, which DistributedDataParallel refuses at its second step."""
        heads = list(self.decoder.seg_layers)
        return heads[:1] if self.supervised_outputs > 1 else heads[:-1]

    def with_coordinates(self, x: torch.Tensor, offsets: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, C, D, H, W] with the coordinate channel appended when the network takes one."""
        if not self.coord_channel:
            return x
        coords = coordinate_channel((x.shape[0], *x.shape[2:]), lr_axis=self.lr_axis,
                                    reference=self.img_size[self.lr_axis], offsets=offsets, device=x.device)
        return torch.cat([x, coords.to(x.dtype)], dim=1)

    def forward(self, x: torch.Tensor, offsets: torch.Tensor | None = None) -> torch.Tensor | list[torch.Tensor]:
        self.decoder.deep_supervision = self.training and self.supervised_outputs > 1
        skips = self.encoder(self.with_coordinates(x, offsets))
        if self._zero_encoder:  # encoder-reliance diagnostic: only the full-resolution stage reaches the decoder
            skips = [skips[0], *(torch.zeros_like(s) for s in skips[1:])]
        out = self.decoder(skips)
        return out[: self.supervised_outputs] if isinstance(out, list) else out

    @contextmanager
    def zero_encoder_states(self) -> Iterator[ResEncUNet]:
        """Inside this context every encoder stage below full resolution hands the decoder zeros: what is left
        is the full-resolution stage (stem and first residual block, the counterpart of the SW-ViT U-Net's
        input skip) and the decoder (the encoder-reliance diagnostic, `asa.eval.reliance`)."""
        previous, self._zero_encoder = self._zero_encoder, True
        try:
            yield self
        finally:
            self._zero_encoder = previous

    def load_pretrained(self, path: str | Path, checkpoint: dict | None = None, verbose: bool = True) -> Any:
        """Initialise the stem and encoder stages from a resenc pretraining file (checkpoint or encoder
        export); the decoder stays fresh. A 1-image-channel stem is repeated over this network's image
        channels and divided by their number (the coordinate channel's weights kept); every encoder tensor
        must match, else the error names the first keys at fault. Returns the load report."""
        return load_resenc_encoder(self, path, checkpoint=checkpoint, verbose=verbose)


@register_network("resenc", kind="segmentation", settings=ResEncSettings, family="resenc")
def resenc_unet(
    *,
    img_size: Any,
    in_channels: int,
    out_channels: int,
    size: str = "M",
    deep_supervision: bool = True,
    coord_channel: bool = False,
    lr_axis: int = 0,
    features: Sequence[int] | None = None,
    strides: Sequence[int] | None = None,
    blocks: Sequence[int] | None = None,
    decoder_convs: Sequence[int] | None = None,
) -> ResEncUNet:
    """The residual-encoder U-Net for crops of ``img_size``.

    Args:
        img_size: the crop, one int or three equal ones (voxels).
        in_channels: image channels (the coordinate channel comes on top).
        out_channels: logits channels K (a reconstruction: the image channels).
        size: ``tiny`` | ``M`` | ``L`` (`RESENC_SIZES`).
        deep_supervision: training returns the decoder's outputs finest first (nnU-Net's).
        coord_channel: append the mirror-symmetric coordinate channel.
        lr_axis: the left–right axis of the coordinate channel.
        features, strides, blocks, decoder_convs: an explicit plan (all four, as a spec records them);
            None: :func:`plan_resenc` of the crop and ``size``.
    """
    if lr_axis not in (0, 1, 2):
        raise ValueError(f"resenc: lr_axis must be 0, 1 or 2, got {lr_axis!r}")
    edge, plan = resolve_plan("resenc", img_size, size, features, strides, blocks, decoder_convs)
    sizes = [edge] * 3
    net = ResEncUNet(plan, in_channels=in_channels, out_channels=out_channels, img_size=sizes,
                     deep_supervision=deep_supervision, coord_channel=coord_channel, lr_axis=lr_axis)
    return record_spec(net, "resenc", {
        "img_size": sizes, "in_channels": int(in_channels), "out_channels": int(out_channels), "size": size,
        "deep_supervision": bool(deep_supervision), "coord_channel": bool(coord_channel), "lr_axis": int(lr_axis),
        **{key: list(value) for key, value in plan._asdict().items()}})
