"""Training-checkpoint format and resume-compatibility checks (the files are read and written by ``asa.io``)."""
from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from asa.io import CheckpointError

__all__ = ["IncompatibleCheckpointError", "RESUME_ONLY", "check_compatible", "flatten", "prune_step_checkpoints"]

FORMAT = "asa-checkpoint"
VERSION = 1
# what only a resumed run reads: best.pt (written at every improving validation round) leaves them to last.pt,
# and holds ``"weights_only": True`` instead (AdamW's two moments alone are twice the weights)
RESUME_ONLY = ("optimizer", "scaler", "rng")


class IncompatibleCheckpointError(CheckpointError):
    """Resuming with a configuration that differs from the checkpoint's in keys that must match."""


def flatten(cfg: Mapping, prefix: str = "") -> dict[str, object]:
    """{"a": {"b": 1}} -> {"a.b": 1} (lists stay values)."""
    out: dict[str, object] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def check_compatible(saved_cfg: Mapping, cfg: Mapping, keys: Iterable[str], *, source: str = "checkpoint",
                     moved: Callable[[str], str | None] | None = None,
                     current: Callable[[Mapping], Mapping] | None = None,
                     removed: Callable[[str], str | None] | None = None,
                     added: Callable[[Mapping], Mapping] | None = None) -> None:
    """Refuse to resume when any config entry under `keys` (dotted prefixes, e.g. "model") differs,
    or when the saved config holds a key that has moved since (``moved(key)``: its new place, else
    None), which is never read into its new place. ``current(saved_cfg)``: the saved config as this version
    reads it (a renamed value under its name now, a setting added since at the default the run had),
    compared as such; a ``ValueError`` of ``current`` (a version it cannot read) refuses naming ``source``. A saved key removed since (``removed(key)``: what
    took its place, else None) never changed a number: it is left out, said in one line on stderr. The
    settings added since (``added(saved_cfg)``: dotted key -> the value ``current`` gave it, the one the run
    had) are said in one line too.

    The error lists every differing key with the saved and the requested value, or every moved key
    with its new place.
    """
    try:
        read = saved_cfg if current is None else current(saved_cfg)
    except ValueError as err:  # a version this asa cannot read: newer, or none asa writes
        raise IncompatibleCheckpointError(f"cannot resume from {source}: the run config saved in it has {err}. "
                                          "Nothing was changed.") from None
    saved, now = flatten(read), flatten(cfg)
    gone = {key: instead for key in sorted(saved) if key not in now and removed is not None
            and (instead := removed(key)) is not None}
    if gone:
        print(f"[asa] {source} was written by an earlier asa; read without "
              + "; ".join(f"{key}={saved[key]!r} (removed since: {instead})" for key, instead in gone.items()),
              file=sys.stderr, flush=True)
        saved = {key: value for key, value in saved.items() if key not in gone}
    new = dict(added(saved_cfg)) if added is not None else {}
    if new:
        print(f"[asa] {source} was written by an earlier asa; settings added since take the values that run had: "
              + ", ".join(f"{key}={value!r}" for key, value in sorted(new.items())), file=sys.stderr, flush=True)
    renamed = {key: place for key in sorted(saved) if key not in now and moved is not None
               and (place := moved(key)) is not None}
    if renamed:
        raise IncompatibleCheckpointError(
            f"cannot resume from {source}: it was written by an earlier asa, and these keys have moved since: "
            + "; ".join(f"{key} is now {place}" for key, place in renamed.items())
            + ". Its settings are not carried to their new places (that would change the run silently); start a "
            "new run in another output_dir, or continue this one with the asa version that wrote it. Nothing "
            "was changed."
        )
    diffs = []
    for prefix in keys:
        if prefix in saved and any(k.startswith(prefix + ".") for k in now):  # a value that became a section
            diffs.append(f"{prefix}: {source} has {saved[prefix]!r}, config has the section {prefix}.* "
                         f"(the run was written before its settings moved under {prefix}:)")
            continue
        names = {k for k in saved.keys() | now.keys() if k == prefix or k.startswith(prefix + ".")}
        for name in sorted(names):
            a, b = saved.get(name, "<missing>"), now.get(name, "<missing>")
            if a != b:
                diffs.append(f"{name}: {source} has {a!r}, config has {b!r}")
    if diffs:
        raise IncompatibleCheckpointError(
            f"cannot resume from {source}: the configuration differs in keys that must match:\n  "
            + "\n  ".join(diffs)
            + "\nTo continue that run, restore these settings (drop the overrides that changed them); to train "
            "with the new settings, start a new run in another output_dir. Nothing was changed."
        )


_STEP_RE = re.compile(r"^step_(\d+)\.pt$")


def prune_step_checkpoints(folder: str | os.PathLike, keep: int) -> list[Path]:
    """Delete all but the newest `keep` step_XXXXXXXX.pt files in `folder`; returns what was removed."""
    folder = Path(folder)
    found = sorted(
        (int(m.group(1)), p) for p in folder.glob("step_*.pt") if (m := _STEP_RE.match(p.name))
    )
    removed = [p for _, p in found[: max(len(found) - keep, 0)]]
    for p in removed:
        p.unlink(missing_ok=True)
    return removed
