"""The one road from a run's settings and its pretrained file (``model.pretrained``) to a network, whatever its family
(`network_from_file`): the family's road (`asa.models.family.Family`'s ``road``), else the plain `FileRoad`, and what
a file sets of the network it initialises (`file_settings`)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any, NamedTuple

from torch import nn

from asa.models.family import family_of, has_encoder
from asa.models.registry import build_network
from asa.models.weights import load_weights

__all__ = ["FILE_ROAD", "FileRoad", "FileSettings", "file_settings", "load_pretrained", "network_from_file",
           "pretrains"]


class FileRoad:
    """How a run's settings and a file (``model.pretrained``) become a network of a family (`network_from_file`).

    This road, every family's unless it declares another: the file sets the crop it was made for and a published
    checkpoint's topology (`file_settings`), when it holds an encoder of the network; the network loads it with its
    ``load_pretrained``. A family whose networks take more from their file (the SW-ViT's grid, position code and
    symmetric axis) declares a subclass. ``follow``: the options of following a file (the run's ``segmenter``
    section, those set to other than their defaults); this road takes none."""

    def segmenter(self, arch: str, pretrained: str | None, *, options: dict[str, Any], channels: Mapping[str, int],
                  crop: int | None, default_crop: int | None, follow: Mapping[str, Any]) -> nn.Module:
        """The segmentation network ``arch`` of ``options`` (its settings), ``channels`` (in / out) and ``crop``."""
        for key, value in follow.items():
            raise ValueError(f"segmenter.{key}={value}: model arch {arch!r} does not follow a pretraining file's "
                             "geometry (the segmenter options are for networks that do, e.g. model=tiny|small|base)")
        blob = None
        if pretrained and has_encoder(arch):
            blob = load_weights(pretrained)  # read once
        sets = file_settings(blob, arch, options) if blob is not None else FileSettings(None, {})
        crop = sets.crop if crop is None else crop  # the file's crop unless the run names one
        size = crop if crop is not None else default_crop
        if size is None:
            raise ValueError("the crop size is unknown: give crop, a pretrained file that records its crop, "
                             "or default_crop")
        options = {**options, **sets.options}  # a published checkpoint's topology
        net = build_network({"arch": arch, "kwargs": {"img_size": (int(size),) * 3, **channels, **options}})
        if blob is not None:
            return load_pretrained(net, arch, pretrained, lambda: net.load_pretrained(pretrained, checkpoint=blob))
        return load_pretrained(net, arch, pretrained)

    def case(self, arch: str, pretrained: str | None, *, options: dict[str, Any], head: Mapping[str, Any],
             crop: int | None, default_crop: int) -> nn.Module:
        """The case network ``arch`` of ``options`` (its settings) and ``head`` (channels and the head's settings)."""
        size = crop if crop is not None else default_crop
        net = build_network({"arch": arch, "kwargs": {"img_size": size, **head, **options}})
        return load_pretrained(net, arch, pretrained)


def load_pretrained(net: nn.Module, arch: str, pretrained: str | None, load: Callable[[], Any] | None = None
                    ) -> nn.Module:
    """Initialise ``net``'s encoder from ``pretrained`` (``load``: how, when the road read the file; else its
    ``load_pretrained(path)``); a network without ``load_pretrained`` refuses a file."""
    if not pretrained:
        return net
    if not callable(getattr(net, "load_pretrained", None)):
        raise ValueError(f"model.pretrained={pretrained}: model arch {arch!r} takes no pretrained encoder (its "
                         "network has no load_pretrained); leave model.pretrained unset, or choose a network that "
                         "takes one")
    load() if load is not None else net.load_pretrained(pretrained)
    return net


FILE_ROAD = FileRoad()


def network_from_file(arch: str, pretrained: str | None, *, options: dict[str, Any], crop: int | None,
                      default_crop: int | None, channels: Mapping[str, int] | None = None,
                      head: Mapping[str, Any] | None = None, follow: Mapping[str, Any] | None = None) -> nn.Module:
    """The network ``arch`` from a run's settings (``options``, the crop) and its pretrained file ``pretrained``
    (None: from scratch) along its family's road (the plain `FileRoad` for a family that declares none, or a network
    of no family): a segmenter of ``channels`` (in / out) or, given ``head`` (channels and the head's settings), a
    case network. ``follow``: the options of following the file that the run set (its ``segmenter`` section's, those
    not at their defaults)."""
    family = family_of(arch)
    road = FILE_ROAD if family is None or family.road is None else family.road
    if head is not None:
        return road.case(arch, pretrained, options=dict(options), head=head, crop=crop,
                         default_crop=default_crop)  # type: ignore[arg-type]
    return road.segmenter(arch, pretrained, options=dict(options), channels=channels or {}, crop=crop,
                          default_crop=default_crop, follow=follow or {})


class FileSettings(NamedTuple):
    """What a pretraining file sets for a network beyond the run's settings (`file_settings`)."""

    crop: int | None  # the crop edge the file was made for (None: it records none, or holds no encoder of the network)
    options: dict[str, Any]  # spec options it sets whatever the settings say (a published checkpoint's topology)


def file_settings(blob: Mapping[str, Any], network: str, taken: Collection[str]) -> FileSettings:
    """What the pretraining file ``blob`` (as `asa.models.load_weights` reads it) sets for the network ``network``,
    whose settings hold the options ``taken``: nothing when the file holds no encoder of it (`pretrains`); else the crop
    it was made for, a published checkpoint's recommended one (`asa.io.foreign`: the file's ``foreign`` record) or
    the input size asa recorded, and for a published checkpoint every option its spec records beyond the crop, the
    channels and ``taken``: its topology, which the network must have whatever its settings say."""
    spec = blob.get("network") or {}
    if not pretrains(spec.get("arch"), network):
        return FileSettings(None, {})
    kwargs = spec.get("kwargs", {})
    if "foreign" in blob:
        return FileSettings(int(blob["foreign"]["crop"]), {k: v for k, v in kwargs.items() if k not in taken and k
                                                           not in ("img_size", "in_channels", "out_channels")})
    recorded = kwargs.get("img_size")
    recorded = recorded if recorded is None or isinstance(recorded, (int, float)) else recorded[0]
    return FileSettings(None if recorded is None else int(recorded), {})


def pretrains(arch: str | None, network: str) -> bool:
    """Whether a file of the network ``arch`` holds an encoder for the network ``network``: a file of that
    network itself, or of the masked twin of ``network``'s family."""
    family = family_of(network)
    return arch == network or (arch is not None and family is not None and family.masked == arch)
