"""The network of a fine-tuning run config: the one place the ``model`` section becomes a network.

The ``model`` section arrives as the typed settings of its network (`asa.models.NetworkSettings`, checked by
`asa.api.configuration.checks.network_settings`). No branch here names an architecture: what a network takes is what it
declared when it registered (`asa.models.register_network`): its ``settings``, ``case_of`` (the case network a case
run builds from a segmentation preset) and its kind; what it takes from its pretrained file (the crop, a published
topology, an SW-ViT's geometry with the ``segmenter`` section's options of following it) is its family's road
(`asa.models.road.network_from_file`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, fields
from typing import Any

from torch import nn

from asa.api.configuration.checks import network_settings
from asa.api.configuration.schema import SegmenterConfig
from asa.models import NetworkSettings, architectures
from asa.models.road import network_from_file
from asa.models.registry import NETWORK_KINDS, case_counterpart, network_record

__all__ = ["build_case_network", "build_from_config", "case_arch"]

ModelSection = NetworkSettings | Mapping[str, Any]  # typed settings, or a mapping typed by `network_settings`


def build_from_config(
    model: ModelSection,
    segmenter: SegmenterConfig | Mapping[str, Any],
    *,
    in_channels: int,
    out_channels: int,
    crop: int | None,
    default_crop: int | None = None,
) -> nn.Module:
    """The segmentation network of a run config's ``model`` section, along its family's road from the pretrained
    file (`asa.models.road.network_from_file`); ``segmenter``: the options of following that file.

    ``model`` is the network's settings (`asa.models.NetworkSettings`; a mapping is typed by
    `asa.api.configuration.checks.network_settings`): ``arch`` picks the network (default ``swvit_unetr``), ``pretrained``
    initialises its encoder from a pretraining checkpoint or encoder export, read once. ``crop`` is the crop
    edge (the network's input size); None takes the crop recorded in the file, else ``default_crop``. An SW-ViT
    network follows its file further (`asa.models.swvit.family.SWViTRoad`): a crop whose patch grid differs from the
    pretraining grid is an error unless ``segmenter.allow_grid_change`` (then the brain frame keeps the
    pretraining grid as its reference); ``model.pos_mode`` / ``model.lr_axis`` null take the file's
    values, else ``mirror`` / 0. A network whose road does not follow a pretraining file refuses the ``segmenter``
    options, naming them.
    """
    settings = network_settings(model)
    arch = settings.arch
    if arch not in architectures("segmentation"):
        raise ValueError(f"model.arch={arch}: not a segmentation network; expected one of "
                         f"{', '.join(architectures('segmentation'))}")
    if not isinstance(segmenter, SegmenterConfig):  # a mapping: the keys it gives, the rest at the schema's defaults
        segmenter = SegmenterConfig(**segmenter)
    follow = {key: value for key, value in asdict(segmenter).items() if value != getattr(SegmenterConfig, key)}
    return network_from_file(arch, settings.pretrained, options=settings.options(), crop=crop,
                             default_crop=default_crop, channels=dict(in_channels=in_channels, out_channels=out_channels),
                             follow=follow)


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
    (None: for an SW-ViT network, the crop its file records; else ``default_crop``); ``model.pos_mode`` / ``model.lr_axis`` (null: the file's, else ``mirror`` / 0); the
    encoder initialised from ``model.pretrained`` (an SW-ViT file's grid must be the crop's, docs/method.md §1.2;
    ``swin_case``: an SA-Swin pretraining file)."""
    settings = network_settings(model)
    arch = case_arch(settings)
    head = dict(in_channels=in_channels, out_channels=out_channels, pooling=pooling, hidden_dim=hidden_dim,
                head_dropout=head_dropout, target_shift=target_shift, target_scale=target_scale)
    return network_from_file(arch, settings.pretrained, options=_case_options(settings, arch), crop=crop,
                             default_crop=default_crop, head=head)
