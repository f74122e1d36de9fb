"""Network families: what asa reads of a network after training, declared once per family.

A family is the set of networks that share one encoder: the SW-ViT's (``swvit``: the masked autoencoder
``asa_pretrain``, the U-Net ``swvit_unetr``, the case head, the puzzle pretexts), MONAI's SwinViT (``swin``),
MONAI's ViT (``vit``), nnU-Net's residual-encoder U-Net (``resenc``), a plug-in's U-Net. Each network names its
family when it registers (`asa.models.register_network`'s ``family``); each family declares itself once with
:func:`register_family`, in its own folder (``models/<family>/family.py``, or a plug-in's one module):

- ``name``: the family's ``model.arch`` in asa-pretrain (``swvit``: the SW-ViT sizes, which name no arch);
- ``masked``: its masked twin, the network asa-pretrain's masked autoencoder builds for ``model.arch=<name>``,
  with ``pretrain_settings``, the dataclass of that ``model`` section; a file of the twin initialises the encoder
  of the family's networks;
- ``segmenter``: the segmentation network asa-finetune builds on the family's encoder (``model.arch``), the one a
  study fine-tunes every arm of the family with;
- ``face``: its encoder's face (an :class:`EncoderFace`): the encoder as `asa.load_encoder` returns it, the
  tokens the frozen-encoder probes read and the geometry they feed;
- ``exports``: the formats asa-export writes for it beyond asa's own (``nnunet``, ``nnssl``: nnU-Net's and
  nnssl's files; ``monai``: SwinUNETR's ``load_from`` layout), each refused for a spec that cannot take it
  (:meth:`Family.export_fault`);
- ``nnunet``: how nnU-Net builds the family's networks (an :class:`NNUNetForm`), which the ``nnunet`` and
  ``nnssl`` exports write and a published file of that architecture is read back through;
- ``presets``: the sizes a random-init encoder of the family takes (``asa-probe encoders=[random:<size>]``), each
  as the network spec of the masked twin (:meth:`Family.random_spec`);
- ``road``: how a file becomes one of its networks (a :class:`FileRoad`: what the file sets of the network and how
  its encoder is loaded; :meth:`Family.from_file`).

Where its networks keep the encoder is theirs to declare (`asa.models.keys`). Callers ask :func:`family_of` for the
family of a network and name none; :func:`network_from_file` is the one road
from a run's settings and its pretrained file to a network, whatever its family. This module imports only the
registry, `asa.models.declared`, `asa.models.twin` and `asa.models.published` (and `asa.io`, which reads the files:
`read_file`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, NamedTuple, Optional

import torch
from torch import nn

from asa.io import read_weights
from asa.models.declared import crop_edges
from asa.models.keys import EncoderKeys, encoder_keys
from asa.models.published import FileEncoder, read_planned, read_published
from asa.models.registry import FAMILIES, RECORDS, build_network, network_record, registered_networks
from asa.models.twin import twin_fault

__all__ = ["DEFAULT_FAMILY", "EncoderFace", "Family", "FileRoad", "FileSettings", "Geometry", "NNUNetForm",
           "StageTokens", "families", "family_of", "file_settings", "has_encoder", "masked_network",
           "network_from_file", "pretrain_model_sections", "pretrains", "published_spec", "read_file", "register_family"]

DEFAULT_FAMILY = "swvit"  # asa-pretrain's model section without an arch: the SW-ViT sizes (model=tiny|small|base)
EXPORTS = ("nnunet", "nnssl", "monai")  # the formats asa-export writes beyond asa's own

Geometry = tuple[tuple[int, int, int], int, int]  # (input size, token stride, input channels)


class EncoderFace:
    """How asa reads a family's encoder after training (the frozen-encoder probes, `asa.load_encoder`).

    :meth:`module` is the encoder as `asa.load_encoder` returns it (the submodule itself unless the family wraps
    it); :meth:`tokens` turns a volume [B, C, *size] into tokens [B, N, E] on a grid of ``stride`` voxels, raster
    order (axis 2 fastest); :meth:`geometry` is (input size, token stride, input channels) of an encoder, and
    refuses, naming ``where``, one the probes cannot feed."""

    def module(self, encoder: nn.Module, net: nn.Module) -> nn.Module:
        """The encoder submodule ``encoder`` of ``net`` as a module on volumes."""
        return encoder

    def tokens(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__}.tokens")

    def geometry(self, module: nn.Module, spec: Mapping[str, Any], state: Mapping | None, crop: int | None,
                 where: str) -> Geometry:
        raise NotImplementedError(f"{type(self).__name__}.geometry")

    def twin_tokens(self, twin: nn.Module, x: torch.Tensor, regions: torch.Tensor | None = None) -> torch.Tensor:
        """The tokens [B, N, E] of the masked twin ``twin``'s encoder on the whole volume x [B, C, *size], for the
        probes during pretraining (``regions`` [B, N]: patch regions, for an encoder with region attention)."""
        if regions is not None:
            raise ValueError(f"{type(self).__name__}: the encoder reads no region map")
        return self.tokens(self.module(twin.get_submodule(encoder_keys(twin).module), twin), x)


class StageTokens(EncoderFace):
    """A dynamic-network-architectures encoder (nnU-Net's U-Nets: it returns its stages' outputs, finest first,
    and declares its stage ``strides``): the bottleneck stage's voxels as tokens, at the encoder's total stride
    (its feature map of the crop, pooled as the transformers' tokens are)."""

    def tokens(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return module(x)[-1].flatten(2).transpose(1, 2)  # the bottleneck [B, C, d, h, w] -> [B, d·h·w, C]

    def geometry(self, module: nn.Module, spec: Mapping[str, Any], state: Mapping | None, crop: int | None,
                 where: str) -> Geometry:
        kwargs = spec.get("kwargs", {})
        if kwargs.get("coord_channel"):
            raise ValueError(f"{where}: a CNN encoder with the coordinate channel, which the frozen-encoder probes "
                             "do not feed (they give the image channels only); probe one pretrained without it")
        stride = math.prod(crop_edges(s)[0] for s in module.strides)
        size = crop_edges(crop if crop is not None else kwargs["img_size"])
        if any(s % stride for s in size):
            raise ValueError(f"crop={list(size)}: {where} holds a CNN encoder of total stride {stride}; take a "
                             f"crop that is a multiple of it")
        return size, stride, int(kwargs.get("in_channels", 1))


@dataclass(frozen=True)
class NNUNetForm:
    """How nnU-Net builds the networks of a family: ``network_class``, the dotted name of the class an nnU-Net plans
    file names (``network_class_name``; nnssl names it by its last part); ``arch_kwargs``, (spec, source) -> the
    plans' ``arch_kwargs`` of a network spec of the family, the op classes as dotted names (``requires_import``:
    the keys that hold them), refused naming ``source`` for a spec it cannot write; ``spec``, the inverse:
    (arch_kwargs, input channels, crop edge) -> the spec of the family's network whose encoder a file of that
    architecture initialises (a published or exported nnU-Net / nnssl file read back, `asa.models.load_weights`).

    Reading such a file (`asa.models.published`): ``keys``, the transfer keys the class declares on its instances
    (an nnssl plan must name them); ``read``, which of the file's tensors are the encoder and what network they form
    (default: as an nnssl plan states a dynamic-network-architectures U-Net); ``layouts``, the published layouts
    without a plan that hold the architecture (nnU-Net's, AMAES's); ``presets``, nnssl's named architectures of the
    class (``ResEncL``, ``PrimusM``: an ``arch_class_name`` without ``arch_kwargs``). Building it:
    ``deep_supervision``, what nnU-Net's builder passes (None: the class takes none); ``nnssl_names``, the
    ``arch_kwargs`` an nnssl plan states again under the names nnU-Net's nnssl route reads."""

    network_class: str
    arch_kwargs: Callable[[Mapping[str, Any], str], dict[str, Any]]
    spec: Callable[[Mapping[str, Any], int, int], dict[str, Any]]
    requires_import: tuple[str, ...] = ("conv_op", "norm_op", "dropout_op", "nonlin")
    keys: Optional[EncoderKeys] = None  # as its instances declare them (tested equal)
    read: Callable[[dict, Mapping[str, Any], Path], FileEncoder] = read_planned
    layouts: tuple[str, ...] = ()
    presets: tuple[str, ...] = ()
    deep_supervision: Optional[bool] = True  # as get_network_from_plans passes it
    nnssl_names: Mapping[str, str] = field(default_factory=dict)  # the route's name -> nnU-Net's

    @property
    def class_name(self) -> str:
        """The class's own name, as nnssl's adaptation plans name it (``arch_class_name``)."""
        return self.network_class.rsplit(".", 1)[-1]


class FileRoad:
    """How a run's settings and a file (``model.pretrained``) become a network of a family (:meth:`Family.from_file`).

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
            blob = read_file(pretrained)  # read once
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


@dataclass(frozen=True)
class Family:
    """One network family's declaration (see the module)."""

    name: str
    face: Optional[EncoderFace] = None
    masked: Optional[str] = None
    pretrain_settings: Optional[type] = None
    segmenter: Optional[str] = None
    exports: tuple[str, ...] = ()
    nnunet: Optional[NNUNetForm] = None  # how nnU-Net builds its networks: needed by the nnunet and nnssl exports
    # size -> the masked twin's keyword arguments of that size (img_size added): a random-init encoder's spec
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # why a spec of the family cannot take an export format (None: it can); by default every one declared can
    export_check: Optional[Callable[[str, Mapping[str, Any]], Optional[str]]] = None
    road: FileRoad = FILE_ROAD  # how a file becomes one of its networks

    def __post_init__(self) -> None:
        if (self.masked is None) != (self.pretrain_settings is None):
            raise ValueError(f"family {self.name!r}: masked and pretrain_settings come together")
        if self.pretrain_settings is not None and not is_dataclass(self.pretrain_settings):
            raise TypeError(f"family {self.name!r}: pretrain_settings must be a dataclass, got {self.pretrain_settings!r}")
        if unknown := [e for e in self.exports if e not in EXPORTS]:
            raise ValueError(f"family {self.name!r}: exports {unknown}; known: {', '.join(EXPORTS)}")
        if {"nnunet", "nnssl"} & set(self.exports) and self.nnunet is None:
            raise ValueError(f"family {self.name!r}: the nnunet and nnssl exports write the network nnU-Net builds; "
                             "declare it (nnunet=NNUNetForm(...))")
        if self.presets and self.masked is None:
            raise ValueError(f"family {self.name!r}: presets are sizes of its masked twin; it declares none")

    def export_fault(self, form: str, spec: Mapping[str, Any]) -> str | None:
        """Why the network ``spec`` of this family cannot be exported as ``form`` (None: it can)."""
        if form not in self.exports:
            takers = [f.name for f in families().values() if form in f.exports]
            return (f"a {spec.get('arch')!r} network ({self.name} family); the {form} export takes the "
                    f"{' / '.join(takers) or 'no'} family")
        return None if self.export_check is None else self.export_check(form, spec)

    def from_file(self, arch: str, pretrained: str | None, *, options: dict[str, Any], crop: int | None,
                  default_crop: int | None, channels: Mapping[str, int] | None = None,
                  head: Mapping[str, Any] | None = None, follow: Mapping[str, Any] | None = None) -> nn.Module:
        """The network ``arch`` of this family from a run's settings (``options``, the crop) and the file
        ``pretrained`` (None: from scratch) along the family's road: a segmenter of ``channels`` (in / out) or, given
        ``head`` (channels and the head's settings), a case network. ``follow``: the options of following the file
        that the run set (its ``segmenter`` section's, those not at their defaults)."""
        if head is not None:
            return self.road.case(arch, pretrained, options=dict(options), head=head, crop=crop,
                                  default_crop=default_crop)  # type: ignore[arg-type]
        return self.road.segmenter(arch, pretrained, options=dict(options), channels=channels or {}, crop=crop,
                                   default_crop=default_crop, follow=follow or {})

    def refuse_twin(self, builder: Callable[..., nn.Module]) -> None:
        """Refuse, in one line, a masked twin ``builder`` that keeps no `asa.models.twin` contract."""
        fault = twin_fault(builder)
        if fault is not None:
            raise TypeError(f"network family {self.name!r}: its masked twin {self.masked!r} is refused: {fault}")

    def options(self) -> frozenset[str]:
        """The fields of the family's pretraining ``model`` section (none: no masked twin)."""
        return frozenset(f.name for f in fields(self.pretrain_settings)) if self.pretrain_settings else frozenset()

    def random_spec(self, size: str, edge: int) -> dict[str, Any]:
        """The network spec of a random-init masked twin of preset ``size`` for crops of ``edge``."""
        if size not in self.presets:
            raise ValueError(f"random:{size}: the {self.name} family's sizes are {', '.join(self.presets) or 'none'}")
        return {"arch": self.masked, "kwargs": {**self.presets[size], "img_size": edge}}


def register_family(family: Family) -> Family:
    """Declare ``family``; declaring the same again is a no-op, another under a taken name an error, and a masked
    twin that keeps no `asa.models.twin` contract is refused (`Family.refuse_twin`)."""
    known = FAMILIES.get(family.name)
    if known is not None and known != family:
        raise ValueError(f"network family {family.name!r} is declared already")
    twin = RECORDS.get(family.masked) if family.masked else None
    if twin is not None:  # a twin registered later is checked when it registers (`register_network`)
        family.refuse_twin(twin.builder)
    FAMILIES[family.name] = family
    return family


def families() -> dict[str, Family]:
    """Every family: asa's and those of the installed plug-ins (whose networks declare them)."""
    registered_networks()  # reads the plug-ins' entry points, whose modules declare their families
    return dict(FAMILIES)


def family_of(arch: str | None) -> Family | None:
    """The family of the network registered as ``arch`` (None: no such network, or one of no family); a network
    naming a family nobody declared is refused, naming both."""
    record = network_record(arch) if arch else None
    if record is None or record.family is None:
        return None
    declared = families().get(record.family)
    if declared is None:
        raise ValueError(f"network {arch!r} names the family {record.family!r}, which no module declares "
                         "(asa.models.register_family)")
    return declared


NO_FAMILY = Family("")  # a network that names no family takes the plain road (`FileRoad`)


def has_encoder(arch: str | None) -> bool:
    """Whether the network registered as ``arch`` has an encoder that asa reads after training: its family
    declares the encoder's face (DynUNet's family, or no family: none)."""
    family = family_of(arch)
    return family is not None and family.face is not None


def network_from_file(arch: str, pretrained: str | None, **settings: Any) -> nn.Module:
    """The network ``arch`` from a run's settings and its pretrained file, along its family's road
    (:meth:`Family.from_file`, whose arguments ``settings`` are; a network of no family: the plain `FileRoad`)."""
    return (family_of(arch) or NO_FAMILY).from_file(arch, pretrained, **settings)


def masked_network(family: str) -> str | None:
    """The masked twin of asa-pretrain's ``model.arch=<family>`` (None: the family has none)."""
    declared = families().get(family)
    return None if declared is None else declared.masked


def pretrain_model_sections() -> dict[str, type]:
    """asa-pretrain's ``model.arch`` -> the dataclass of its ``model`` section, one per family with a masked twin."""
    return {name: f.pretrain_settings for name, f in families().items() if f.masked is not None}


def published_spec(info: Mapping[str, Any]) -> dict[str, Any]:
    """The network spec of a published file read in nnU-Net's terms (`asa.io.foreign`'s ``foreign`` record:
    ``network_class``, ``arch_kwargs``, ``input_channels``, ``crop``), as the family that declares that class for
    nnU-Net gives it (:attr:`NNUNetForm.spec`); a class no family declares is refused, naming the file, the
    architecture it states and the classes asa reads."""
    readers = {f.nnunet.class_name: f.nnunet for f in families().values() if f.nnunet is not None}
    form = readers.get(info["network_class"])
    if form is None:
        raise ValueError(f"{info['file']}: nnssl_adaptation_plan.architecture_plans.arch_class_name="
                         f"{info.get('architecture')!r}; asa reads {' / '.join(readers)} (the architectures its "
                         "network families declare for nnU-Net), not this architecture")
    return form.spec(info["arch_kwargs"], int(info["input_channels"]), int(info["crop"]))


def read_file(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """A pretraining checkpoint, encoder export, model folder (or hub id) or published checkpoint as a dict with
    its network spec (`asa.io.read_weights`; a published file's spec from the family that declares its
    architecture for nnU-Net, `published_spec`; its adaptation plan under ``"foreign"``): every file asa reads, as
    one kind of dict (`asa.models.load_weights`)."""
    blob = read_weights(path, map_location)
    if "foreign" in blob and "network" not in blob:  # read by the family of its architecture
        blob = read_published(blob, [f.nnunet for f in families().values() if f.nnunet is not None])
        blob["network"] = published_spec(blob["foreign"])
    return blob


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
