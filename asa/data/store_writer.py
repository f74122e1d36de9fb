"""Writing a store (`asa.data.store`): the deterministic preprocessing of every case, once.

`build_store` runs a preprocessor's ``prepare`` (`PretrainPreprocess` or `SegmentationPreprocess`:
RAS+, optional resampling, brain mask, z-score in the brain, brain centre; the crop is applied when
reading) on each case in worker processes and writes each case's arrays, then its record, each
atomically (temporary file + rename). A rerun processes only new cases and cases whose files
changed (size or mtime; with ``hash`` also the sha256) and cases whose stored arrays are broken
(missing, truncated, another shape or dtype than the record's: `array_fault`), so an interrupted run
is resumed by running it again, and the index it leaves is always consistent: ``index.json`` is replaced only at the end
of a run, and the files it names are deleted only after a newer index no longer names them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import secrets
import signal
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from monai.transforms.utils import generate_spatial_bounding_box
from tqdm import tqdm

from asa.data.case import Case
from asa.data.store import (CASES, FORMAT, INDEX, SETTINGS, VERSION, StoreSettingsError, case_file_stamps,
                            array_fault, check_record, describe_settings_diff, record_name, stamp_key, store_settings)
from asa.data.preprocessing import case_to_item
from asa.io import WriteError, atomic_path, atomic_write_json

__all__ = ["StoreReport", "build_store", "file_sha256"]


@dataclass
class StoreReport:
    """What one `build_store` run did."""

    path: Path
    cases: int  # cases in the index
    processed: list[str] = field(default_factory=list)  # written in this run
    unchanged: int = 0  # already in the store, files unchanged
    redone: list[dict[str, str]] = field(default_factory=list)  # {"id", "reason"}: arrays found broken, processed again
    touched: list[str] = field(default_factory=list)  # hash mode: mtime changed, content the same (record updated)
    skipped: list[dict[str, Any]] = field(default_factory=list)  # {"id", "reason", "stage": check | preprocess}
    removed: list[str] = field(default_factory=list)  # in the previous index, no longer among the cases
    bytes: int = 0  # the arrays of the cases in the index
    wall_s: float = 0.0

    def summary(self) -> str:
        """A few lines for the console."""
        lines = [f"store {self.path}: {self.cases} case(s), {self.bytes / 2**30:.2f} GiB of arrays "
                 f"({len(self.processed)} processed, {self.unchanged} unchanged"
                 f"{f', {len(self.touched)} touched (same content)' if self.touched else ''}"
                 f"{f', {len(self.removed)} removed' if self.removed else ''}) in {self.wall_s:.1f} s"]
        if self.redone:
            lines.append(f"redid {len(self.redone)} case(s) whose stored arrays were broken:")
            lines += [f"  - {r['id']}: {r['reason']}" for r in self.redone[:20]]
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} case(s):")
            lines += [f"  - {s['id']} ({s['stage']}): {s['reason']}" for s in self.skipped[:20]]
            if len(self.skipped) > 20:
                lines.append(f"  ... and {len(self.skipped) - 20} more (listed in {self.path / INDEX})")
        return "\n".join(lines)


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _small_int(values: np.ndarray) -> np.dtype:
    """uint8 when the values fit, else the smallest signed type that holds them."""
    lo, hi = (int(values.min()), int(values.max())) if values.size else (0, 0)
    if lo >= 0 and hi <= 255:
        return np.dtype(np.uint8)
    for t in (np.int16, np.int32):
        if np.iinfo(t).min <= lo and hi <= np.iinfo(t).max:
            return np.dtype(t)
    return np.dtype(np.int64)


def case_arrays(full: dict[str, Any], dtype: str) -> tuple[dict[str, np.ndarray], list[list[int]]]:
    """The arrays stored for a prepared case (``prepare``'s output) and the box [[start], [stop]]
    they cover: the bounding box of everything non-zero (brain mask, labels, region map)."""
    brain = np.asarray(full["brain"], dtype=bool)
    nonzero = brain | np.any(full["image"] != 0, axis=0)
    for key in ("label", "region"):
        if key in full:
            nonzero |= np.asarray(full[key]) != 0
    if nonzero.any():
        start, stop = (list(map(int, v)) for v in generate_spatial_bounding_box(nonzero[None]))
    else:  # nothing to keep: one voxel, so that the arrays can be mapped
        start, stop = [0, 0, 0], [1, 1, 1]
    box = (slice(None), *(slice(a, b) for a, b in zip(start, stop)))
    out = {"image": np.ascontiguousarray(full["image"][box].astype(dtype)),
           "brain": np.ascontiguousarray(brain[box[1:]].astype(np.uint8))}
    if "label" in full:
        label = np.asarray(full["label"])[box[1:]]
        out["label"] = np.ascontiguousarray(label.astype(_small_int(label)))
        fg = np.flatnonzero(full["fg"])  # increasing flat indices in the whole grid
        out["fg"] = fg.astype(np.uint32 if fg.size == 0 or int(fg[-1]) < 2**32 else np.int64)
    if "region" in full:
        region = np.asarray(full["region"])[box[1:]]
        out["region"] = np.ascontiguousarray(region.astype(_small_int(region)))
    return out, [start, stop]


def _write_case(folder: Path, case: Case, files: list[dict[str, Any]], full: dict[str, Any], dtype: str,
                checks: str) -> dict[str, Any]:
    """Write a prepared case's arrays, then its record (each atomically); returns the record."""
    arrays, box = case_arrays(full, dtype)
    stem, token = record_name(case.id), secrets.token_hex(4)
    names, nbytes = {}, 0
    for key, array in arrays.items():
        names[key] = f"{stem}.{token}.{key}.npy"
        with atomic_path(folder / CASES / names[key]) as tmp, open(tmp, "wb") as fh:
            np.save(fh, array, allow_pickle=False)
        nbytes += (folder / CASES / names[key]).stat().st_size
    record = {
        "id": case.id, "case": case.to_dict(), "files": files, "checks": checks,
        "shape": [int(s) for s in full["image"].shape[1:]], "channels": int(full["image"].shape[0]),
        "spacing": [float(s) for s in full["spacing"]], "affine": np.asarray(full["affine"], float).tolist(),
        "centre": [float(c) for c in full["centre"]], "box": box,
        "arrays": names, "dtypes": {k: str(v.dtype) for k, v in arrays.items()},
        "fg_voxels": int(arrays["fg"].size) if "fg" in arrays else None, "bytes": nbytes,
    }
    atomic_write_json(folder / CASES / f"{stem}.json", record)
    return record


def _job(args: tuple) -> tuple[str, dict[str, Any] | None, str | None]:
    """One case in a worker: (id, record, None) or (id, None, the fault in one line)."""
    case_dict, pre, channels, dtype, folder, files, checks = args
    case = Case(case_dict["id"], {k: Path(v) for k, v in case_dict["images"].items()},
                None if case_dict["label"] is None else Path(case_dict["label"]), case_dict["meta"])
    try:
        full = pre.prepare(case_to_item(case, channels))
        return case.id, _write_case(Path(folder), case, files, full, dtype, checks), None
    except WriteError:  # the store cannot be written (a full disk): no case is at fault, the job stops here
        raise
    except Exception as err:  # one bad case must not stop the others; it is reported and skipped
        return case.id, None, f"{type(err).__name__}: {err}" if not isinstance(err, (ValueError, OSError)) else str(err)


PARENT_CHECK_S = 1.0  # how often a pool worker checks that the job that started it is alive


def _init_worker(parent: int) -> None:
    """A pool worker's start: one thread for torch, and death with its parent (``parent``: its pid), so
    that a killed job leaves no worker behind blocked on the pool's pipe (and holding memory)."""
    import torch

    torch.set_num_threads(1)  # one process per core; forked OpenMP pools are not safe to reuse
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C reaches the workers too: the job decides
    _die_with_parent(parent)


def _die_with_parent(parent: int) -> None:
    """End this process when ``parent`` ends: the kernel's parent-death signal where there is one
    (Linux ``prctl(PR_SET_PDEATHSIG, SIGKILL)``), and on every system a daemon thread that checks every
    `PARENT_CHECK_S` seconds whether this process was handed to another parent."""
    import signal
    import threading

    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1: PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the signal was asked for
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_S)
        os._exit(1)

    threading.Thread(target=watch, name="asa-parent-check", daemon=True).start()


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """A process pool of ``workers`` whose workers die with this process (`_die_with_parent`)."""
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    return ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker,
                               initargs=(os.getpid(),))


def _read_records(cases_dir: Path) -> dict[str, dict[str, Any]]:
    """The case records in ``cases_dir``, each checked (`check_record`: a record naming a file outside
    the folder is refused, `StoreIndexError`)."""
    out = {}
    for path in cases_dir.glob("*.json"):
        if path.name.startswith("."):  # a temporary file of a killed run (`atomic_path`), never a record
            path.unlink(missing_ok=True)
            continue
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # not a complete record: the case is processed again
        case_id = record.get("id") if isinstance(record, dict) else None
        check_record(str(case_id), record, f"data.store={cases_dir.parent}: {CASES}/{path.name}")
        if isinstance(case_id, str):
            out[case_id] = record
    return out


def _settings_guard(folder: Path, settings: dict[str, Any]) -> None:
    path = folder / SETTINGS
    if path.is_file():
        stored = json.loads(path.read_text())
        diff = describe_settings_diff(stored, settings)
        if diff:
            raise StoreSettingsError(
                f"data.store={folder} was written under other preprocessing settings ({diff}); nothing was "
                "written. Use another data.store folder, or delete this one to rebuild it under the new settings")
    else:
        atomic_write_json(path, settings)


def _collect_garbage(cases_dir: Path, records: dict[str, dict[str, Any]]) -> None:
    """Delete what the index does not name: records and arrays of removed or replaced cases, and
    temporary files left by a killed run."""
    keep = {f"{record_name(i)}.json" for i in records}
    keep |= {name for r in records.values() for name in r["arrays"].values()}
    for path in cases_dir.iterdir():
        if path.name not in keep:
            path.unlink(missing_ok=True)


def build_store(
    cases: Sequence[Case],
    folder: str | os.PathLike,
    *,
    preprocessor: Any,
    channels: Sequence[str],
    dtype: str = "float16",
    workers: int = 0,
    hash: bool = False,
    checks: str = "full",
    check_skipped: Sequence[dict[str, Any]] = (),
    root: str | None = None,
    layout: str | None = None,
    progress: bool = True,
) -> StoreReport:
    """Preprocess ``cases`` into the store at ``folder`` (created if missing) and write its index.

    ``preprocessor``: `PretrainPreprocess` or `SegmentationPreprocess` (its ``prepare`` and
    ``settings``); ``dtype``: the images' precision (labels, masks: uint8 where they fit);
    ``workers``: processes (0: in this process); ``hash``: record and compare each file's sha256;
    ``checks``: the check level the cases passed; ``check_skipped``: cases the checks rejected
    ({"id", "reason"}), listed in the index. A store written under other settings is refused
    (`StoreSettingsError`) before anything is written.
    """
    start_time = time.perf_counter()
    folder = Path(folder).expanduser()
    settings = store_settings(preprocessor.settings(), channels=channels, dtype=dtype)
    (folder / CASES).mkdir(parents=True, exist_ok=True)
    _settings_guard(folder, settings)
    previous = _read_records(folder / CASES)
    old_index = {}
    if (folder / INDEX).is_file():
        try:
            old_index = json.loads((folder / INDEX).read_text())
            old_index = old_index.get("cases", {}) if isinstance(old_index, dict) else {}
        except ValueError:
            old_index = {}

    stamps = {c.id: case_file_stamps(c) for c in cases}
    if hash:
        paths = sorted({f["path"] for files in stamps.values() for f in files})
        with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
            digests = dict(zip(paths, pool.map(file_sha256, paths)))
        for files in stamps.values():
            for f in files:
                f["sha256"] = digests[f["path"]]

    report = StoreReport(folder, 0)
    records, todo = {}, []
    for case in cases:
        record, files = previous.get(case.id), stamps[case.id]
        faults = [] if record is None else [f for f in (array_fault(folder, record, n) for n in record["arrays"]) if f]
        if faults:
            report.redone.append({"id": case.id, "reason": "; ".join(faults)})
        complete = record is not None and not faults
        state = _compare(record["files"], files, hash) if complete else "changed"
        if state == "changed":
            todo.append(case)
            continue
        if record["files"] != files:  # touched (same content), or sha256 added: the record follows the files
            record = {**record, "files": files}
            atomic_write_json(folder / CASES / f"{record_name(case.id)}.json", record)
        records[case.id] = record
        if state == "touched":
            report.touched.append(case.id)
        else:
            report.unchanged += 1

    jobs = [(c.to_dict(), preprocessor, tuple(channels), dtype, str(folder), stamps[c.id], checks) for c in todo]
    failures = []
    results = _run(jobs, workers)
    try:
        with tqdm(total=len(jobs), desc="asa-preprocess", unit="case", disable=not progress or not jobs) as bar:
            for case_id, record, fault in results:
                if record is None:
                    failures.append({"id": case_id, "reason": fault, "stage": "preprocess"})
                else:
                    records[case_id] = record
                    report.processed.append(case_id)
                bar.update()
    except SystemExit as stop:  # a stop signal: what this run finished stays, for the console to say
        results.close()  # the pool's shutdown: its workers finish the cases they had taken first
        done = sum(_written(folder, c.id, stamps[c.id]) for c in todo)  # counted on disk, those included
        stop.kept = (f"{done} of {len(jobs)} case(s) preprocessed in this run, their records in "
                     f"{folder / CASES} (the index is written when a run completes); run the same command again "
                     "to process only the rest")
        raise

    ids = {c.id for c in cases}
    report.removed = sorted(i for i in old_index if i not in ids)
    report.skipped = [{"id": s["id"], "reason": s["reason"], "stage": "check"} for s in check_skipped] + failures
    records = dict(sorted(records.items()))
    atomic_write_json(folder / INDEX, {
        "format": FORMAT, "version": VERSION, "settings": settings, "root": root, "layout": layout,
        "cases": records, "skipped": report.skipped,
    })
    _collect_garbage(folder / CASES, records)
    report.cases = len(records)
    report.bytes = sum(int(r["bytes"]) for r in records.values())
    report.wall_s = time.perf_counter() - start_time
    return report


def _written(folder: Path, case_id: str, files: list[dict[str, Any]]) -> bool:
    """Whether the store holds a record of ``case_id`` written from ``files`` (this run's, not an older one)."""
    try:
        return json.loads((folder / CASES / f"{record_name(case_id)}.json").read_text()).get("files") == files
    except (OSError, ValueError, AttributeError):
        return False


def _compare(recorded: list[dict[str, Any]], now: list[dict[str, Any]], hash: bool) -> str:
    """``unchanged`` | ``touched`` (hash mode: only the mtimes differ) | ``changed``. Without ``hash``
    a file is unchanged when its path, size and mtime are; with ``hash`` when its path, size and
    sha256 are (a record without sha256 falls back to the mtime)."""
    stamp = [stamp_key(f) for f in recorded] == [stamp_key(f) for f in now]
    if not hash or not all(f.get("sha256") for f in recorded):
        return "unchanged" if stamp else "changed"
    same = [(*stamp_key(f)[:2], f["sha256"]) for f in recorded] == [(*stamp_key(f)[:2], f["sha256"]) for f in now]
    return "changed" if not same else "unchanged" if stamp else "touched"


def _run(jobs: list[tuple], workers: int):
    """Yield `_job` results as they finish: in this process (``workers`` 0) or in a process pool."""
    if workers <= 0 or len(jobs) <= 1:
        for job in jobs:
            yield _job(job)
        return
    pool = worker_pool(min(workers, len(jobs)))
    try:
        futures = [pool.submit(_job, job) for job in jobs]
        for future in as_completed(futures):
            yield future.result()
    finally:  # on an interrupt: drop the queued cases; the records already written stay valid
        pool.shutdown(wait=True, cancel_futures=True)
