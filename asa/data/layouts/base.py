"""Shared parts of the layout adapters: problems, registry, validation and the skip report."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from asa.data.case import Case
from asa.data.layouts.names import LAYOUTS
from asa.data.preprocessing import PERCENTILES, brain_mask, flat_channels
from asa.io import VolumeError, decode_nifti, is_temporary, load_volume, read_nifti

__all__ = ["CaseError", "Problem", "Found", "register", "ADAPTERS", "check_case", "found_under"]


class CaseError(ValueError):
    """One or more cases of a dataset are unusable (raised with ``on_bad_case="error"``)."""


@dataclass
class Problem:
    """Why a case cannot be used."""

    id: str
    reason: str
    paths: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"id": self.id, "reason": self.reason, "paths": self.paths}


@dataclass
class Found:
    """What an adapter found: usable-looking cases, problems, and the raw label values allowed."""

    cases: list[Case]
    problems: list[Problem] = field(default_factory=list)
    label_values: tuple[int, ...] | None = None


Adapter = Callable[..., Found]
ADAPTERS: dict[str, Adapter] = {}
PATTERNS: dict[str, str] = {}


def register(name: str, pattern: str) -> Callable[[Adapter], Adapter]:
    """Add an adapter ``fn(root: Path, *, require_labels: bool) -> Found`` to the registry under one
    of the names in ``asa.data.layouts.names.LAYOUTS``."""
    if name not in LAYOUTS:
        raise ValueError(f"layout {name!r} is not in asa.data.layouts.names.LAYOUTS {LAYOUTS}; add it there")

    def deco(fn: Adapter) -> Adapter:
        ADAPTERS[name] = fn
        PATTERNS[name] = pattern
        return fn

    return deco


def found_under(root: Path, paths: Iterable[Path]) -> list[Path]:
    """``paths`` (a glob of ``root``) without the hidden and temporary ones (`asa.io.is_temporary`: a dot-file such as
    asa-prepare's ``.<name>.part.nii.gz`` or a file in a dot-folder, a ``.tmp`` part), sorted: what a layout may read
    as data."""
    return sorted(p for p in paths if not any(is_temporary(part) for part in p.relative_to(root).parts))


def _grid(path: Path) -> tuple[tuple[int, ...], np.ndarray, nib.Nifti1Image]:
    img = read_nifti(path)
    shape = tuple(int(s) for s in img.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    return shape[:3], img.affine, img


def _no_contrast(image: np.ndarray, paths: list[Path]) -> str | None:
    """Why image [C, X, Y, Z] (channel c read from ``paths[c]``) cannot be z-scored in the brain, or None."""
    mask = brain_mask(image)
    flat = flat_channels(image, mask)
    if not flat:
        return None
    c, lo, hi = flat[0]
    n, total = int(mask.sum()), mask.size
    if n == 0:
        return f"{paths[c]}: image gives an empty brain mask (no voxel above 20 % of its 99th percentile): nothing to z-score"
    found = f"both {lo:g}" if lo == hi else f"{lo:g} and {hi:g}, a spread of {hi - lo:.3g}"
    where = "every voxel" if n == total else f"{n} of {total} voxels"
    return (f"{paths[c]}: image is constant inside the brain (its {PERCENTILES[0]:g}th and {PERCENTILES[1]:g}th "
            f"percentiles over the brain mask, {where}, are {found}): z-scoring it would divide by ~0")


def check_case(case: Case, label_values: tuple[int, ...] | None, *, check_labels: bool = True,
               contents: bool = False) -> str | None:
    """Reason the case is unusable, or None: unreadable headers, image/label shape or affine mismatch,
    label values outside ``label_values`` (decodes the label only when ``check_labels``). With
    ``contents`` every volume is read with `load_volume`'s own checks (truncated or corrupt data,
    wrong dimensionality, NaN/Inf, an all-zero image) — the faults that would otherwise stop
    training at the first batch that draws the case — and the images are checked for contrast
    inside the brain: an image that is constant there (all 5s, or 5 inside the brain and 0 outside)
    is unusable like an all-zero one, since z-scoring inside the brain would divide by ~0
    (`asa.data.preprocessing.flat_channels`, on the brain mask the preprocessing computes)."""
    try:
        ref_path = next(iter(case.images.values()))
        ref_shape, ref_affine, _ = _grid(ref_path)
        for path in case.paths()[1:]:
            shape, affine, img = _grid(path)
            if shape != ref_shape:
                return f"shape mismatch: {path} has {shape}, {ref_path} has {ref_shape}"
            if not np.allclose(affine, ref_affine, atol=1e-3):
                return f"affine mismatch: {path} and {ref_path} are not on the same grid"
        if contents:
            paths = list(case.images.items())
            image = np.stack([load_volume(path, label=False, frame=case.frame(channel)).array for channel, path in paths])
            flat = _no_contrast(image, [path for _, path in paths])
            if flat:
                return flat
        if case.label is not None and (check_labels or contents):
            data = load_volume(case.label, label=True).array if contents else decode_nifti(read_nifti(case.label), case.label)
            if not np.all(np.isfinite(data)):
                return f"label {case.label} contains NaN/Inf"
            if check_labels and label_values is not None:
                bad = sorted(set(np.unique(data).tolist()) - set(label_values))
                if bad:
                    return f"label values {bad} in {case.label} outside the expected {list(label_values)}"
    except VolumeError as err:
        return str(err)
    return None
