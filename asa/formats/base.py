"""The protocol every format for another tool keeps (`Format`), what it reads of one export (`Job`), what it adds
(`Part`), the asa-export options it declares (`Option`), and the registry asa-export loops over
(:func:`register_format`, :func:`formats`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from asa.models.family import Family, families, family_of

__all__ = ["ENCODER", "FOLDER", "SEGMENTER", "Format", "Job", "Option", "Part", "choices", "family_fault", "formats",
           "register_format"]

# a format's level, what it writes of a network: the model folder itself, files added to the folder of every
# encoder it takes, or the fine-tuned network's files when --format names it
FOLDER, ENCODER, SEGMENTER = "folder", "encoder", "segmenter"


@dataclass
class Job:
    """What a format reads of one export, read once by asa-export: ``source``, the file exported; ``export``, the
    encoder export (`asa.models.portable.encoder_export`; None: a network without an encoder); ``config``, the
    model folder's ``config.json``; ``segmenter``, the whole fine-tuned network (weights ``model``, spec
    ``network``, run ``config``, ``step``; None: an encoder alone); ``options``, asa-export's options by name;
    ``cohort``, the pretraining cohort's list the folder carries (`asa.data.cohort.export_cohort`); ``command``, the
    command line that started the run (its ``command.txt``; None: not recorded)."""

    source: Path
    export: dict[str, Any] | None
    config: dict[str, Any]
    segmenter: dict[str, Any] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    cohort: dict[str, Any] | None = None
    command: str | None = None


class Part(NamedTuple):
    """What a format adds, built and checked before anything is written: ``files``, each file's name in the folder
    and its writer (called with the path to write); ``card``, its section of the model card (an ``alone`` format:
    the whole card); ``after``, what it writes outside the folder once the folder is written."""

    files: Mapping[str, Callable[[Path], Any]]
    card: str = ""
    after: Callable[[], Any] | None = None


class Option(NamedTuple):
    """An asa-export option a format reads: ``name``, `asa.api.export.export_model`'s keyword and, dashed, the flag
    (``--nnunet-channels``); ``help``; argparse's ``type``, ``nargs`` and ``metavar``. Its default is None: not
    given."""

    name: str
    help: str
    type: Callable[[str], Any] = str
    nargs: str | None = None
    metavar: str | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


class Format:
    """The protocol every format keeps. ``name``: asa-export's name of it (``--format NAME`` for the folder or a
    segmenter format); ``level``: `FOLDER`, `ENCODER` or `SEGMENTER`; ``files``: the names it writes in the folder;
    ``alone``: its files and card are the whole folder (no model folder); ``options``: the asa-export options it
    reads, refused for an export that does not write it; ``about``: what ``--format NAME`` writes, for --help."""

    name: str = ""
    level: str = ENCODER
    files: tuple[str, ...] = ()
    alone: bool = False
    options: tuple[Option, ...] = ()
    about: str = ""

    def fault(self, spec: Mapping[str, Any]) -> str | None:
        """Why the network ``spec`` (``{"arch", "kwargs"}``) cannot be written in this format (None: it can)."""
        return None

    def check(self, options: dict[str, Any]) -> None:
        """Refuse (``ValueError`` naming the option) bad values of its ``options`` when asa-export writes it (the
        chosen segmenter format); normalise them in place. Before anything is read."""

    def part(self, job: Job) -> Part:
        """Its files and card section for ``job``; refused (``ValueError`` naming ``job.source``) before anything
        is written."""
        raise NotImplementedError


_FORMATS: dict[str, Format] = {}


def register_format(fmt: Format) -> Format:
    """Add ``fmt`` to asa-export's formats (registering the same again is a no-op; another under a taken name, a
    level other than folder / encoder / segmenter, or a file or option another format has is refused)."""
    if fmt.level not in (FOLDER, ENCODER, SEGMENTER):
        raise ValueError(f"format {fmt.name!r}: level {fmt.level!r}, expected {FOLDER}, {ENCODER} or {SEGMENTER}")
    known = _FORMATS.get(fmt.name)
    if known is not None and known is not fmt:
        raise ValueError(f"format {fmt.name!r} is registered already")
    others = [f for f in _FORMATS.values() if f is not fmt]
    if taken := [n for f in others if not f.alone and not fmt.alone for n in f.files if n in fmt.files]:
        raise ValueError(f"format {fmt.name!r}: {', '.join(taken)} is written by another format")
    if taken := [o.flag for f in others for o in f.options if o.name in {p.name for p in fmt.options}]:
        raise ValueError(f"format {fmt.name!r}: {', '.join(taken)} is another format's option")
    _FORMATS[fmt.name] = fmt
    return fmt


def formats() -> dict[str, Format]:
    """Every registered format by name, in registration order (asa's own first)."""
    return dict(_FORMATS)


def choices() -> tuple[str, ...]:
    """asa-export's ``--format`` names: the model folder alone, and every segmenter format."""
    return tuple(name for name, f in _FORMATS.items() if f.level != ENCODER)


def family_fault(spec: Mapping[str, Any], name: str, takes: Callable[[Family], bool]) -> str | None:
    """Why the network ``spec`` cannot be written as the format ``name``, which ``takes`` the families it can write:
    the network has no family or one it does not take (naming those it takes), or its family refuses the spec (its
    ``export_check``); None: it can."""
    family = family_of(spec.get("arch"))
    if family is not None and takes(family):
        return None if family.export_check is None else family.export_check(name, spec)
    takers = " / ".join(n for n, f in families().items() if takes(f)) or "no"
    what = "of no declared family" if family is None else f"({family.name} family)"
    return f"a {spec.get('arch')!r} network{',' if family is None else ''} {what}; the {name} export takes the {takers} family"
