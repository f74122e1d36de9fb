"""MONAI's DynUNet planned as nnU-Net plans its 3D full-resolution U-Net (``dynunet``): the
from-scratch CNN baseline.

:func:`plan_dynunet` is nnU-Net's topology rule as one pure function of the crop and the voxel
spacing; :func:`dynunet` builds the network of that plan, with instance norm, leaky ReLU (slope
0.01) and nnU-Net's deep supervision. Its network spec records the plan itself (kernels, strides,
filters), so a checkpoint rebuilds the network it was trained with whatever this rule becomes.

Deep supervision: in training the network returns a list of logits, finest first, each at its own
decoder resolution (full, 1/2, 1/4, ... of the crop); :class:`asa.losses.DeepSupervisionLoss`
weighs them as nnU-Net does, against the label downsampled to each. In eval mode (validation,
sliding-window prediction) it returns the full-resolution logits alone. nnU-Net supervises every
decoder level but gives the lowest-resolution one weight 0; here that head is not built.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, List, NamedTuple, Optional

import torch
from monai.networks.nets import DynUNet

from asa.models.blocks.sizes import spec_input_size
from asa.models.declared import Capabilities
from asa.models.registry import NetworkSettings, record_spec, register_network

__all__ = ["DeepSupervisedDynUNet", "DynUNetPlan", "dynunet", "plan_dynunet"]

MAX_POOLS = 5  # nnU-Net 3d_fullres: at most 5 poolings
MIN_FEATURE_SIZE = 4  # nnU-Net's feature-map floor: an axis is halved only while it keeps >= 4 voxels
BASE_FILTERS = 32  # channels of the first stage, doubling per stage ...
MAX_FILTERS = 320  # ... capped at 320 (nnU-Net, 3D)
ANISOTROPY = 2.0  # an axis at >= 2x the finest spacing is "too coarse": no pooling, kernel 1


class DynUNetPlan(NamedTuple):
    """A U-Net topology: one entry per resolution stage (input stage first, bottleneck last).

    kernel_size: [(k0, k1, k2)] convolution kernels per stage.
    strides: [(s0, s1, s2)] the stride of each stage's first convolution ((1, 1, 1) for the input stage).
    filters: [int] channels per stage.
    """

    kernel_size: list[tuple[int, int, int]]
    strides: list[tuple[int, int, int]]
    filters: list[int]

    @property
    def num_pools(self) -> int:
        return len(self.strides) - 1


def _coarse(spacing: Sequence[float], axis: int) -> bool:
    return spacing[axis] / min(spacing) >= ANISOTROPY


def plan_dynunet(
    crop: int | Sequence[int],
    spacing: float | Sequence[float] = 1.0,
    *,
    max_pools: int = MAX_POOLS,
    min_feature_size: int = MIN_FEATURE_SIZE,
    base_filters: int = BASE_FILTERS,
    max_filters: int = MAX_FILTERS,
) -> DynUNetPlan:
    """nnU-Net's 3D full-resolution topology for a crop (voxels) at a voxel spacing (mm).

    Stage by stage: an axis is halved (stride 2) while it keeps at least ``min_feature_size``
    voxels after halving (size >= 2 * ``min_feature_size``) and its current spacing is less than
    2x the finest current spacing among those axes; a single axis pools only while it holds at least
    3 * ``min_feature_size`` voxels (nnU-Net's rule against a lone axis shrinking to the floor);
    pooling stops when no axis qualifies or after ``max_pools`` stages. Each pooled axis's spacing
    doubles. Kernels are 3 along an axis whose spacing is less than 2x the finest spacing and 1
    along a coarser one; once 3, an axis keeps 3 in every deeper stage. Filters: ``base_filters``
    doubling per stage, capped at ``max_filters``.

    Args:
        crop: the network's input size, one int or three (voxels).
        spacing: voxel size in mm, one number or three.
        max_pools: at most this many pooling stages.
        min_feature_size: the smallest feature map an axis is pooled down to (voxels).
        base_filters: channels of the full-resolution stage.
        max_filters: the cap on channels.
    """
    size = [int(s) for s in spec_input_size("dynunet", crop)]
    sp = [float(spacing)] * 3 if isinstance(spacing, (int, float)) else [float(s) for s in spacing]
    if len(sp) != 3 or not all(math.isfinite(s) and s > 0 for s in sp):
        raise ValueError(f"dynunet: spacing must be 3 positive numbers (mm per axis), got {spacing!r}")
    if min(size) < 1 or max_pools < 0 or min_feature_size < 1 or base_filters < 1 or max_filters < base_filters:
        raise ValueError(f"dynunet: bad plan arguments: crop {crop}, max_pools {max_pools}, min_feature_size "
                         f"{min_feature_size}, filters {base_filters}..{max_filters}")
    kernel = [1, 1, 1]

    def stage_kernel() -> tuple[int, int, int]:
        for a in range(3):
            if kernel[a] == 1 and not _coarse(sp, a):
                kernel[a] = 3
        return tuple(kernel)  # type: ignore[return-value]

    kernels, strides = [stage_kernel()], [(1, 1, 1)]
    while len(strides) - 1 < max_pools:
        fit = [a for a in range(3) if size[a] >= 2 * min_feature_size]
        if not fit:
            break
        finest = min(sp[a] for a in fit)
        axes = [a for a in fit if sp[a] / finest < ANISOTROPY]
        if len(axes) == 1 and size[axes[0]] < 3 * min_feature_size:
            break
        for a in axes:
            if size[a] % 2:  # nnU-Net pads such a patch; a crop here is what the network sees
                pools = sum(s[a] == 2 for s in strides) + 1
                edge = int(spec_input_size("dynunet", crop)[a])
                raise ValueError(f"dynunet: its plan halves axis {a} of the crop {pools} time(s), so the crop's edge "
                                 f"there must be divisible by {2 ** pools}, and {edge} is not: take a crop (data.crop) "
                                 f"of {_planned_edge(edge, spacing, max_pools, min_feature_size)} voxels (or another "
                                 "that the plan halves evenly)")
            size[a] //= 2
            sp[a] *= 2
        strides.append(tuple(2 if a in axes else 1 for a in range(3)))  # type: ignore[arg-type]
        kernels.append(stage_kernel())
    filters = [min(base_filters * 2**i, max_filters) for i in range(len(strides))]
    return DynUNetPlan(kernels, strides, filters)


def _planned_edge(edge: int, spacing: float | Sequence[float], max_pools: int, min_feature_size: int) -> int:
    """The largest cubic crop edge below ``edge`` that the plan halves evenly (at least 1)."""
    for candidate in range(edge - 1, 1, -1):
        try:
            plan_dynunet(candidate, spacing, max_pools=max_pools, min_feature_size=min_feature_size)
            return candidate
        except ValueError:
            continue
    return 1


class DeepSupervisedDynUNet(DynUNet):
    """DynUNet whose training forward returns the deep-supervision logits at their own resolutions.

    forward(x [B, C, D, H, W]) -> logits [B, K, D, H, W] in eval mode (or without deep supervision);
    in training with deep supervision a list ``[logits, head_1, ...]``, head_i [B, K, D/2^i, H/2^i,
    W/2^i] (per-axis strides), finest first. (MONAI's DynUNet instead upsamples every head to full
    size and stacks them; nnU-Net downsamples the label, which :class:`asa.losses.DeepSupervisionLoss` does.)
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:  # type: ignore[override]
        out = self.output_block(self.skip_layers(x))
        if self.training and self.deep_supervision:
            return [out, *self.heads]  # heads[i]: the decoder output i + 1 stages below full resolution
        return out


@dataclass
class DynUNetSettings(NetworkSettings):
    """``model=dynunet``: the nnU-Net-style CNN's options (:func:`dynunet`); null kernels, strides and
    filters are planned from the crop and ``spacing`` (:func:`plan_dynunet`)."""

    spacing: List[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])  # the data's voxel spacing in mm
    deep_supervision: bool = True  # nnU-Net's deep supervision: weights 1, 1/2, 1/4 ... normalised
    res_block: bool = False  # true: residual blocks (nnU-Net's ResEnc flavour)
    kernel_size: Optional[List[List[int]]] = None
    strides: Optional[List[List[int]]] = None
    filters: Optional[List[int]] = None


@register_network("dynunet", kind="segmentation", settings=DynUNetSettings, family="dynunet")
def dynunet(
    *,
    img_size: Any = None,
    in_channels: int,
    out_channels: int,
    spacing: float | Sequence[float] = (1.0, 1.0, 1.0),
    deep_supervision: bool = True,
    res_block: bool = False,
    kernel_size: Sequence[Sequence[int]] | None = None,
    strides: Sequence[Sequence[int]] | None = None,
    filters: Sequence[int] | None = None,
) -> DeepSupervisedDynUNet:
    """nnU-Net-planned DynUNet for inputs of size ``img_size``.

    Args:
        img_size: the crop (input size), one int or three.
        in_channels: image channels.
        out_channels: logits channels K.
        spacing: the training data's voxel spacing in mm (three numbers, or one), for the plan.
        deep_supervision: nnU-Net's deep supervision (heads down to 1/2^(pools-2) of the crop);
            off when the plan has fewer than 3 pools.
        res_block: residual convolution blocks (nnU-Net's ResEnc variants) instead of plain ones.
        kernel_size, strides, filters: an explicit plan (all three, as a spec records them);
            None: :func:`plan_dynunet` of ``img_size`` and ``spacing``.
    """
    size = spec_input_size("dynunet", img_size)
    given = [v is not None for v in (kernel_size, strides, filters)]
    if any(given) and not all(given):
        raise ValueError("dynunet: give kernel_size, strides and filters together (an explicit plan), or none of them")
    if kernel_size is None:
        plan = plan_dynunet(size, spacing)
    else:
        plan = DynUNetPlan([tuple(int(k) for k in ks) for ks in kernel_size],  # type: ignore[misc]
                           [tuple(int(s) for s in st) for st in strides], [int(f) for f in filters])
    if len(plan.strides) < 3:
        raise ValueError(f"dynunet: crop {size} allows {plan.num_pools} pooling stage(s); the U-Net needs at least 2 "
                         f"(a crop of 16 or more voxels per axis at the plan's spacing)")
    heads = plan.num_pools - 2  # nnU-Net's lowest-resolution output has weight 0: not built
    supervise = bool(deep_supervision) and heads >= 1
    net = DeepSupervisedDynUNet(
        spatial_dims=3, in_channels=int(in_channels), out_channels=int(out_channels),
        kernel_size=plan.kernel_size, strides=plan.strides, upsample_kernel_size=plan.strides[1:],
        filters=plan.filters, norm_name=("INSTANCE", {"affine": True}),
        act_name=("leakyrelu", {"inplace": True, "negative_slope": 0.01}),
        deep_supervision=supervise, deep_supr_num=max(heads, 1), res_block=bool(res_block),
    )
    net.img_size = tuple(size)
    net.capabilities = Capabilities(deep_supervision=1 + heads if supervise else 0)
    sp = [float(spacing)] * 3 if isinstance(spacing, (int, float)) else [float(s) for s in spacing]
    return record_spec(net, "dynunet", {
        "img_size": list(size), "in_channels": int(in_channels), "out_channels": int(out_channels), "spacing": sp,
        "deep_supervision": bool(deep_supervision), "res_block": bool(res_block),
        "kernel_size": [list(k) for k in plan.kernel_size], "strides": [list(s) for s in plan.strides],
        "filters": list(plan.filters),
    })
