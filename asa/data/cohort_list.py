"""A cohort list on disk (``cohort.json.gz``, beside the weights that carry its summary): one JSON document laid out
one case per line, written as its cases are iterated (:func:`write_cohort_list`) and read back a case at a time
(:class:`CohortCases`), so that a list of 10^5 cases is never held whole."""

from __future__ import annotations

import gzip
import json
import os
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from asa.io.atomic import atomic_path
from asa.io.hub import COHORT_LIST

__all__ = ["COHORT_FORMAT", "CohortCases", "read_cohort_list", "write_cohort_list"]

COHORT_FORMAT = "asa.cohort"  # a cohort record's format, in the record and in its list


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
    Looking one case up reads the list up to it; `asa.data.overlap.cohort_overlap` and `asa.data.cohort.cohort_digest`
    read it once. ``then``: the same cases passed through a generator of (id, entry) pairs (`export_cohort`'s)."""

    def __init__(self, path: str | os.PathLike,
                 step: Callable[[Iterable[tuple[str, Any]]], Iterator[tuple[str, Any]]] | None = None) -> None:
        self.path, self._step, self._len = Path(path), step, None
        self.identity = _identity(self.path)
        # cohort_digest's, per set of seen parts: of the file as it is now, for every reader in this process (a
        # fine-tuning run's check and its copy of the list read it once), or of this view alone
        self.digests: dict[frozenset[str], dict[str, Any]] = \
            _FILE_DIGESTS.setdefault(self.identity, {}) if step is None else {}

    def unchanged(self) -> bool:
        """Whether the file is still the one these cases were opened on (its digests hold)."""
        return _identity(self.path) == self.identity

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
