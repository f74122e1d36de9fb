"""Whether evaluation cases were in a pretraining cohort (:func:`cohort_overlap`): by case id, by subject, by image
content (the digest, `asa.data.digests`) and by near content: a case whose fingerprint correlates with a cohort image's
of the same contrast at that contrast's threshold (`asa.data.fingerprint`'s ``NEAR_THRESHOLDS``) or more, reported with
its score. :func:`near_duplicates` compares two lists of image files (or files with a recorded cohort);
:func:`describe_overlap` and :func:`overlap_line` say the outcome."""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from asa.data.case import Case
from asa.data.cohort import IDS_WITHHELD, SEEN_PARTS, case_subject, digest_summary
from asa.data.cohort_list import CohortCases
from asa.data.digests import image_digests, image_signatures
from asa.data.fingerprint import FINGERPRINT, GRID, NEAR_THRESHOLDS, decode_fingerprint, unit_fingerprints
from asa.data.layouts.pretrain import channel_of

__all__ = ["KINDS", "cohort_overlap", "describe_overlap", "near_duplicates", "overlap_line"]


def _cohort_prints(members: Iterable[tuple[str, Mapping[str, Any]]], chunk: int | None = None
                   ) -> Iterator[tuple[list[str], list[str | None], np.ndarray]]:
    """(cohort case of each row, its contrast, [n, GRID^3] int8) of the recorded fingerprints of ``members`` ((case
    id, entry) pairs), ``chunk`` rows at a time (None: all in one): a cohort of 10^5 images is scored a chunk at a time,
    never held whole. The contrast is what the image's channel name means (`asa.data.layouts.pretrain.channel_of`:
    t1, t1ce, t2, flair), None when it names none of them."""
    owners: list[str] = []
    contrasts: list[str | None] = []
    rows = bytearray()
    size = GRID**3
    for case_id, entry in members:
        for channel, text in (entry.get("fingerprints") or {}).items():
            if text:
                if not isinstance(text, str) or not text.startswith("b64:"):
                    decode_fingerprint(text)  # refused, naming what was expected
                try:
                    raw = base64.b64decode(text[4:])
                except binascii.Error:
                    raw = b""
                if len(raw) != size:
                    decode_fingerprint(text)
                owners.append(case_id)
                contrasts.append(channel_of(channel))
                rows += raw
                if chunk is not None and len(owners) == chunk:
                    yield owners, contrasts, np.frombuffer(bytes(rows), dtype=np.int8).reshape(-1, size)
                    owners, contrasts, rows = [], [], bytearray()
    if owners or chunk is None:
        yield owners, contrasts, np.frombuffer(bytes(rows), dtype=np.int8).reshape(-1, size)


NEAR_BLOCK = 1024  # query fingerprints scored per matrix product: [1024, R] float32 scores, 40 MB at R = 10^4
COHORT_BLOCK = 8192  # cohort fingerprints read and normalised at a time: [8192, 4096] float32, 134 MB


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


def _near(prints: Mapping[str, Mapping[str, str]],
          chunks: Iterable[tuple[list[str], list[str | None], np.ndarray]],
          thresholds: Mapping[str, float | None]) -> dict[str, dict[str, tuple[float, str]]]:
    """Query case -> {cohort case: (its best score, the contrast it was scored in)}, those at or above the pair's
    threshold (:func:`_pair_thresholds`: an image is compared with the cohort's images of its own contrast, at that
    contrast's threshold) for every query's fingerprints ``prints`` (case -> channel -> text) against the cohort's,
    given as ``chunks`` of (owners, contrasts, int8 table) (:func:`_cohort_prints`): each chunk normalised once, the
    queries scored ``NEAR_BLOCK`` at a time in one matrix product each, and only the pairs at or above their threshold
    looked at one by one (all pairs of 10^4 x 10^4 in seconds, BENCHMARKS.md)."""
    whose, kinds, rows = [], [], []
    for case, chans in prints.items():
        for channel, text in chans.items():
            if text:
                whose.append(case)
                kinds.append(channel_of(channel))
                rows.append(decode_fingerprint(text))
    best: dict[str, dict[str, tuple[float, str]]] = {}
    if not rows:
        return best
    queries = [(start, unit_fingerprints(np.stack(rows[start:start + NEAR_BLOCK])))
               for start in range(0, len(rows), NEAR_BLOCK)]
    for owners, contrasts, table in chunks:
        if not owners:
            continue
        reference = table.astype(np.float32)
        # the chunk's norms, not its unit vectors: one pass over it, the same scores as unit_fingerprints'
        norms = np.maximum(np.sqrt(np.einsum("ij,ij->i", reference, reference)), 1e-6)
        for start, query in queries:
            scores = (query @ reference.T) / norms
            kind = kinds[start:start + NEAR_BLOCK]
            for q, r in zip(*np.nonzero(scores >= _pair_thresholds(kind, contrasts, thresholds))):
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
    """For each subset (``{"val": cases, "test": cases}``), its cases that were in the cohort's seen parts
    (``seen_parts``; default the cohort's, else train and val): by case id and by subject (when the cohort names them:
    not an `export_cohort` record without ``ids``), by image content (an image with a cohort image's digest) and by
    near content (a fingerprint correlating with a cohort image's of the same contrast at its ``thresholds`` or more,
    one of unknown contrast at the strictest; only for a cohort recording this asa's ``FINGERPRINT``). Returns
    ``{subset: {"n", "by_id", "by_subject", "by_content", "by_near_content", "near_checked", "ids_checked",
    "overlapping"}}``, each match ``{"case", "matches": [cohort case, ...]}`` (a near one with ``"scores"`` and
    ``"contrasts"`` by cohort case; exact copies left to ``by_content``). ``digests``, ``fingerprints``: the cases'
    signatures when already read (`image_signatures`), so that several cohorts are compared with one reading."""
    seen = set(seen_parts or cohort.get("seen_parts") or SEEN_PARTS)
    near_checked = cohort.get("fingerprint") == FINGERPRINT
    ids_checked = cohort.get("ids") != IDS_WITHHELD  # opaque keys name no case or subject of the query's data
    signatures = {}  # every subset's images read first, so that the cohort is read once, whatever its size
    for name, cases in subsets.items():
        if digests is None:
            signatures[name] = image_signatures(cases, workers=workers) if near_checked else \
                (image_digests(cases, workers=workers), {})
        else:
            signatures[name] = digests, (fingerprints or {})
    wanted_ids = {c.id for cases in subsets.values() for c in cases} if ids_checked else set()
    wanted_subjects = {case_subject(c) for cases in subsets.values() for c in cases} if ids_checked else set()
    wanted_digests = {d for name, cases in subsets.items() for c in cases
                      for d in signatures[name][0].get(c.id, {}).values()}
    in_cohort: set[str] = set()
    by_subject: dict[str, list[str]] = {}  # of the queries' subjects and digests only: a cohort's size costs no memory
    by_digest: dict[str, list[str]] = {}

    count, listed = 0, []  # the cohort's digest, taken on the way (a list on disk is not read again for it)

    def noted(pairs: Iterable[tuple[str, Mapping[str, Any]]]) -> Iterator[tuple[str, Mapping[str, Any]]]:
        nonlocal count
        for case_id, entry in pairs:
            if entry.get("part") not in seen:
                continue
            count += 1
            listed.extend((entry.get("images") or {}).values())
            if case_id in wanted_ids:
                in_cohort.add(case_id)
            subject = str(entry.get("subject") or case_id)
            if subject in wanted_subjects:
                by_subject.setdefault(subject, []).append(case_id)
            for value in (entry.get("images") or {}).values():
                if value in wanted_digests:
                    by_digest.setdefault(value, []).append(case_id)
            yield case_id, entry

    members = noted((cohort.get("cases") or {}).items())
    queries = {c.id: signatures[name][1].get(c.id, {}) for name, cases in subsets.items() for c in cases}
    near_scores = (_near(queries, _cohort_prints(members, COHORT_BLOCK), thresholds)
                   if near_checked and any(any(p.values()) for p in queries.values()) else {})
    for _ in members:  # the cohort read to its end (its fingerprints were not needed)
        pass
    if isinstance(cohort.get("cases"), CohortCases):
        cohort["cases"].digests[frozenset(seen)] = digest_summary(count, listed)
    report: dict[str, Any] = {}
    for name, cases in subsets.items():
        read, prints = signatures[name]
        ids = [{"case": c.id, "matches": [c.id]} for c in cases if c.id in in_cohort]
        subjects = [{"case": c.id, "matches": sorted(by_subject[case_subject(c)])} for c in cases
                    if case_subject(c) in by_subject]
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
    "kind"}]``, best first per query, ``kind`` ``"exact"`` (same digest, score 1.0) or ``"near"`` (fingerprint
    correlation at the threshold or more: plain files name no contrast, so at the strictest of ``thresholds``).
    Each is image files, as {id: path} or a list of paths (the path is the id); ``references`` may be a cohort record
    instead (`cohort_record` / `export_cohort`: its seen cases; one without fingerprints is refused)."""
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
    by_digest: dict[str, set[str]] = {}
    for case_id, entry in members.items():
        for value in (entry.get("images") or {}).values():
            by_digest.setdefault(value, set()).add(case_id)
    near_scores = _near(q_prints, _cohort_prints(members.items(), COHORT_BLOCK), thresholds)
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
