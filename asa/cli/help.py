"""The ``main`` of a Hydra console script, which answers ``-h`` / ``--help`` before torch loads.

The help is what `asa.cli.common.help_text` composes (the groups a user may set with their options, the config the
command line composes), kept in ``$ASA_CACHE/help/<install>`` (default ``~/.cache/asa/help/<install>``; an install
is a Python environment with asa's folders and version, so installs sharing the cache keep a copy each) under a
digest of what it is made of: asa's modules and config files (paths, sizes, modification times), the installed
plug-ins (the entry points of asa's groups and the files of their modules) and the Python's version. A ``--help``
whose digest is kept prints the kept text with the standard library alone; the first after an install or an edit
composes it (the job's imports, seconds). ``--help`` beside overrides (``asa-pretrain model=resenc --help``) composes
that command line, unkept. The argparse scripts keep their parser's text the same way (`kept_help`).
The job's modules load on first use, so asa imports them inside functions here."""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from asa import __version__

__all__ = ["HELP_FLAGS", "help_digest", "hydra_script", "kept_help", "kept_path", "kept_text", "script_help"]

HELP_FLAGS = ("-h", "--help")
_SOURCES = (".py", ".yaml")


def _cache_folder() -> Path:
    """``$ASA_CACHE/help``, default ``~/.cache/asa/help`` (the demo phantoms' cache, `asa.data.synthetic.demo`)."""
    return Path(os.environ.get("ASA_CACHE") or Path.home() / ".cache" / "asa").expanduser() / "help"


def _spec_folders(module: str) -> list[Path]:
    """The folders of an importable package (or the file of a module) found without importing it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return []
    if spec is None:
        return []
    if spec.submodule_search_locations:
        return [Path(p) for p in spec.submodule_search_locations]
    return [Path(spec.origin)] if spec.origin and spec.origin not in ("built-in", "frozen") else []


def _files(roots: Sequence[Path]) -> list[Path]:
    """The sources under ``roots`` (a file stands for itself), sorted."""
    found: set[Path] = set()
    for root in roots:
        if root.is_file():
            found.add(root)
        for folder, subfolders, names in os.walk(root):
            subfolders[:] = [d for d in subfolders if d != "__pycache__"]
            found.update(Path(folder) / n for n in names if n.endswith(_SOURCES))
    return sorted(found)


def _config_folders() -> list[Path]:
    """asa's config tree: the package ``asa.configs``, else the checkout's ``configs/`` (`asa.api.config`)."""
    return _spec_folders("asa.configs") or [p.parent / "configs" for p in _spec_folders("asa")]


def help_digest(name: str) -> str:
    """The digest of what ``asa-<name> --help`` is made of (see the module)."""
    digest = hashlib.sha256(f"{name}\0{sys.version}".encode())  # the install: `kept_path`'s folder
    roots = [*_spec_folders("asa"), *_config_folders()]
    for dist in importlib.metadata.distributions():  # the plug-ins: every entry point of a group asa reads
        for entry in dist.entry_points:
            if entry.group.startswith("asa."):
                digest.update(f"\0{entry.group}={entry.name}={entry.value}@{dist.name}=={dist.version}".encode())
                roots += _spec_folders(entry.module.split(".")[0])
    for path in _files(roots):
        stat = path.stat()
        digest.update(f"\0{path}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:32]


def script_help(app: str, name: str, overrides: Sequence[str] = ()) -> str:
    """The text of ``<app> [overrides] --help``: kept under its digest (`kept_text`), else composed."""
    if overrides:
        from asa.cli.common import help_text

        return help_text(app, name, overrides)

    def composed() -> str:
        from asa.cli.common import help_text

        return help_text(app, name)

    return kept_text(name, composed)


def _install() -> str:
    """The digest of this install: the Python's environment (``python`` and ``python3`` of one venv are one), asa's
    package folders and version."""
    folders = "\0".join(map(str, _spec_folders("asa")))
    return hashlib.sha256(f"{sys.prefix}\0{folders}\0{__version__}".encode()).hexdigest()[:16]


def kept_path(name: str) -> Path:
    """Where this install keeps the text of ``name`` under its digest: ``<cache>/<install>/<name>-<digest>.txt``."""
    return _cache_folder() / _install() / f"{name}-{help_digest(name)}.txt"


def kept_text(name: str, make: Callable[[], str]) -> str:
    """``make()``'s text, kept under the digest of ``name`` (`help_digest`): read back while nothing it is made of
    changed, else made and kept (a cache folder that cannot be written keeps nothing)."""
    kept = kept_path(name)
    if kept.is_file():
        return kept.read_text(encoding="utf-8")
    text = make()
    try:
        kept.parent.mkdir(parents=True, exist_ok=True)
        for stale in kept.parent.glob(f"{name}-*.txt"):  # this install's earlier digest: never read again
            stale.unlink(missing_ok=True)
        part = kept.with_name(f".{kept.name}.{os.getpid()}")
        part.write_text(text, encoding="utf-8")
        os.replace(part, kept)
    except OSError:
        pass
    return text


def kept_help(name: str, argv: Sequence[str] | None, make: Callable[[], str]) -> None:
    """Where the command line (``argv``, default ``sys.argv[1:]``) asks for ``-h`` / ``--help``: print ``make()``'s
    text as kept (`kept_text`) and exit 0, before the script loads what it runs with."""
    if any(a in HELP_FLAGS for a in (sys.argv[1:] if argv is None else argv)):
        print(kept_text(name, make), end="", flush=True)
        sys.exit(0)


def hydra_script(app: str, name: str) -> Callable[[], None]:
    """The ``main`` of the console script ``app``: ``-h`` / ``--help`` printed from `script_help`, exit 0; else the
    job of ``configs/<name>`` (`asa.cli.common.console_main`, running ``asa.api.<name>``)."""

    def main() -> None:
        args = sys.argv[1:]
        if any(a in HELP_FLAGS for a in args):
            try:
                text = script_help(app, name, [a for a in args if a not in HELP_FLAGS])
            except ValueError as err:  # overrides that do not compose (`asa.cli.common.help_text`)
                from asa.cli.common import EXIT_REFUSED

                print(f"[{app}] refused: {err}", file=sys.stderr, flush=True)
                sys.exit(EXIT_REFUSED)
            print(text, end="", flush=True)
            sys.exit(0)
        from asa import api
        from asa.cli.common import console_main

        console_main(app, name, getattr(api, name))()

    main.__doc__ = f"``{app}``: compose configs/{name}/ and run the job (``--help``: its groups and config)."
    return main
