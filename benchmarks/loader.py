"""Data-loader measurements: crops/s per worker from a store (`asa.data.store`, the one preprocessing
cache), read a batch at a time (`asa.data.datasets.StoreCropBatches`) against item by item (its
per-item pipeline, the path before whole-batch reads and the one CPU augmentation takes), page cache
warm and cold; resident memory per worker; the start of an epoch with persistent and with fresh
workers; start-up to the first batch with a large store index.

Volumes are synthetic brains of a given shape (an ellipsoid of smooth random texture, zero
outside, stored as uncompressed int16 NIfTI in a BIDS layout), made quickly from two smooth fields
shifted per volume. Both paths run the same pretraining pipeline (brain-centred crop, no
augmentation) through the training loader (`asa.train.data.build_loader`).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from torch.utils.data import Dataset

from asa.data import build_pretrain_dataset, discover
from asa.data.store_writer import build_store
from asa.data.preprocessing import PretrainPreprocess
from asa.data.store import CASES, FORMAT, INDEX, SETTINGS, VERSION, case_file_stamps, open_store, store_settings
from asa.io import atomic_write_json
from asa.train.data import build_loader, close_loader

MIB = 2**20


# --- synthetic data ------------------------------------------------------------------------------
def _smooth_field(shape: Sequence[int], rng: np.random.Generator, coarse: int = 8) -> np.ndarray:
    from scipy.ndimage import zoom

    low = rng.standard_normal([int(s) // coarse + 2 for s in shape]).astype(np.float32)
    field = zoom(low, coarse, order=1)
    return np.ascontiguousarray(field[tuple(slice(0, int(s)) for s in shape)])


def write_synthetic_bids(root: str | os.PathLike, volumes: int, shape: Sequence[int], seed: int = 0) -> Path:
    """``volumes`` brain-like int16 scans of ``shape`` (1 mm) as ``sub-XXXXX/anat/*_T1w.nii``."""
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in shape)
    fields = [_smooth_field(shape, rng), _smooth_field(shape, rng)]
    axes = [np.arange(n, dtype=np.float32) for n in shape]
    root = Path(root)
    for i in range(volumes):
        a, b = rng.uniform(0.5, 1.5, size=2)
        texture = a * np.roll(fields[0], tuple(rng.integers(0, shape)), axis=(0, 1, 2))
        texture += b * np.roll(fields[1], tuple(rng.integers(0, shape)), axis=(0, 1, 2))
        centre = np.array(shape) / 2 + rng.uniform(-3, 3, size=3)
        radii = np.array(shape) * rng.uniform(0.38, 0.44, size=3)
        r2 = sum(((ax - c) / r).reshape([-1 if k == j else 1 for k in range(3)]) ** 2
                 for j, (ax, c, r) in enumerate(zip(axes, centre, radii)))
        image = np.where(r2 <= 1, np.clip(1000 + 250 * texture, 1, 4000), 0).astype(np.int16)
        folder = root / f"sub-{i:05d}" / "anat"
        folder.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(image, np.diag([1.0, 1.0, 1.0, 1.0])), str(folder / f"sub-{i:05d}_T1w.nii"))
    return root


# --- page cache and process memory -----------------------------------------------------------------
def files_under(folder: str | os.PathLike, suffixes: Sequence[str]) -> list[Path]:
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.name.endswith(tuple(suffixes)))


def evict(paths: Sequence[Path]) -> None:
    """Drop these files from the page cache (written back first), without root: the next read is cold."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def warm(paths: Sequence[Path]) -> int:
    """Read these files once (into the page cache); returns their bytes."""
    total = 0
    for p in paths:
        with open(p, "rb") as fh:
            while block := fh.read(1 << 22):
                total += len(block)
    return total


def _status(pid: int) -> dict[str, int]:
    """Rss, Pss and USS (Private_Clean + Private_Dirty: what the process alone holds) in bytes."""
    out = {"USS": 0}
    with open(f"/proc/{pid}/smaps_rollup") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("Rss", "Pss", "Pss_File", "Pss_Anon"):
                out[key] = int(value.split()[0]) * 1024
            elif key in ("Private_Clean", "Private_Dirty"):
                out["USS"] += int(value.split()[0]) * 1024
    return out


def _children() -> list[int]:
    """Pids of this process's children (DataLoader workers)."""
    pid, out = os.getpid(), []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            out += [int(c) for c in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
        except OSError:
            continue
    return out


def child_memory() -> list[dict[str, int]]:
    """Resident memory of this process's children (DataLoader workers): Rss (everything mapped in,
    shared pages included: the parent's libraries after fork, the store's pages of the page
    cache), Pss (shared pages divided among their users) and USS (pages only that worker holds)."""
    out = []
    for child in _children():
        try:
            out.append(_status(child))
        except OSError:
            pass
    return out


def children_cpu_s() -> dict[int, float]:
    """CPU seconds (user + system) each child process has used so far."""
    out = {}
    for child in _children():
        try:
            fields = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[child] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    return out


# --- timing --------------------------------------------------------------------------------------
def loader_epoch(dataset: Any, *, batch: int, workers: int, seed: int = 0) -> dict[str, Any]:
    """One epoch of the training loader: crops/s from the first batch on (worker start-up and the
    first batch excluded), the time to the first batch, the workers' memory before the last batch,
    and the CPU time per crop from the first batch to the last but one: the workers' (``worker_cpu_ms``,
    all workers together) and this process's (``main_cpu_ms``: receiving the batches; everything
    without workers). On a machine shared with other jobs the CPU time per crop says what a worker
    costs when the wall-clock rate only says what it got."""
    loader, sampler, _, _ = build_loader(dataset, batch_size=batch, rank=0, world_size=1, seed=seed,
                                         num_workers=workers)
    n = len(loader)
    if n < 2:
        raise ValueError(f"need at least 2 batches of {batch} to time a loader, got {len(dataset)} samples")
    start = time.perf_counter()
    memory: list[dict[str, int]] = []
    first = 0.0
    cpu: dict[str, Any] = {}
    try:
        for i, _ in enumerate(loader):
            if i == 0:
                first = time.perf_counter()
                cpu["start"] = (children_cpu_s(), time.process_time())
            if i == n - 2:
                cpu["end"] = (children_cpu_s(), time.process_time())
                if workers > 0:
                    memory = child_memory()
        end = time.perf_counter()
    finally:
        close_loader(loader)
    crops = (n - 2) * batch  # 0 with 2 batches: no CPU figures
    (w0, m0), (w1, m1) = cpu["start"], cpu["end"]
    worker_cpu = sum(t - w0.get(pid, 0.0) for pid, t in w1.items())
    per_crop = (lambda s: 1e3 * s / crops) if crops else (lambda s: float("nan"))
    return {"crops_per_s": (n - 1) * batch / (end - first), "first_batch_s": first - start, "memory": memory,
            "worker_cpu_ms": per_crop(worker_cpu), "main_cpu_ms": per_crop(m1 - m0)}


def epoch_start(dataset: Any, *, batch: int, workers: int, persistent: bool, epochs: int = 3) -> float:
    """Seconds from the start of an epoch to its first batch, the median over the epochs after the
    first: with persistent workers they wait from one epoch to the next, else each epoch starts its own."""
    loader, sampler, _, _ = build_loader(dataset, batch_size=batch, rank=0, world_size=1, seed=0, num_workers=workers,
                                         persistent_workers=persistent)
    times = []
    try:
        for epoch in range(epochs):
            sampler.set_position(epoch)
            t = time.perf_counter()
            batches = iter(loader)
            next(batches)
            times.append(time.perf_counter() - t)
            for _ in batches:
                pass
    finally:
        close_loader(loader)
    return statistics.median(times[1:])


class ItemByItem(Dataset):
    """A dataset read item by item: a `StoreCropBatches` without its whole-batch reads (its per-item
    MONAI pipeline, then collation: the store path before whole-batch reads)."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        return self.dataset[index]

    def reseed(self, seed: int) -> None:
        self.dataset.reseed(seed)


def _median_memory(memory: list[dict[str, int]], key: str) -> float:
    values = [m.get(key, 0) for m in memory]
    return statistics.median(values) / MIB if values else float("nan")


def compare_batches_and_items(tmp: Path, *, volumes: int, shape: Sequence[int], size: int, batch: int, workers: int,
                              rounds: int, preprocess_workers: int, cold: bool, dtype: str = "float16",
                              log: Callable[[str], None] = print) -> dict[str, Any]:
    """Crops/s per worker of the store read in whole batches and item by item, side by side (alternated
    round by round), page cache warm (and cold), plus what building the store cost, and the start of
    an epoch from the store with persistent and with fresh workers."""
    r: dict[str, Any] = {"volumes": volumes, "volume_shape": list(shape), "crop": size, "batch": batch,
                         "workers": workers, "store_dtype": dtype}
    t0 = time.perf_counter()
    root = write_synthetic_bids(tmp / "bids", volumes, shape)
    r["synthetic_s"] = time.perf_counter() - t0
    cases = discover("bids", root, validate="none")
    log(f"{volumes} synthetic volumes of {'×'.join(map(str, shape))} written in {r['synthetic_s']:.0f} s; "
        f"preprocessing into a store ({preprocess_workers} processes)")
    t0 = time.perf_counter()
    report = build_store(cases, tmp / "store", preprocessor=PretrainPreprocess(size), channels=("t1",), dtype=dtype,
                         workers=preprocess_workers, progress=False)
    r["store_build_s"] = time.perf_counter() - t0
    r["store_bytes"] = report.bytes
    store = build_pretrain_dataset(cases, crop=size, augment=False, store=tmp / "store")
    datasets = {"store": store, "items": ItemByItem(store)}
    log(f"store: {report.bytes / 2**30:.2f} GiB in {r['store_build_s']:.0f} s")
    stored = files_under(tmp / "store" / "cases", (".npy",))
    files = {"store": stored, "items": stored}
    modes = ("warm", "cold") if cold else ("warm",)
    results: dict[str, list[dict[str, Any]]] = {f"{p}_{m}": [] for p in datasets for m in modes}
    for rnd in range(rounds):
        for mode in modes:
            for path, ds in datasets.items():
                evict(files[path]) if mode == "cold" else warm(files[path])
                out = loader_epoch(ds, batch=batch, workers=workers, seed=rnd)
                results[f"{path}_{mode}"].append(out)
                log(f"round {rnd + 1}/{rounds} {path:5s} {mode}: {out['crops_per_s'] / max(workers, 1):.1f} crops/s "
                    f"per worker, first batch {out['first_batch_s']:.2f} s, CPU ms per crop: workers "
                    f"{out['worker_cpu_ms']:.1f}, main process {out['main_cpu_ms']:.1f}")
    per = max(workers, 1)
    for key, runs in results.items():
        r[f"{key}_crops_per_s_per_worker"] = statistics.median(o["crops_per_s"] for o in runs) / per
        r[f"{key}_first_batch_s"] = statistics.median(o["first_batch_s"] for o in runs)
        r[f"{key}_worker_cpu_ms_per_crop"] = statistics.median(o["worker_cpu_ms"] for o in runs)
        r[f"{key}_main_cpu_ms_per_crop"] = statistics.median(o["main_cpu_ms"] for o in runs)
        memory = [m for o in runs for m in o["memory"]]
        r[f"{key}_worker_rss_mib"] = _median_memory(memory, "Rss")
        r[f"{key}_worker_uss_mib"] = _median_memory(memory, "USS")
    for mode in modes:
        r[f"store_vs_items_{mode}"] = r[f"store_{mode}_crops_per_s_per_worker"] / r[f"items_{mode}_crops_per_s_per_worker"]
    if workers > 0:
        warm(files["store"])
        for persistent in (True, False):
            key = f"epoch_start_{'persistent' if persistent else 'fresh'}_s"
            r[key] = epoch_start(store, batch=batch, workers=workers, persistent=persistent)
            log(f"epoch start, {'persistent' if persistent else 'fresh'} workers: {r[key]:.3f} s to the first batch")
    return r


def startup_with_index(tmp: Path, *, cases: int, size: int = 16, batch: int = 4, workers: int = 2,
                       log: Callable[[str], None] = print) -> dict[str, Any]:
    """Start-up of a run from a store of ``cases`` cases, to its first batch: reading the index,
    finding the data root's files and comparing their sizes/mtimes with it, building the dataset and
    the loader, and the first batch. The cases are stubs (empty scan files, one shared tiny array
    pair): only the index and the file listing grow with ``cases``, as they do at scale."""
    root, store = tmp / "bids_index", tmp / "store_index"
    (store / CASES).mkdir(parents=True, exist_ok=True)
    image = np.zeros((1, size, size, size), np.float16)
    image[:, 2:-2, 2:-2, 2:-2] = 1
    np.save(store / CASES / "shared.image.npy", image)
    np.save(store / CASES / "shared.brain.npy", (image[0] != 0).astype(np.uint8))
    t0 = time.perf_counter()
    for i in range(cases):
        folder = root / f"sub-{i:05d}" / "anat"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"sub-{i:05d}_T1w.nii.gz").write_bytes(b"")
    found = discover("bids", root, validate="none")
    settings = store_settings(PretrainPreprocess(size).settings(), channels=("t1",), dtype="float16")
    template = {"checks": "full", "shape": [size] * 3, "channels": 1, "spacing": [1.0] * 3,
                "affine": np.eye(4).tolist(), "centre": [(size - 1) / 2] * 3, "box": [[0, 0, 0], [size] * 3],
                "arrays": {"image": "shared.image.npy", "brain": "shared.brain.npy"},
                "dtypes": {"image": "float16", "brain": "uint8"}, "fg_voxels": None, "bytes": int(image.nbytes * 1.5)}
    records = {c.id: {"id": c.id, "case": c.to_dict(), "files": case_file_stamps(c), **template} for c in found}
    atomic_write_json(store / SETTINGS, settings)
    atomic_write_json(store / INDEX, {"format": FORMAT, "version": VERSION, "settings": settings, "root": str(root),
                                      "layout": "bids", "cases": records, "skipped": []})
    r: dict[str, Any] = {"index_cases": cases, "index_mib": (store / INDEX).stat().st_size / MIB,
                         "index_setup_s": time.perf_counter() - t0}
    log(f"a {cases}-case store index ({r['index_mib']:.1f} MiB) written in {r['index_setup_s']:.0f} s; timing the start-up")
    steps = {}
    t = time.perf_counter()
    opened = open_store(store)
    steps["open_index_s"] = time.perf_counter() - t
    t = time.perf_counter()
    kept, _ = opened.cases(discover("bids", root, validate="none"))
    steps["find_and_compare_s"] = time.perf_counter() - t
    t = time.perf_counter()
    dataset = build_pretrain_dataset(kept, crop=size, augment=False, store=opened)
    steps["dataset_s"] = time.perf_counter() - t
    t = time.perf_counter()
    loader, _, _, _ = build_loader(dataset, batch_size=batch, rank=0, world_size=1, seed=0, num_workers=workers)
    next(iter(loader))
    steps["first_batch_s"] = time.perf_counter() - t
    memory = child_memory()
    close_loader(loader)
    r.update(steps)
    r["startup_s"] = sum(steps.values())
    r["startup_workers"] = workers
    r["startup_worker_rss_mib"] = _median_memory(memory, "Rss")
    r["startup_worker_uss_mib"] = _median_memory(memory, "USS")
    return r


def run_loader_benchmark(*, volumes: int, shape: Sequence[int], size: int, batch: int, workers: int, rounds: int,
                         index_cases: int, preprocess_workers: int = 2, cold: bool = True, dtype: str = "float16",
                         tmp: str | os.PathLike | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """`compare_batches_and_items` and `startup_with_index` in a temporary folder (removed after)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="asa-loader-", dir=tmp) as folder:
        r = compare_batches_and_items(Path(folder), volumes=volumes, shape=shape, size=size, batch=batch,
                                      workers=workers, rounds=rounds, preprocess_workers=preprocess_workers, cold=cold,
                                      dtype=dtype, log=log)
        if index_cases > 0:
            r.update(startup_with_index(Path(folder), cases=index_cases, log=log))
    return r


def format_loader_table(r: dict[str, Any]) -> str:
    """The summary printed at the end of a ``--loader`` run."""
    modes = ["warm"] + (["cold"] if "store_cold_crops_per_s_per_worker" in r else [])
    shape = "×".join(map(str, r["volume_shape"]))
    lines = [f"asa loader benchmark: {r['volumes']} synthetic volumes of {shape}, crops {r['crop']}³, batch "
             f"{r['batch']}, {r['workers']} loader worker(s), store {r['store_dtype']}, {r.get('device_name', '')}"]
    for mode in modes:
        lines.append(f"  crops/s per worker, page cache {mode}: store {r[f'store_{mode}_crops_per_s_per_worker']:.1f}"
                     f" / store item by item {r[f'items_{mode}_crops_per_s_per_worker']:.1f}"
                     f" (store {r[f'store_vs_items_{mode}']:.2f}× item by item)")
    lines.append(f"  CPU ms per crop, warm, workers + main process: store {r['store_warm_worker_cpu_ms_per_crop']:.2f} + "
                 f"{r['store_warm_main_cpu_ms_per_crop']:.2f} / store item by item "
                 f"{r['items_warm_worker_cpu_ms_per_crop']:.2f} + {r['items_warm_main_cpu_ms_per_crop']:.2f}")
    lines.append(f"  worker memory MiB, warm, RSS (USS: its own pages): store {r['store_warm_worker_rss_mib']:.0f} "
                 f"({r['store_warm_worker_uss_mib']:.0f}) / store item by item {r['items_warm_worker_rss_mib']:.0f} "
                 f"({r['items_warm_worker_uss_mib']:.0f})")
    lines.append(f"  on disk: store {r['store_bytes'] / 2**30:.2f} GiB (built in {r['store_build_s']:.0f} s)")
    if "epoch_start_persistent_s" in r:
        lines.append(f"  an epoch's start to its first batch: persistent workers {r['epoch_start_persistent_s']:.3f} s"
                     f" / fresh workers {r['epoch_start_fresh_s']:.3f} s")
    if "startup_s" in r:
        lines.append(f"  start-up to the first batch, {r['index_cases']}-case index: {r['startup_s']:.1f} s (index "
                     f"{r['open_index_s']:.2f}, files {r['find_and_compare_s']:.2f}, dataset {r['dataset_s']:.2f}, "
                     f"first batch {r['first_batch_s']:.2f}); worker RSS {r['startup_worker_rss_mib']:.0f} MiB "
                     f"(USS {r['startup_worker_uss_mib']:.0f})")
    return "\n".join(lines)
