"""Deterministic, seeded train/val/test splits written as JSON and reused on resume.

Defaults follow the paper: BraTS 7:1:2; IBSR 12 train / 6 test, with 2 of the 12 training cases
held out for validation (10/2/6); WMH 36 train / 24 test with 6 of the 36 for validation (30/6/24).
Counts are scaled proportionally when a dataset has a different number of cases; any other dataset
uses 8:1:1. Every split with a positive share gets at least one case when there are enough cases.

With ``groups`` (case id -> subject), a subject with several cases (sessions) never spans two
parts: the subjects are split (the shares then count subjects) and each takes all its cases along.
When every subject has one case the split is the ungrouped one, case for case.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from asa.io import atomic_write_json

__all__ = ["make_splits", "DEFAULT_SPLITS", "SPLIT_NAMES", "UNUSED"]

SPLIT_NAMES = ("train", "val", "test")
UNUSED = "unused"  # a saved split's optional part: cases the run neither trains, validates nor is scored on
DEFAULT_SPLITS: dict[str, tuple[float, float, float]] = {
    "brats": (0.7, 0.1, 0.2),
    "ibsr": (10, 2, 6),
    "wmh": (30, 6, 24),
    "default": (0.8, 0.1, 0.1),
}


def _shares(spec: Sequence[float] | Mapping[str, float]) -> tuple[float, float, float]:
    if isinstance(spec, Mapping):
        unknown = set(spec) - set(SPLIT_NAMES)
        if unknown:
            raise ValueError(f"counts_or_ratios: unknown split names {sorted(unknown)}; expected {SPLIT_NAMES}")
        spec = [spec.get(k, 0) for k in SPLIT_NAMES]
    values = tuple(float(v) for v in spec)
    if len(values) != 3 or min(values) < 0 or sum(values) <= 0:
        raise ValueError(f"counts_or_ratios must be three non-negative numbers (train, val, test), got {spec}")
    return values  # type: ignore[return-value]


def _allocate(n: int, shares: tuple[float, float, float]) -> list[int]:
    """Largest-remainder allocation of n cases to the shares, >= 1 per positive share when n allows."""
    total = sum(shares)
    exact = [n * s / total for s in shares]
    counts = [int(np.floor(e)) for e in exact]
    for i in sorted(range(3), key=lambda i: exact[i] - counts[i], reverse=True)[: n - sum(counts)]:
        counts[i] += 1
    positive = [i for i in range(3) if shares[i] > 0]
    if n >= len(positive):
        for i in positive:
            if counts[i] == 0:
                donor = max(range(3), key=lambda j: counts[j])
                counts[donor] -= 1
                counts[i] += 1
    return counts


def _check_groups(splits: Mapping[str, list[str]], groups: Mapping[str, str], path: Path) -> None:
    part_of: dict[str, str] = {}
    for k in SPLIT_NAMES:
        for case in splits[k]:
            group = groups.get(case, case)
            if part_of.setdefault(group, k) != k:
                raise ValueError(f"split file {path}: subject {group} has cases in {part_of[group]} and {k} (a subject "
                                 "leak); delete the file to split by subject anew")


def _check(splits: Mapping[str, list[str]], ids: set[str], path: Path) -> None:
    missing_keys = [k for k in SPLIT_NAMES if k not in splits]
    if missing_keys:
        raise ValueError(f"split file {path}: missing keys {missing_keys}")
    seen: set[str] = set()
    for k in (*SPLIT_NAMES, UNUSED):
        overlap = seen & set(splits.get(k, []))
        if overlap:
            raise ValueError(f"split file {path}: cases in more than one split: {sorted(overlap)[:5]}")
        seen |= set(splits.get(k, []))
    if seen != ids:
        raise ValueError(
            f"split file {path} does not match the dataset: missing {sorted(ids - seen)[:5]}, "
            f"unknown {sorted(seen - ids)[:5]}; delete it or point the run at the right data"
        )


def make_splits(
    case_ids: Iterable[str],
    *,
    dataset: str,
    seed: int = 0,
    counts_or_ratios: Sequence[float] | Mapping[str, float] | None = None,
    path: str | Path | None = None,
    groups: Mapping[str, str] | None = None,
) -> dict[str, list[str]]:
    """Split case ids into {"train", "val", "test"}; reuse ``path`` if it exists, else write it.

    Deterministic for a given set of ids (order-independent), ``seed`` and shares.
    ``counts_or_ratios``: (train, val, test) counts or ratios (scaled to the number of cases, or of
    subjects with ``groups``). ``groups``: case id -> subject (a case missing from it is its own
    subject); all the cases of a subject land in one part, and a reused file that splits a subject
    is refused.
    """
    ids = sorted(set(case_ids))
    members: dict[str, list[str]] = {}
    for i in ids:
        members.setdefault(str(groups.get(i, i)) if groups else i, []).append(i)
    grouped = any(len(m) > 1 for m in members.values())
    if path is not None and Path(path).is_file():
        try:
            saved = json.loads(Path(path).read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"split file {path}: not valid JSON ({err})") from err
        _check(saved, set(ids), Path(path))
        if grouped:
            _check_groups(saved, groups or {}, Path(path))
        return {k: list(saved[k]) for k in SPLIT_NAMES}
    shares = _shares(counts_or_ratios if counts_or_ratios is not None else DEFAULT_SPLITS.get(dataset.lower(), DEFAULT_SPLITS["default"]))
    units = sorted(members) if grouped else ids  # subjects, or (one case each) the cases themselves
    counts = _allocate(len(units), shares)
    order = np.random.default_rng(seed).permutation(len(units))
    shuffled = [units[i] for i in order]
    bounds = {"train": (0, counts[0]), "val": (counts[0], counts[0] + counts[1]), "test": (counts[0] + counts[1], None)}
    splits = {k: sorted(c for u in shuffled[lo:hi] for c in (members[u] if grouped else [u]))
              for k, (lo, hi) in bounds.items()}
    if path is not None:
        extra = {"grouped_by": "subject"} if grouped else {}
        atomic_write_json(path, {**splits, "dataset": dataset, "seed": seed, "shares": list(shares), **extra})
    return splits
