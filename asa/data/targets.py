"""Case targets for classification and regression: read a table, parse, report what was skipped.

Sources (`read_targets`):

- **BIDS** ``participants.tsv`` (the file or the dataset folder holding it). A row is keyed
  ``sub-X``, or ``sub-X_ses-Y`` when the table has a ``session_id`` column (one row per session,
  as ClinicaDL's tables and the CAPS demo have). Next to it, every ``sub-X/sub-X_sessions.tsv``
  holding the column adds session-level values, keyed ``sub-X_ses-Y`` (BIDS keeps age and
  diagnosis per visit there, as Clinica's ADNI conversion does). ``sub-``/``ses-`` prefixes are
  added where a table leaves them out.
- **CSV or TSV** with an id column (``case_id``, else ``id``; or ``id_column``) and the target
  column (``target`` by default). A table with ``participant_id`` and no such id column is keyed
  as a BIDS table (above, without the ``sessions.tsv`` files).
- **dataset.json**: a top-level object ``{column: {case_id: value}}``, or ``training`` entries
  holding ``column`` beside ``image`` (key: the image's file name without ``.nii[.gz]``, as the
  MSD layout names its cases) or beside ``case_id``/``id``.

Values: empty cells and ``n/a``, ``na``, ``nan``, ``none``, ``null`` (any case) are missing.
Missing, non-numeric (continuous), non-finite and unlisted-class (``classes`` given) values are
skipped and reported per key with the file and line; nothing is ever imputed.

Kinds: ``continuous`` (float values), ``binary`` (exactly two classes), ``multiclass`` (two or
more classes; values are class indices into ``names``). Class order: ``classes`` as given, else
sorted (numerically when every class is a number, so ``0 < 1 < 2``; else as strings). For
``binary`` the positive class is ``names[1]``: pass ``classes=("CN", "AD")`` to make AD positive
(sorting would give ``("AD", "CN")``). Class labels that are whole numbers are written without a
decimal part (``1.0`` and ``1`` are class ``"1"``). ``kind="auto"`` decides: every value a number
-> ``continuous``, except exactly the numbers {0, 1} -> ``binary``; no value a number ->
``binary`` (two classes) or ``multiclass``; a mix is an error, since a stray word in an age
column would otherwise turn regression into a many-class problem. Integer-coded classes (0/1/2)
need ``kind="multiclass"``.

`Targets.for_cases` matches dataset cases to keys: the case id itself, then, for cases with a
``subject`` (BIDS, CAPS), ``sub-X_ses-Y`` and ``sub-X``. The most specific key present decides,
even when its value is missing: a subject-level age is never used for a session whose own age is
missing.
"""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from asa.data.case import Case
from asa.io import strip_nifti

__all__ = ["Targets", "read_targets", "TARGET_KINDS", "MISSING_VALUES"]

TARGET_KINDS = ("binary", "multiclass", "continuous")
MISSING_VALUES = frozenset({"", "n/a", "na", "nan", "none", "null"})
_ID_COLUMNS = ("case_id", "id")


@dataclass(frozen=True)
class Targets:
    """Parsed targets: ``values`` key -> class index (int, into ``names``) or value (float);
    ``skipped`` key -> why it has none; ``names`` the class names in index order (``()`` when
    continuous); ``source`` and ``column`` where they came from."""

    kind: str
    names: tuple[str, ...]
    values: dict[str, int | float]
    skipped: dict[str, str] = field(default_factory=dict)
    source: str = ""
    column: str = ""

    @property
    def num_classes(self) -> int:
        """Number of classes (0 for continuous targets)."""
        return len(self.names)

    def counts(self) -> dict[str, int]:
        """Cases per class name, in class order (empty for continuous targets)."""
        n = Counter(self.values.values())
        return {name: n.get(i, 0) for i, name in enumerate(self.names)}

    def for_cases(self, cases: Iterable[Case]) -> Targets:
        """The targets of ``cases``, keyed by case id; a case without a key is skipped with a reason."""
        values: dict[str, int | float] = {}
        skipped: dict[str, str] = {}
        for case in cases:
            keys = _case_keys(case)
            key = next((k for k in keys if k in self.values or k in self.skipped), None)
            if key is None:
                skipped[case.id] = f"no row for {' or '.join(dict.fromkeys(keys))} in {self.source}"
            elif key in self.values:
                values[case.id] = self.values[key]
            else:
                skipped[case.id] = self.skipped[key]
        return replace(self, values=values, skipped=skipped)

    def summary(self) -> str:
        """A few lines for a log: how many targets of what kind, per class, and every skipped key with its reason."""
        head = f"{len(self.values)} {self.kind} target(s) from {self.source} column {self.column!r}"
        if self.names:
            head += " (" + ", ".join(f"{k}: {n}" for k, n in self.counts().items()) + ")"
        lines = [head]
        if self.skipped:
            lines.append(f"{len(self.skipped)} skipped (no target, nothing imputed):")
            lines += [f"  - {k}: {why}" for k, why in self.skipped.items()]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """JSON-friendly record of what was read (kind, class names and counts, skipped keys and reasons)."""
        return {"kind": self.kind, "names": list(self.names), "source": self.source, "column": self.column,
                "n": len(self.values), "counts": self.counts(), "skipped": dict(self.skipped)}


def _case_keys(case: Case) -> list[str]:
    keys = [case.id]
    subject = case.meta.get("subject")
    if subject:
        sub = _prefixed("sub-", str(subject))
        session = case.meta.get("session")
        if session:
            keys.append(f"{sub}_{_prefixed('ses-', str(session))}")
        keys.append(sub)
    return keys


def _prefixed(prefix: str, value: str) -> str:
    value = value.strip()
    return value if value.startswith(prefix) else prefix + value


# ---------------------------------------------------------------------------------------- reading
# Each reader returns key -> (raw text or None, where): "where" names the file and line for messages.
Raw = dict[str, tuple[str | None, str]]


def _read_table(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str | None]]]]:
    """Header and (line number, row) pairs of a CSV (``,``) or TSV (tab, also ``.txt``) file."""
    delimiter = "," if path.suffix.lower() == ".csv" else "\t"
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh, delimiter=delimiter)
            header = [h.strip() for h in reader.fieldnames or []]
            reader.fieldnames = header
            rows = [(reader.line_num, row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise ValueError(f"{path}: cannot read the table ({err})") from err
    if not header:
        raise ValueError(f"{path}: empty table, expected a header line")
    return header, rows


def _put(raw: Raw, key: str, value: str | None, where: str, path: Path) -> None:
    if key in raw:
        if raw[key][0] == value:
            return
        raise ValueError(f"{path}: {key} is given twice with different values ({raw[key][1]}: {raw[key][0]!r}, "
                         f"{where}: {value!r})")
    raw[key] = (value, where)


def _participants(path: Path, column: str, header: list[str], rows, sessions: bool) -> Raw:
    """BIDS keying: ``participant_id`` [+ ``session_id``] of a participants-style table, plus the
    subjects' ``sessions.tsv`` next to ``path`` when ``sessions``."""
    raw: Raw = {}
    by_session = "session_id" in header
    if column in header:
        seen: dict[str, int] = {}
        for line, row in rows:
            sub = _prefixed("sub-", row.get("participant_id") or "")
            if sub == "sub-":
                raise ValueError(f"{path} line {line}: empty participant_id")
            key = f"{sub}_{_prefixed('ses-', row.get('session_id') or '')}" if by_session else sub
            if key in seen:
                raise ValueError(f"{path}: {key} appears on lines {seen[key]} and {line}; one row per "
                                 f"{'session' if by_session else 'participant'} expected")
            seen[key] = line
            raw[key] = (row.get(column), f"{path.name} line {line}")
    found_in_sessions = False
    if sessions:
        for table in sorted(path.parent.glob("sub-*/sub-*_sessions.tsv")):
            s_header, s_rows = _read_table(table)
            if column not in s_header:
                continue
            if "session_id" not in s_header:
                raise ValueError(f"{table}: a sessions.tsv needs a session_id column, found {s_header}")
            found_in_sessions = True
            sub = table.name[: -len("_sessions.tsv")]
            for line, row in s_rows:
                key = f"{sub}_{_prefixed('ses-', row.get('session_id') or '')}"
                _put(raw, key, row.get(column), f"{table.parent.name}/{table.name} line {line}", table)
    if column not in header and not found_in_sessions:
        where = " nor in any sub-*/sub-*_sessions.tsv next to it" if sessions else ""
        raise ValueError(f"{path}: no column {column!r}{where}; the table's columns are {header}")
    return raw


def _table_targets(path: Path, column: str, id_column: str | None) -> Raw:
    header, rows = _read_table(path)
    if id_column is None and not any(c in header for c in _ID_COLUMNS) and "participant_id" in header:
        return _participants(path, column, header, rows, sessions=path.name == "participants.tsv")
    ids = id_column or next((c for c in _ID_COLUMNS if c in header), None)
    if ids is None or ids not in header:
        wanted = repr(id_column) if id_column else "'case_id' or 'id' (or 'participant_id')"
        raise ValueError(f"{path}: no id column {wanted}; the table's columns are {header}")
    if column not in header:
        raise ValueError(f"{path}: no column {column!r}; the table's columns are {header}")
    raw: Raw = {}
    seen: dict[str, int] = {}
    for line, row in rows:
        key = (row.get(ids) or "").strip()
        if not key:
            raise ValueError(f"{path} line {line}: empty {ids}")
        if key in seen:
            raise ValueError(f"{path}: case {key!r} appears on lines {seen[key]} and {line} (column {ids!r})")
        seen[key] = line
        raw[key] = (row.get(column), f"{path.name} line {line}")
    return raw


def _json_text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, float, str)):
        return str(value)
    return json.dumps(value)  # a list or object: reported as not a valid target below


def _json_targets(path: Path, column: str) -> Raw:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read JSON ({err})") from err
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: expected a JSON object at the top level")
    raw: Raw = {}
    if isinstance(meta.get(column), dict):
        for key, value in meta[column].items():
            raw[str(key)] = (_json_text(value), f"{path.name} {column}[{key!r}]")
        return raw
    training = meta.get("training")
    if isinstance(training, list) and any(isinstance(e, dict) and column in e for e in training):
        for i, entry in enumerate(training):
            if not isinstance(entry, dict):
                raise ValueError(f"{path}: training[{i}] is not an object")
            key = entry.get("case_id") or entry.get("id")
            if key is None and isinstance(entry.get("image"), str):
                key = strip_nifti(Path(entry["image"]).name)
            if key is None:
                raise ValueError(f"{path}: training[{i}] has no case_id, id or image to name its case")
            where = f"{path.name} training[{i}]"
            _put(raw, str(key), _json_text(entry.get(column)), where, path)
        return raw
    raise ValueError(f"{path}: no target {column!r}: expected a top-level object {{{column!r}: {{case_id: value}}}} "
                     f"or 'training' entries holding {column!r}")


def _resolve(source: Path) -> Path:
    if source.is_dir():
        for name in ("participants.tsv", "dataset.json"):
            if (source / name).is_file():
                return source / name
        raise FileNotFoundError(f"{source}: a folder without participants.tsv or dataset.json; give the targets "
                                "file itself (a .csv/.tsv with case_id and the target column, or a dataset.json)")
    if not source.is_file():
        raise FileNotFoundError(f"targets file {source} does not exist")
    return source


# ---------------------------------------------------------------------------------------- parsing
def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _class_name(text: str) -> str:
    """``"1.0"`` and ``"1"`` are one class ``"1"``; other text is kept as written (stripped)."""
    x = _number(text)
    return str(int(x)) if x is not None and math.isfinite(x) and x == int(x) else text


def _parse(raw: Raw, kind: str, classes: Sequence[object] | None, source: str, column: str) -> Targets:
    where_col = f"{source}, column {column!r}"
    present: dict[str, tuple[str, str]] = {}
    skipped: dict[str, str] = {}
    for key, (value, where) in sorted(raw.items()):
        text = (value or "").strip()
        if text.lower() in MISSING_VALUES:
            skipped[key] = f"{where}: missing value" + (f" {text!r}" if text else " (empty)")
        else:
            present[key] = (text, where)
    if not present:
        raise ValueError(f"{where_col}: no target values (all {len(raw)} missing)")
    numeric = {k for k, (t, _) in present.items() if _number(t) is not None}
    if kind == "auto":
        if classes is not None:
            kind = "binary" if len(classes) == 2 else "multiclass"
        elif len(numeric) == len(present):
            kind = "binary" if {_class_name(t) for t, _ in present.values()} == {"0", "1"} else "continuous"
        elif not numeric:
            kind = "binary" if len({t for t, _ in present.values()}) == 2 else "multiclass"
        else:
            k_word = next(k for k in present if k not in numeric)
            raise ValueError(f"{where_col}: {len(numeric)} value(s) are numbers and {len(present) - len(numeric)} "
                             f"are not (e.g. {present[k_word][1]}: {present[k_word][0]!r}); set kind='continuous' "
                             "(non-numbers are skipped) or a classification kind")
    if kind == "continuous":
        if classes is not None:
            raise ValueError(f"{where_col}: classes={list(classes)} given for a continuous target")
        values: dict[str, int | float] = {}
        for key, (text, where) in present.items():
            x = _number(text)
            if x is None:
                skipped[key] = f"{where}: not a number: {text!r}"
            elif not math.isfinite(x):
                skipped[key] = f"{where}: not finite: {text!r}"
            else:
                values[key] = x
        if not values:
            raise ValueError(f"{where_col}: no numeric target values")
        return Targets("continuous", (), values, dict(sorted(skipped.items())), source, column)

    labels = {k: _class_name(t) for k, (t, _) in present.items()}
    if classes is not None:
        names = tuple(_class_name(str(c).strip()) for c in classes)
        if len(set(names)) != len(names):
            raise ValueError(f"{where_col}: classes {list(classes)} repeat a name")
    else:
        found = set(labels.values())
        as_numbers = all(_number(c) is not None for c in found)
        names = tuple(sorted(found, key=lambda c: (float(c), c) if as_numbers else (0.0, c)))
        by_case: dict[str, list[str]] = {}
        for name in sorted(found):
            by_case.setdefault(name.casefold(), []).append(name)
        typos = [spellings for spellings in by_case.values() if len(spellings) > 1]
        if typos:
            shown = "; ".join(" and ".join(repr(n) for n in spellings) for spellings in typos)
            raise ValueError(f"{where_col}: the classes {shown} differ only in letter case: a typo? Write each "
                             "class one way, or pass classes=[...] to pick the classes")
    hint = "; pass classes=[...] to pick them" if classes is None else ""
    if len(names) < 2:
        raise ValueError(f"{where_col}: a class target needs at least two classes, found {list(names)}{hint}")
    if kind == "binary" and len(names) != 2:
        raise ValueError(f"{where_col}: a binary target needs exactly two classes, found {list(names)}{hint}")
    index = {name: i for i, name in enumerate(names)}
    values = {}
    for key, label in labels.items():
        if label in index:
            values[key] = index[label]
        else:
            skipped[key] = f"{present[key][1]}: class {label!r} is not one of the classes {list(names)}"
    if not values:
        raise ValueError(f"{where_col}: no value is one of the classes {list(names)}")
    return Targets(kind, names, values, dict(sorted(skipped.items())), source, column)


def read_targets(source: str | Path, column: str = "target", *, kind: str = "auto",
                 classes: Sequence[object] | None = None, id_column: str | None = None) -> Targets:
    """Targets in ``column`` of ``source`` (a ``participants.tsv``, a CSV/TSV, a ``dataset.json``, or a
    folder holding ``participants.tsv`` or ``dataset.json``), keyed by case or ``sub-X[_ses-Y]``.

    ``kind``: ``"auto"`` or one of `TARGET_KINDS`; ``classes``: class names in index order (values
    outside them are skipped and reported); ``id_column``: the id column of a CSV/TSV. Conventions
    (keys, missing values, class order, what ``auto`` decides) are in the module docstring. Errors
    name the file and the column.
    """
    if kind != "auto" and kind not in TARGET_KINDS:
        raise ValueError(f"kind must be 'auto' or one of {TARGET_KINDS}, got {kind!r}")
    path = _resolve(Path(source).expanduser())
    if path.suffix.lower() == ".json":
        raw = _json_targets(path, column)
    else:
        raw = _table_targets(path, column, id_column)
    return _parse(raw, kind, classes, str(path), column)
