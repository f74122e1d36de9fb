"""Fine-tuning layouts: BraTS 2021, IBSR 18, WMH challenge, MSD / nnU-Net raw."""

from __future__ import annotations

import json
import re
from pathlib import Path

from asa.data.case import Case
from asa.data.layouts.base import Found, Problem, found_under, register
from asa.io.nifti import find_nifti, strip_nifti
from asa.data.labels import get_task


def _missing(case_id: str, what: str, folder: Path, stem: str) -> Problem:
    return Problem(case_id, f"missing {what}: expected {folder / stem}.nii[.gz]", [str(folder)])


@register("brats", "BraTS2021_XXXXX/BraTS2021_XXXXX_{t1,t1ce,t2,flair,seg}.nii[.gz]")
def brats(root: Path, *, require_labels: bool = True) -> Found:
    """One case per folder holding ``<id>_{t1,t1ce,t2,flair}`` (+ ``<id>_seg``); searched recursively."""
    task = get_task("brats")
    pattern = re.compile(r"^(.+)_(t1|t1ce|t2|flair|seg)\.nii(\.gz)?$", re.IGNORECASE)
    folders = sorted({f.parent for f in found_under(root, root.rglob("*.nii*"))
                      if pattern.match(f.name) and pattern.match(f.name).group(1) == f.parent.name})
    cases, problems = [], []
    for d in folders:
        cid = d.name
        images, bad = {}, None
        for mod in task.channels:
            p = find_nifti(d, f"{cid}_{mod}")
            if p is None:
                bad = _missing(cid, f"modality '{mod}'", d, f"{cid}_{mod}")
                break
            images[mod] = p
        label = find_nifti(d, f"{cid}_seg")
        if bad is None and label is None and require_labels:
            bad = _missing(cid, "label", d, f"{cid}_seg")
        if bad:
            problems.append(bad)
        else:
            cases.append(Case(cid, images, label, {"layout": "brats", "folder": str(d)}))
    return Found(cases, problems, task.label_values)


@register("ibsr", "IBSR_NN/IBSR_NN_ana_strip.nii[.gz] + IBSR_NN_segTRI_ana.nii[.gz]")
def ibsr(root: Path, *, require_labels: bool = True) -> Found:
    task = get_task("ibsr")
    cases, problems = [], []
    for d in found_under(root, (p for p in root.rglob("IBSR_*") if p.is_dir())):
        cid = d.name
        image = find_nifti(d, f"{cid}_ana_strip")
        label = find_nifti(d, f"{cid}_segTRI_ana")
        if image is None:
            problems.append(_missing(cid, "image", d, f"{cid}_ana_strip"))
        elif label is None and require_labels:
            problems.append(_missing(cid, "label", d, f"{cid}_segTRI_ana"))
        else:
            cases.append(Case(cid, {"t1": image}, label, {"layout": "ibsr"}))
    return Found(cases, problems, task.label_values)


@register("wmh", "<site>/<id>/pre/{T1,FLAIR}.nii[.gz] + <site>/<id>/wmh.nii[.gz]")
def wmh(root: Path, *, require_labels: bool = True) -> Found:
    """Case id ``<site>_<id>`` (ids repeat across sites in the challenge data)."""
    task = get_task("wmh")
    cases, problems = [], []
    for pre in found_under(root, (p for p in root.rglob("pre") if p.is_dir())):
        d = pre.parent
        rel = d.relative_to(root).parts
        cid = "_".join(rel) if rel else d.name
        images, bad = {}, None
        for mod, stem in (("t1", "T1"), ("flair", "FLAIR")):
            p = find_nifti(pre, stem)
            if p is None:
                bad = _missing(cid, f"modality '{stem}'", pre, stem)
                break
            images[mod] = p
        label = find_nifti(d, "wmh")
        if bad is None and label is None and require_labels:
            bad = _missing(cid, "label", d, "wmh")
        if bad:
            problems.append(bad)
        else:
            cases.append(Case(cid, images, label, {"layout": "wmh", "site": rel[0] if len(rel) > 1 else None}))
    return Found(cases, problems, task.label_values)


@register("msd", "dataset.json + imagesTr/<case>_<XXXX>.nii.gz (nnU-Net) or imagesTr/<case>.nii.gz 4D (MSD) + labelsTr/<case>.nii.gz")
def msd(root: Path, *, require_labels: bool = True) -> Found:
    """MSD (4D images listed in dataset.json 'training') or nnU-Net v2 raw (one file per channel)."""
    task = get_task("msd", root)
    meta = json.loads((root / "dataset.json").read_text())
    images_dir, labels_dir = root / "imagesTr", root / "labelsTr"
    cases, problems = [], []
    if "channel_names" in meta or not meta.get("training"):
        ending = meta.get("file_ending", ".nii.gz")
        ids = sorted({f.name[: -len(ending) - 5]
                      for f in found_under(images_dir, images_dir.glob(f"*_[0-9][0-9][0-9][0-9]{ending}"))})
        for cid in ids:
            images, bad = {}, None
            for i, ch in enumerate(task.channels):
                p = images_dir / f"{cid}_{i:04d}{ending}"
                if not p.is_file():
                    bad = Problem(cid, f"missing channel {i} '{ch}': expected {p}", [str(p)])
                    break
                images[ch] = p
            label = labels_dir / f"{cid}{ending}"
            if bad is None and not label.is_file():
                bad = Problem(cid, f"missing label: expected {label}", [str(label)]) if require_labels else None
                label = None
            if bad:
                problems.append(bad)
            else:
                cases.append(Case(cid, images, label, {"layout": "msd"}))
        return Found(cases, problems, task.label_values)
    for entry in meta["training"]:
        image = (root / entry["image"]).resolve()
        cid = strip_nifti(image.name)
        label = (root / entry["label"]).resolve() if entry.get("label") else None
        if not image.is_file():
            problems.append(Problem(cid, f"missing image {image} (listed in dataset.json)", [str(image)]))
            continue
        if label is not None and not label.is_file():
            problems.append(Problem(cid, f"missing label {label} (listed in dataset.json)", [str(label)]))
            continue
        frames = {ch: i for i, ch in enumerate(task.channels)} if len(task.channels) > 1 else {}
        cases.append(Case(cid, {ch: image for ch in task.channels}, label, {"layout": "msd", "frames": frames}))
    return Found(cases, problems, task.label_values)
