"""The masked twin's contract: what asa-pretrain's masked autoencoder (`asa.methods.masked_autoencoder`: its training
step and its panels) reads of the network a family declares as ``masked`` (`asa.models.family.Family`).

A masked twin is an ``nn.Module`` whose ``forward(x [B, C, D, H, W], extra=None)`` returns a :class:`MaskedOutput`
(``extra``: a region map or the crops' offsets, as the network takes one), whose ``check_options`` (optional, a
static method) refuses method options before the network is built, and whose ``unpatchify`` (optional) turns its
patch tokens back into a volume for the image panels. The family's declaration checks it (:func:`twin_fault`): a
twin whose builder names no such class is refused when the family or the twin registers, in one line.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

__all__ = ["MaskedOutput", "MaskedTwin", "twin_class", "twin_fault"]


@dataclass
class MaskedOutput:
    """What a masked twin's forward returns.

    Args:
        loss: scalar, the reconstruction loss.
        pred: the reconstruction: patch tokens [B, N, C·s³] for a twin with ``unpatchify``, else [B, C, D, H, W].
        mask: [B, n], 1 on a masked unit (patch or block), raster order.
        weights: [B, n_w], each loss unit's weight (0 on visible units); its units are :attr:`units`.
    """

    loss: torch.Tensor
    pred: torch.Tensor
    mask: torch.Tensor
    weights: torch.Tensor

    @property
    def units(self) -> torch.Tensor:
        """[B, n_w], 1 on a masked loss unit: the mask's units unless a twin weighs finer ones."""
        return self.mask


@runtime_checkable
class MaskedTwin(Protocol):
    """The network a family declares as its masked twin (see the module)."""

    def forward(self, x: torch.Tensor, extra: torch.Tensor | None = None) -> MaskedOutput: ...


def twin_class(builder: Callable[..., nn.Module]) -> type | None:
    """The class a network builder makes: the builder itself when it is a class, else its return annotation
    (None: it names none)."""
    if isinstance(builder, type):
        return builder
    try:
        made = typing.get_type_hints(builder).get("return")
    except (NameError, TypeError):
        return None
    return made if isinstance(made, type) else None


def twin_fault(builder: Callable[..., nn.Module]) -> str | None:
    """Why ``builder`` cannot build a masked twin (None: it can): its class is no ``nn.Module`` (or the builder names
    none), its ``forward`` returns no :class:`MaskedOutput`, or its ``check_options`` is not callable (or hangs on
    the builder function, where it was before the contract)."""
    if not isinstance(builder, type) and hasattr(builder, "check_options"):
        return ("check_options is an attribute of its builder function; it is a static method of the twin's class "
                "now")
    cls = twin_class(builder)
    if cls is None or not issubclass(cls, nn.Module):
        return (f"its builder {getattr(builder, '__qualname__', builder)!r} names no nn.Module class (annotate the "
                "function's return type with the network's class)")
    try:
        returns: Any = typing.get_type_hints(cls.forward).get("return")
    except (NameError, TypeError):
        returns = None
    if not (isinstance(returns, type) and issubclass(returns, MaskedOutput)):
        return (f"{cls.__qualname__}.forward returns {getattr(returns, '__qualname__', returns)!r}, not an "
                "asa.models.twin.MaskedOutput (annotate it; subclass MaskedOutput for more fields)")
    if not callable(getattr(cls, "check_options", lambda **_: None)):
        return f"{cls.__qualname__}.check_options is not callable"
    return None
