"""Dataset layout adapters: files on disk -> validated `Case` records.

``discover(layout, root)`` runs the layout's adapter, then checks every case (missing modality,
image/label shape or affine mismatch, label values outside the task's set, duplicate ids and, with
``validate="full"``, every volume's contents as `load_volume` reads them, and contrast inside the
brain: a constant image cannot be z-scored). With
``on_bad_case="skip"`` bad cases are dropped and listed, with reasons, in ``report_path`` (JSON).

Full checks read every volume once, in parallel threads, in every call: nothing is cached here. A
store (`asa.data.store`) keeps the outcome: training on it checks nothing, and asa-preprocess
passes ``checked`` (`asa.data.store.passed_checks`) so that a rerun reads only new or changed files.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from asa.data.case import Case
from asa.io import atomic_write_json
from asa.data.layouts import pretrain, segmentation  # noqa: F401  (register the adapters)
from asa.data.layouts.base import ADAPTERS, PATTERNS, CaseError, Problem, check_case, found_under
from asa.data.layouts.names import LAYOUTS, PRETRAIN_LAYOUTS, SEGMENTATION_LAYOUTS

__all__ = ["discover", "detect_layout", "skipped_report", "LAYOUTS", "PRETRAIN_LAYOUTS", "SEGMENTATION_LAYOUTS", "CaseError", "Problem"]

_VALIDATE = ("full", "header", "none")


def discover(
    layout: str,
    root: str | Path,
    *,
    on_bad_case: str = "error",
    report_path: str | Path | None = None,
    require_labels: bool | None = None,
    validate: str = "full",
    option: str = "on_bad_case",
    checked: Callable[[Case], bool] | None = None,
    workers: int = 1,
    skipped: list[Problem] | None = None,
) -> list[Case]:
    """Find and validate the cases of ``root`` in ``layout``; sorted by id.

    ``validate``: "full" (headers + label values; decodes label files), "header" (shapes and
    affines only) or "none". ``require_labels`` defaults to True for segmentation layouts.
    ``report_path``: JSON with the skipped cases and reasons (written only when a case was skipped).
    ``option`` is the setting named in the error's hint (e.g. ``data.on_bad_case``). With
    ``on_bad_case="skip"`` the skipped cases' problems are appended to ``skipped``. A case for which
    ``checked(case)`` is true passed the full checks before with these very files (the records of a
    store: `asa.data.store.passed_checks`) and is not read again.
    """
    if layout not in ADAPTERS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
    if on_bad_case not in ("error", "skip"):
        raise ValueError(f"on_bad_case must be 'error' or 'skip', got {on_bad_case!r}")
    if validate not in _VALIDATE:
        raise ValueError(f"validate must be one of {_VALIDATE}, got {validate!r}")
    root = Path(root).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"dataset root {root} does not exist (layout {layout!r})")
    kwargs = {} if require_labels is None else {"require_labels": require_labels}
    found = ADAPTERS[layout](root, **kwargs)
    problems: list[Problem] = list(found.problems)

    counts = Counter(c.id for c in found.cases) + Counter(p.id for p in problems)
    dup = {cid for cid, n in counts.items() if n > 1}
    cases: list[Case] = []
    unique = []
    for case in found.cases:
        if case.id in dup:
            others = [str(c.paths()[0]) for c in found.cases if c.id == case.id]
            problems.append(Problem(case.id, f"duplicate case id {case.id!r} (files: {others})", [str(p) for p in case.paths()]))
        else:
            unique.append(case)
    reasons = _check_cases(unique, found.label_values, validate, checked, workers)
    for case, reason in zip(unique, reasons):
        if reason:
            problems.append(Problem(case.id, reason, [str(p) for p in case.paths()]))
        else:
            cases.append(case)
    cases.sort(key=lambda c: c.id)

    if report_path is not None and problems and on_bad_case == "skip":
        atomic_write_json(report_path, skipped_report(layout, root, len(cases), problems))
    if problems and on_bad_case == "skip" and skipped is not None:
        skipped.extend(problems)
    if problems and on_bad_case == "error":
        lines = "\n".join(f"  - {p.id}: {p.reason}" for p in problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise CaseError(
            f"{len(problems)} bad case(s) in {root} (layout {layout!r}):\n{lines}{more}\n"
            f"Nothing was trained. Fix or remove them, or set {option}=skip to continue without them."
        )
    if not cases:
        raise FileNotFoundError(f"no usable cases under {root} for layout {layout!r} (expected {PATTERNS[layout]})")
    return cases


def skipped_report(layout: str, root: str | Path, kept: int, problems: Sequence[Problem]) -> dict:
    """The record of the cases `discover` skipped (``bad_cases.json``): layout, root, how many were found and
    kept, and each skipped case with its reason."""
    return {"layout": layout, "root": str(root), "found": kept + len(problems), "kept": kept,
            "skipped": [p.to_dict() for p in problems]}


def _check_cases(cases: Sequence[Case], label_values: tuple[int, ...] | None, validate: str,
                 checked: Callable[[Case], bool] | None, workers: int) -> list[str | None]:
    """Reason per case (None = usable); reads the volumes in ``workers`` threads, but for the cases
    ``checked`` vouches for (full checks only)."""
    if validate == "none":
        return [None] * len(cases)
    todo = [i for i, case in enumerate(cases) if validate != "full" or checked is None or not checked(case)]

    def one(i: int) -> str | None:
        return check_case(cases[i], label_values, check_labels=validate == "full", contents=validate == "full")

    with ThreadPoolExecutor(max_workers=max(1, int(workers))) as pool:  # decompression releases the GIL
        fresh = dict(zip(todo, pool.map(one, todo)))
    return [fresh.get(i) for i in range(len(cases))]


def detect_layout(root: str | Path) -> str:
    """Guess the layout of ``root`` from its files (raises ValueError when nothing matches); hidden and temporary
    files (`asa.io.is_temporary`) tell nothing."""
    root = Path(root).expanduser()
    if root.is_file():
        return "filelist"

    def any_of(*patterns: str, recursive: bool = False) -> bool:
        return any(found_under(root, (root.rglob if recursive else root.glob)(p)) for p in patterns)

    if (root / "dataset.json").is_file() and (root / "imagesTr").is_dir():
        return "msd"
    if any_of("subjects/sub-*/ses-*/t1_linear", "sub-*/ses-*/t1_linear"):
        return "caps"
    if any_of("sub-*/anat/*_T1w.nii*", "sub-*/ses-*/anat/*_T1w.nii*"):
        return "bids"
    if any_of("*_ana_strip.nii*", recursive=True):
        return "ibsr"
    if any_of("pre/FLAIR.nii*", recursive=True):
        return "wmh"
    if any_of("*_flair.nii*", "*_seg.nii*", recursive=True):
        return "brats"
    for name in ("files.csv", "files.tsv", "files.txt", "filelist.csv", "filelist.txt"):
        if (root / name).is_file():
            return "filelist"
    raise ValueError(f"cannot tell the layout of {root}; expected one of: " + "; ".join(f"{k}: {v}" for k, v in PATTERNS.items()))


def load_report(path: str | Path) -> dict:
    """Read a skip report written by `discover`."""
    return json.loads(Path(path).read_text())
