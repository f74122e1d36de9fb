"""Demo datasets: phantoms written in each real layout, so every adapter runs on real files.

Orientation on disk differs per layout (as real data does) so canonicalisation is exercised end to
end: BraTS LPS (like DICOM-derived data), IBSR a permuted coronal-style LIA, WMH LAS, BIDS
alternating RAS/LPS/LAS, CAPS and file lists RAS (MNI-like), MSD RAS.

With ``targets=True`` the T1 layouts (BIDS, CAPS, file list) carry case targets, as ADNI does: each
subject gets an age, a sex and a diagnosis (CN / MCI / AD) drawn from the seed (`demo_subject`),
and an aged phantom shows them (ventricles, sulci and hippocampi change with age, hippocampi
shrink with the diagnosis' medial-temporal atrophy; see `asa.data.synthetic.phantom.make_phantom`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nibabel.orientations import axcodes2ornt, inv_ornt_aff, ornt_transform

from asa.io import atomic_write_json, atomic_write_text
from asa.data.synthetic.anatomy import MODALITIES, PLACEMENTS, lesion_names, make_anatomy_subject
from asa.data.layouts.names import LAYOUTS
from asa.data.synthetic.phantom import Phantom, make_phantom

__all__ = ["write_demo_dataset", "write_anatomy_dataset", "ensure_demo_dataset", "default_cache_dir", "write_nifti",
           "demo_subject", "DEMO_DIAGNOSES", "TARGET_LAYOUTS", "ANATOMY_LAYOUTS", "BIDS_CONTRASTS"]

DEMO_VERSION = 4  # 2: synthetic BraTS/MSD case ids; 3: synthetic ids in every layout; 4: labeled subjects of their own
# the labeled layouts draw their subjects from a stream of their own (seed + LABELED_STREAM), so that a labeled set is
# never made of the heads of a pretraining cohort: subject k of seed s in brats/ibsr/wmh/msd is no subject of any
# pretraining layout (bids/caps/filelist) of a seed below LABELED_STREAM, whatever the two seeds (before version 4
# subject k was the same head in every layout, so a demo fine-tuning set was tested on the demo cohort's subjects)
LABELED_STREAM = 500_000
LABELED_LAYOUTS = ("brats", "ibsr", "wmh", "msd")
_RAS = axcodes2ornt(("R", "A", "S"))
# phantom case ids are never those of a real dataset (BraTS2021_00000 is a real BraTS 2021 case,
# IBSR_01 a real IBSR one, Utrecht/0 a real WMH one): every id carries DEMO, so phantoms cannot pass
# for real data; the layouts read them like real ids
BRATS_DEMO_PREFIX = "BraTS2021_DEMO_"

DEMO_DIAGNOSES = ("CN", "MCI", "AD")
"""Diagnoses of the demo subjects, in order of medial-temporal atrophy."""
_ATROPHY = {"CN": (0.0, 0.2), "MCI": (0.3, 0.6), "AD": (0.65, 1.0)}  # grade range per diagnosis (uniform)
DEMO_AGES = (55.0, 90.0)
TARGET_LAYOUTS = ("bids", "caps", "filelist")
"""Layouts whose demo can carry targets (``targets=True``): the T1 cohorts' layouts."""
ANATOMY_LAYOUTS = ("bids", "caps", "filelist", "ibsr", "msd")
"""Layouts the template subjects (``anatomy=True``, `asa.data.synthetic.anatomy`) are written in: the T1 cohorts',
IBSR (T1 + tissue labels) and MSD (4 channels + tissue and lesion labels)."""
_LESION_LAYOUTS = ("bids", "caps", "filelist", "msd")
_SKULL_LAYOUTS = ("bids", "caps", "filelist", "msd")  # IBSR's images are the skull-stripped `_ana_strip`
BIDS_CONTRASTS = {"t1": "T1w", "t1ce": "ce-gadolinium_T1w", "t2": "T2w", "flair": "FLAIR"}
"""Contrast -> BIDS suffix (with the ``ce`` entity for the contrast-enhanced T1) of the BIDS demo's
``contrasts``; asa's BIDS reader gives a ``*_T1w`` case the others beside it as channels of these names."""
# what a writer draws subject i from: (object with images / tissue / affine, its targets or None)
_Make = Callable[[int], tuple[Any, "dict[str, object] | None"]]


def default_cache_dir() -> Path:
    """``$ASA_CACHE`` or ``~/.cache/asa``."""
    return Path(os.environ.get("ASA_CACHE") or Path.home() / ".cache" / "asa").expanduser()


def write_nifti(array: np.ndarray, affine: np.ndarray, path: Path, axcodes: str = "RAS", dtype: type | None = None) -> Path:
    """Write a RAS-grid array in the orientation ``axcodes`` (e.g. "LPS"), with a consistent affine."""
    target = ornt_transform(_RAS, axcodes2ornt(tuple(axcodes)))
    data = nib.orientations.apply_orientation(array, target)
    new_affine = affine @ inv_ornt_aff(target, array.shape)
    img = nib.Nifti1Image(np.ascontiguousarray(data.astype(dtype or data.dtype)), new_affine)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(new_affine, code=1)
    img.set_sform(new_affine, code=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


def _int16(image: np.ndarray) -> np.ndarray:
    """Scanner-like integer storage (values ~0..1000)."""
    return np.round(image * 1000).astype(np.int16)


def demo_subject(seed: int, index: int) -> dict[str, object]:
    """Targets of demo subject ``index`` (0-based) of a dataset of seed ``seed``, with the hidden
    atrophy grade its phantom uses: ``{"age", "sex", "diagnosis", "atrophy"}``.

    Age uniform in [55, 90) years (one decimal), sex F/M with equal odds, and diagnoses balanced in
    every block of three subjects (a seeded permutation of CN, MCI, AD); the atrophy grade is
    uniform in [0, 0.2) for CN, [0.3, 0.6) for MCI, [0.65, 1) for AD. A subject's values depend on
    ``seed`` and ``index`` only, not on how many cases are written."""
    block = np.random.default_rng([seed, index // 3, 24]).permutation(len(DEMO_DIAGNOSES))
    diagnosis = DEMO_DIAGNOSES[int(block[index % 3])]
    rng = np.random.default_rng([seed, index, 24])
    age = round(float(rng.uniform(*DEMO_AGES)), 1)
    sex = ("F", "M")[int(rng.integers(2))]
    atrophy = float(rng.uniform(*_ATROPHY[diagnosis]))
    return {"age": age, "sex": sex, "diagnosis": diagnosis, "atrophy": atrophy}


def _t1_phantom(size: int | tuple[int, int, int], seed: int, index: int,
                targets: bool) -> tuple[Phantom, dict[str, object] | None]:
    """Phantom ``index`` of a T1 demo (seed ``seed * 1000 + index``, as ever), aged when ``targets``."""
    if not targets:
        return make_phantom(size, seed=seed * 1000 + index), None
    subject = demo_subject(seed, index)
    ph = make_phantom(size, seed=seed * 1000 + index, age=subject["age"], atrophy=subject["atrophy"],
                      sex=subject["sex"])
    return ph, subject


def _table(header: tuple[str, ...], rows: list[tuple[object, ...]], sep: str = "\t") -> str:
    return "\n".join(sep.join(map(str, r)) for r in [header, *rows]) + "\n"


_TARGET_COLUMNS = ("age", "sex", "diagnosis")


def _bids(out: Path, n: int, size: int, seed: int, targets: bool = False, make: _Make | None = None,
          title: str = "asa demo (phantoms)", contrasts: tuple[str, ...] = ("t1",)) -> None:
    atomic_write_json(out / "dataset_description.json", {"Name": title, "BIDSVersion": "1.8.0"})
    rows = []
    orients = ("RAS", "LPS", "LAS")
    for i in range(n):
        sub = f"sub-DEMO{i + 1:03d}"  # BIDS labels are alphanumeric
        ph, subject = make(i) if make else _t1_phantom(size, seed, i, targets)
        rows.append((sub,) + (tuple(subject[c] for c in _TARGET_COLUMNS) if targets else ()))
        anat = out / sub / ("ses-M00/anat" if i % 2 == 0 else "anat")
        stem = f"{sub}_ses-M00" if i % 2 == 0 else sub
        for contrast in contrasts:
            name = f"{stem}_{BIDS_CONTRASTS[contrast]}.nii.gz"
            write_nifti(ph.images[contrast], ph.affine, anat / name, orients[i % 3], np.float32)
        if targets and i % 2 == 0:  # session-level values where the subject has sessions (BIDS sessions.tsv)
            session = ("ses-M00", subject["age"], subject["diagnosis"])
            atomic_write_text(out / sub / f"{sub}_sessions.tsv", _table(("session_id", "age", "diagnosis"), [session]))
    columns = ("participant_id",) + (_TARGET_COLUMNS if targets else ())
    atomic_write_text(out / "participants.tsv", _table(columns, rows))


def _caps(out: Path, n: int, size: int, seed: int, targets: bool = False, make: _Make | None = None) -> None:
    rows = []
    for i in range(n):
        sub, ses = f"sub-DEMO{i + 1:03d}", "ses-M000"
        ph, subject = make(i) if make else _t1_phantom(size, seed, i, targets)
        name = f"{sub}_{ses}_T1w_space-MNI152NLin2009cSym_desc-Crop_res-1x1x1_T1w.nii.gz"
        write_nifti(ph.images["t1"], ph.affine, out / "subjects" / sub / ses / "t1_linear" / name, "RAS", np.float32)
        if targets:
            rows.append((sub, ses) + tuple(subject[c] for c in _TARGET_COLUMNS))
    if targets:  # one row per session, as ClinicaDL's label tables
        atomic_write_text(out / "participants.tsv", _table(("participant_id", "session_id") + _TARGET_COLUMNS, rows))


def _filelist(out: Path, n: int, size: int, seed: int, targets: bool = False, make: _Make | None = None) -> None:
    rows = []
    for i in range(n):
        ph, subject = make(i) if make else _t1_phantom(size, seed, i, targets)
        cid = f"DEMO_{i:03d}"
        write_nifti(ph.images["t1"], ph.affine, out / "images" / f"{cid}.nii.gz", "RAS", np.float32)
        values = tuple(subject[c] for c in _TARGET_COLUMNS) if targets else ()
        rows.append((cid, f"images/{cid}.nii.gz") + values)
    atomic_write_text(out / "files.csv", _table(("id", "path") + (_TARGET_COLUMNS if targets else ()), rows, ","))


def _brats(out: Path, n: int, size: int, seed: int) -> None:
    for i in range(n):
        cid = f"{BRATS_DEMO_PREFIX}{i:05d}"
        ph = make_phantom(size, seed=seed * 1000 + i, tumour=True)
        for mod in ("t1", "t1ce", "t2", "flair"):
            write_nifti(_int16(ph.images[mod]), ph.affine, out / cid / f"{cid}_{mod}.nii.gz", "LPS")
        write_nifti(ph.tumour, ph.affine, out / cid / f"{cid}_seg.nii.gz", "LPS", np.uint8)


def _ibsr(out: Path, n: int, size: int, seed: int, make: _Make | None = None) -> None:
    for i in range(n):
        cid = f"IBSR_DEMO_{i + 1:02d}"
        ph = make(i)[0] if make else make_phantom(size, seed=seed * 1000 + i)
        write_nifti(_int16(ph.images["t1"]), ph.affine, out / cid / f"{cid}_ana_strip.nii.gz", "LIA")
        write_nifti(ph.tissue, ph.affine, out / cid / f"{cid}_segTRI_ana.nii.gz", "LIA", np.uint8)


def _wmh(out: Path, n: int, size: int, seed: int) -> None:
    sites = ("Utrecht", "Singapore", "GE3T")
    for i in range(n):
        d = out / sites[i % 3] / f"DEMO_{i}"  # case id <site>_DEMO_N (unpadded, as the challenge ids are)
        ph = make_phantom(size, seed=seed * 1000 + i, lesions=True, other_pathology=i % 2 == 0)
        write_nifti(ph.images["t1"], ph.affine, d / "pre" / "T1.nii.gz", "LAS", np.float32)
        write_nifti(ph.images["flair"], ph.affine, d / "pre" / "FLAIR.nii.gz", "LAS", np.float32)
        write_nifti(ph.lesions, ph.affine, d / "wmh.nii.gz", "LAS", np.uint8)


def _msd(out: Path, n: int, size: int, seed: int) -> None:
    """nnU-Net v2 raw style of MSD Task01 (brain tumour): 4 channels, labels 1 oedema, 2 non-enhancing, 3 enhancing."""
    channels = ("FLAIR", "T1w", "T1gd", "T2w")
    source = ("flair", "t1", "t1ce", "t2")
    for i in range(n):
        cid = f"BRATS_DEMO_{i + 1:03d}"
        ph = make_phantom(size, seed=seed * 1000 + i, tumour=True)
        for k, mod in enumerate(source):
            write_nifti(ph.images[mod], ph.affine, out / "imagesTr" / f"{cid}_{k:04d}.nii.gz", "RAS", np.float32)
        label = np.select([ph.tumour == 2, ph.tumour == 1, ph.tumour == 4], [1, 2, 3], 0).astype(np.uint8)
        write_nifti(label, ph.affine, out / "labelsTr" / f"{cid}.nii.gz", "RAS", np.uint8)
    atomic_write_json(
        out / "dataset.json",
        {
            "name": "asa demo brain tumour",
            "channel_names": {str(k): c for k, c in enumerate(channels)},
            "labels": {"background": 0, "edema": 1, "non-enhancing tumor": 2, "enhancing tumour": 3},
            "numTraining": n,
            "file_ending": ".nii.gz",
        },
    )


def _msd_anatomy(out: Path, n: int, make: _Make, lesions: bool, placement: str = "fixed") -> None:
    """nnU-Net v2 raw, 4 channels as the phantoms' MSD (FLAIR, T1w, T1gd, T2w); labels 0 background,
    1 CSF, 2 GM, 3 WM and, with ``lesions``, the lesion classes of ``placement``
    (`asa.data.synthetic.anatomy.lesion_names`)."""
    channels = ("FLAIR", "T1w", "T1gd", "T2w")
    source = ("flair", "t1", "t1ce", "t2")
    for i in range(n):
        cid = f"MNI_DEMO_{i + 1:03d}"
        subject = make(i)[0]
        for k, mod in enumerate(source):
            write_nifti(subject.images[mod], subject.affine, out / "imagesTr" / f"{cid}_{k:04d}.nii.gz", "RAS",
                        np.float32)
        write_nifti(subject.labels, subject.affine, out / "labelsTr" / f"{cid}.nii.gz", "RAS", np.uint8)
    labels = {"background": 0, "CSF": 1, "GM": 2, "WM": 3}
    if lesions:
        labels.update({name: value for value, name in lesion_names(placement).items()})
    atomic_write_json(
        out / "dataset.json",
        {
            "name": "asa demo anatomy (MNI ICBM152 2009 template)",
            "channel_names": {str(k): c for k, c in enumerate(channels)},
            "labels": labels,
            "numTraining": n,
            "file_ending": ".nii.gz",
        },
    )


_WRITERS = {"bids": _bids, "caps": _caps, "filelist": _filelist, "brats": _brats, "ibsr": _ibsr, "wmh": _wmh, "msd": _msd}


def write_demo_dataset(layout: str, out: str | Path, *, cases: int = 4, size: int | tuple[int, int, int] = 64,
                       seed: int = 0, overwrite: bool = False, targets: bool = False, anatomy: bool = False,
                       lesions: bool = False, placement: str = "fixed", skull: bool = False,
                       contrasts: tuple[str, ...] | list[str] = ("t1",)) -> Path:
    """Write ``cases`` phantoms of ``size``^3, or of shape ``size`` (x, y, z) in RAS voxels, e.g.
    (240, 240, 155) for a full BraTS case (1 mm), in ``layout`` under ``out``; returns ``out``.

    ``targets`` (layouts in `TARGET_LAYOUTS`) writes aged phantoms and their subjects' ``age``,
    ``sex`` and ``diagnosis`` (`demo_subject`): BIDS in ``participants.tsv`` (plus
    ``sub-X/sub-X_sessions.tsv`` for subjects with a session), CAPS in a ``participants.tsv`` with a
    ``session_id`` column, a file list as columns of ``files.csv``. Without it the phantoms are the
    ageless ones, unchanged.

    ``anatomy`` writes subjects warped from the MNI152 template instead of phantoms
    (`asa.data.synthetic.anatomy.make_anatomy_subject`; needs ``pip install "asa[anatomy]"``), in the layouts
    `ANATOMY_LAYOUTS`: ``size`` is then the grid that holds the whole brain (64 -> about 3 mm voxels),
    not 1 mm voxels. ``lesions`` (with ``anatomy``; not IBSR, whose labels hold tissue only) adds the
    lesion kinds of `asa.data.synthetic.anatomy.LESION_NAMES`, labelled 4 and 5 in the MSD layout;
    ``placement="free"`` (with ``lesions``) draws them with no location prior
    (`asa.data.synthetic.anatomy.FREE_LESION_NAMES`); ``skull`` (with ``anatomy``; not IBSR, whose
    images are skull-stripped) writes whole heads in noisy air instead of skull-stripped brains.

    ``contrasts`` (``bids`` only; phantoms or template subjects): the contrasts written per subject,
    ``t1`` first, of ``t1, t1ce, t2, flair`` (BIDS suffixes `BIDS_CONTRASTS`: ``_T1w``,
    ``_ce-gadolinium_T1w``, ``_T2w``, ``_FLAIR``), e.g. a pretraining cohort with the fine-tuning channels.

    The labeled layouts (`LABELED_LAYOUTS`) draw their subjects from a stream of their own (`LABELED_STREAM`): a
    labeled set never holds the heads of a pretraining cohort, whatever the seeds.

    ``out`` must be missing or empty: a folder holding anything is refused (`FileExistsError`, naming
    what is there) unless ``overwrite``, since the phantoms would replace or mix with its files."""
    if layout not in _WRITERS:
        raise ValueError(f"unknown demo layout {layout!r}; expected one of {LAYOUTS}")
    if anatomy and layout not in ANATOMY_LAYOUTS:
        raise ValueError(f"anatomy=True (--anatomy) writes the layouts {ANATOMY_LAYOUTS}, not {layout!r}: its labels "
                         "are tumour or WMH classes the template subjects do not have; use 'msd' for 4-channel "
                         "(FLAIR, T1w, T1gd, T2w) subjects with tissue and lesion labels")
    if lesions and not anatomy:
        raise ValueError("lesions=True (--lesions) is for the template subjects (anatomy=True, --anatomy); the "
                         "phantoms carry their pathology in the brats, wmh and msd layouts")
    if lesions and layout not in _LESION_LAYOUTS:
        raise ValueError(f"lesions=True (--lesions) is for the layouts {_LESION_LAYOUTS}, not {layout!r}: its labels "
                         "hold the tissue classes only (1 CSF, 2 GM, 3 WM), and unlabelled lesions would be "
                         "mislabelled tissue; use 'msd' for labelled lesions")
    if placement not in PLACEMENTS:
        raise ValueError(f"placement (--placement) must be one of {PLACEMENTS}, got {placement!r}")
    if placement != "fixed" and not lesions:
        raise ValueError(f"placement={placement!r} (--placement) says where lesions go: it needs lesions=True "
                         "(--lesions)")
    if skull and not anatomy:
        raise ValueError("skull=True (--skull) is for the template subjects (anatomy=True, --anatomy); the phantoms "
                         "are skull-stripped")
    if skull and layout not in _SKULL_LAYOUTS:
        raise ValueError(f"skull=True (--skull) is for the layouts {_SKULL_LAYOUTS}, not {layout!r}: its images are "
                         "skull-stripped by definition (IBSR's _ana_strip)")
    contrasts = tuple(contrasts)
    if not contrasts or contrasts[0] != "t1" or len(set(contrasts)) != len(contrasts) or \
            not set(contrasts) <= set(MODALITIES):
        raise ValueError(f"contrasts (--contrasts) must be t1 then any of {MODALITIES[1:]}, each once, "
                         f"got {list(contrasts)}")
    if contrasts != ("t1",) and layout != "bids":
        raise ValueError(f"contrasts={list(contrasts)} (--contrasts) is for the bids layout, not {layout!r}: "
                         "caps (t1_linear) and file lists hold one T1 per case; msd and brats always hold 4 channels")
    if anatomy and targets:
        raise ValueError("targets=True (--targets) is for the phantoms, not the template subjects (anatomy=True, "
                         "--anatomy), which carry no age, sex or diagnosis")
    if targets and layout not in TARGET_LAYOUTS:
        raise ValueError(f"targets=True is for the layouts {TARGET_LAYOUTS} (T1 cohorts with a subject table), "
                         f"not {layout!r}")
    if cases < 1:
        raise ValueError(f"cases must be >= 1, got {cases}")
    if not isinstance(size, int):
        size = tuple(int(n) for n in size)
        if len(size) != 3:
            raise ValueError(f"size must be one edge or three (x, y, z), got {list(size)}")
    if min((size,) if isinstance(size, int) else size) < 16:
        raise ValueError(f"size must be >= 16 voxels, got {size}")
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out}: a file, not a folder")
    held = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if held and not overwrite:
        shown = ", ".join(held[:5]) + (f", ... ({len(held)} entries)" if len(held) > 5 else "")
        raise FileExistsError(f"--out {out} is not empty ({shown}): the phantoms would replace or mix with its "
                              "files. Choose a new folder, or pass --overwrite to write into it anyway")
    out.mkdir(parents=True, exist_ok=True)
    options = {"contrasts": contrasts} if contrasts != ("t1",) else {}
    seed = seed + LABELED_STREAM if layout in LABELED_LAYOUTS else seed  # disjoint from every pretraining cohort
    if not anatomy:
        _WRITERS[layout](out, cases, size, seed, **({"targets": True} if targets else {}), **options)
        return out

    def make(index: int) -> tuple[Any, None]:
        return make_anatomy_subject(size, seed=seed, index=index, lesions=lesions, placement=placement,
                                    skull=skull), None

    if layout == "msd":
        _msd_anatomy(out, cases, make, lesions, placement)
    else:
        title = {"title": "asa demo (MNI ICBM152 2009 template subjects)"} if layout == "bids" else {}
        _WRITERS[layout](out, cases, size, seed, make=make, **title, **options)
    return out


def write_anatomy_dataset(layout: str, out: str | Path, *, cases: int = 4, size: int | tuple[int, int, int] = 64,
                          seed: int = 0, lesions: bool = False, overwrite: bool = False, placement: str = "fixed",
                          skull: bool = False, contrasts: tuple[str, ...] | list[str] = ("t1",)) -> Path:
    """Write ``cases`` subjects warped from the MNI ICBM152 2009 template in ``layout`` under ``out``;
    returns ``out``. Needs nilearn: ``pip install "asa[anatomy]"`` (`ImportError` naming it otherwise).

    ``layout``: one of `ANATOMY_LAYOUTS`. ``bids`` / ``caps`` / ``filelist``: one T1w per subject
    (float32; BIDS orientations alternate RAS / LPS / LAS as the phantoms'), for pretraining.
    ``ibsr``: T1 (int16, LIA) + tissue labels 1 CSF / 2 GM / 3 WM. ``msd``: nnU-Net v2 raw with 4
    channels (FLAIR, T1w, T1gd, T2w; float32, RAS) and labels 0 background, 1 CSF, 2 GM, 3 WM, plus,
    with ``lesions``, 4 heterotopia (grey-matter nodules in deep white matter) and 5
    deep_grey_enlargement (the deep grey nuclei of one hemisphere grown): lesions with the intensities of normal
    tissue, found only from context (`asa.data.synthetic.anatomy`). ``lesions`` also works for the T1 layouts
    (lesioned, unlabelled images); IBSR is refused (`ValueError`).

    Realism options (defaults: today's subjects, byte for byte): ``placement="free"`` (with
    ``lesions``): lesions anywhere in the tissue, either hemisphere, sizes drawn, labelled 4
    heterotopia and 5 grey_enlargement; ``skull``: whole heads (skull, scalp, neck) in air with
    Rician noise, as a T1 before brain extraction (not IBSR); ``contrasts`` (``bids``): more
    contrasts per subject beside the T1w, e.g. ``("t1", "t1ce", "t2", "flair")``, the MSD channels.
    See `asa.data.synthetic.anatomy.make_anatomy_subject`.

    ``size``: the grid, one edge or (x, y, z), that holds the whole brain isotropically (64 ->
    about 3 mm voxels, 32 -> 6 mm; at least 16). Subject i depends on ``seed`` and i only (same
    seed -> identical files; a subject with ``lesions`` is the same head, warp and noise as
    without, in a layout of the same kind: the labeled layouts hold other subjects than the pretraining
    layouts, `LABELED_STREAM`). The template is loaded and resampled once per process (a few seconds); then about
    0.1-0.5 s per subject at 32-64 voxels on one CPU core. ``out`` must be missing or empty unless
    ``overwrite`` (`FileExistsError`). Same as ``write_demo_dataset(layout, out, ..., anatomy=True)``."""
    return write_demo_dataset(layout, out, cases=cases, size=size, seed=seed, overwrite=overwrite, anatomy=True,
                              lesions=lesions, placement=placement, skull=skull, contrasts=contrasts)


def ensure_demo_dataset(layout: str, *, cases: int = 4, size: int = 64, seed: int = 0,
                        cache_dir: str | Path | None = None, targets: bool = False, anatomy: bool = False,
                        lesions: bool = False, placement: str = "fixed", skull: bool = False,
                        contrasts: tuple[str, ...] | list[str] = ("t1",)) -> Path:
    """Demo dataset in ``cache_dir/demo/<layout>-n<cases>-s<size>-seed<seed>-v<version>[-targets]``
    (``[-anatomy[-lesions][-free][-skull]]`` for template subjects, ``[-<contrasts>]`` beyond the T1),
    generated once (``targets``, ``anatomy``, ``lesions``, ``placement``, ``skull``, ``contrasts``: see
    `write_demo_dataset`).

    Generation happens in a temporary sibling folder renamed into place, so concurrent callers
    (e.g. several DDP ranks) never see a half-written dataset.
    """
    base = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    source = ("-anatomy" + ("-lesions" if lesions else "") + ("" if placement == "fixed" else f"-{placement}")
              + ("-skull" if skull else "")) if anatomy else ""
    source += "" if tuple(contrasts) == ("t1",) else "-" + "-".join(contrasts)
    name = f"{layout}-n{cases}-s{size}-seed{seed}-v{DEMO_VERSION}{'-targets' if targets else ''}{source}"
    target = base / "demo" / name
    if (target / ".complete").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        write_demo_dataset(layout, tmp, cases=cases, size=size, seed=seed, targets=targets, anatomy=anatomy,
                           lesions=lesions, placement=placement, skull=skull, contrasts=contrasts)
        (tmp / ".complete").write_text(json.dumps({"layout": layout, "cases": cases, "size": size, "seed": seed,
                                                   **({"targets": True} if targets else {}),
                                                   **({"anatomy": True} if anatomy else {}),
                                                   **({"lesions": True} if lesions else {}),
                                                   **({"placement": placement} if placement != "fixed" else {}),
                                                   **({"skull": True} if skull else {}),
                                                   **({"contrasts": list(contrasts)} if tuple(contrasts) != ("t1",)
                                                      else {})}))
        if target.exists() and not (target / ".complete").is_file():
            shutil.rmtree(target, ignore_errors=True)  # leftover of an interrupted older writer
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / ".complete").is_file():  # someone else won the race, unless it failed
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
