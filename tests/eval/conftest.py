"""Fixtures for evaluation tests: tiny NIfTI writers and task stand-ins (real ones when available)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest


class BratsLikeTask:
    """Minimal stand-in for ``asa.data.get_task("brats")``: WT={1,2,4}, TC={1,4}, ET={4}."""

    name = "brats"
    output_names = ("WT", "TC", "ET")
    ignore_label = None

    def region_masks(self, label: np.ndarray) -> dict[str, np.ndarray]:
        return {"WT": np.isin(label, (1, 2, 4)), "TC": np.isin(label, (1, 4)), "ET": label == 4}


class WmhLikeTask:
    """Minimal stand-in for ``asa.data.get_task("wmh")``: class 1 WMH, label 2 ignored."""

    name = "wmh"
    output_names = ("WMH",)
    ignore_label = 2

    def region_masks(self, label: np.ndarray) -> dict[str, np.ndarray]:
        return {"WMH": label == 1}


def _real_task(name: str):
    try:
        from asa.data import get_task
    except ImportError:
        return None
    return get_task(name)


@pytest.fixture
def brats_task():
    return _real_task("brats") or BratsLikeTask()


@pytest.fixture
def wmh_task():
    return _real_task("wmh") or WmhLikeTask()


def _fallback_load_volume(path):
    """Contract-shaped stand-in for ``asa.data.load_volume`` (canonical RAS+ array, spacing)."""
    img = nib.as_closest_canonical(nib.load(str(path)))
    return SimpleNamespace(
        array=np.asarray(img.dataobj), affine=img.affine, spacing=tuple(float(z) for z in img.header.get_zooms()[:3])
    )


@pytest.fixture
def loader():
    """None (use ``asa.data.load_volume``) when the data package provides it, else a local stand-in."""
    try:
        from asa.data import load_volume  # noqa: F401
    except ImportError:
        return _fallback_load_volume
    return None


def write_label(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    """Write an integer label volume as NIfTI (default affine: identity)."""
    affine = np.eye(4) if affine is None else affine
    nib.save(nib.Nifti1Image(np.asarray(array, dtype=np.int16), affine), str(path))
    return path
