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
- ``face``: its encoder's face (an `asa.models.face.EncoderFace`): the encoder as `asa.load_encoder` returns it, the
  tokens the frozen-encoder probes read and the geometry they feed;
- ``nnunet``: how nnU-Net builds the family's networks (an :class:`NNUNetForm`), which the ``nnunet`` and
  ``nnssl`` formats write (`asa.formats`) and a published file of that architecture is read back through;
  ``export_check``, why a spec of the family cannot take a format (by name) that takes the family;
- ``presets``: the sizes a random-init encoder of the family takes (``asa-probe encoders=[random:<size>]``), each
  as the network spec of the masked twin (:meth:`Family.random_spec`);
- ``road``: how a file becomes one of its networks (an `asa.models.road.FileRoad`: what the file sets of the
  network and how its encoder is loaded; `asa.models.road.network_from_file`, the one road whatever the family).

Where its networks keep the encoder is theirs to declare (`asa.models.keys`). Callers ask :func:`family_of` for the
family of a network and name none. This module imports only the registry, `asa.models.twin`,
`asa.models.published`, `asa.models.keys` and `asa.models.face`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Optional

from torch import nn

from asa.models.face import EncoderFace
from asa.models.keys import EncoderKeys
from asa.models.published import FileEncoder, read_planned
from asa.models.registry import FAMILIES, RECORDS, network_record, registered_networks
from asa.models.twin import twin_fault

__all__ = ["DEFAULT_FAMILY", "Family", "NNUNetForm", "families", "family_of", "has_encoder", "masked_network",
           "pretrain_model_sections", "register_family"]

DEFAULT_FAMILY = "swvit"  # asa-pretrain's model section without an arch: the SW-ViT sizes (model=tiny|small|base)


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


@dataclass(frozen=True)
class Family:
    """One network family's declaration (see the module)."""

    name: str
    face: Optional[EncoderFace] = None
    masked: Optional[str] = None
    pretrain_settings: Optional[type] = None
    segmenter: Optional[str] = None
    nnunet: Optional[NNUNetForm] = None  # how nnU-Net builds its networks: what the nnunet and nnssl formats write
    # size -> the masked twin's keyword arguments of that size (img_size added): a random-init encoder's spec
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # why a spec of the family cannot take a format that takes the family (None: it can); by default it can
    export_check: Optional[Callable[[str, Mapping[str, Any]], Optional[str]]] = None
    road: Optional[Any] = None  # how a file becomes one of its networks: an asa.models.road.FileRoad (None: plain)

    def __post_init__(self) -> None:
        if (self.masked is None) != (self.pretrain_settings is None):
            raise ValueError(f"family {self.name!r}: masked and pretrain_settings come together")
        if self.pretrain_settings is not None and not is_dataclass(self.pretrain_settings):
            raise TypeError(f"family {self.name!r}: pretrain_settings must be a dataclass, got {self.pretrain_settings!r}")
        if self.presets and self.masked is None:
            raise ValueError(f"family {self.name!r}: presets are sizes of its masked twin; it declares none")

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


def has_encoder(arch: str | None) -> bool:
    """Whether the network registered as ``arch`` has an encoder that asa reads after training: its family
    declares the encoder's face (DynUNet's family, or no family: none)."""
    family = family_of(arch)
    return family is not None and family.face is not None


def masked_network(family: str) -> str | None:
    """The masked twin of asa-pretrain's ``model.arch=<family>`` (None: the family has none)."""
    declared = families().get(family)
    return None if declared is None else declared.masked


def pretrain_model_sections() -> dict[str, type]:
    """asa-pretrain's ``model.arch`` -> the dataclass of its ``model`` section, one per family with a masked twin."""
    return {name: f.pretrain_settings for name, f in families().items() if f.masked is not None}


