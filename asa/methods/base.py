"""The protocol every pretraining method implements, and the registry of methods by name."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import torch
from omegaconf import MISSING
from torch import nn

from asa.models.family import DEFAULT_FAMILY
from asa.plugins import Plugins

__all__ = ["METHODS", "MethodContext", "MethodSettings", "PretrainingMethod", "RegionNeeds", "get_method",
           "register_method"]

StepFn = Callable[[nn.Module, Mapping], tuple[torch.Tensor, Mapping]]
PanelFn = Callable[[nn.Module, int], dict[str, torch.Tensor]]
ENTRY_POINT_GROUP = "asa.methods"


@dataclass
class MethodSettings:
    """The ``method`` group of ``asa-pretrain``: ``name`` picks the method; a method's own settings
    subclass this, and their defaults are the method's defaults (stated nowhere else)."""

    name: str = MISSING


@dataclass(frozen=True)
class MethodContext:
    """What a method may read of the run besides its own settings.

    ``crop``: the crop edge (``data.crop``); ``channels``: the input channels (names); ``batch_size``: volumes per
    device and step; ``model``: the ``model`` group (SW-ViT encoder and decoder sizes), which only a
    method declaring `PretrainingMethod.uses_model_group` builds from (another may refuse options
    of it that it would ignore)."""

    crop: int
    channels: tuple[str, ...]
    batch_size: int
    model: Mapping[str, Any] = field(default_factory=dict)


class RegionNeeds(NamedTuple):
    """The options of a method that need a region map per case (``needed_by``), and the one that
    feeds the map into the network (``network``; None when only a loss term reads it)."""

    needed_by: tuple[str, ...] = ()
    network: str | None = None


class PretrainingMethod(ABC):
    """One pretraining method: built from its settings and the run's context (`check` refuses
    settings it cannot train with, before anything is written), it gives its network, its training
    step, its panels and, where it has one, the encoder features the frozen-encoder probes read. The
    encoder export keeps the encoder its network declares (`asa.models.keys`).

    Class attributes: ``name`` (the ``method=`` value), ``Settings`` (its `MethodSettings` subclass),
    ``uses_model_group`` (whether the ``model`` group configures it; when not, the run records no
    ``model`` section and resume does not compare one), ``validation_group`` (None: validation
    scores plain batches; k: fixed groups of at least k volumes, for terms that compare volumes),
    ``model_families`` (the ``model.arch`` values it pretrains, `pretrained_families`: ``swvit``, the SW-ViT
    sizes that name none; another is refused naming the methods that pretrain it).
    """

    name: ClassVar[str]
    Settings: ClassVar[type[MethodSettings]]
    uses_model_group: ClassVar[bool] = False
    validation_group: ClassVar[int | None] = None
    model_families: ClassVar[tuple[str, ...]] = (DEFAULT_FAMILY,)

    def __init__(self, settings: MethodSettings, context: MethodContext) -> None:
        if not isinstance(settings, self.Settings):
            raise TypeError(f"method {self.name}: settings must be {self.Settings.__name__}, got "
                            f"{type(settings).__name__}")
        family = str(context.model.get("arch", DEFAULT_FAMILY))
        if family not in self.pretrained_families():
            others = sorted(n for n, m in registered_methods().items() if family in m.pretrained_families())
            raise ValueError(f"model.arch={family}: method={self.name} does not pretrain it (it pretrains "
                             f"{', '.join(self.pretrained_families())}); "
                             + (f"method={' or method='.join(others)} does" if others else "no method pretrains it"))
        self.settings = settings
        self.context = context
        self.check()

    @classmethod
    def pretrained_families(cls) -> tuple[str, ...]:
        """The ``model.arch`` values this method pretrains (``model_families``; the SW-ViT sizes: ``swvit``)."""
        return cls.model_families

    def check(self) -> None:
        """Raise ``ValueError`` naming the option for settings this method cannot train with."""

    @abstractmethod
    def build_network(self) -> nn.Module:
        """The network to pretrain, carrying its spec (``network_arch``/``network_kwargs``)."""

    @abstractmethod
    def step_of(self, cases: Sequence, root: Path | None) -> StepFn:
        """step(model, batch) -> (loss, logs) for the run's ``cases``, read from the dataset folder
        ``root`` (for case-level annotations such as participants.tsv); also the validation loss."""

    def regions(self) -> RegionNeeds:
        """Which of its options need region maps (none by default)."""
        return RegionNeeds()

    def panel(self, sample: Mapping) -> PanelFn | None:
        """panel(model, step) -> TensorBoard images of one fixed ``sample``; None: no panels."""
        return None

    def probe_tokens(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Frozen-encoder features of ``x`` [B, C, D, H, W] as tokens [B, N, C'] on the patch grid of
        `probe_stride`, for the probes; a method without them raises NotImplementedError."""
        raise NotImplementedError(f"method {self.name} gives no encoder tokens to the probes")

    def probe_stride(self, model: nn.Module) -> int | None:
        """Edge (voxels) of the patches `probe_tokens` returns one token for on ``model``, the network
        `build_network` built; None: no probes."""
        return None


METHODS = Plugins("pretraining method", ENTRY_POINT_GROUP)  # name -> PretrainingMethod subclass


def register_method(cls: type[PretrainingMethod]) -> type[PretrainingMethod]:
    """Add ``cls`` to the registry under ``cls.name`` (usable as a class decorator); a second method
    of the same name is an error, registering the same class again is a no-op."""
    for attr in ("name", "Settings"):
        if not hasattr(cls, attr):
            raise TypeError(f"pretraining method {cls.__name__} lacks the class attribute {attr!r}")
    if not (isinstance(cls.Settings, type) and issubclass(cls.Settings, MethodSettings)):
        raise TypeError(f"method {cls.name}: Settings must subclass asa.methods.MethodSettings")
    return METHODS.add(cls.name, cls)


def registered_methods() -> dict[str, type[PretrainingMethod]]:
    """Every method: the built-in ones, those registered in this process and the entry points'."""
    return METHODS.installed(register_method)


def get_method(name: str) -> type[PretrainingMethod]:
    """The method class registered as ``name``; an unknown name raises ``ValueError`` naming the
    option and the known methods."""
    methods = registered_methods()
    if name not in methods:
        raise ValueError(f"method={name}: no such pretraining method; expected one of {', '.join(sorted(methods))}")
    return methods[name]
