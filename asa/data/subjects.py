"""Subjects of cases: their groups for splits (the sessions of a subject), and per-subject values for
pretraining: the optional ``diseased`` column (SA-Swin's symmetry term)."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from asa.data.case import Case

__all__ = ["diseased_labels", "parse_diseased", "subject_groups"]

_TRUE = {"1", "true", "yes", "y", "diseased", "patient"}
_FALSE = {"0", "false", "no", "n", "healthy", "control", "", "n/a", "na"}


def parse_diseased(value: object, where: str) -> float:
    """1.0 / 0.0 from a table cell (1/0, true/false, yes/no; empty or n/a = 0); else ValueError naming ``where``."""
    text = str(value if value is not None else "").strip().lower()
    if text in _TRUE:
        return 1.0
    if text in _FALSE:
        return 0.0
    raise ValueError(f"{where}: diseased value {value!r}; expected 1/0, true/false or yes/no (empty = 0)")


def _participants(root: Path) -> dict[str, float]:
    """``participant_id`` (without ``sub-``) -> y from ``root/participants.tsv``, if it has a diseased column."""
    table = root / "participants.tsv"
    if not table.is_file():
        return {}
    with open(table, newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        cols = reader.fieldnames or []
        if "diseased" not in cols:
            return {}
        if "participant_id" not in cols:
            raise ValueError(f"{table}: a diseased column needs a participant_id column, found {cols}")
        return {row["participant_id"].removeprefix("sub-"): parse_diseased(row["diseased"], f"{table} line {i + 2}")
                for i, row in enumerate(reader)}


def diseased_labels(cases: Sequence[Case], root: Path | None = None) -> dict[str, float]:
    """Case id -> y (1 diseased, 0 healthy) for the symmetry term; 0 where no value is given.

    Sources: a ``diseased`` column in a file list (``filelist`` layout, in ``case.meta``), or in
    ``participants.tsv`` at the root of a BIDS / CAPS dataset (by ``participant_id``).
    """
    table = _participants(root) if root is not None and root.is_dir() else {}
    out = {}
    for case in cases:
        if "diseased" in case.meta:
            out[case.id] = parse_diseased(case.meta["diseased"], f"case {case.id} ({case.meta.get('list', 'file list')})")
        else:
            out[case.id] = table.get(str(case.meta.get("subject")), 0.0)
    return out


def subject_groups(cases: Sequence[Case]) -> dict[str, str]:
    """Case id -> ``sub-<subject>`` for the cases whose layout names their subject (``case.meta["subject"]``:
    BIDS, CAPS), for `asa.data.make_splits` ``groups``: the sessions of a subject stay in one part."""
    return {c.id: f"sub-{str(c.meta['subject']).removeprefix('sub-')}" for c in cases if c.meta.get("subject")}
