"""Every network asa builds, by name, and the network spec that rebuilds one.

A network registers itself in its own file with :func:`register_network` (a decorator on the class or
function that takes the spec's flat keyword arguments), so adding a network means adding a file.
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

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, is_dataclass
from typing import Any, Optional, TypeVar

from torch import nn

TASKS = ("segmentation", "pretraining", "case", "encoder")  # encoder: a network's encoder alone
# omegaconf's marker of a required value, stated rather than imported: the networks (and asa.load_encoder)
# load without the config machinery
MISSING = "???"  # case: a classification / regression head

Builder = TypeVar("Builder", bound=Callable[..., nn.Module])
Net = TypeVar("Net", bound=nn.Module)

# name -> the class or function that builds the network from a spec's flat keyword arguments
NETWORKS: dict[str, Callable[..., nn.Module]] = {}
# name -> "segmentation" (logits [B, K, D, H, W]) or "pretraining"
NETWORK_TASKS: dict[str, str] = {}
# name -> the encoder submodule of a network that has one: its state-dict keys are "<module>.*" in
# checkpoints and encoder exports
ENCODER_MODULES: dict[str, str] = {}
# names of the SW-ViT networks whose input geometry follows a pretraining file: the crop edge, the
# position code, the symmetric axis and the brain frame's reference grid (`asa.api.networks`)
FOLLOWS_PRETRAINING: set[str] = set()
# a segmentation network's name -> the case network on the same encoder (a model preset names the
# segmentation network; a case run builds its case counterpart)
CASE_COUNTERPARTS: dict[str, str] = {}
# name -> the typed settings of a network a run config's ``model`` section may name
NETWORK_SETTINGS: dict[str, type[NetworkSettings]] = {}
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


def register_network(name: str, *, task: str, encoder: str | None = None, follows_pretraining: bool = False,
                     case_of: str | None = None,
                     settings: type[NetworkSettings] | None = None) -> Callable[[Builder], Builder]:
    """Register the decorated class or function as the network ``name`` of ``task``
    (``segmentation``, ``pretraining`` or ``case``); it takes the flat keyword arguments of a network spec.
    ``encoder``: the submodule whose weights an encoder export holds, if any. ``follows_pretraining``:
    an SW-ViT network whose crop, position code, symmetric axis and reference grid a pretraining file
    sets (it takes ``img_size``, ``pos_mode``, ``lr_axis`` and ``reference_grid``). ``case_of``: the
    segmentation network whose model presets a case run builds this case network from. ``settings``:
    the typed ``model`` section of a run config that names this network (None: no run config can)."""
    if task not in TASKS:
        raise ValueError(f"register_network({name!r}): task must be one of {TASKS}, got {task!r}")
    if settings is not None and not (is_dataclass(settings) and issubclass(settings, NetworkSettings)):
        raise TypeError(f"register_network({name!r}): settings must be a NetworkSettings dataclass, got {settings!r}")

    def register(build: Builder) -> Builder:
        if NETWORKS.get(name, build) is not build:
            raise ValueError(f"network {name!r} is registered already (by {NETWORKS[name].__qualname__})")
        NETWORKS[name], NETWORK_TASKS[name] = build, task
        if encoder is not None:
            ENCODER_MODULES[name] = encoder
        if follows_pretraining:
            FOLLOWS_PRETRAINING.add(name)
        if case_of is not None:
            CASE_COUNTERPARTS[case_of] = name
        if settings is not None:
            NETWORK_SETTINGS[name] = settings
        return build

    return register


def architectures(task: str) -> tuple[str, ...]:
    """The names of the registered networks of ``task`` (``segmentation`` or ``pretraining``)."""
    return tuple(name for name in NETWORKS if NETWORK_TASKS.get(name) == task)


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
    if arch not in NETWORKS:
        raise ValueError(f"network spec: unknown arch {arch!r}; expected one of {tuple(NETWORKS)}")
    net = NETWORKS[arch](**spec["kwargs"])
    return record_spec(net, arch, getattr(net, "network_kwargs", None) or spec["kwargs"])


def network_spec(net: nn.Module) -> dict[str, Any] | None:
    """``{"arch", "kwargs"}`` that rebuilds ``net`` with :func:`build_network`; None for a network that
    records no spec (one asa did not build by name, e.g. a :class:`MaskedAutoencoder` put together
    from parts by hand)."""
    arch, kwargs = getattr(net, "network_arch", None), getattr(net, "network_kwargs", None)
    if arch is None or kwargs is None:
        return None
    return {"arch": arch, "kwargs": dict(kwargs)}
