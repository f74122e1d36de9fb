"""NIfTI file names: the suffixes, a case id from a file name, finding ``<stem>.nii[.gz]``, and
where a case's prediction is written."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "NIFTI_SUFFIXES", "PREDICTION_SUFFIX", "nifti_suffix", "is_nifti", "is_temporary", "strip_nifti", "find_nifti",
    "prediction_path", "probabilities_path",
]

NIFTI_SUFFIXES = (".nii.gz", ".nii")  # longest first: "a.nii.gz" is "a" + ".nii.gz", not "a.nii" + ".gz"
PREDICTION_SUFFIX = ".nii.gz"  # what asa-predict writes


def nifti_suffix(path: str | os.PathLike) -> str:
    """``.nii.gz`` or ``.nii`` (the suffix nibabel needs to pick compression; matched in any case), else ``""``."""
    name = Path(path).name.lower()
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return ""


def is_nifti(path: str | os.PathLike) -> bool:
    """Whether the file name ends in ``.nii`` or ``.nii.gz`` (in any case)."""
    return bool(nifti_suffix(path))


# a ``.tmp``, ``.temp``, ``.part`` or ``.partial`` part of a name, digits allowed (``x.nii.gz.tmp3``, ``x.part.nii.gz``)
_TEMPORARY_PART = re.compile(r"\.(?:tmp|temp|part|partial)\d*(?=\.|~|$)", re.IGNORECASE)


def is_temporary(path: str | os.PathLike) -> bool:
    """Whether a file or folder name is a hidden or temporary one, never data, which every data discovery skips: a
    dot-name (asa's own temporaries ``.<name>.<random>.tmp.nii.gz``, asa-prepare's ``.<name>.part.nii.gz``, macOS's
    ``._<name>``, NFS's ``.nfs<id>``, ``.git``), an editor's backup (``<name>~``) or a name with a ``.tmp``,
    ``.temp``, ``.part`` or ``.partial`` part (``<name>.nii.gz.tmp``, ``<name>.part.nii.gz``)."""
    name = Path(path).name
    return name.startswith(".") or name.endswith("~") or _TEMPORARY_PART.search(name) is not None


def strip_nifti(name: str) -> str:
    """The file name without its NIfTI suffix (the case id of a one-file case): ``"case_01.nii.gz"`` ->
    ``"case_01"``; a name without one is returned unchanged."""
    suffix = nifti_suffix(name)
    return name[: -len(suffix)] if suffix else name


def find_nifti(folder: str | os.PathLike, stem: str, suffixes: Sequence[str] = NIFTI_SUFFIXES) -> Path | None:
    """``folder/<stem><suffix>`` for the first suffix whose file exists (``.nii.gz`` before ``.nii``), else None."""
    for suffix in suffixes:
        path = Path(folder) / f"{stem}{suffix}"
        if path.is_file():
            return path
    return None


def prediction_path(folder: str | os.PathLike, case_id: str) -> Path:
    """Where a case's label prediction is written (and where ``asa-evaluate`` looks first)."""
    return Path(folder) / f"{case_id}{PREDICTION_SUFFIX}"


def probabilities_path(folder: str | os.PathLike, case_id: str) -> Path:
    """Where a case's class probabilities are written (``save_probabilities``)."""
    return Path(folder) / f"{case_id}_probabilities{PREDICTION_SUFFIX}"
