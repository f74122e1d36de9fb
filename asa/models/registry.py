"""Every network asa builds, by name, and the network spec that rebuilds one.

A network registers itself in its own file with :func:`register_network` (a decorator on the class or
function that takes the spec's flat keyword arguments), so adding a network means adding a file; an installed
package declares its networks in the entry-point group ``asa.networks`` (each entry names a registered
builder or the module that registers them), so they reach the console scripts too. Each network is one
:class:`NetworkRecord` in :data:`RECORDS`; ``NETWORKS``, ``NETWORK_KINDS`` and ``NETWORK_SETTINGS`` are
read-only views of one column of it. Where a network keeps its encoder, the network itself declares
(`asa.models.keys`).
A network names the family it belongs to (``family``: the networks that share one encoder); the family
declares once what asa reads of it after training, its masked twin and its export formats
(`asa.models.family`, kept in :data:`FAMILIES`).
A network that a fine-tuning run config may name (``model.arch``) registers its typed settings with it
(``settings=``, a :class:`NetworkSettings` subclass): the fields of the ``model`` section it takes,
with their types, defaults and choices (`asa.choices.one_of`), against which a run config is checked.
A network spec ``{"arch": name, "kwargs": {...}}`` holds every keyword argument that rebuilds the
network, resolved (input size, channels, position code, reference grid); each network records it
at construction (:func:`record_spec`), so every checkpoint and export asa writes carries the spec
of its network and prediction and fine-tuning rebuild it from the file.

This module imports nothing else of :mod:`asa.models`: every network file may import it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields, is_dataclass
from types import ModuleType
from typing import Any, Optional, TypeVar

from torch import nn

from asa.plugins import Plugins

# what a network is for (its kind; a fine-tuning task is `asa.api.tasks`', a dataset's labels `asa.data.get_task`'s):
# encoder: a network's encoder alone; case: a classification / regression head
KINDS = ("segmentation", "pretraining", "case", "encoder")
# omegaconf's marker of a required value, stated rather than imported: the networks (and asa.load_encoder)
# load without the config machinery
MISSING = "???"

Builder = TypeVar("Builder", bound=Callable[..., nn.Module])
Net = TypeVar("Net", bound=nn.Module)
ENTRY_POINT_GROUP = "asa.networks"

# a network's name before it was renamed -> its name now: the specs of files written before are read
# under the new name (`current_spec`), a config that names the old one is refused naming the new
RENAMED_NETWORKS = {"asa": "swvit_unetr"}  # the SW-ViT U-Net segmenter was "asa" (the package's name)


@dataclass
class NetworkSettings:
    """The ``model`` section of a fine-tuning run for one network: ``arch`` names it (the name it is
    registered under), ``pretrained`` is a pretraining checkpoint or encoder export its encoder starts
    from (null: from scratch; only a network with ``load_pretrained`` takes one). A network's subclass
    adds its own keyword arguments as fields, each with the network's default, so a run config states
    only what differs; `options` hands them to the network."""

    arch: str = MISSING
    pretrained: Optional[str] = None

    def options(self) -> dict[str, Any]:
        """The network's own keyword arguments: every field but ``arch`` and ``pretrained``."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("arch", "pretrained")}

    def region_option(self) -> str | None:
        """The option (``model.<key>=<value>``) under which the network reads a region map per case
        (``forward(x, regions=...)``); None: these settings read none."""
        return None


@dataclass(frozen=True)
class NetworkRecord:
    """What a network declared when it registered (`register_network`): its ``builder`` (the class or
    function taking a spec's flat keyword arguments), its ``kind``, the segmentation network it is the case
    counterpart of (``case_of``),
    its run-config ``settings`` and its ``family`` (`asa.models.family`: what it takes from a pretraining file is
    its family's road)."""

    builder: Callable[..., nn.Module]
    kind: str
    case_of: Optional[str] = None
    settings: Optional[type[NetworkSettings]] = None
    family: Optional[str] = None


RECORDS = Plugins("network", ENTRY_POINT_GROUP)  # name -> NetworkRecord
FAMILIES: dict[str, Any] = {}  # family name -> its asa.models.family.Family (declared by its folder or plug-in)


def _installed(entry: Any) -> None:
    """An entry point of ``asa.networks``, loaded (which registered its networks): a registered builder or a
    module; anything else is refused naming it."""
    if not (isinstance(entry, ModuleType) or any(r.builder is entry for r in RECORDS.values())):
        raise TypeError(f"entry point of {ENTRY_POINT_GROUP}: {entry!r} is neither a module nor a builder "
                        "registered with asa.models.register_network")


def registered_networks() -> dict[str, NetworkRecord]:
    """Every network: asa's, those registered in this process and those of the ``asa.networks`` entry points."""
    return RECORDS.installed(_installed)


def network_record(name: str) -> NetworkRecord | None:
    """The record of the network registered as ``name`` (None: no such network)."""
    return registered_networks().get(name)


class _Column(Mapping):
    """A read-only view ``name -> <one field of its record>`` of the networks whose field is set."""

    def __init__(self, column: str) -> None:
        self.column = column

    def _rows(self) -> dict[str, Any]:
        return {name: value for name, record in registered_networks().items()
                if (value := getattr(record, self.column)) is not None}

    def __getitem__(self, name: str) -> Any:
        return self._rows()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows())

    def __len__(self) -> int:
        return len(self._rows())

    def __repr__(self) -> str:
        return f"{self._rows()!r}"


NETWORKS: Mapping[str, Callable[..., nn.Module]] = _Column("builder")  # name -> what builds it from a spec
NETWORK_KINDS: Mapping[str, str] = _Column("kind")  # name -> segmentation | pretraining | case | encoder
NETWORK_SETTINGS: Mapping[str, type[NetworkSettings]] = _Column("settings")  # name -> its model section


def register_network(name: str, *, kind: str | None = None, case_of: str | None = None,
                     settings: type[NetworkSettings] | None = None, family: str | None = None,
                     **renamed: Any) -> Callable[[Builder], Builder]:
    """Register the decorated class or function as the network ``name`` of ``kind``
    (``segmentation``, ``pretraining``, ``case`` or ``encoder``); it takes the flat keyword arguments of a network
    spec.
    ``case_of``: the segmentation network whose model presets a case run builds this case network from.
    ``settings``: the typed ``model`` section of a run config that names this network (None: no run config
    can). ``family``: the network family it belongs to (`asa.models.family.register_family` declares it).
    Registering the same builder again is a no-op; another under a taken name is an error; ``task=``, the
    earlier name of ``kind=``, ``follows_pretraining=``, now its family's road, and ``encoder=``, now the
    network's own declaration, are refused naming them."""
    if renamed:
        given = ", ".join(f"{k}={v!r}" for k, v in renamed.items())
        raise TypeError(f"register_network({name!r}, {given}): " + (
            "task= is kind= now (what the network is for)" if "task" in renamed else
            "follows_pretraining= is the family's road now (family=, and asa.models.register_family(Family(..., "
            "road=...)): an SW-ViT's is asa.models.swvit.family.SWViTRoad)" if "follows_pretraining" in renamed else
            "encoder= is the network's own declaration now (key_to_encoder, key_to_stem, keys_to_in_proj, as "
            "dynamic-network-architectures' networks declare theirs: asa.models.keys)" if "encoder" in renamed else
            "no such argument"))
    if kind not in KINDS:
        raise ValueError(f"register_network({name!r}): kind must be one of {KINDS}, got {kind!r}")
    if settings is not None and not (is_dataclass(settings) and issubclass(settings, NetworkSettings)):
        raise TypeError(f"register_network({name!r}): settings must be a NetworkSettings dataclass, got {settings!r}")

    def register(build: Builder) -> Builder:
        known = RECORDS.get(name)
        if known is not None and known.builder is not build:
            raise ValueError(f"network {name!r} is registered already (by {known.builder.__qualname__})")
        declared = FAMILIES.get(family) if family else None
        if declared is not None and declared.masked == name:  # the family's masked twin keeps its contract
            declared.refuse_twin(build)
        RECORDS[name] = NetworkRecord(build, kind, case_of, settings, family)
        return build

    return register


def architectures(kind: str) -> tuple[str, ...]:
    """The names of the registered networks of ``kind`` (``segmentation``, ``pretraining``, ``case``)."""
    return tuple(name for name, record in registered_networks().items() if record.kind == kind)


def case_counterpart(name: str) -> str | None:
    """The case network registered as the counterpart (``case_of``) of the segmentation network ``name``."""
    return next((n for n, record in registered_networks().items() if record.case_of == name), None)


def keyword_options(name: str) -> frozenset[str]:
    """The keyword arguments the builder of the network ``name`` takes: those its signature names (a class:
    its ``__init__``'s) and, for one that gathers the rest (``**kwargs``), those it declares in its
    ``keyword_options`` attribute."""
    builder = registered_networks()[name].builder
    named = {p.name for p in inspect.signature(builder).parameters.values()
             if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    return frozenset(named) | frozenset(getattr(builder, "keyword_options", ()))


def current_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A network spec read from a file, with a network renamed since it was written under its name now
    (`RENAMED_NETWORKS`); a copy, the rest as it is."""
    spec = dict(spec)
    if spec.get("arch") in RENAMED_NETWORKS:
        spec["arch"] = RENAMED_NETWORKS[spec["arch"]]
    return spec


def record_spec(net: Net, arch: str, kwargs: Mapping[str, Any]) -> Net:
    """Record on ``net`` the spec that rebuilds it: ``arch`` and its resolved keyword arguments."""
    net.network_arch = arch
    net.network_kwargs = dict(kwargs)
    return net


def build_network(spec: Mapping[str, Any]) -> nn.Module:
    """The network of a spec ``{"arch": name, "kwargs": {...}}`` (see :func:`network_spec`). A network
    whose builder records no keyword arguments records those it was built from."""
    if not isinstance(spec, Mapping) or not isinstance(spec.get("kwargs"), Mapping):
        raise ValueError(f"network spec must be {{'arch': name, 'kwargs': {{...}}}}, got {spec!r}")
    arch = current_spec(spec).get("arch")
    if (record := network_record(arch)) is None:
        raise ValueError(f"network spec: unknown arch {arch!r}; expected one of {tuple(registered_networks())}")
    net = record.builder(**spec["kwargs"])
    return record_spec(net, arch, getattr(net, "network_kwargs", None) or spec["kwargs"])


def network_spec(net: nn.Module) -> dict[str, Any] | None:
    """``{"arch", "kwargs"}`` that rebuilds ``net`` with :func:`build_network`; None for a network that
    records no spec (one asa did not build by name, e.g. a :class:`MaskedAutoencoder` put together
    from parts by hand)."""
    arch, kwargs = getattr(net, "network_arch", None), getattr(net, "network_kwargs", None)
    if arch is None or kwargs is None:
        return None
    return {"arch": arch, "kwargs": dict(kwargs)}
