"""The network of a fine-tuning run config: the one place the ``model`` section becomes a network, and the
fine-tuning geometry is resolved against a pretrained file (with the ``segmenter`` section's options of
following one).

The ``model`` section arrives as the typed settings of its network (`asa.models.NetworkSettings`, checked by
`asa.api.configuration.checks.network_settings`). No branch here names an architecture: what a network takes is what it
declared when it registered (`asa.models.register_network`): its ``settings``, ``follows_pretraining`` (an SW-ViT whose crop, position code, axis and
reference grid a pretraining file sets), ``case_of`` (the case network a case run builds from a
segmentation preset), its kind, and ``load_pretrained`` on the network it builds (an encoder it
initialises from a file).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, NamedTuple

from torch import nn

from asa.api.configuration.checks import network_settings
from asa.api.configuration.schema import SegmenterConfig
from asa.models import NetworkSettings, architectures, build_network, load_weights, recorded_pretraining
from asa.models.blocks.patch import patch_grid
from asa.models.blocks.sizes import to_3tuple
from asa.models.family import FileSettings, file_settings
from asa.models.registry import NETWORK_KINDS, case_counterpart, network_record

__all__ = ["PretrainedGeometry", "build_case_network", "build_from_config", "case_arch", "pretrained_geometry"]

ModelSection = NetworkSettings | Mapping[str, Any]  # typed settings, or a mapping typed by `network_settings`


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


def _load(net: nn.Module, arch: str, pretrained: str | None, load: Callable[[], Any] | None = None) -> nn.Module:
    """Initialise ``net``'s encoder from ``pretrained`` (``load``: how, for a network whose geometry the file
    set; else its ``load_pretrained(path)``); a network without ``load_pretrained`` refuses a file."""
    if not pretrained:
        return net
    if not callable(getattr(net, "load_pretrained", None)):
        raise ValueError(f"model.pretrained={pretrained}: model arch {arch!r} takes no pretrained encoder (its "
                         "network has no load_pretrained); leave model.pretrained unset, or choose a network that "
                         "takes one")
    load() if load is not None else net.load_pretrained(pretrained)
    return net


def build_from_config(
    model: ModelSection,
    segmenter: SegmenterConfig | Mapping[str, Any],
    *,
    in_channels: int,
    out_channels: int,
    crop: int | None,
    default_crop: int | None = None,
) -> nn.Module:
    """The segmentation network of a run config's ``model`` section (``segmenter``: how it follows its
    pretraining file, for a network registered with ``follows_pretraining``).

    ``model`` is the network's settings (`asa.models.NetworkSettings`; a mapping is typed by
    `asa.api.configuration.checks.network_settings`): ``arch`` picks the network (default ``swvit_unetr``), ``pretrained``
    initialises its encoder from a pretraining checkpoint or encoder export, read once. ``crop`` is the crop
    edge (the network's input size); None takes, for a network that follows its pretraining, the crop
    recorded in that file, else ``default_crop``. For such a network a crop whose patch grid differs from the
    pretraining grid is an error unless ``segmenter.allow_grid_change`` (then the brain frame keeps the
    pretraining grid as its reference); ``model.pos_mode`` / ``model.lr_axis`` null take the file's
    values, else ``mirror`` / 0 (`pretrained_geometry`). The effective values are the network's ``img_size``,
    ``pos_mode``, ``lr_axis`` and ``reference_grid``: what such a network takes from a pretrained file
    besides its own settings (`asa.models.register_network`), and nothing else. A network that does not
    follow a pretraining file refuses the ``segmenter`` options, naming them.
    """
    settings = network_settings(model)
    arch, pretrained, options = settings.arch, settings.pretrained, settings.options()
    if arch not in architectures("segmentation"):
        raise ValueError(f"model.arch={arch}: not a segmentation network; expected one of "
                         f"{', '.join(architectures('segmentation'))}")
    channels = dict(in_channels=in_channels, out_channels=out_channels)
    if not isinstance(segmenter, SegmenterConfig):  # a mapping: the keys it gives, the rest at the schema's defaults
        segmenter = SegmenterConfig(**segmenter)
    if not network_record(arch).follows_pretraining:
        for key, value in asdict(segmenter).items():
            if value != getattr(SegmenterConfig, key):
                raise ValueError(f"segmenter.{key}={value}: model arch {arch!r} does not follow a pretraining file's "
                                 "geometry (the segmenter options are for networks that do, e.g. model=tiny|small|base)")
        blob = load_weights(pretrained) if pretrained and network_record(arch).encoder else None  # read once
        sets = file_settings(blob, arch, options) if blob is not None else FileSettings(None, {})
        crop = sets.crop if crop is None else crop  # the file's crop unless the run names one
        size = pretrained_geometry(None, crop=crop, pos_mode=None, lr_axis=None, default_crop=default_crop).crop
        options |= sets.options  # a published checkpoint's topology
        net = build_network({"arch": arch, "kwargs": {"img_size": (size,) * 3, **channels, **options}})
        if blob is not None:
            return _load(net, arch, pretrained, lambda: net.load_pretrained(pretrained, checkpoint=blob))
        return _load(net, arch, pretrained)
    allow_grid_change = segmenter.allow_grid_change
    geometry = pretrained_geometry(pretrained, crop=crop, pos_mode=options.pop("pos_mode", None),
                                   lr_axis=options.pop("lr_axis", None), default_crop=default_crop,
                                   reference_grid=segmenter.reference_grid,
                                   allow_grid_change=allow_grid_change)
    net = build_network({"arch": arch, "kwargs": {
        "img_size": (geometry.crop,) * 3, **channels, "pos_mode": geometry.pos_mode, "lr_axis": geometry.lr_axis,
        "reference_grid": geometry.reference_grid, **options}})
    return _load(net, arch, pretrained, lambda: net.load_pretrained(pretrained, checkpoint=geometry.checkpoint,
                                                                    allow_grid_change=allow_grid_change))


def case_arch(model: ModelSection) -> str:
    """The case network a case run builds for ``model.arch``: a case network itself, or the case
    counterpart a segmentation network registered (``swvit_unetr`` -> ``case_head``); another network,
    or a pretrained file for a network that takes none, is refused naming the option."""
    settings = network_settings(model)
    named = settings.arch
    arch = case_counterpart(named) or named
    if NETWORK_KINDS.get(arch) != "case":
        names = (*(n for n in architectures("segmentation") if case_counterpart(n)), *architectures("case"))
        raise ValueError(f"model.arch={named}: data.task=case takes a case network ({', '.join(names)}: "
                         f"model=tiny|small|base, model=vit_case|swin_case); {named} is a "
                         f"{NETWORK_KINDS.get(named, 'unknown')} network")
    if settings.pretrained and not callable(getattr(network_record(arch).builder, "load_pretrained", None)):
        raise ValueError(f"model.pretrained={settings.pretrained}: model arch {named!r} takes no pretrained "
                         f"encoder (its case network {arch!r} has no load_pretrained); leave model.pretrained unset, "
                         "or choose a network that takes one")
    return arch


def _case_options(settings: NetworkSettings, arch: str) -> dict[str, Any]:
    """The options of ``settings`` that the case network ``arch`` takes: the fields of its own settings (those
    of the segmentation network whose preset named it may hold more, e.g. the SW-ViT U-Net's decoder); one it
    lacks, set to other than its default, is refused naming it."""
    own = network_record(arch).settings
    options = settings.options()
    if own is None or type(settings) is own:
        return options
    taken, defaults = {f.name for f in fields(own)}, type(settings)(arch=settings.arch)
    for key, value in options.items():
        if key not in taken and value != getattr(defaults, key):
            raise ValueError(f"model.{key}={value}: data.task=case builds the case network {arch!r}, which has no "
                             f"such option; it takes {', '.join(f.name for f in fields(own))}")
    return {key: value for key, value in options.items() if key in taken}


def build_case_network(
    model: ModelSection,
    *,
    in_channels: int,
    out_channels: int,
    crop: int | None,
    default_crop: int,
    pooling: str = "mean",
    hidden_dim: int = 256,
    head_dropout: float = 0.0,
    target_shift: float = 0.0,
    target_scale: float = 1.0,
) -> nn.Module:
    """The case network of a run config's ``model`` section (typed as `build_from_config`'s): ``model.arch``
    a case network (`architectures("case")`: ``case_head``, ``vit_case``, ``swin_case``) or a segmentation
    network whose case counterpart is registered (``swvit_unetr``, the default -> ``case_head``: the model
    presets tiny|small|base serve both), with its own settings and the head's. The crop edge ``crop``
    (None: for a network that follows its pretraining, the crop the file records; else
    ``default_crop``); ``model.pos_mode`` / ``model.lr_axis`` (null: the file's, else ``mirror`` / 0); the
    encoder initialised from ``model.pretrained`` (an SW-ViT file's grid must be the crop's, docs/method.md §1.2;
    ``swin_case``: an SA-Swin pretraining file)."""
    settings = network_settings(model)
    arch, pretrained = case_arch(settings), settings.pretrained
    options = _case_options(settings, arch)
    head = dict(in_channels=in_channels, out_channels=out_channels, pooling=pooling, hidden_dim=hidden_dim,
                head_dropout=head_dropout, target_shift=target_shift, target_scale=target_scale)
    if not network_record(arch).follows_pretraining:
        size = crop if crop is not None else default_crop
        net = build_network({"arch": arch, "kwargs": {"img_size": size, **head, **options}})
        return _load(net, arch, pretrained)
    geometry = pretrained_geometry(pretrained, crop=crop, pos_mode=options.pop("pos_mode", None),
                                   lr_axis=options.pop("lr_axis", None), default_crop=default_crop)
    net = build_network({"arch": arch, "kwargs": {
        "img_size": to_3tuple(geometry.crop, "data.crop"), "pos_mode": geometry.pos_mode, "lr_axis": geometry.lr_axis,
        **head, **options}})
    return _load(net, arch, pretrained, lambda: net.load_pretrained(pretrained, checkpoint=geometry.checkpoint))
