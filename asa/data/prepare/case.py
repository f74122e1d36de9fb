"""One case through `asa-prepare`: N4, brain extraction, registration of the T1 to the symmetric MNI
template, resampling onto the prepared grid, the other contrasts registered rigidly to their T1 and
carried through the same transform; then the files, the transforms and the case's record.

A case's files are written under a temporary name and renamed into place, its record last: a case with
a record is complete."""

from __future__ import annotations

import os
import resource
import time
import zlib
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage

from asa.data.case import Case
from asa.data.prepare.child import child_cpu
from asa.data.prepare.stages import BRAIN_TOOLS, TRANSFORMS, extract_brain, n4, register, resample, scratch
from asa.data.prepare.template import BOXES, TEMPLATE_SPACE, load_template, prepared_grid
from asa.io.atomic import atomic_write_json

__all__ = ["PrepareSettings", "CaseFiles", "case_files", "check_inputs", "prepare_case", "to_native", "read_volume",
           "mirror_score", "part_path", "SUFFIXES", "MIN_SIMILARITY", "RegistrationFailed"]

SUFFIXES = {"t1": "T1w", "t1ce": "T1w", "t2": "T2w", "flair": "FLAIR"}
"""The BIDS suffix of each channel's prepared file (``t1ce`` carries the entity ``ce-gadolinium``)."""
_FILE_SUFFIX = {"t1": "_T1w", "t1ce": "_ce-gadolinium_T1w", "t2": "_T2w", "flair": "_FLAIR"}
_FROM = {"t1ce": "ceT1w", "t2": "T2w", "flair": "FLAIR"}
MIN_SIMILARITY = 0.40
"""A case whose prepared T1 correlates less than this with the template over their common brain failed its
registration and is refused (nothing of it written). Measured (docs/own-data.md, "A failed case is not written"):
correct registrations of real images 0.51-0.90 (ROBEX's atlas head the lowest) and of asa's demo brains 0.63-0.74;
header errors (turned 90 degrees, flipped front to back) 0.05-0.34 (benchmarks/prepare_gate.py)."""


class RegistrationFailed(ValueError):
    """The T1's registration to the template failed (its similarity is below the least a correct one reaches)."""


@dataclass(frozen=True)
class PrepareSettings:
    """What a prepared folder was made with (recorded in its ``dataset_description.json``).

    Args:
        transform: the T1's registration to the template, one of `TRANSFORMS`.
        brain: the brain extraction, one of `BRAIN_TOOLS`.
        spacing: the prepared voxel edge (mm).
        box: the prepared grid, one of `BOXES`.
        crop: the cube's edge in voxels with ``box="centre"``.
    """

    transform: str = "affine"
    brain: str = "deepbet"
    spacing: float = 1.0
    box: str = "centre"
    crop: int = 128

    def __post_init__(self) -> None:
        for name, value, choices in (("transform", self.transform, TRANSFORMS), ("brain", self.brain, BRAIN_TOOLS),
                                     ("box", self.box, BOXES)):
            if value not in choices:
                raise ValueError(f"{name}={value!r}: expected one of {choices}")
        prepared_grid(box=self.box, crop=self.crop, spacing=self.spacing)  # checks spacing and crop

    def as_dict(self) -> dict[str, Any]:
        """The settings as recorded (``crop`` only where the box uses it)."""
        out = asdict(self)
        if self.box != "centre":
            out.pop("crop")
        return out


@dataclass(frozen=True)
class CaseFiles:
    """Where a case's prepared files go, relative to the prepared folder: ``folder`` (``sub-X/[ses-Y/]anat``)
    and the file names' ``prefix`` (the case id, a BIDS ``sub-X[_ses-Y][_run-Z]``)."""

    folder: Path
    prefix: str

    def image(self, channel: str) -> Path:
        return self.folder / f"{self.prefix}{_FILE_SUFFIX[channel]}.nii.gz"

    @property
    def mask(self) -> Path:
        return self.folder / f"{self.prefix}_desc-brain_mask.nii.gz"

    @property
    def record(self) -> Path:
        return self.folder / f"{self.prefix}_desc-prepare.json"

    def transform(self, channel: str) -> Path:
        """The T1's transform to the template, or another contrast's rigid one to its T1 (ANTs ``.mat``)."""
        if channel == "t1":
            return self.folder / f"{self.prefix}_from-T1w_to-{TEMPLATE_SPACE}_mode-image_xfm.mat"
        return self.folder / f"{self.prefix}_from-{_FROM[channel]}_to-T1w_mode-image_xfm.mat"

    def written(self, channels) -> list[Path]:
        """Every file a case of ``channels`` writes, its record first (without it, the others are not a case)."""
        prepared = [c for c in channels if c in SUFFIXES]
        return [self.record, self.mask, *(self.image(c) for c in prepared), *(self.transform(c) for c in prepared)]


def part_path(path: Path) -> Path:
    """The name a prepared file is written under before it is renamed into place: a dot-name beside it, which asa's
    discovery passes over (``.sub-X_T1w.nii.gz.part.nii.gz``)."""
    return path.with_name(f".{path.name}.part" + (".nii.gz" if path.name.endswith(".nii.gz") else ""))


def case_files(case: Case) -> CaseFiles:
    """The prepared names of ``case``: a BIDS case keeps its id and folders; another layout's id becomes a
    BIDS subject label (``DEMO_000`` -> ``sub-DEMO000``)."""
    subject, session = case.meta.get("subject"), case.meta.get("session")
    if case.meta.get("layout") == "bids" and subject:
        folder = Path(f"sub-{subject}") / (f"ses-{session}" if session else "") / "anat"
        return CaseFiles(folder, case.id)
    label = "".join(ch for ch in case.id if ch.isalnum())
    if not label:
        raise ValueError(f"case id {case.id!r} holds no letter or digit to name a BIDS subject")
    return CaseFiles(Path(f"sub-{label}") / "anat", f"sub-{label}")


def check_inputs(case: Case, settings: PrepareSettings) -> None:
    """Refuse (`ValueError` naming the file) a case that cannot be prepared, before any slow stage: no T1, a scan
    that cannot be read, is not 3D or is empty (`read_volume`), and under ``brain="none"`` a T1 that is a whole
    head (`asa.data.prepare.stages.extract_brain`)."""
    if "t1" not in case.images:
        raise ValueError(f"case {case.id}: no T1 (channels {list(case.images)}); asa-prepare registers the T1")
    for channel, path in case.images.items():
        data, affine = read_volume(Path(path))
        if channel == "t1" and settings.brain == "none":
            try:
                extract_brain(data, affine, "none")
            except ValueError as err:
                raise ValueError(f"{path}: {err}") from None


def read_volume(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(float32 [X, Y, Z], affine) of a 3D NIfTI (a 4D file of one volume too); a file that cannot be read
    (truncated, not a NIfTI) and a scan of zeros only are refused naming the file."""
    try:
        image = nib.load(str(path))
        data = np.asarray(image.get_fdata(dtype=np.float32))
    except (OSError, EOFError, ValueError, zlib.error, nib.filebasedimages.ImageFileError) as err:
        raise ValueError(f"{path}: cannot be read as a NIfTI ({type(err).__name__}: {err}); a damaged or "
                         "truncated file?") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"{path}: expected a 3D image, got shape {data.shape}")
    data = np.nan_to_num(data)
    if not data.any():
        raise ValueError(f"{path}: the scan is empty (every voxel is 0)")
    return data, np.asarray(image.affine, dtype=np.float64)


@lru_cache(maxsize=4)
def _fixed(spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """The template T1 and the grid's affine, on the template's whole-brain box at ``spacing`` mm (at least
    1): the registration's target."""
    shape, affine = prepared_grid(box="template", spacing=max(spacing, 1.0))
    return _template_on(shape, affine)[0], affine


def _template_on(shape: tuple[int, int, int], affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The template T1 (anti-aliased, trilinear) and brain mask (where over one half) on the grid (``shape``,
    ``affine``, axis-aligned)."""
    tpl = load_template()
    where = np.linalg.inv(tpl.affine) @ affine
    coords = where[:3, :3] @ np.indices(shape, dtype=np.float64).reshape(3, -1) + where[:3, 3:]
    voxel = float(np.abs(affine[0, 0]))
    sigma = 0.5 * np.sqrt(max(voxel**2 - 1.0, 0.0))  # the template's voxels are 1 mm
    t1 = ndimage.gaussian_filter(tpl.t1, sigma) if sigma else tpl.t1
    t1 = ndimage.map_coordinates(t1, coords, order=1).reshape(shape).astype(np.float32)
    brain = ndimage.map_coordinates(tpl.brain.astype(np.float32), coords, order=1).reshape(shape) > 0.5
    return t1, brain


def mirror_score(image: np.ndarray, mask: np.ndarray) -> float:
    """Pearson correlation of ``image`` [X, Y, Z] with its left-right mirror (voxel i <-> X - 1 - i) where
    ``mask`` and its mirror overlap: 1 for a brain that is its own mirror about the grid's centre plane."""
    region = mask & mask[::-1]
    if region.sum() < 2:
        return float("nan")
    return float(np.corrcoef(image[region], image[::-1][region])[0, 1])


def _save(data: np.ndarray, affine: np.ndarray, path: Path, dtype=np.float32) -> None:
    """Write a NIfTI under a temporary name beside ``path``, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(path)
    image = nib.Nifti1Image(np.asarray(data, dtype=dtype), affine)
    image.header.set_xyzt_units("mm")
    nib.save(image, str(part))
    os.replace(part, path)


def _shrink(affine: np.ndarray) -> int:
    """N4's shrink factor: its field is fitted on a grid of at least 4 mm (ANTs' factor 4 at 1 mm), being smooth."""
    return max(1, int(np.ceil(4.0 / float(np.min(np.linalg.norm(affine[:3, :3], axis=0))) - 1e-6)))


def _cpu() -> float:
    """CPU seconds of this process, its finished children (ROBEX runs as one) and its ANTs calls in its child
    (`asa.data.prepare.child`): a stage's cost on one core, whatever else the machine runs."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime + child_cpu()


def _source(path: Path) -> dict[str, Any]:
    stat = path.stat()
    return {"path": str(path.absolute()), "size": stat.st_size, "mtime": stat.st_mtime}


def prepare_case(case: Case, out: Path, settings: PrepareSettings, *,
                 min_similarity: float = MIN_SIMILARITY) -> dict[str, Any]:
    """Prepare ``case`` (its ``t1`` and any ``t1ce``, ``t2``, ``flair``) into the prepared folder ``out``;
    returns its record (also written, last, beside its files): the files, the sources' size and mtime, the
    QC measures (``symmetry``, ``brain_ml``, ``similarity``) and the seconds of each stage. A registration
    whose similarity is below ``min_similarity`` is refused (`RegistrationFailed`) before anything is written."""
    if "t1" not in case.images:
        raise ValueError(f"case {case.id}: no T1 (channels {list(case.images)}); asa-prepare registers the T1")
    files = case_files(case)
    seconds: dict[str, float] = {}
    cpu_seconds: dict[str, float] = {}
    clock, cpu = time.perf_counter(), _cpu()

    def lap(stage: str) -> None:
        nonlocal clock, cpu
        now, now_cpu = time.perf_counter(), _cpu()
        seconds[stage] = round(seconds.get(stage, 0.0) + now - clock, 3)
        cpu_seconds[stage] = round(cpu_seconds.get(stage, 0.0) + now_cpu - cpu, 3)
        clock, cpu = now, now_cpu

    t1, affine = read_volume(case.images["t1"])
    lap("read")
    t1 = n4(t1, affine, shrink=_shrink(affine))
    lap("n4")
    brain = extract_brain(t1, affine, settings.brain)
    lap("brain")
    fixed_t1, fixed_affine = _fixed(settings.spacing)
    shape, grid = prepared_grid(box=settings.box, crop=settings.crop, spacing=settings.spacing)
    written: dict[str, str] = {}
    with scratch() as tmp:
        # the brain onto the template's brain (the template is stripped: a head would be shrunk onto it)
        reg = register((fixed_t1, fixed_affine), (t1 * brain, affine), transform=settings.transform,
                       folder=Path(tmp) / "t1")
        lap("register")
        mask = resample(brain.astype(np.float32), affine, reg.transforms, shape=shape, target=grid) >= 0.5
        image = resample(t1, affine, reg.transforms, shape=shape, target=grid) * mask
        lap("resample")
        images = {"t1": image}
        transforms = {"t1": reg.transforms}
        for channel in [c for c in case.images if c != "t1"]:
            data, own = read_volume(case.images[channel])
            data = n4(data, own, shrink=_shrink(own))
            # head onto head (the same subject): the contrast's own scalp and skull help the rigid fit; every voxel
            # sampled, as a seeded random sample let a small head settle 8 degrees off (correlation 0.74 with the
            # contrast that did not move, tests/data/prepare)
            rigid = register((t1, affine), (data, own), transform="rigid", folder=Path(tmp) / channel,
                             fixed_mask=ndimage.binary_dilation(brain, iterations=2), dense=True)
            moved = resample(data, own, list(reg.transforms) + list(rigid.transforms), shape=shape, target=grid)
            images[channel] = moved * mask
            transforms[channel] = rigid.transforms
        if len(case.images) > 1:
            lap("contrasts")
        template_t1, template_brain = _template_on(shape, grid)
        region = template_brain & mask
        qc = {
            "symmetry": mirror_score(images["t1"], mask),
            "brain_ml": float(brain.sum() * abs(np.linalg.det(affine[:3, :3])) / 1000.0),
            "similarity": float(np.corrcoef(images["t1"][region], template_t1[region])[0, 1]),
        }
        lap("qc")
        if not qc["similarity"] >= min_similarity:  # NaN too: no common brain at all
            raise RegistrationFailed(
                f"{case.images['t1']}: its registration to the template failed (similarity {qc['similarity']:.3f}, "
                f"the T1's correlation with the template over their common brain; below {min_similarity:g} is a "
                "failed one): is the orientation in its header right? (nothing of it written; --min-similarity "
                "sets the bound)")
        for channel, data in images.items():
            _save(data, grid, out / files.image(channel))
            written[channel] = str(files.image(channel))
        _save(mask, grid, out / files.mask, dtype=np.uint8)
        for channel, paths in transforms.items():
            if len(paths) != 1:
                raise RuntimeError(f"expected one {settings.transform} transform file, ANTs wrote {paths}")
            part = part_path(out / files.transform(channel))
            part.write_bytes(Path(paths[0]).read_bytes())
            os.replace(part, out / files.transform(channel))
        lap("write")
    record = {
        "id": case.id, "files": written, "mask": str(files.mask),
        "transforms": {c: str(files.transform(c)) for c in transforms},
        "sources": {c: _source(Path(p)) for c, p in case.images.items()},
        "settings": settings.as_dict(), "qc": qc, "seconds": seconds, "cpu_seconds": cpu_seconds,
    }
    atomic_write_json(out / files.record, record)
    return record


def to_native(prepared: str | Path, transform: str | Path, native: str | Path, *, label: bool = True
              ) -> nib.Nifti1Image:
    """A prepared-space image (e.g. a prediction) taken back to the native scan ``native`` through the
    inverse of the case's T1 transform (its ``_from-T1w_to-MNI152NLin2009aSym_mode-image_xfm.mat``);
    ``label``: label values kept whole, else linear interpolation. Returns the image on the native grid."""
    data, affine = read_volume(Path(prepared))
    reference = nib.load(str(native))
    shape = tuple(reference.shape[:3])
    back = resample(data, affine, [str(transform)], shape=shape, target=reference.affine, label=label, invert=True)
    return nib.Nifti1Image(back.astype(np.uint8 if label and back.max() < 256 and back.min() >= 0 else np.float32),
                           reference.affine)
