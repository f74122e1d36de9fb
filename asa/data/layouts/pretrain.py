"""Pretraining layouts (no labels): BIDS raw (the T1, with the other contrasts beside it), Clinica CAPS
``t1_linear``, plain file list (the T1, with the other contrasts in columns of their own).

Their channels are ``t1`` and, where the data hold them, ``t1ce``, ``t2`` and ``flair`` (`CHANNELS`);
`channel_of` says which of them a labeled set's channel name means (MSD's ``T1gd`` is ``t1ce``)."""

from __future__ import annotations

import csv
import re
from pathlib import Path

from asa.data.case import Case
from asa.data.layouts.base import Found, Problem, found_under, register
from asa.io.nifti import is_nifti, strip_nifti

_ENTITY = re.compile(r"(sub|ses|run|acq|rec)-([A-Za-z0-9]+)")


def _entities(name: str) -> dict[str, str]:
    return dict(_ENTITY.findall(name))


_CE = re.compile(r"_ce-[A-Za-z0-9]+")
_SIBLINGS = {"t1ce": "_T1w", "t2": "_T2w", "flair": "_FLAIR"}  # channel -> suffix of the files beside a T1w

# the channels of the pretraining layouts, each with the names a labeled set gives that sequence (BraTS's t1, t1ce,
# t2, flair; the MSD's T1w, T1gd, T2w, FLAIR; nnU-Net v2's free names such as T1c, T2_FLAIR), compared in lower
# case without -, _ or spaces
CHANNELS: dict[str, tuple[str, ...]] = {
    "t1": ("t1", "t1w"),
    "t1ce": ("t1ce", "t1gd", "t1c", "t1wce", "cet1w", "t1post", "t1contrast"),
    "t2": ("t2", "t2w"),
    "flair": ("flair", "t2flair", "t2wflair"),
}


def channel_of(name: str) -> str | None:
    """The pretraining layouts' channel (`CHANNELS`) a labeled set's channel ``name`` means, or None.

    ``"T1gd"`` -> ``"t1ce"``; ``"FLAIR"`` -> ``"flair"``; ``"T2w"`` -> ``"t2"``; ``"ADC"`` -> None."""
    key = re.sub(r"[-_\s]", "", str(name).lower())
    return next((channel for channel, names in CHANNELS.items() if key in names), None)


def _siblings(t1w: Path, case_id: str) -> dict[str, Path]:
    """The other contrasts of a ``*_T1w`` case in its folder: ``t2`` (``<id>_T2w``), ``flair``
    (``<id>_FLAIR``) and ``t1ce`` (``<id>`` with a ``ce-<label>`` entity, ``_T1w``)."""
    found = {}
    for f in found_under(t1w.parent, t1w.parent.iterdir()):
        if not is_nifti(f.name) or f == t1w:
            continue
        stem = strip_nifti(f.name)
        for channel, suffix in _SIBLINGS.items():
            if stem.endswith(suffix) and bool(_CE.search(stem)) == (channel == "t1ce") \
                    and _CE.sub("", stem[: -len(suffix)]) == case_id:
                found[channel] = f
    return dict(sorted(found.items()))


@register("bids", "sub-*/[ses-*/]anat/*_T1w.nii[.gz]")
def bids(root: Path, *, require_labels: bool = False) -> Found:
    """BIDS raw: one case per ``*_T1w`` file without a ``ce`` entity; id = file name without ``_T1w``
    (keeps run/acq). Its channel ``t1``, plus ``t1ce`` / ``t2`` / ``flair`` where the folder holds the
    same name with a ``ce-<label>`` entity (``*_ce-gadolinium_T1w``), ``_T2w`` or ``_FLAIR`` instead."""
    files = found_under(root, {*root.glob("sub-*/anat/*_T1w.nii*"), *root.glob("sub-*/ses-*/anat/*_T1w.nii*")})
    cases = []
    for f in files:
        if not is_nifti(f.name) or _CE.search(f.name):  # a contrast-enhanced T1 is a channel of its case
            continue
        case_id = strip_nifti(f.name)[: -len("_T1w")]
        ent = _entities(case_id)
        cases.append(Case(case_id, {"t1": f, **_siblings(f, case_id)}, None,
                          {"subject": ent.get("sub"), "session": ent.get("ses"), "layout": "bids"}))
    return Found(cases)


@register("caps", "subjects/sub-*/ses-*/t1_linear/*_T1w.nii[.gz]")
def caps(root: Path, *, require_labels: bool = False) -> Found:
    """Clinica CAPS ``t1_linear``: one case per subject/session; the cropped (``desc-Crop``) image is
    preferred over the uncropped one when both exist."""
    base = root / "subjects" if (root / "subjects").is_dir() else root
    by_session: dict[tuple[str, str], list[Path]] = {}
    for f in found_under(base, base.glob("sub-*/ses-*/t1_linear/*_T1w.nii*")):
        by_session.setdefault((f.parts[-4], f.parts[-3]), []).append(f)
    cases = []
    for (sub, ses), files in sorted(by_session.items()):
        crop = [f for f in files if "desc-Crop" in f.name]
        f = (crop or files)[0]
        cases.append(Case(f"{sub}_{ses}", {"t1": f}, None, {"subject": sub[4:], "session": ses[4:], "layout": "caps"}))
    return Found(cases)


def _list_file(root: Path) -> Path:
    if root.is_file():
        return root
    for name in ("files.csv", "files.tsv", "files.txt", "filelist.csv", "filelist.txt"):
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(f"filelist: {root} is not a file and holds none of files.csv/files.tsv/files.txt/filelist.csv/filelist.txt")


@register("filelist", "a .txt (one path per line) or .csv/.tsv (columns id?, path|t1|image, t1ce?, t2?, flair?, "
                      "label?, diseased?) file")
def filelist(root: Path, *, require_labels: bool = False) -> Found:
    """Plain list of T1 images; relative paths are resolved against the list's folder. A .csv/.tsv may give
    the other contrasts of each case in columns ``t1ce``, ``t2``, ``flair`` (the channels of `CHANNELS`, as
    the BIDS reader names them); an empty cell: the case lacks that channel; other columns are not read."""
    listing = _list_file(root)
    folder = listing.parent
    rows: list[dict] = []
    if listing.suffix.lower() in (".csv", ".tsv"):
        with open(listing, newline="") as fh:
            reader = csv.DictReader(fh, delimiter="\t" if listing.suffix.lower() == ".tsv" else ",")
            cols = reader.fieldnames or []
            key = next((c for c in ("path", "t1", "image") if c in cols), None)
            if key is None:
                raise ValueError(f"filelist {listing}: needs a 'path', 't1' or 'image' column, found {cols}")
            extra = [c for c in cols if c in _SIBLINGS]  # channel columns beside the T1's, in their order
            for row in reader:
                rows.append({"path": row[key], "id": row.get("id") or "", "label": row.get("label") or "",
                             "channels": {c: row[c] for c in extra if row.get(c)},
                             **({"diseased": row["diseased"]} if "diseased" in cols else {})})
    else:
        for line in listing.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                rows.append({"path": line, "id": "", "label": "", "channels": {}})

    def resolve(text: str) -> Path:
        path = Path(text).expanduser()
        return path if path.is_absolute() else folder / path

    cases, problems = [], []
    for row in rows:
        images = {"t1": resolve(row["path"]), **{c: resolve(p) for c, p in row["channels"].items()}}
        case_id = row["id"] or strip_nifti(images["t1"].name)
        label = resolve(row["label"]) if row["label"] else None
        if missing := {c: p for c, p in images.items() if not p.is_file()}:
            said = ", ".join(f"{p} ({c})" for c, p in missing.items())
            problems.append(Problem(case_id, f"missing image {said} (listed in {listing})",
                                    [str(p) for p in missing.values()]))
            continue
        meta = {"layout": "filelist", "list": str(listing)}
        if "diseased" in row:  # optional per-subject column (SA-Swin's symmetry term)
            meta["diseased"] = row["diseased"]
        cases.append(Case(case_id, images, label, meta))
    return Found(cases, problems)
