"""Helpers for evaluation tests: task stand-ins, a contract-shaped loader, a NIfTI writer."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np


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


def fallback_load_volume(path):
    """Contract-shaped stand-in for ``asa.data.load_volume`` (canonical RAS+ array, spacing)."""
    img = nib.as_closest_canonical(nib.load(str(path)))
    return SimpleNamespace(
        array=np.asarray(img.dataobj), affine=img.affine, spacing=tuple(float(z) for z in img.header.get_zooms()[:3])
    )

def write_label(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    """Write an integer label volume as NIfTI (default affine: identity)."""
    affine = np.eye(4) if affine is None else affine
    nib.save(nib.Nifti1Image(np.asarray(array, dtype=np.int16), affine), str(path))
    return path
