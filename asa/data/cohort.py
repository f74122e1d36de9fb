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
(:func:`write_cohort_list`, one case per line); :func:`carried_cohort` reads it back as the cases are iterated
(:class:`CohortCases`: a 10^5-case list is never held whole), checks it against the summary's digest and says when it
is missing (:class:`CohortListMissing`).
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import json
import os
import shutil
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from asa.data.case import Case
from asa.data.fingerprint import (FINGERPRINT, GRID, NEAR_THRESHOLDS, decode_fingerprint, encode_fingerprint,
                                  image_fingerprint, unit_fingerprints)
from asa.data.layouts.pretrain import channel_of
from asa.data.store_writer import worker_pool
from asa.io.atomic import atomic_path
from asa.io.hub import COHORT_LIST

__all__ = ["COHORT_FORMAT", "COHORT_LEVELS", "COHORT_LIST", "CohortCases", "CohortListMissing", "DIGEST",
           "IDS_WITHHELD", "SEEN_PARTS", "carried_cohort", "case_subject", "check_carried_list", "cohort_digest",
           "cohort_overlap", "cohort_record", "cohort_summary", "describe_overlap", "export_cohort", "image_digests",
           "image_signatures", "keep_cohort_list", "near_duplicates", "overlap_line", "ras_voxels", "read_cohort_list",
           "volume_digest", "volume_signature", "write_cohort_list"]

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


def _summary(cases: int, digests: list[str]) -> dict[str, Any]:
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
    found = _summary(count, digests)
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


_CASES_OPEN = '"cases":{\n'  # the end of a list's first line: one case per line follows, then "}}"
_HEADER_LIMIT = 1 << 20  # characters of a list's first line looked at for that ending


def write_cohort_list(folder: str | os.PathLike, cohort: Mapping[str, Any], name: str = COHORT_LIST) -> Path:
    """Write the cohort record ``cohort`` into ``folder`` as gzipped JSON (``name``, atomically; gzip level 1 and no
    time stamp, so the same cohort gives the same bytes): about 1.5 KB per case with fingerprints, 0.1 KB without.
    One JSON document laid out one case per line (its other keys on the first line, ``"cases"`` last), so that
    :class:`CohortCases` reads it a case at a time; the cases are written as they are iterated (a list on disk is
    never held whole)."""
    path = Path(folder) / name
    header = json.dumps({k: v for k, v in cohort.items() if k != "cases"}, separators=(",", ":"))
    with atomic_path(path, suffix=".gz") as tmp, open(tmp, "wb") as raw, \
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=1, mtime=0) as out:
        out.write((header[:-1] + ("," if header != "{}" else "") + _CASES_OPEN).encode())
        lead = ""
        for key, entry in (cohort.get("cases") or {}).items():
            out.write(f"{lead}{json.dumps(str(key))}:{json.dumps(entry, separators=(',', ':'))}".encode())
            lead = ",\n"
        out.write(b"\n}}\n")
    return path


def _unreadable(path: Path, err: Exception) -> ValueError:
    return ValueError(f"{path}: not a readable cohort list (gzipped JSON, as asa writes it): {err}")


def _stream(path: Path) -> tuple[dict[str, Any], Iterator[tuple[str, dict[str, Any]]] | None]:
    """(the list's keys but ``cases``, its cases one at a time), or (the whole record, None) for a list that is not
    laid out one case per line (written by an older asa: read whole)."""
    try:
        handle = gzip.open(path, "rt", encoding="utf-8")
        first = handle.readline(_HEADER_LIMIT)  # an older list is one line: not read twice whole
        if not first.endswith(_CASES_OPEN):
            handle.close()
            record = json.loads(gzip.decompress(path.read_bytes()))
            if not isinstance(record, dict) or not isinstance(record.get("cases"), dict):
                raise ValueError(f"{path}: not a cohort list (expected {{'format': {COHORT_FORMAT!r}, "
                                 "'cases': {...}})")
            return record, None
        text = first[:-len(_CASES_OPEN)]
        header = json.loads(text[:-1] + "}" if text.endswith(",") else text + "}")
    except (OSError, EOFError, zlib.error, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise _unreadable(path, err) from err

    def cases() -> Iterator[tuple[str, dict[str, Any]]]:
        with handle:
            try:
                for line in handle:
                    line = line.rstrip("\n")
                    if line == "}}":
                        return
                    if not line:  # the list of no case
                        continue
                    key, entry = next(iter(json.loads("{" + line.rstrip(",") + "}").items()))
                    yield key, entry
            except (OSError, EOFError, zlib.error, UnicodeDecodeError, json.JSONDecodeError, StopIteration) as err:
                raise _unreadable(path, err) from err
        raise _unreadable(path, EOFError("the list ends before its last case"))

    return header, cases()


_FILE_DIGESTS: dict[tuple, dict[frozenset[str], dict[str, Any]]] = {}  # a list file as it is -> its digests


def _identity(path: Path) -> tuple:
    """A file as it is now (path, inode, size, modification time): its digests hold while this does."""
    try:
        stat = path.stat()
    except OSError:
        return (str(path),)
    return str(path.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns


class CohortCases(Mapping):
    """The ``cases`` of a cohort list on disk (:func:`write_cohort_list`), read from the file each time they are
    iterated, a case at a time: a list of 10^5 cases (about 150 MB gzipped, 570 MB of JSON) is never held whole.
    Looking one case up reads the list up to it; :func:`cohort_overlap` and :func:`cohort_digest` read it once.
    ``then``: the same cases passed through a generator of (id, entry) pairs (:func:`export_cohort`'s)."""

    def __init__(self, path: str | os.PathLike,
                 step: Callable[[Iterable[tuple[str, Any]]], Iterator[tuple[str, Any]]] | None = None) -> None:
        self.path, self._step, self._len = Path(path), step, None
        self.identity = _identity(self.path)
        # cohort_digest's, per set of seen parts: of the file as it is now, for every reader in this process (a
        # fine-tuning run's check and its copy of the list read it once), or of this view alone
        self.digests: dict[frozenset[str], dict[str, Any]] = \
            _FILE_DIGESTS.setdefault(self.identity, {}) if step is None else {}

    def plain(self) -> bool:
        """Whether these are the file's own cases (no ``then``) laid out one case per line, as asa writes lists."""
        if self._step is not None:
            return False
        try:
            with gzip.open(self.path, "rt", encoding="utf-8") as handle:
                return handle.readline(_HEADER_LIMIT).endswith(_CASES_OPEN)
        except (OSError, EOFError, zlib.error, UnicodeDecodeError):
            return False

    def then(self, step: Callable[[Iterable[tuple[str, Any]]], Iterator[tuple[str, Any]]]) -> CohortCases:
        first = self._step
        return CohortCases(self.path, step if first is None else (lambda items: step(first(items))))

    def items(self) -> Iterable[tuple[str, dict[str, Any]]]:  # type: ignore[override]
        return _Pass(self)

    def values(self) -> Iterable[dict[str, Any]]:  # type: ignore[override]
        return (entry for _, entry in self.items())

    def _pairs(self) -> Iterator[tuple[str, dict[str, Any]]]:
        header, cases = _stream(self.path)
        pairs = cases if cases is not None else iter(header["cases"].items())
        return self._step(pairs) if self._step is not None else pairs

    def __iter__(self) -> Iterator[str]:
        return (key for key, _ in self._pairs())

    def __bool__(self) -> bool:  # not a read of the list (``cases or {}``)
        return True

    def __len__(self) -> int:
        if self._len is None:
            self._len = sum(1 for _ in self._pairs())
        return self._len

    def __getitem__(self, key: str) -> dict[str, Any]:
        for found, entry in self._pairs():
            if found == key:
                return entry
        raise KeyError(key)


class _Pass:
    """``CohortCases.items()``: iterable more than once, each time one read of the list."""

    def __init__(self, cases: CohortCases) -> None:
        self._cases = cases

    def __iter__(self) -> Iterator[tuple[str, dict[str, Any]]]:
        return self._cases._pairs()


def read_cohort_list(path: str | os.PathLike, *, lazy: bool = False) -> dict[str, Any]:
    """The cohort record of a list written by :func:`write_cohort_list`; refused (ValueError naming the file) when
    it is not gzipped JSON of a cohort record. ``lazy``: its ``cases`` a :class:`CohortCases`, read as they are
    iterated (a list written by an older asa, not one case per line, is read whole all the same)."""
    path = Path(path)
    header, cases = _stream(path)
    if cases is None:
        return header
    if lazy:
        cases.close()
        return {**header, "cases": CohortCases(path)}
    return {**header, "cases": dict(cases)}


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
            if _identity(source.path) == source.identity:  # the file that was read: its digest, if taken
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
    return path, _summary(count, digests)


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
        cohort["cases"].digests[frozenset(seen)] = _summary(count, listed)
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
