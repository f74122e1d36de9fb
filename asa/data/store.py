"""The preprocessed store: each case as uncompressed, memory-mappable arrays, plus one index.

Written by ``asa-preprocess`` (`asa.data.store_writer`), read by training with ``data.store=DIR``.
A store folder holds::

    settings.json          the preprocessing settings (written first; other settings are refused)
    run.lock               held by the one asa-preprocess writing the store (a second one is refused)
    index.json             {"settings", "root", "layout", "cases": {id: record}, "skipped": [...]}
    cases/<id>.json        one case's record, written after its arrays (the index collects them)
    cases/<id>.<token>.<array>.npy   image [C, X, Y, Z] (float16 by default), brain uint8 [X, Y, Z],
                           label [X, Y, Z] (raw values, uint8 when they fit), fg uint32/int64 [n] (the
                           flat indices of the foreground voxels), region [X, Y, Z] (region maps)

A record holds the preprocessed grid (``shape``, ``spacing``, ``affine``), the brain ``centre`` and
``box``, the check level the case passed, the source files' size / mtime (and sha256 when asked),
and its arrays. Arrays cover ``box`` only: outside it every array is zero (the image is zero outside
the brain mask, labels and region maps are zero there), so a crop of the stored box, zero-filled
where it leaves it, equals the crop of the whole volume. A sample memory-maps its case and copies
only its crop; a DataLoader worker holds the small items, never volume data.
"""

from __future__ import annotations

import functools
import json
import os
import re
import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import Transform

from asa.data.case import Case
from asa.data.geometry import crop_at
from asa.data.lattice import LatticeCropd, class_indices, lattice_padding, reference_origin

__all__ = [
    "FORMAT", "STORE_DTYPES", "Store", "StoreError", "StoreIndexError", "StoreSettingsError", "StoreLatticeCropd",
    "StorePretrainCrop", "StoreSegmentationLoad", "array_fault", "case_file_stamps", "check_index", "check_record",
    "describe_settings_diff", "open_store", "passed_checks", "record_name", "stamp_key", "store_settings",
]

FORMAT = "asa-store"
VERSION = 1
STORE_DTYPES = ("float16", "float32")
INDEX, SETTINGS, CASES = "index.json", "settings.json", "cases"


class StoreError(RuntimeError):
    """A store cannot be used as asked; the message names the folder or file and what to do."""


class StoreSettingsError(StoreError):
    """A store was written under other preprocessing settings than the ones asked for."""


class StoreIndexError(StoreError):
    """A store's index or a case record is not what asa writes (a missing or mistyped key, an array
    named outside the store's ``cases`` folder): the store is not used."""


def _is_int_list(value: Any, n: int | None = None) -> bool:
    return (isinstance(value, list) and (n is None or len(value) == n)
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value))


def _is_number_list(value: Any, n: int) -> bool:
    return (isinstance(value, list) and len(value) == n
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value))


def check_record(case_id: str, record: Any, where: str) -> None:
    """Raise `StoreIndexError` unless ``record`` is a case record as `asa.data.store_writer` writes it:
    its grid (``shape``, ``box``, ``centre``), source ``files`` and ``arrays``, each array a bare
    file name, so that every file it names lies inside the store's ``cases`` folder. ``where`` names
    the entry in the message (e.g. ``data.store=DIR: index.json cases['sub-01']``)."""
    if not isinstance(record, dict):
        raise StoreIndexError(f"{where}: expected a case record (an object), got {type(record).__name__}")
    checks = {
        "arrays": (lambda v: isinstance(v, dict) and "image" in v, "an object of array files with 'image'"),
        "shape": (lambda v: _is_int_list(v, 3) and all(x > 0 for x in v), "3 positive integers"),
        "box": (lambda v: isinstance(v, list) and len(v) == 2 and all(_is_int_list(b, 3) for b in v),
                "[[start x, y, z], [stop x, y, z]] integers"),
        "centre": (lambda v: _is_number_list(v, 3), "3 numbers"),
        "files": (lambda v: isinstance(v, list) and all(isinstance(f, dict) and {"path", "size", "mtime_ns"} <= set(f)
                                                        for f in v), "a list of {path, size, mtime_ns}"),
        "bytes": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "a byte count"),
    }
    for key, (ok, expected) in checks.items():
        if key not in record:
            raise StoreIndexError(f"{where}: missing key {key!r} ({expected}); rewrite the store with asa-preprocess")
        if not ok(record[key]):
            raise StoreIndexError(f"{where}: {key}={json.dumps(record[key])[:80]} is not {expected}; rewrite the "
                                  "store with asa-preprocess")
    for name, file in record["arrays"].items():
        # a bare file name: joined to the cases folder it can only name a file in it (no '..', no absolute path)
        if not isinstance(file, str) or not file or file in (".", "..") or Path(file).name != file or "\\" in file:
            raise StoreIndexError(f"{where}: arrays[{name!r}]={json.dumps(file)} names a file outside the store's "
                                  f"{CASES} folder; a store only reads its own files: rewrite it with asa-preprocess")


def check_index(data: Any, where: str) -> None:
    """Raise `StoreIndexError` naming the first key of a store index (``index.json``) that is missing or
    of the wrong type, or the first case record that `check_record` refuses."""
    if not isinstance(data, dict):
        raise StoreIndexError(f"{where}: expected an object, got {type(data).__name__}")
    if data.get("format") != FORMAT or data.get("version") != VERSION:
        raise StoreIndexError(f"{where} is not an {FORMAT} index of version {VERSION} "
                              f"(format {data.get('format')!r}, version {data.get('version')!r})")
    checks = {"settings": (dict, "an object"), "cases": (dict, "an object of case records"),
              "root": ((str, type(None)), "a folder or null"), "layout": ((str, type(None)), "a layout name or null"),
              "skipped": (list, "a list")}
    for key, (kind, expected) in checks.items():
        if key not in data:
            if key == "skipped":
                continue
            raise StoreIndexError(f"{where}: missing key {key!r} ({expected}); rewrite the store with asa-preprocess")
        if not isinstance(data[key], kind):
            raise StoreIndexError(f"{where}: {key} is {type(data[key]).__name__}, expected {expected}; rewrite the "
                                  "store with asa-preprocess")
    for case_id, record in data["cases"].items():
        check_record(case_id, record, f"{where} cases[{case_id!r}]")


def store_settings(pre_settings: Mapping[str, Any], *, channels: Sequence[str], dtype: str) -> dict[str, Any]:
    """The settings a store depends on: the preprocessing's (without the crop size, which is applied
    when reading), the channels, the storage precision and the store format's version."""
    if dtype not in STORE_DTYPES:
        raise ValueError(f"dtype must be one of {STORE_DTYPES}, got {dtype!r}")
    out = {k: v for k, v in pre_settings.items() if k != "size"}
    return json.loads(json.dumps({**out, "channels": list(channels), "dtype": dtype, "format_version": VERSION},
                                 default=str))  # as it reads back from JSON (tuples -> lists)


def describe_settings_diff(stored: Mapping[str, Any], wanted: Mapping[str, Any], *, ignore: Iterable[str] = ()) -> str:
    """'' when equal (keys in ``ignore`` aside), else one ``key: stored X, now Y`` per differing key."""
    wanted = json.loads(json.dumps(wanted, default=str))
    skip = set(ignore)
    keys = [k for k in dict.fromkeys([*stored, *wanted]) if k not in skip and stored.get(k) != wanted.get(k)]
    return "; ".join(f"{k}: store {json.dumps(stored.get(k))}, now {json.dumps(wanted.get(k))}" for k in keys)


def record_name(case_id: str) -> str:
    """A file-name-safe, collision-free stem for a case id."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", case_id)
    return safe if safe == case_id else f"{safe}-{hashlib.sha1(case_id.encode()).hexdigest()[:8]}"


def stamp_key(stamp: Mapping[str, Any]) -> tuple[str, int, int]:
    """(resolved path, size, mtime) of a file stamp: a data root written as a relative or an absolute
    path, or through a link, names the same files."""
    return os.path.realpath(stamp["path"]), int(stamp["size"]), int(stamp["mtime_ns"])


def case_file_stamps(case: Case) -> list[dict[str, Any]]:
    """Path, size and mtime (ns) of every file of a case (what a rerun compares)."""
    out = []
    for p in case.paths():
        st = p.stat()
        out.append({"path": str(p), "size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)})
    return out


def outside_store(folder: str | os.PathLike, file: str) -> Path | None:
    """Where the array ``file`` of the store at ``folder`` resolves to (links followed) when that is not
    inside the store's own ``cases`` folder, else None."""
    cases = (Path(folder) / CASES).resolve()
    target = (Path(folder) / CASES / file).resolve()
    return None if cases in target.parents else target


def array_fault(folder: str | os.PathLike, record: Mapping[str, Any], name: str) -> str | None:
    """None when the stored array ``name`` of a case record is whole, else what is wrong with it: its
    file is missing, its header unreadable, its shape or dtype not the record's (``image`` [C, *box
    extent], ``brain`` / ``label`` / ``region`` [*box extent], ``fg`` [fg_voxels]), or its size not what
    that header needs (a truncated file). Only the header is read."""
    path = Path(folder) / CASES / record["arrays"][name]
    if outside_store(folder, record["arrays"][name]) is not None:
        return f"{path.name} is a link to a file outside the store"
    extent = [int(b) - int(a) for a, b in zip(*record["box"])]
    expected = {"image": [int(record.get("channels", 1)), *extent], "fg": [record.get("fg_voxels")]}.get(name, extent)
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(fh)
            offset = fh.tell()
    except FileNotFoundError:
        return f"{path.name} is missing"
    except (OSError, ValueError) as err:
        return f"{path.name} is not a .npy array ({err})"
    if list(shape) != expected or str(dtype) != record.get("dtypes", {}).get(name, str(dtype)):
        return (f"{path.name} holds {dtype} {list(shape)}, the record says "
                f"{record.get('dtypes', {}).get(name)} {expected}")
    needed = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if size != needed:
        return (f"{path.name} has {size} bytes, its header needs {needed} "
                f"({'truncated' if size < needed else 'too long'})")
    return None


# --- reading ------------------------------------------------------------------------------------
@dataclass
class Store:
    """An opened store: its folder, settings and records (the index; no volume data)."""

    path: Path
    settings: dict[str, Any]
    records: dict[str, dict[str, Any]]
    root: str | None = None
    layout: str | None = None
    skipped: list[dict[str, Any]] = field(default_factory=list)

    def check_settings(self, wanted: Mapping[str, Any], *, ignore_regions: bool = False,
                       option: str = "data.store") -> None:
        """Raise `StoreSettingsError` naming the settings that differ (the storage precision aside;
        with ``ignore_regions`` also the region maps, which a reader without regions leaves unread)."""
        diff = describe_settings_diff(self.settings, wanted, ignore=("dtype", "regions") if ignore_regions else ("dtype",))
        if diff:
            raise StoreSettingsError(
                f"{option}={self.path} was written under other preprocessing settings ({diff}). Write a store "
                f"for these settings with asa-preprocess (same data options, another data.store folder)")

    def items(self, case_ids: Sequence[str]) -> list[dict[str, Any]]:
        """The dataset items of these cases: the record's grid, centre and array files (small dicts)."""
        missing = [i for i in case_ids if i not in self.records]
        if missing:
            raise StoreError(f"data.store={self.path} has no case(s) {missing[:5]}"
                             f"{' ...' if len(missing) > 5 else ''}: rerun asa-preprocess with the same data options")
        out = []
        for case_id in case_ids:
            r = self.records[case_id]
            for name, file in r["arrays"].items():
                where = outside_store(self.path, file)
                if where is not None:
                    raise StoreIndexError(
                        f"data.store={self.path}: case {case_id!r} arrays[{name!r}]: {CASES}/{file} resolves to "
                        f"{where}, outside the store (a link?); a store only reads its own files: rewrite it with "
                        "asa-preprocess")
            out.append({"id": case_id, "dir": str(self.path / CASES), "arrays": r["arrays"],
                        "shape": r["shape"], "origin": r["box"][0], "centre": r["centre"]})
        return out

    def cases(self, found: Sequence[Case], option: str = "data.store") -> tuple[list[Case], list[dict[str, Any]]]:
        """The cases found under the data root that the store holds, checked against it: a case
        whose files changed since preprocessing, or one the store has never seen, is an error
        (rerun asa-preprocess). Returns (usable cases, the cases the store skipped, with reasons)."""
        skipped = {s["id"]: s for s in self.skipped}
        kept, new, stale = [], [], []
        for case in found:
            record = self.records.get(case.id)
            if record is None:
                (new if case.id not in skipped else []).append(case.id)
                continue
            try:
                now = case_file_stamps(case)
            except OSError as err:
                stale.append(f"{case.id} ({err})")
                continue
            recorded = [{k: f[k] for k in ("path", "size", "mtime_ns")} for f in record["files"]]
            if [stamp_key(f) for f in now] != [stamp_key(f) for f in recorded]:
                changed = [f["path"] for f, g in zip(now, recorded) if f != g] or [f["path"] for f in now]
                stale.append(f"{case.id} ({changed[0]} changed)")
                continue
            kept.append(case)
        problems = []
        if new:
            problems.append(f"{len(new)} case(s) found under the data root are not in the store (e.g. {new[:3]})")
        if stale:
            problems.append(f"{len(stale)} case(s) changed since preprocessing (e.g. {stale[:3]})")
        if problems:
            raise StoreError(f"{option}={self.path} is out of date: {'; '.join(problems)}. "
                             "Rerun asa-preprocess with the same data options: it processes only what changed")
        return kept, list(self.skipped)

    @property
    def nbytes(self) -> int:
        return sum(int(r["bytes"]) for r in self.records.values())


@functools.lru_cache(maxsize=8)
def _read_index(path: str, mtime_ns: int, size: int, where: str) -> dict[str, Any]:
    data = json.loads(Path(path).read_text())
    check_index(data, where)  # once per version of the file (cached with it)
    return data


def open_store(path: str | os.PathLike | Store, option: str = "data.store") -> Store:
    """Read a store's index (cached while the file is unchanged); ``option`` names the setting in errors."""
    if isinstance(path, Store):
        return path
    folder = Path(path).expanduser()
    index = folder / INDEX
    if not index.is_file():
        hint = (" (an interrupted first asa-preprocess: rerun it to finish)" if (folder / SETTINGS).is_file()
                else "; write one with asa-preprocess")
        raise StoreError(f"{option}={folder}: no store index {INDEX} there{hint}")
    st = index.stat()
    try:
        data = _read_index(str(index), st.st_mtime_ns, st.st_size, f"{option}={folder}: {INDEX}")
    except StoreIndexError:
        raise
    except ValueError as err:
        raise StoreIndexError(f"{option}={folder}: {index} is not a store index ({err})") from None
    return Store(folder, data["settings"], data["cases"], data.get("root"), data.get("layout"),
                 data.get("skipped", []))


def passed_checks(folder: str | os.PathLike) -> Callable[[Case], bool] | None:
    """Whether a case passed the full checks when the store at ``folder`` was written and its files
    are unchanged since (their sizes and mtimes as recorded): a rerun of asa-preprocess need not read
    it again (`asa.data.discover`'s ``checked``). None while the folder holds no readable index."""
    try:
        records = open_store(folder).records
    except (StoreError, OSError):
        return None

    def passed(case: Case) -> bool:
        record = records.get(case.id)
        if record is None or record.get("checks") != "full":
            return False
        try:
            now = case_file_stamps(case)
        except OSError:
            return False  # a file gone: the check names it
        return [stamp_key(f) for f in now] == [stamp_key(f) for f in record["files"]]

    return passed


def _map(item: Mapping[str, Any], name: str) -> np.ndarray:
    """Memory-map one stored array of an item (nothing is read until it is sliced)."""
    path = Path(item["dir"]) / item["arrays"][name]
    try:
        return np.load(path, mmap_mode="r")
    except (OSError, ValueError) as err:
        raise StoreError(f"case {item['id']}: cannot map {path} ({err}); rerun asa-preprocess on this store") from None


def _crop(item: Mapping[str, Any], name: str, start: Sequence[int], size: Sequence[int], *,
          out: np.ndarray | None = None) -> np.ndarray:
    """[C, *size] window of a stored array starting at grid voxel ``start``, zero where it leaves the
    box; with ``out``, written there (straight from the memory map, cast to its dtype)."""
    array = _map(item, name)
    array = array if array.ndim == 4 else array[None]
    origin = np.asarray(item["origin"], dtype=np.int64)
    return crop_at(array, np.asarray(start, dtype=np.int64) - origin, size, 0, out=out)


class StorePretrainCrop(Transform):
    """Store item -> what `PretrainPreprocess` gives: ``"image"`` [C, *size] (the brain-centred crop;
    float32, or with ``float_image=False`` the store's precision, for a pipeline with no CPU step
    after it: the conversion then happens on the device, see `asa.train.data.move_to`), ``"brain"``
    bool [1, *size] (with ``brain``), ``"region"`` int16 [1, *size] (with ``region``), ``"id"``.
    Only the crop is read. `read_into` writes the same crop into given arrays (a batch's slots)."""

    def __init__(self, size: Sequence[int], *, brain: bool = True, region: bool = False,
                 float_image: bool = True) -> None:
        self.size = tuple(int(s) for s in size)
        self.brain, self.region, self.float_image = brain, region, float_image

    def __call__(self, item: Mapping[str, Any]) -> dict[str, Any]:
        start = reference_origin(item["centre"], self.size)
        image = torch.from_numpy(_crop(item, "image", start, self.size))
        out: dict[str, Any] = {"image": image.float() if self.float_image else image, "id": item["id"]}
        if self.brain:
            out["brain"] = torch.from_numpy(_crop(item, "brain", start, self.size).astype(bool))
        if self.region:
            out["region"] = torch.from_numpy(_crop(item, "region", start, self.size).astype(np.int16))
        return out

    def read_into(self, item: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
        """Write the item's crops straight from the memory maps into ``arrays`` (``"image"``
        [C, *size], and ``"brain"`` [1, *size] / ``"region"`` [1, *size] when present), cast to
        their dtypes: the values `__call__` gives, without an array per crop."""
        start = reference_origin(item["centre"], self.size)
        for name, out in arrays.items():
            _crop(item, name, start, self.size, out=out)


class StoreSegmentationLoad(Transform):
    """Store item -> a fine-tuning item. ``whole``: what `SegmentationPreprocess` gives, on the whole
    grid (validation: ``"image"``, ``"label"`` target, ``"centre"``, ``"id"``, ``"region"``); else
    the item with its ``"centre"`` tensor, for `StoreLatticeCropd` to read the crops from."""

    def __init__(self, target_fn, *, whole: bool, region: bool = False) -> None:
        self.target_fn = target_fn  # raw labels [X, Y, Z] -> target [K or 1, X, Y, Z]
        self.whole, self.region = whole, region

    def __call__(self, item: Mapping[str, Any]) -> dict[str, Any]:
        centre = torch.as_tensor(np.asarray(item["centre"], dtype=np.float64))
        if not self.whole:
            return {**item, "centre": centre}
        shape = tuple(item["shape"])
        out: dict[str, Any] = {"image": torch.from_numpy(_crop(item, "image", (0, 0, 0), shape)).float(),
                               "label": torch.from_numpy(self.target_fn(_crop(item, "label", (0, 0, 0), shape)[0]
                                                                         .astype(np.int64))),
                               "centre": centre, "id": item["id"]}
        if self.region:
            out["region"] = torch.from_numpy(_crop(item, "region", (0, 0, 0), shape).astype(np.int16))
        return out


class _PaddedForeground:
    """The flat indices (in the lattice-padded volume, increasing) of the foreground voxels, read
    one at a time from the stored indices in the unpadded grid: what `map_binary_to_indices` gives
    for the padded label, without the label."""

    def __init__(self, flat: np.ndarray, shape: Sequence[int], before: Sequence[int], padded: Sequence[int]) -> None:
        self.flat, self.shape = flat, tuple(int(s) for s in shape)
        self.before, self.padded = np.asarray(before, dtype=np.int64), tuple(int(s) for s in padded)

    def __len__(self) -> int:
        return len(self.flat)

    def __getitem__(self, k: int) -> int:
        coord = np.asarray(np.unravel_index(int(self.flat[int(k)]), self.shape)) + self.before
        return int(np.ravel_multi_index(tuple(coord), self.padded))


class _PaddedBackground:
    """The flat indices of every other voxel of the padded volume, in increasing order: the k-th is
    k + #{i : F[i] - i <= k} for the increasing foreground indices F (found by bisection)."""

    def __init__(self, fg: _PaddedForeground) -> None:
        self.fg = fg
        self.total = int(np.prod(fg.padded))

    def __len__(self) -> int:
        return self.total - len(self.fg)

    def __getitem__(self, k: int) -> int:
        k = int(k)
        lo, hi = 0, len(self.fg)
        while lo < hi:
            mid = (lo + hi) // 2
            if self.fg[mid] - mid <= k:
                lo = mid + 1
            else:
                hi = mid
        return k + lo


class StoreLatticeCropd(LatticeCropd):
    """`LatticeCropd` over a store item: the same random draws (the crop centres come from the
    stored foreground indices, or with ``sampling="classes"`` from the classes of the stored label, mapped
    into the padded volume) and the same crops, read from the memory-mapped arrays; the label crop becomes
    the target with ``target_fn``."""

    def __init__(self, keys: Sequence[str], *, target_fn, **kwargs: Any) -> None:
        super().__init__(keys, label_key="fg", **kwargs)
        self.target_fn = target_fn

    @classmethod
    def like(cls, crop: LatticeCropd, target_fn) -> "StoreLatticeCropd":
        """The store twin of a configured `LatticeCropd` (same keys, sizes, lattice, ratio and oversampling)."""
        return cls(list(crop.keys), target_fn=target_fn, spatial_size=crop.spatial_size, patch=crop.patch,
                   reference_size=crop.reference_size, pos=crop.pos, num_samples=crop.num_samples,
                   sampling=crop.sampling, class_key=crop.class_key, oversampling=crop.oversampling)

    def __call__(self, data: Mapping[str, Any]) -> list[dict]:
        d = dict(data)
        shape = tuple(int(s) for s in d["shape"])
        before, after = lattice_padding(shape, reference_origin(d["centre"], self.reference_size), self.patch,
                                        self.spatial_size)
        padded = tuple(int(s) for s in np.asarray(shape) + before + after)
        origin = reference_origin(d["centre"], self.reference_size) + before
        if self.sampling == "classes":  # the classes of the whole target, as the plain LatticeCropd finds them
            target = self.target_fn(_crop(d, "label", (0, 0, 0), shape)[0].astype(np.int64))
            starts = self.draw_class_starts(padded, [_PaddedForeground(idx, shape, before, padded)
                                                     for idx in class_indices(target)], shape=shape, before=before)
        else:
            fg = _PaddedForeground(_map(d, "fg"), shape, before, padded)
            starts = self.draw_starts(padded, fg, _PaddedBackground(fg))
        out = []
        for start in starts:
            grid_start = np.asarray(start) - before
            sample = {k: v for k, v in d.items() if k in ("centre", "id")}
            for key in self.keys:
                window = _crop(d, key, grid_start, self.spatial_size)
                if key == "image":
                    sample[key] = torch.from_numpy(window).float()
                elif key == "label":
                    target = self.target_fn(window[0].astype(np.int64))
                    inside = tuple(slice(max(-g, 0), max(min(n - g, s), 0))
                                   for g, n, s in zip(grid_start, shape, self.spatial_size))
                    kept = np.zeros_like(target)  # the padding of the target is 0, as `pad_to_lattice` pads it
                    kept[(slice(None), *inside)] = target[(slice(None), *inside)]
                    sample[key] = torch.from_numpy(kept)
                else:
                    sample[key] = torch.from_numpy(window.astype(np.int16))
            sample["offset"] = torch.as_tensor((np.asarray(start) - origin) // self.patch, dtype=torch.int64)
            out.append(sample)
        return out
