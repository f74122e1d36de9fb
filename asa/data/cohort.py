"""The pretraining cohort's record (:func:`cohort_record`: each case's part, subject, image digests and fingerprints,
`asa.data.digests`) and what a weight file carries of it: its summary (:func:`cohort_summary`), never the list, whose
5.7 KB a case would make a 650 MB safetensors header of OpenMind's 114k volumes (refused above 100 MB). The list lives
beside the file (`asa.data.cohort_list`); :func:`carried_cohort` reads it back, checks it against the summary's digest
and says when it is missing (:class:`CohortListMissing`)."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from asa.data.case import Case
from asa.data.cohort_list import COHORT_FORMAT, CohortCases, read_cohort_list, write_cohort_list
from asa.data.digests import DIGEST, image_signatures
from asa.data.fingerprint import FINGERPRINT
from asa.io.atomic import atomic_path
from asa.io.hub import COHORT_LIST

__all__ = ["COHORT_LEVELS", "CohortListMissing", "IDS_WITHHELD", "SEEN_PARTS", "carried_cohort", "case_subject",
           "check_carried_list", "cohort_digest", "cohort_record", "cohort_summary", "digest_summary", "export_cohort",
           "keep_cohort_list"]

SEEN_PARTS = ("train", "val")  # the parts of a pretraining split whose images the encoder was trained or selected on
# what an exported model folder carries of its cohort (asa-export --cohort; docs/weights-elsewhere.md): every case's
# id, subject, digests and fingerprints; the digests and fingerprints under opaque keys; nothing but the summary digest
COHORT_LEVELS = ("full", "digests", "none")
IDS_WITHHELD = "withheld"  # a cohort record's "ids" when its keys are opaque and it names no subject


def case_subject(case: Case) -> str:
    """The subject a case belongs to: the layout's subject (BIDS, CAPS; ``sub-`` dropped) or the case id."""
    subject = case.meta.get("subject")
    return str(subject).removeprefix("sub-") if subject else case.id


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


def digest_summary(cases: int, digests: list[str]) -> dict[str, Any]:
    """:func:`cohort_digest` of ``cases`` seen cases whose image digests are ``digests`` (sorted here)."""
    digests.sort()
    return {"cases": cases, "images": len(digests),
            "digest": "sha256:" + hashlib.sha256("\n".join(digests).encode()).hexdigest(), "of": DIGEST}


def cohort_digest(cohort: Mapping[str, Any]) -> dict[str, Any]:
    """One digest of the whole seen cohort (the sha256 of its image digests, sorted, one per line) with its
    case and image counts: what a model card states so that a cohort can be compared without its list."""
    seen = set(cohort.get("seen_parts") or SEEN_PARTS)
    cases = cohort.get("cases") or {}
    if isinstance(cases, CohortCases) and frozenset(seen) in cases.digests:
        return dict(cases.digests[frozenset(seen)])
    count, digests = 0, []
    for entry in cases.values():  # one case at a time: a list on disk is not held
        if entry.get("part") in seen:
            count += 1
            digests.extend((entry.get("images") or {}).values())
    found = digest_summary(count, digests)
    if isinstance(cases, CohortCases):  # a list on disk is read once for its digest
        cases.digests[frozenset(seen)] = dict(found)
    return found


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

    def exported(items: Iterable[tuple[str, Mapping[str, Any]]]) -> Iterator[tuple[str, dict[str, Any]]]:
        members = ((str(k), v) for k, v in items if v.get("part") in seen)
        for n, (k, v) in enumerate(members, start=1):
            yield (k if ids else f"case-{n:04d}"), {
                "part": str(v.get("part")), **({"subject": str(v.get("subject") or k)} if ids else {}),
                "images": {str(ch): str(d) for ch, d in (v.get("images") or {}).items()},
                **({"fingerprints": {str(ch): str(f) for ch, f in (v.get("fingerprints") or {}).items()}}
                   if prints else {})}

    source = cohort.get("cases") or {}
    if isinstance(source, CohortCases):  # a list on disk stays there: its export is read as it is iterated
        cases = source.then(exported)
        cases.digests.update(source.digests)  # the seen cases and their images are the list's: so is the digest
    else:
        cases = dict(exported(source.items()))
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


def keep_cohort_list(cohort: Mapping[str, Any], folder: str | os.PathLike, name: str = COHORT_LIST
                     ) -> tuple[Path, dict[str, Any]]:
    """Write what an export carries of ``cohort`` (:func:`export_cohort`, ids kept) into ``folder`` as ``name``
    (:func:`write_cohort_list`) and return (the file, its :func:`cohort_digest`), the digest taken as the cases
    are written: one read of a list on disk. A list asa wrote (one case per line: its cases are an export's
    already) is copied byte for byte and the copy read once for its digest."""
    source = cohort.get("cases")
    if isinstance(source, CohortCases) and source.plain():  # a list asa wrote one case per line: copied as it is
        path = Path(folder) / name
        seen = {"seen_parts": cohort.get("seen_parts")}
        with atomic_path(path, suffix=".gz") as tmp:
            shutil.copyfile(source.path, tmp)
            if source.unchanged():  # the file that was read: its digest, if taken
                found = cohort_digest({**seen, "cases": source})
            else:
                found = cohort_digest({**seen, "cases": CohortCases(tmp)})
        return path, found
    kept = export_cohort(cohort)
    digests: list[str] = []
    count = 0

    def noted(items: Iterable[tuple[str, Any]]) -> Iterator[tuple[str, Any]]:
        nonlocal count
        for key, entry in items:
            count += 1
            digests.extend((entry.get("images") or {}).values())
            yield key, entry

    cases = kept["cases"]
    kept["cases"] = cases.then(noted) if isinstance(cases, CohortCases) else dict(noted(cases.items()))
    path = write_cohort_list(folder, kept, name)
    return path, digest_summary(count, digests)


def carried_cohort(state: Mapping[str, Any], where: str, beside: str | os.PathLike | None = None, *,
                   verify: bool = True) -> dict[str, Any] | None:
    """The cohort an encoder export or checkpoint carries, None when it carries none: its list, from the file its
    summary names (:func:`cohort_summary`) in the folder ``beside`` (the weight file's own, or the model folder),
    its cases read as they are iterated (:class:`CohortCases`) and, with ``verify``, checked against the summary's
    digest (one read of the list); or the list itself, as files written before the summary carry it
    (:func:`export_cohort`). Raises :class:`CohortListMissing` (naming ``where`` and the list's path) when the
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
    listed = read_cohort_list(path, lazy=True)
    if verify:
        check_carried_list(state, listed, where)
    return listed


def check_carried_list(state: Mapping[str, Any], listed: Mapping[str, Any], where: str) -> None:
    """Refuse (ValueError naming the list and ``where``) a list read beside a weight file (:func:`carried_cohort`
    with ``verify=False``) whose digest is not the one the file's summary states; no read of the list when its
    digest was taken already (:func:`cohort_overlap` takes it on its way)."""
    cohort = state.get("cohort") or {}
    if not isinstance(cohort.get("summary"), Mapping):
        return  # the list itself, carried in the file
    summary, found = cohort["summary"], cohort_digest(listed)
    if found["digest"] != summary.get("digest"):
        cases = listed.get("cases")
        name = cases.path if isinstance(cases, CohortCases) else cohort.get("list") or COHORT_LIST
        raise ValueError(f"{name}: the list of another cohort ({found['cases']} cases, digest {found['digest']}); "
                         f"{where} states {summary.get('cases')} cases, digest {summary.get('digest')}")
