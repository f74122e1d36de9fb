"""Preprocessing into a store as a Python function: the job behind `asa-preprocess`."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from asa.api.configuration.checks import as_config
from asa.api.configuration.compat import old_key
from asa.api.machinery.dataset import _check_workers, dataset_root, region_source
from asa.api.machinery.run import refusing
from asa.api.machinery.rundir import RunLock, check_writable, command_line
from asa.api.configuration.schema import PretrainDataConfig, PreprocessConfig, SegmentationDataConfig
from asa.api.tasks.segmentation import reading_channels
from asa.data import CaseError, discover, get_task
from asa.data.layouts import load_report
from asa.data.store import passed_checks
from asa.data.store_writer import build_store
from asa.data.preprocessing import PretrainPreprocess, SegmentationPreprocess, check_percentiles
from asa.choices import check_choices
from asa.train.distributed import DistEnv

__all__ = ["preprocess", "data_preset"]

APP = "asa-preprocess"


def data_preset(data: Mapping[str, Any]) -> tuple[str, PretrainDataConfig | SegmentationDataConfig]:
    """(kind, typed preset) of a data preset of either entry point: ``segmentation`` for a fine-tuning
    preset (it names a task), else ``pretrain``; checked against its schema (a misspelt key or a
    value outside the choices fails naming it)."""
    kind = "segmentation" if "task" in data else "pretrain"
    typed = SegmentationDataConfig if kind == "segmentation" else PretrainDataConfig
    schema = OmegaConf.structured(typed)
    OmegaConf.set_struct(schema, True)
    try:
        merged = OmegaConf.merge(schema, data)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        if (note := old_key(f"data.{key}")) is not None:
            raise ValueError(f"{APP}: invalid option data.{key}: data.{key} {note}") from None
        raise ValueError(f"{APP}: invalid option data.{key}: {getattr(err, 'msg', err)}") from None
    check_choices(merged, typed, "data.")
    if kind == "segmentation":
        check_percentiles(list(merged.percentiles), f"{APP}: invalid option data.percentiles")
    missing = sorted(f"data.{key}" for key in OmegaConf.missing_keys(merged))
    if missing:
        raise ValueError(f"{APP}: {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} required "
                         f"({' '.join(f'{key}=...' for key in missing)})")
    return kind, OmegaConf.to_object(merged)


def preprocess(config: PreprocessConfig | DictConfig):
    """Check and preprocess the dataset of ``config.data`` into the store ``config.data.store``;
    returns the `asa.data.store_writer.StoreReport` (also printed). Cases the checks reject stop the
    job (``data.on_bad_case=error``) or are skipped and listed in the index (``skip``); so are cases
    whose preprocessing fails, after every other case is written (with ``error`` the job then
    fails naming them)."""
    with refusing():  # a bad option is refused (exit 2) before the store is touched
        cfg = as_config(config, "preprocess")
        kind, data = data_preset(cfg.data)
        if data.store is None:
            raise ValueError(f"{APP}: data.store is required: the store folder to write")
        if cfg.workers < 0:
            raise ValueError(f"workers={cfg.workers}: expected 0 (one process per CPU core, at most 8) or a number "
                             "of processes")
        store = Path(str(data.store)).expanduser()
        if store.exists() and not store.is_dir():
            raise ValueError(f"data.store={store} is a file; expected the store folder to write (a new or an "
                             "existing store)")
    # no option here consumes region maps, so source=auto stores none; name cluster or file to store them
    regions = region_source(data, [], network=None, env=DistEnv())
    root, layout = dataset_root(data)
    if kind == "segmentation":
        task = reading_channels(get_task(data.task, root=root), data.channels, where=f"the {data.task} task")
        pre, channels = SegmentationPreprocess(task, percentiles=data.percentiles, regions=regions), task.channels
    else:
        pre = PretrainPreprocess(int(data.crop), resample_mm=data.resample_mm, regions=regions)
        channels = tuple(data.channels)
    check_writable(store, "data.store")
    store.mkdir(parents=True, exist_ok=True)
    lock = RunLock(store, option="data.store")  # one writer per store, as one job per run folder
    lock.acquire(command_line(APP))
    try:
        return _preprocess(cfg, data, store, kind, pre, channels, root, layout)
    finally:
        lock.release()


def _preprocess(cfg, data, store: Path, kind: str, pre, channels, root: Path, layout: str):
    """`preprocess` with the store's lock held."""
    bad = store / "bad_cases.json"
    bad.unlink(missing_ok=True)
    cases = discover(layout, root, on_bad_case=data.on_bad_case, option="data.on_bad_case", report_path=bad,
                     checked=passed_checks(store), workers=_check_workers(data))
    rejected = load_report(bad)["skipped"] if bad.is_file() else []
    workers = cfg.workers or max(1, min(8, os.cpu_count() or 1))
    print(f"[{APP}] {len(cases)} case(s) of {root} ({layout}) passed the checks"
          f"{f', {len(rejected)} rejected' if rejected else ''}; preprocessing into {store} "
          f"({kind}, {cfg.dtype}, {workers} worker(s))", file=sys.stderr, flush=True)
    report = build_store(cases, store, preprocessor=pre, channels=channels, dtype=cfg.dtype, workers=workers,
                         hash=cfg.hash, checks="full", check_skipped=rejected, root=str(root.absolute()),
                         layout=layout, progress=cfg.progress)
    print(report.summary(), flush=True)
    failed = [s for s in report.skipped if s["stage"] == "preprocess"]
    if failed and data.on_bad_case == "error":
        lines = "\n".join(f"  - {s['id']}: {s['reason']}" for s in failed[:20])
        raise CaseError(f"{len(failed)} case(s) failed preprocessing (the others are in the store):\n{lines}\n"
                        "Fix them and rerun (only they are processed), or set data.on_bad_case=skip")
    return report
