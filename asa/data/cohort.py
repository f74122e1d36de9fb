"""The pretraining cohort, and whether evaluation cases were in it: by subject id and by image content.

A pretraining run records its cases in ``splits.json`` (ids per part) and its data in ``config.yaml``. Ids alone
miss the same scan under another name (a renamed copy, a dataset that redistributes another), so every image
also gets a content digest: the sha256 of its voxels in asa's frame (RAS+, as nibabel's ``as_closest_canonical``
gives them), cast to float32, with the grid's shape. A renamed, re-compressed, re-typed (int16 -> float32) or
re-oriented copy has the same digest; a resampled, cropped or re-normalised one does not. Beside the digest each
image gets a content fingerprint (`asa.data.fingerprint`: its brain at low resolution in its own box), which a
resampled, cropped, rescaled, skull-stripped or defaced copy keeps: a case whose fingerprint correlates with a
cohort image's of the same contrast at that contrast's threshold (``NEAR_THRESHOLDS``) or more is a near-duplicate,
reported with its score.

:func:`cohort_record` is the record (``cohort.json`` in a pretraining run folder); :func:`cohort_overlap`
compares cases against it; :func:`describe_overlap` says the outcome in report lines; :func:`near_duplicates`
compares two lists of image files (or files with a recorded cohort).

A weight file carries a cohort's summary (:func:`cohort_summary`: counts, one digest of the list, the name of the
list's file), never the list: each case adds about 5.7 KB of digests and fingerprints, so OpenMind's 114k volumes
would make a 650 MB safetensors header (refused above 100 MB). The list lives beside the file as ``cohort.json.gz``
(:func:`write_cohort_list`); :func:`carried_cohort` reads it back, checks it against the summary's digest and says
when it is missing (:class:`CohortListMissing`).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from asa.data.case import Case
from asa.data.fingerprint import (FINGERPRINT, NEAR_THRESHOLDS, decode_fingerprint, encode_fingerprint,
                                  image_fingerprint, unit_fingerprints)
from asa.data.layouts.pretrain import channel_of
from asa.data.store_writer import worker_pool
from asa.io.atomic import atomic_write_bytes
from asa.io.hub import COHORT_LIST

__all__ = ["COHORT_FORMAT", "COHORT_LEVELS", "COHORT_LIST", "CohortListMissing", "DIGEST", "IDS_WITHHELD", "SEEN_PARTS",
           "carried_cohort", "case_subject", "cohort_digest", "cohort_overlap", "cohort_record", "cohort_summary",
           "describe_overlap", "export_cohort", "image_digests", "image_signatures", "near_duplicates", "overlap_line",
           "ras_voxels", "read_cohort_list", "volume_digest", "volume_signature", "write_cohort_list"]

COHORT_FORMAT = "asa.cohort"
DIGEST = "sha256 of the RAS+ voxels as float32 with the grid shape (asa.data.cohort.volume_digest)"
SEEN_PARTS = ("train", "val")  # the parts of a pretraining split whose images the encoder was trained or selected on
# what an exported model folder carries of its cohort (asa-export --cohort; docs/weights-elsewhere.md): every case's
# id, subject, digests and fingerprints; the digests and fingerprints under opaque keys; nothing but the summary digest
COHORT_LEVELS = ("full", "digests", "none")
IDS_WITHHELD = "withheld"  # a cohort record's "ids" when its keys are opaque and it names no subject


def ras_voxels(path: str | os.PathLike, frame: int | None) -> tuple[np.ndarray, tuple[float, ...]]:
    """The voxels of the image at ``path`` in asa's frame (RAS+, nibabel's ``as_closest_canonical``) as float32
    (``frame``: a volume of a 4D file), and its voxel sizes: what the digest and the fingerprint read."""
    import nibabel as nib

    img = nib.as_closest_canonical(nib.load(str(path)))
    data = np.asarray(img.dataobj, dtype=np.float32)
    if frame is not None and data.ndim == 4:
        data = data[..., int(frame)]
    return data, tuple(float(z) for z in img.header.get_zooms()[:3])


def _sha(data: np.ndarray) -> str:
    h = hashlib.sha256(("x".join(map(str, data.shape)) + "|").encode())
    h.update(np.ascontiguousarray(data).tobytes())
    return "sha256:" + h.hexdigest()


def volume_digest(path: str | os.PathLike, frame: int | None = None) -> str:
    """``sha256:<hex>`` of the image at ``path`` (``frame``: a volume of a 4D file): its voxels reoriented to RAS+,
    cast to float32 (C order), prefixed by the grid's shape."""
    return _sha(ras_voxels(path, frame)[0])


def volume_signature(path: str | os.PathLike, frame: int | None = None) -> tuple[str, str]:
    """(digest, fingerprint as text) of the image at ``path``, read once: :func:`volume_digest` and
    `asa.data.fingerprint.image_fingerprint` (``encode_fingerprint``'s text). An image without a brain to
    fingerprint (a label map, a constant volume) gets the fingerprint ``""``, which matches nothing."""
    data, zooms = ras_voxels(path, frame)
    try:
        fingerprint = encode_fingerprint(image_fingerprint(data if data.ndim == 3 else data[..., 0], zooms))
    except ValueError:
        fingerprint = ""
    return _sha(data), fingerprint


def case_subject(case: Case) -> str:
    """The subject a case belongs to: the layout's subject (BIDS, CAPS; ``sub-`` dropped) or the case id."""
    subject = case.meta.get("subject")
    return str(subject).removeprefix("sub-") if subject else case.id


def _digest(job: tuple[str, str, str, int | None]) -> str:
    return volume_digest(job[2], job[3])


def _signature(job: tuple[str, str, str, int | None]) -> tuple[str, str]:
    return volume_signature(job[2], job[3])


def _per_image(cases: Sequence[Case], read, workers: int) -> dict[str, dict[str, Any]]:
    """Case id -> {channel: read(job)} over every image of ``cases``, by ``workers`` processes (1: in this one;
    threads gain nothing: nibabel's gzip reading holds the GIL)."""
    jobs = [(c.id, ch, str(path), c.frame(ch)) for c in cases for ch, path in c.images.items()]
    if int(workers) > 1 and len(jobs) > 1:
        with worker_pool(min(int(workers), len(jobs))) as pool:
            values = list(pool.map(read, jobs, chunksize=max(1, len(jobs) // (8 * int(workers)))))
    else:
        values = [read(job) for job in jobs]
    out: dict[str, dict[str, Any]] = {}
    for (case_id, channel, _, _), value in zip(jobs, values):
        out.setdefault(case_id, {})[channel] = value
    return out


def image_digests(cases: Sequence[Case], *, workers: int = 4) -> dict[str, dict[str, str]]:
    """Case id -> {channel: digest} of every image of ``cases``, read by ``workers`` processes."""
    return _per_image(cases, _digest, workers)


def image_signatures(cases: Sequence[Case], *, workers: int = 4) -> tuple[dict[str, dict[str, str]],
                                                                           dict[str, dict[str, str]]]:
    """(case id -> {channel: digest}, case id -> {channel: fingerprint text}) of every image of ``cases``, each
    image read once (:func:`volume_signature`) by ``workers`` processes."""
    both = _per_image(cases, _signature, workers)
    return ({c: {ch: v[0] for ch, v in chans.items()} for c, chans in both.items()},
            {c: {ch: v[1] for ch, v in chans.items()} for c, chans in both.items()})


def cohort_record(cases: Sequence[Case], parts: Mapping[str, Sequence[str]], *, workers: int = 4,
                  source: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The cohort of a pretraining run: each case of ``parts`` (``splits.json``: part -> case ids) with its part,
    subject, image digests and fingerprints (:func:`image_signatures`); ``source`` says where the cases came from."""
    part_of = {case_id: part for part, ids in parts.items() if isinstance(ids, list) for case_id in ids}
    chosen = [c for c in cases if c.id in part_of]
    digests, prints = image_signatures(chosen, workers=workers)
    return {"format": COHORT_FORMAT, "digest": DIGEST, "fingerprint": FINGERPRINT, "seen_parts": list(SEEN_PARTS),
            **dict(source or {}),
            "cases": {c.id: {"part": part_of[c.id], "subject": case_subject(c), "images": digests.get(c.id, {}),
                             "fingerprints": prints.get(c.id, {})} for c in chosen}}


def cohort_digest(cohort: Mapping[str, Any]) -> dict[str, Any]:
    """One digest of the whole seen cohort (the sha256 of its image digests, sorted, one per line) with its
    case and image counts: what a model card states so that a cohort can be compared without its list."""
    seen = set(cohort.get("seen_parts") or SEEN_PARTS)
    members = [v for v in (cohort.get("cases") or {}).values() if v.get("part") in seen]
    digests = sorted(d for v in members for d in (v.get("images") or {}).values())
    return {"cases": len(members), "images": len(digests),
            "digest": "sha256:" + hashlib.sha256("\n".join(digests).encode()).hexdigest(), "of": DIGEST}


def export_cohort(cohort: Mapping[str, Any], *, ids: bool = True) -> dict[str, Any]:
    """What an encoder export carries of a cohort record: the seen cases (id -> part, subject, image digests and
    fingerprints when recorded) and what the digests and fingerprints are, as plain strings, lists and dicts
    (``torch.load(weights_only=True)`` reads them; no data paths). Without ``ids`` (``asa-export --cohort
    digests``, :data:`COHORT_LEVELS`) the cases are keyed ``case-0001``, ``case-0002``, ... in the record's order
    and carry no subject: the digests and fingerprints still find a copy of a cohort scan, a case id or subject
    no longer (the record says ``"ids": "withheld"``; a record that withholds them keeps doing so)."""
    seen = [str(p) for p in (cohort.get("seen_parts") or SEEN_PARTS)]
    prints = cohort.get("fingerprint") == FINGERPRINT
    ids = ids and cohort.get("ids") != IDS_WITHHELD
    members = [(str(k), v) for k, v in (cohort.get("cases") or {}).items() if v.get("part") in seen]
    cases = {(k if ids else f"case-{n:04d}"):
             {"part": str(v.get("part")), **({"subject": str(v.get("subject") or k)} if ids else {}),
              "images": {str(ch): str(d) for ch, d in (v.get("images") or {}).items()},
              **({"fingerprints": {str(ch): str(f) for ch, f in (v.get("fingerprints") or {}).items()}}
                 if prints else {})}
             for n, (k, v) in enumerate(members, start=1)}
    return {"format": COHORT_FORMAT, "digest": DIGEST, **({"fingerprint": FINGERPRINT} if prints else {}),
            **({} if ids else {"ids": IDS_WITHHELD}), "seen_parts": seen, "cases": cases}


class CohortListMissing(FileNotFoundError):
    """A weight file states a pretraining cohort (its summary) whose list is not beside it: its held-out cases
    cannot be checked, which is said, never taken for "no overlap"."""


def cohort_summary(cohort: Mapping[str, Any]) -> dict[str, Any]:
    """What a weight file carries of the cohort ``cohort`` (an :func:`export_cohort` record) in place of its list: what
    the list holds (format, digest and fingerprint descriptors, ``ids`` when withheld, the seen parts), its case and
    image counts with one digest of its image digests (``summary``: :func:`cohort_digest`), and the name of the file
    beside the weights that holds it (``list``: ``cohort.json.gz``, :func:`write_cohort_list`). A few hundred bytes
    at any cohort size."""
    return {"format": COHORT_FORMAT, "digest": DIGEST,
            **({"fingerprint": FINGERPRINT} if cohort.get("fingerprint") == FINGERPRINT else {}),
            **({"ids": IDS_WITHHELD} if cohort.get("ids") == IDS_WITHHELD else {}),
            "seen_parts": [str(p) for p in (cohort.get("seen_parts") or SEEN_PARTS)],
            "summary": cohort_digest(cohort), "list": COHORT_LIST}


def write_cohort_list(folder: str | os.PathLike, cohort: Mapping[str, Any], name: str = COHORT_LIST) -> Path:
    """Write the cohort record ``cohort`` into ``folder`` as gzipped JSON (``name``, atomically; gzip level 1 and no
    time stamp, so the same cohort gives the same bytes): about 1.5 KB per case with fingerprints, 0.1 KB without."""
    text = json.dumps(cohort, separators=(",", ":")).encode()
    return atomic_write_bytes(Path(folder) / name, gzip.compress(text, compresslevel=1, mtime=0))


def read_cohort_list(path: str | os.PathLike) -> dict[str, Any]:
    """The cohort record of a list written by :func:`write_cohort_list`; refused (ValueError naming the file) when
    it is not gzipped JSON of a cohort record."""
    try:
        record = json.loads(gzip.decompress(Path(path).read_bytes()))
    except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a readable cohort list (gzipped JSON, as asa writes it): {err}") from err
    if not isinstance(record, dict) or not isinstance(record.get("cases"), dict):
        raise ValueError(f"{path}: not a cohort list (expected {{'format': {COHORT_FORMAT!r}, 'cases': {{...}}}})")
    return record


def carried_cohort(state: Mapping[str, Any], where: str,
                   beside: str | os.PathLike | None = None) -> dict[str, Any] | None:
    """The cohort an encoder export or checkpoint carries, None when it carries none: its list, read from the
    file its summary names (:func:`cohort_summary`) in the folder ``beside`` (the weight file's own, or the model
    folder) and checked against the summary's digest; or the list itself, as files written before the summary carry
    it (:func:`export_cohort`). Raises :class:`CohortListMissing` (naming ``where`` and the list's path) when the
    list is not there; refuses, naming ``where``, a cohort of another format or digest (its digests would match
    nothing) and a list whose digest is not the summary's (another export's)."""
    cohort = state.get("cohort")
    if cohort is None:
        return None
    if not isinstance(cohort, Mapping) or not (isinstance(cohort.get("cases"), Mapping)
                                               or isinstance(cohort.get("summary"), Mapping)):
        raise ValueError(f"{where}: its 'cohort' is not a cohort record (expected {{'format': {COHORT_FORMAT!r}, "
                         "'summary': {...}, 'list': 'cohort.json.gz'}, as asa-export writes it)")
    if cohort.get("format") != COHORT_FORMAT or cohort.get("digest") != DIGEST:
        raise ValueError(f"{where}: its cohort is of format {cohort.get('format')!r} with digest "
                         f"{cohort.get('digest')!r}; this asa compares {COHORT_FORMAT!r} records of {DIGEST}")
    if isinstance(cohort.get("cases"), Mapping):
        return dict(cohort)
    summary, name = cohort["summary"], str(cohort.get("list") or COHORT_LIST)
    if Path(name).name != name:
        raise ValueError(f"{where}: its cohort names the list {name!r}; expected a file name beside the weights")
    path = Path(beside if beside is not None else ".") / name
    if not path.is_file():
        raise CohortListMissing(
            f"{where} states a pretraining cohort of {summary.get('cases')} cases (digest {summary.get('digest')}) "
            f"whose list {name} is not beside it ({path}): copy {name} from where the file came from")
    listed = read_cohort_list(path)
    found = cohort_digest(listed)
    if found["digest"] != summary.get("digest"):
        raise ValueError(f"{path}: the list of another cohort ({found['cases']} cases, digest {found['digest']}); "
                         f"{where} states {summary.get('cases')} cases, digest {summary.get('digest')}")
    return listed


def _cohort_prints(members: Mapping[str, Any]) -> tuple[list[str], list[str | None], np.ndarray]:
    """(cohort case of each row, its contrast, [n, GRID^3] int8) of the recorded fingerprints of ``members``; the
    contrast is what the image's channel name means (`asa.data.layouts.pretrain.channel_of`: t1, t1ce, t2, flair),
    None when it names none of them."""
    owners, contrasts, rows = [], [], []
    for case_id, entry in members.items():
        for channel, text in (entry.get("fingerprints") or {}).items():
            if text:
                owners.append(case_id)
                contrasts.append(channel_of(channel))
                rows.append(decode_fingerprint(text))
    return owners, contrasts, (np.stack(rows) if rows else np.zeros((0, 1), dtype=np.int8))


NEAR_BLOCK = 1024  # query fingerprints scored per matrix product: [1024, R] float32 scores, 40 MB at R = 10^4


def _pair_thresholds(queries: Sequence[str | None], references: Sequence[str | None],
                     thresholds: Mapping[str, float | None]) -> np.ndarray:
    """[Q, R] the score at or above which each pair is a near-duplicate: the contrast's threshold when both images
    have it, none (infinity) when their contrasts differ or the contrast decides nothing (a threshold of None), the
    strictest of ``thresholds`` when either image's contrast is unknown."""
    known = [c for c in thresholds if thresholds[c] is not None]
    strictest = max(float(thresholds[c]) for c in known)
    codes = {c: k for k, c in enumerate(thresholds)}
    per_code = np.array([np.inf if thresholds[c] is None else float(thresholds[c]) for c in thresholds] + [np.inf])
    q = np.array([codes.get(c, -1) if c is not None else -1 for c in queries])
    r = np.array([codes.get(c, -1) if c is not None else -1 for c in references])
    same = np.where(q[:, None] == r[None, :], per_code[q][:, None], np.inf)
    return np.where((q[:, None] < 0) | (r[None, :] < 0), strictest, same).astype(np.float32)


def _near(prints: Mapping[str, Mapping[str, str]], owners: list[str], contrasts: list[str | None], table: np.ndarray,
          thresholds: Mapping[str, float | None]) -> dict[str, dict[str, tuple[float, str]]]:
    """Query case -> {cohort case: (its best score, the contrast it was scored in)}, those at or above the pair's
    threshold (:func:`_pair_thresholds`: an image is compared with the cohort's images of its own contrast, at that
    contrast's threshold) for every query's fingerprints ``prints`` (case -> channel -> text) against the cohort
    ``table`` (rows owned by ``owners``, of ``contrasts``): the table normalised once, the queries scored
    ``NEAR_BLOCK`` at a time in one matrix product each, and only the pairs at or above their threshold looked at one
    by one (all pairs of 10^4 x 10^4 in seconds, BENCHMARKS.md)."""
    whose, kinds, rows = [], [], []
    for case, chans in prints.items():
        for channel, text in chans.items():
            if text:
                whose.append(case)
                kinds.append(channel_of(channel))
                rows.append(decode_fingerprint(text))
    best: dict[str, dict[str, tuple[float, str]]] = {}
    if not rows or not owners:
        return best
    reference = unit_fingerprints(table)
    for start in range(0, len(rows), NEAR_BLOCK):
        stop = start + NEAR_BLOCK
        scores = unit_fingerprints(np.stack(rows[start:stop])) @ reference.T
        for q, r in zip(*np.nonzero(scores >= _pair_thresholds(kinds[start:stop], contrasts, thresholds))):
            found = best.setdefault(whose[start + q], {})
            score = round(float(scores[q, r]), 4)
            if score > found.get(owners[r], (-1.0, ""))[0]:
                found[owners[r]] = (score, kinds[start + q] or contrasts[r] or "any")
    return best


def cohort_overlap(cohort: Mapping[str, Any], subsets: Mapping[str, Sequence[Case]], *, workers: int = 4,
                   seen_parts: Iterable[str] | None = None,
                   digests: Mapping[str, Mapping[str, str]] | None = None,
                   fingerprints: Mapping[str, Mapping[str, str]] | None = None,
                   thresholds: Mapping[str, float | None] = NEAR_THRESHOLDS) -> dict[str, Any]:
    """For each subset (``{"val": cases, "test": cases}``), the cases that were in the cohort's seen parts
    (``cohort["seen_parts"]``, default train and val): by case id, by subject, by image content (any image
    of the case with the digest of a cohort image) and by near content (a fingerprint correlating with a cohort
    image's of the same contrast at that contrast's threshold or more, ``thresholds``: `asa.data.fingerprint`'s
    ``NEAR_THRESHOLDS``; an image of no known contrast against every image at the strictest; only when the cohort
    records fingerprints of this asa's kind, ``FINGERPRINT``: a record of another compares digests only); by id and
    subject only when the cohort names them (not a record of :func:`export_cohort` without ``ids``). Returns
    ``{subset: {"n", "by_id", "by_subject", "by_content", "by_near_content", "near_checked", "ids_checked",
    "overlapping"}}``,
    the matches listed as ``{"case", "matches": [cohort case, ...]}`` (near ones with ``"scores": {cohort case:
    score}`` and ``"contrasts": {cohort case: the contrast scored}``, exact copies left to ``by_content``).
    ``digests`` and ``fingerprints``: the cases' signatures when already read (:func:`image_signatures`), so that
    several cohorts are compared with one reading."""
    seen = set(seen_parts or cohort.get("seen_parts") or SEEN_PARTS)
    members = {k: v for k, v in (cohort.get("cases") or {}).items() if v.get("part") in seen}
    by_subject: dict[str, list[str]] = {}
    by_digest: dict[str, list[str]] = {}
    for case_id, entry in members.items():
        by_subject.setdefault(str(entry.get("subject") or case_id), []).append(case_id)
        for value in (entry.get("images") or {}).values():
            by_digest.setdefault(value, []).append(case_id)
    near_checked = cohort.get("fingerprint") == FINGERPRINT
    ids_checked = cohort.get("ids") != IDS_WITHHELD  # opaque keys name no case or subject of the query's data
    owners, contrasts, table = _cohort_prints(members) if near_checked else ([], [], None)
    report: dict[str, Any] = {}
    for name, cases in subsets.items():
        if digests is None:
            read, prints = image_signatures(cases, workers=workers) if near_checked else \
                (image_digests(cases, workers=workers), {})
        else:
            read, prints = digests, (fingerprints or {})
        near_scores = _near({c.id: prints.get(c.id, {}) for c in cases}, owners, contrasts, table, thresholds)
        ids = [{"case": c.id, "matches": [c.id]} for c in cases if ids_checked and c.id in members]
        subjects = [{"case": c.id, "matches": sorted(by_subject[case_subject(c)])} for c in cases
                    if ids_checked and case_subject(c) in by_subject]
        content, near = [], []
        for c in cases:
            hits = sorted({m for d in read.get(c.id, {}).values() for m in by_digest.get(d, [])})
            if hits:
                content.append({"case": c.id, "matches": hits})
            close = {k: v for k, v in near_scores.get(c.id, {}).items() if k not in hits}
            if close:
                ranked = sorted(close, key=lambda k: (-close[k][0], k))
                near.append({"case": c.id, "matches": ranked, "scores": {k: close[k][0] for k in ranked},
                             "contrasts": {k: close[k][1] for k in ranked}})
        overlapping = sorted({m["case"] for m in ids + subjects + content + near})
        report[name] = {"n": len(cases), "by_id": ids, "by_subject": subjects, "by_content": content,
                        "by_near_content": near, "near_checked": near_checked and (bool(prints) or not cases),  # an empty subset: nothing unchecked
                        "ids_checked": ids_checked,
                        "overlapping": overlapping}
    return report


def near_duplicates(queries: Mapping[str, str | os.PathLike] | Sequence[str | os.PathLike],
                    references: Mapping[str, str | os.PathLike] | Sequence[str | os.PathLike] | Mapping[str, Any], *,
                    thresholds: Mapping[str, float | None] = NEAR_THRESHOLDS,
                    workers: int = 1) -> list[dict[str, Any]]:
    """The images of ``queries`` that are copies of images of ``references``: ``[{"query", "reference", "score",
    "kind"}]``, ``kind`` ``"exact"`` (same digest, score 1.0) or ``"near"`` (fingerprint correlation at the
    threshold or more, `asa.data.fingerprint`: plain files name no contrast, so every pair is compared at the
    strictest of ``thresholds``; a cohort record's images at their contrast's), best first per query. ``queries``
    and ``references``: image files, as {id: path} or a list of paths (the path is the id); ``references`` may
    instead be a cohort record
    (:func:`cohort_record` / :func:`export_cohort`: its seen cases, by their recorded digests and fingerprints;
    one without fingerprints is refused, since near copies could not be found)."""
    def as_cases(files) -> list[Case]:
        items = files.items() if isinstance(files, Mapping) else ((str(p), p) for p in files)
        return [Case(id=str(k), images={"image": Path(v)}) for k, v in items]

    q_digests, q_prints = image_signatures(as_cases(queries), workers=workers)
    if isinstance(references, Mapping) and isinstance(references.get("cases"), Mapping):
        if references.get("fingerprint") != FINGERPRINT:
            raise ValueError(f"references: a cohort record without fingerprints of {FINGERPRINT!r} (recorded by an "
                             "older asa; asa-cohort PRETRAIN_RUN records them again)")
        seen = set(references.get("seen_parts") or SEEN_PARTS)
        members = {k: v for k, v in references["cases"].items() if v.get("part") in seen}
    else:
        r_digests, r_prints = image_signatures(as_cases(references), workers=workers)
        members = {k: {"images": r_digests[k], "fingerprints": r_prints.get(k, {})} for k in r_digests}
    owners, contrasts, table = _cohort_prints(members)
    by_digest: dict[str, set[str]] = {}
    for case_id, entry in members.items():
        for value in (entry.get("images") or {}).values():
            by_digest.setdefault(value, set()).add(case_id)
    near_scores = _near(q_prints, owners, contrasts, table, thresholds)
    out = []
    for query, chans in q_digests.items():
        exact = {m for d in chans.values() for m in by_digest.get(d, ())}
        rows = [{"query": query, "reference": m, "score": 1.0, "kind": "exact"} for m in sorted(exact)]
        close = near_scores.get(query, {})
        rows += sorted(({"query": query, "reference": m, "score": v[0], "kind": "near"} for m, v in close.items()
                        if m not in exact), key=lambda r: (-r["score"], r["reference"]))
        out += rows
    return out


KINDS = ("by_near_content", "by_id", "by_subject", "by_content")  # later kinds name a case's matches first


def _shown(match: Mapping[str, Any]) -> list[str]:
    """A match's cohort cases, a near one's with its score."""
    scores = match.get("scores") or {}
    contrasts = match.get("contrasts") or {}
    return [f"{m} (near {contrasts.get(m, '')}, {scores[m]:.3f})".replace(" ,", ",") if m in scores else m
            for m in match["matches"]]


def _near_words(part: Mapping[str, Any]) -> str:
    if not part.get("near_checked"):
        return "by near content not checked (the cohort records no fingerprints of this asa's kind)"
    limits = ", ".join(f"{c} {t}" for c, t in NEAR_THRESHOLDS.items() if t is not None)
    return f"by near content {len(part['by_near_content'])} (fingerprint correlation, same contrast, >= {limits})"


def describe_overlap(report: Mapping[str, Any], *, cohort_size: int | None = None, show: int = 5) -> list[str]:
    """One line per subset: how many of its cases were in the pretraining cohort, by id, subject and content,
    and the first of them with the cohort cases they match."""
    lines = []
    for name, part in report.items():
        n_over = len(part["overlapping"])
        line = (f"{name}: {n_over} of {part['n']} case(s) in the pretraining cohort"
                + (f" ({cohort_size} cases)" if cohort_size is not None else "")
                + (f": by id {len(part['by_id'])}, by subject {len(part['by_subject'])}, "
                   if part.get("ids_checked", True) else ": by id and subject not checked (the cohort withholds "
                   "them), ")
                + f"by image content {len(part['by_content'])}, " + _near_words(part))
        if n_over:
            found = {m["case"]: _shown(m) for kind in KINDS for m in part.get(kind, [])}
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
    kinds = {kind: sum(len(report[s].get(kind, [])) for s in report) for kind in KINDS}
    near = (f"near content {kinds['by_near_content']}" if all(report[s].get("near_checked") for s in report)
            else "near content not checked")
    named = (f"by id {kinds['by_id']} / subject {kinds['by_subject']}"
             if all(report[s].get("ids_checked", True) for s in report) else "id and subject withheld")
    line = (f"{counts} were in the encoder's pretraining cohort ({named} / content {kinds['by_content']} / {near})")
    found = {m["case"]: _shown(m) for s in report for kind in KINDS for m in report[s].get(kind, [])}
    if found:
        shown = [f"{case} = {', '.join(found[case][:3])}" for case in sorted(found)[:show]]
        line += ": " + "; ".join(shown) + (" ..." if len(found) > show else "")
    return line
