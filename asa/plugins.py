"""Plug-ins of one kind registered by name: the built-in ones, those registered in this process and
those installed packages declare in an entry-point group. The networks (`asa.models.registry`, group
``asa.networks``), the pretraining methods (`asa.methods`) and the fine-tuning tasks (`asa.api.tasks`) keep
theirs in a `Plugins` table; it imports nothing of asa, so it sits below all three."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from typing import Any

__all__ = ["Plugins"]


class Plugins(dict):
    """``name -> class`` of one ``kind`` of plug-in (a dict), with the entry-point ``group`` installed
    packages declare theirs in (read once, by `installed`)."""

    def __init__(self, kind: str, group: str) -> None:
        super().__init__()
        self.kind, self.group, self._read = kind, group, False

    def add(self, name: str, cls: Any) -> Any:
        """Register ``cls`` as ``name``; another class of the same name is an error, the same one again a no-op."""
        known = self.get(name)
        if known is not None and known is not cls:
            raise ValueError(f"a {self.kind} named {name!r} is registered already ({known.__module__}."
                             f"{known.__qualname__})")
        self[name] = cls
        return cls

    def installed(self, register: Callable[[Any], Any]) -> dict[str, Any]:
        """Every plug-in: the entry points of ``group`` passed to ``register`` (its checks, then `add`) the
        first time, then the table as it is."""
        if not self._read:
            self._read = True
            for entry in importlib.metadata.entry_points(group=self.group):
                register(entry.load())
        return dict(self)
