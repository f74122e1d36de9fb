"""The pretraining cohort, and whether evaluation cases were in it: by subject id and by image content.

A pretraining run records its cases in ``splits.json`` (ids per part) and its data in ``config.yaml``. Ids alone
miss the same scan under another name (a renamed copy, a dataset that redistributes another), so every image
also gets a content digest: the sha256 of its voxels in asa's frame (RAS+, as nibabel's ``as_closest_canonical``
gives them), cast to float32, with the grid's shape. A renamed, re-compressed, re-typed (int16 -> float32) or
re-oriented copy has the same digest; a resampled, cropped or re-normalised one does not.

:func:`cohort_record` is the record (``cohort.json`` in a pretraining run folder); :func:`cohort_overlap`
compares cases against it; :func:`describe_overlap` says the outcome in report lines.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from asa.data.case import Case
from asa.data.store_writer import worker_pool

__all__ = ["COHORT_FORMAT", "DIGEST", "SEEN_PARTS", "carried_cohort", "case_subject", "cohort_digest", "cohort_overlap",
           "cohort_record", "describe_overlap", "export_cohort", "image_digests", "overlap_line", "volume_digest"]

COHORT_FORMAT = "asa.cohort"
DIGEST = "sha256 of the RAS+ voxels as float32 with the grid shape (asa.data.cohort.volume_digest)"
SEEN_PARTS = ("train", "val")  # the parts of a pretraining split whose images the encoder was trained or selected on


def volume_digest(path: str | os.PathLike, frame: int | None = None) -> str:
    """``sha256:<hex>`` of the image at ``path`` (``frame``: a volume of a 4D file): its voxels reoriented to RAS+,
    cast to float32 (C order), prefixed by the grid's shape."""
    import nibabel as nib

    img = nib.as_closest_canonical(nib.load(str(path)))
    data = np.asarray(img.dataobj, dtype=np.float32)
    if frame is not None and data.ndim == 4:
        data = data[..., int(frame)]
    h = hashlib.sha256(("x".join(map(str, data.shape)) + "|").encode())
    h.update(np.ascontiguousarray(data).tobytes())
    return "sha256:" + h.hexdigest()


def case_subject(case: Case) -> str:
    """The subject a case belongs to: the layout's subject (BIDS, CAPS; ``sub-`` dropped) or the case id."""
    subject = case.meta.get("subject")
    return str(subject).removeprefix("sub-") if subject else case.id


def _digest(job: tuple[str, str, str, int | None]) -> str:
    return volume_digest(job[2], job[3])


def image_digests(cases: Sequence[Case], *, workers: int = 4) -> dict[str, dict[str, str]]:
    """Case id -> {channel: digest} of every image of ``cases``, read by ``workers`` processes (1: in this one;
    threads gain nothing: nibabel's gzip reading holds the GIL)."""
    jobs = [(c.id, ch, str(path), c.frame(ch)) for c in cases for ch, path in c.images.items()]
    if int(workers) > 1 and len(jobs) > 1:
        with worker_pool(min(int(workers), len(jobs))) as pool:
            values = list(pool.map(_digest, jobs, chunksize=max(1, len(jobs) // (8 * int(workers)))))
    else:
        values = [_digest(job) for job in jobs]
    out: dict[str, dict[str, str]] = {}
    for (case_id, channel, _, _), value in zip(jobs, values):
        out.setdefault(case_id, {})[channel] = value
    return out


def cohort_record(cases: Sequence[Case], parts: Mapping[str, Sequence[str]], *, workers: int = 4,
                  source: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The cohort of a pretraining run: each case of ``parts`` (``splits.json``: part -> case ids) with its part,
    subject and image digests (:func:`image_digests`); ``source`` says where the cases came from."""
    part_of = {case_id: part for part, ids in parts.items() if isinstance(ids, list) for case_id in ids}
    chosen = [c for c in cases if c.id in part_of]
    digests = image_digests(chosen, workers=workers)
    return {"format": COHORT_FORMAT, "digest": DIGEST, "seen_parts": list(SEEN_PARTS), **dict(source or {}),
            "cases": {c.id: {"part": part_of[c.id], "subject": case_subject(c), "images": digests.get(c.id, {})}
                      for c in chosen}}


def cohort_digest(cohort: Mapping[str, Any]) -> dict[str, Any]:
    """One digest of the whole seen cohort (the sha256 of its image digests, sorted, one per line) with its
    case and image counts: what a model card states so that a cohort can be compared without its list."""
    seen = set(cohort.get("seen_parts") or SEEN_PARTS)
    members = [v for v in (cohort.get("cases") or {}).values() if v.get("part") in seen]
    digests = sorted(d for v in members for d in (v.get("images") or {}).values())
    return {"cases": len(members), "images": len(digests),
            "digest": "sha256:" + hashlib.sha256("\n".join(digests).encode()).hexdigest(), "of": DIGEST}


def export_cohort(cohort: Mapping[str, Any]) -> dict[str, Any]:
    """What an encoder export carries of a cohort record: the seen cases (id -> part, subject, image digests) and
    what the digests are, as plain strings, lists and dicts (``torch.load(weights_only=True)`` reads them; no
    data paths)."""
    seen = [str(p) for p in (cohort.get("seen_parts") or SEEN_PARTS)]
    cases = {str(k): {"part": str(v.get("part")), "subject": str(v.get("subject") or k),
                      "images": {str(ch): str(d) for ch, d in (v.get("images") or {}).items()}}
             for k, v in (cohort.get("cases") or {}).items() if v.get("part") in seen}
    return {"format": COHORT_FORMAT, "digest": DIGEST, "seen_parts": seen, "cases": cases}


def carried_cohort(state: Mapping[str, Any], where: str) -> dict[str, Any] | None:
    """The cohort an encoder export or checkpoint carries (``state["cohort"]``, :func:`export_cohort`), None when
    it carries none; one of another format or digest is refused naming ``where`` (its digests would match nothing)."""
    cohort = state.get("cohort")
    if cohort is None:
        return None
    if not isinstance(cohort, Mapping) or not isinstance(cohort.get("cases"), Mapping):
        raise ValueError(f"{where}: its 'cohort' is not a cohort record (expected {{'format': {COHORT_FORMAT!r}, "
                         "'cases': {...}}, as asa-export writes it)")
    if cohort.get("format") != COHORT_FORMAT or cohort.get("digest") != DIGEST:
        raise ValueError(f"{where}: its cohort is of format {cohort.get('format')!r} with digest "
                         f"{cohort.get('digest')!r}; this asa compares {COHORT_FORMAT!r} records of {DIGEST}")
    return dict(cohort)


def cohort_overlap(cohort: Mapping[str, Any], subsets: Mapping[str, Sequence[Case]], *, workers: int = 4,
                   seen_parts: Iterable[str] | None = None,
                   digests: Mapping[str, Mapping[str, str]] | None = None) -> dict[str, Any]:
    """For each subset (``{"val": cases, "test": cases}``), the cases that were in the cohort's seen parts
    (``cohort["seen_parts"]``, default train and val): by case id, by subject and by image content (any image
    of the case with the digest of a cohort image). Returns ``{subset: {"n", "by_id", "by_subject",
    "by_content", "overlapping"}}``, the matches listed as ``{"case", "matches": [cohort case, ...]}``.
    ``digests``: the cases' image digests when already read (:func:`image_digests`), so that several cohorts
    are compared with one reading."""
    seen = set(seen_parts or cohort.get("seen_parts") or SEEN_PARTS)
    members = {k: v for k, v in (cohort.get("cases") or {}).items() if v.get("part") in seen}
    by_subject: dict[str, list[str]] = {}
    by_digest: dict[str, list[str]] = {}
    for case_id, entry in members.items():
        by_subject.setdefault(str(entry.get("subject") or case_id), []).append(case_id)
        for value in (entry.get("images") or {}).values():
            by_digest.setdefault(value, []).append(case_id)
    report: dict[str, Any] = {}
    for name, cases in subsets.items():
        read = image_digests(cases, workers=workers) if digests is None else digests
        ids = [{"case": c.id, "matches": [c.id]} for c in cases if c.id in members]
        subjects = [{"case": c.id, "matches": sorted(by_subject[case_subject(c)])} for c in cases
                    if case_subject(c) in by_subject]
        content = []
        for c in cases:
            hits = sorted({m for d in read.get(c.id, {}).values() for m in by_digest.get(d, [])})
            if hits:
                content.append({"case": c.id, "matches": hits})
        overlapping = sorted({m["case"] for m in ids + subjects + content})
        report[name] = {"n": len(cases), "by_id": ids, "by_subject": subjects, "by_content": content,
                        "overlapping": overlapping}
    return report


def describe_overlap(report: Mapping[str, Any], *, cohort_size: int | None = None, show: int = 5) -> list[str]:
    """One line per subset: how many of its cases were in the pretraining cohort, by id, subject and content,
    and the first of them with the cohort cases they match."""
    lines = []
    for name, part in report.items():
        n_over = len(part["overlapping"])
        line = (f"{name}: {n_over} of {part['n']} case(s) in the pretraining cohort"
                + (f" ({cohort_size} cases)" if cohort_size is not None else "")
                + f": by id {len(part['by_id'])}, by subject {len(part['by_subject'])}, "
                  f"by image content {len(part['by_content'])}")
        if n_over:
            found = {m["case"]: m["matches"] for kind in ("by_content", "by_subject", "by_id") for m in part[kind]}
            shown = [f"{case} = {', '.join(found[case][:3])}" for case in part["overlapping"][:show]]
            line += "; " + "; ".join(shown) + (" ..." if n_over > show else "")
        lines.append(line)
    return lines


def overlap_line(report: Mapping[str, Any], *, show: int = 3) -> str:
    """One line on the subsets of an overlap report (:func:`cohort_overlap`; ``val`` and ``test`` named
    validation and test): how many of each were in the cohort, by id / subject / content over both, and the first matches."""
    names = {"val": "validation", "test": "test"}
    counts = " and ".join(f"{len(report[s]['overlapping'])} of the {report[s]['n']} {names.get(s, s)} cases"
                          for s in report)
    kinds = {kind: sum(len(report[s][kind]) for s in report) for kind in ("by_id", "by_subject", "by_content")}
    line = (f"{counts} were in the encoder's pretraining cohort (by id {kinds['by_id']} / subject "
            f"{kinds['by_subject']} / content {kinds['by_content']})")
    found = {m["case"]: m["matches"] for s in report for kind in ("by_id", "by_subject", "by_content")
             for m in report[s][kind]}
    if found:
        shown = [f"{case} = {', '.join(found[case][:3])}" for case in sorted(found)[:show]]
        line += ": " + "; ".join(shown) + (" ..." if len(found) > show else "")
    return line
