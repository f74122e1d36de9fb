"""The SW-ViT family: asa-pretrain's default ``model`` (the sizes ``model=tiny|small|base``), its masked
autoencoder ``asa_pretrain`` and every network on its encoder (`asa.models.family`), and the road by which a file
becomes one of its networks: the file sets the crop, the position code, the symmetric axis and the brain frame's
reference grid (`pretrained_geometry`, `SWViTRoad`)."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from asa.models.blocks.patch import patch_grid
from asa.models.blocks.sizes import to_3tuple
from asa.models.face import EncoderFace, Geometry
from asa.models.family import DEFAULT_FAMILY, Family, register_family
from asa.models.presets import PRESETS
from asa.models.registry import build_network
from asa.models.road import FileRoad, load_pretrained
from asa.models.swvit.mae import PretrainModelConfig
from asa.models.swvit.segmenter import recorded_pretraining
from asa.models.swvit.volume import VolumeEncoder
from asa.models.weights import load_weights

__all__ = ["SWVIT", "PretrainedGeometry", "SWViTRoad", "SWViTTokens", "pretrained_geometry"]


class SWViTTokens(EncoderFace):
    """The SW-ViT's final normed tokens at its patch size, through a `VolumeEncoder` on the network's frame."""

    def module(self, encoder: nn.Module, net: nn.Module) -> nn.Module:
        return VolumeEncoder(encoder, spe_frame=getattr(net, "spe_frame", "brain"))

    def tokens(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return module(x)

    def twin_tokens(self, twin: nn.Module, x: torch.Tensor, regions: torch.Tensor | None = None) -> torch.Tensor:
        """The masked autoencoder's encoder over all tokens (no masking), in the pretraining crop's frame."""
        ids = torch.arange(twin.num_patches, device=x.device).expand(x.shape[0], -1)
        return twin.forward_encoder(x, ids, regions)

    def twin_stride(self, twin: nn.Module) -> int:
        return int(twin.patch_size)  # region attention too: the twin's probes feed its region map

    def geometry(self, module: nn.Module, spec: Mapping[str, Any], state: Mapping | None, crop: int | None,
                 where: str) -> Geometry:
        if module.encoder.uses_regions:
            raise ValueError(f"{where}: this SW-ViT has region attention, which needs a region map per case; the "
                             "frozen-encoder probes do not feed one (probe it during pretraining, probe.every)")
        size = tuple(module.img_size)
        if crop is not None and (crop,) * 3 != size:
            raise ValueError(f"crop={crop}: {where} holds an SW-ViT of input {list(size)} (its position code is "
                             "that grid's); leave crop=null")
        return size, int(module.patch_size), int(module.in_channels)  # type: ignore[return-value]


class PretrainedGeometry(NamedTuple):
    """The fine-tuning geometry of an SW-ViT network: the crop edge, position mode, symmetric axis
    and the brain frame's reference grid (patches; None: the network's own, the pretraining grid or
    the crop's), with the pretrained file's content (``checkpoint``, read once; None without a file)
    and what it records (`recorded_pretraining`; empty without a file)."""

    crop: int
    pos_mode: str
    lr_axis: int
    reference_grid: tuple[int, int, int] | None
    checkpoint: dict | None
    recorded: dict


def pretrained_geometry(pretrained: str | Path | None, *, crop: int | None, pos_mode: str | None,
                        lr_axis: int | None, default_crop: int | None,
                        reference_grid: Sequence[int] | None = None,
                        allow_grid_change: bool = False) -> PretrainedGeometry:
    """The one place the fine-tuning geometry is resolved: each given value, else the one the
    pretrained file records, else ``default_crop`` / ``mirror`` / 0 (no crop size at all is an
    error). The reference grid: the given one; with ``allow_grid_change`` and a file, the file's
    pretraining grid (the brain frame keeps it while the crop grid changes); else None."""
    checkpoint, recorded = None, {}
    if pretrained:
        checkpoint = load_weights(pretrained)
        recorded = recorded_pretraining(checkpoint, pretrained)
    if crop is None:
        crop = recorded["img_size"][0] if recorded.get("img_size") else default_crop
    if crop is None:
        raise ValueError("the crop size is unknown: give crop, a pretrained file that records its crop, "
                         "or default_crop")
    for key, chosen in (("pos_mode", pos_mode), ("lr_axis", lr_axis)):  # the file's geometry, overridden: said
        if chosen is not None and recorded.get(key) is not None and chosen != recorded[key]:
            print(f"[asa] note: model.{key}={chosen} overrides the {key}={recorded[key]} that {pretrained} was "
                  f"pretrained with: its encoder is fine-tuned with another "
                  f"{'position code' if key == 'pos_mode' else 'symmetric axis'} (leave model.{key} unset to keep "
                  "the file's)", file=sys.stderr, flush=True)
    if pos_mode is None:
        pos_mode = recorded.get("pos_mode") or "mirror"
    if lr_axis is None:
        lr_axis = recorded.get("lr_axis") or 0
    if reference_grid is None and allow_grid_change and recorded.get("img_size"):
        reference_grid = patch_grid(recorded["img_size"], int(recorded["patch_size"]))
    grid = None if reference_grid is None else to_3tuple(reference_grid, "reference_grid")
    return PretrainedGeometry(int(crop), pos_mode, int(lr_axis), grid, checkpoint, recorded)


class SWViTRoad(FileRoad):
    """An SW-ViT network follows its pretraining file: the crop, ``pos_mode`` and ``lr_axis`` the run leaves null
    are the file's (`pretrained_geometry`), and it takes the options of following one (``reference_grid``,
    ``allow_grid_change``: the run's ``segmenter`` section). The network takes ``img_size``, ``pos_mode``,
    ``lr_axis`` and ``reference_grid`` from the file, and nothing else."""

    def segmenter(self, arch: str, pretrained: str | None, *, options: dict[str, Any], channels: Mapping[str, int],
                  crop: int | None, default_crop: int | None, follow: Mapping[str, Any]) -> nn.Module:
        allow_grid_change = bool(follow.get("allow_grid_change", False))
        geometry = pretrained_geometry(pretrained, crop=crop, pos_mode=options.pop("pos_mode", None),
                                       lr_axis=options.pop("lr_axis", None), default_crop=default_crop,
                                       reference_grid=follow.get("reference_grid"),
                                       allow_grid_change=allow_grid_change)
        net = build_network({"arch": arch, "kwargs": {
            "img_size": (geometry.crop,) * 3, **channels, "pos_mode": geometry.pos_mode, "lr_axis": geometry.lr_axis,
            "reference_grid": geometry.reference_grid, **options}})
        return load_pretrained(net, arch, pretrained, lambda: net.load_pretrained(
            pretrained, checkpoint=geometry.checkpoint, allow_grid_change=allow_grid_change))

    def case(self, arch: str, pretrained: str | None, *, options: dict[str, Any], head: Mapping[str, Any],
             crop: int | None, default_crop: int) -> nn.Module:
        geometry = pretrained_geometry(pretrained, crop=crop, pos_mode=options.pop("pos_mode", None),
                                       lr_axis=options.pop("lr_axis", None), default_crop=default_crop)
        net = build_network({"arch": arch, "kwargs": {
            "img_size": to_3tuple(geometry.crop, "data.crop"), "pos_mode": geometry.pos_mode,
            "lr_axis": geometry.lr_axis, **head, **options}})
        return load_pretrained(net, arch, pretrained, lambda: net.load_pretrained(pretrained,
                                                                                  checkpoint=geometry.checkpoint))


SWVIT = register_family(Family(
    DEFAULT_FAMILY, face=SWViTTokens(), masked="asa_pretrain", pretrain_settings=PretrainModelConfig,
    segmenter="swvit_unetr", road=SWViTRoad(),
    presets={size: {**sizes, "patch_size": 8} for size, sizes in PRESETS.items()}))
