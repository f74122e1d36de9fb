"""The case record every layout adapter produces."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

__all__ = ["Case", "match_channels"]


@dataclass
class Case:
    """One subject/session: channel name -> image path (in channel order), optional label, metadata.

    ``meta`` may hold ``frames`` ({channel: index}) when several channels live in one 4D file (MSD),
    plus layout details (subject, session, site, ...).
    """

    id: str
    images: dict[str, Path]
    label: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(self.images)

    def frame(self, channel: str) -> int | None:
        """Index of ``channel`` inside a 4D file, or None for a 3D file."""
        return self.meta.get("frames", {}).get(channel)

    def paths(self) -> list[Path]:
        """Every distinct file of the case (images, then label)."""
        out: list[Path] = []
        for p in list(self.images.values()) + ([self.label] if self.label is not None else []):
            if p not in out:
                out.append(p)
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (paths as strings)."""
        return {
            "id": self.id,
            "images": {k: str(v) for k, v in self.images.items()},
            "label": None if self.label is None else str(self.label),
            "meta": self.meta,
        }


def match_channels(wanted: Sequence[str], available: Sequence[str], *, option: str, where: str) -> list[str]:
    """Each channel of ``wanted`` (an option's, e.g. asa-probe's ``channels=[t1]``) by its name in ``available``
    (the data's: an nnU-Net ``dataset.json`` may say ``T1``), matched without regard to case; one with no match
    (or two, ``T1`` and ``t1``) is refused naming ``option`` and ``where``."""
    out = []
    for name in wanted:
        found = [a for a in available if str(a).casefold() == str(name).casefold()]
        if len(found) != 1:
            why = "two channels of that name in different case" if found else "no such channel"
            raise ValueError(f"{option}={list(wanted)}: {where} has channels {list(available)}; {name!r}: {why} "
                             f"(names match without regard to case; set {option} to the data's channels)")
        out.append(str(found[0]))
    return out
