"""The data of a job from its data preset: the dataset folder, its checked cases (from the files or a
store), the train/val/test split, the cases of a saved split, the crop checked against the volumes, the
region maps, the default crop edge, and `on_main_then_share` (a step done on rank 0 whose result or failure
reaches every rank)."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from asa.api.machinery.run import OptionError, describe_error
from asa.api.configuration.schema import DataConfig
from asa.data import CaseError, RegionSource, detect_layout, discover, ensure_demo_dataset, make_splits, subject_groups
from asa.data.layouts import skipped_report
from asa.data.store import StoreSettingsError, open_store
from asa.io import atomic_write_json
from asa.models import DEFAULT_CROP
from asa.train.distributed import DistEnv, all_gather_objects, barrier
from asa.formats.nnunet import TRAINING_SPACING  # the run config's record nnU-Net's plans read

__all__ = ["BAD_CASES", "TRAINING_SPACING", "SharedError", "case_grid", "cases_of_split", "check_crop_fits",
           "dataset_root",
           "default_crop", "grid_affines", "load_cases", "planned_spacing",
           "on_main_then_share", "region_source", "split_cases", "write_bad_cases", "write_splits"]


def dataset_root(data: DataConfig) -> tuple[Path, str]:
    """(folder, layout) of a data preset: ``data.root``, or the generated demo dataset when it is null."""
    if data.root is None:
        if data.demo is None:
            raise ValueError(f"data={data.name}: data.root is required (a {data.layout} folder)")
        demo = data.demo
        started = time.time()
        root = ensure_demo_dataset(demo.layout, cases=demo.cases, size=demo.size, seed=demo.seed,
                                   cache_dir=demo.cache_dir, targets=bool(demo.targets))
        if (root / ".complete").stat().st_mtime >= started:  # written by this call, not found in the cache
            where = "data.demo.cache_dir" if demo.cache_dir is not None else "$ASA_CACHE, default ~/.cache/asa"
            print(f"[asa] generated the demo data (data=demo: {demo.cases} phantom scans, {demo.size}³ voxels, "
                  f"layout {demo.layout}) in {root} ({where}); later runs reuse them", file=sys.stderr, flush=True)
        return root, demo.layout
    root = Path(str(data.root)).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"data.root={root}: no such file or folder")
    return root, (detect_layout(root) if data.layout == "auto" else data.layout)


BAD_CASES = "bad_cases.json"  # in the run folder: the cases a run skipped, with reasons


def load_cases(data: DataConfig, out_dir: Path | None, env: DistEnv) -> tuple[list, dict | None]:
    """The validated cases of a data preset, found once on rank 0 and shared with the other ranks, and
    the record of the cases skipped (None: none was), which the job writes to ``<out_dir>/bad_cases.json``
    (`write_bad_cases`) once every check of the run passed: a refused run leaves none.

    Every volume is read once in every run (in parallel) with the
    checks of `load_volume`; bad cases stop the run or are skipped per ``data.on_bad_case``. With
    ``data.store`` nothing is read: the store's index holds the checks' outcome, and only the files'
    sizes and mtimes are compared with it.
    """
    def find() -> tuple[list, dict | None]:
        root, layout = dataset_root(data)
        if data.store is not None:
            return _cases_in_store(data, root, layout)
        report = None if out_dir is None else out_dir / BAD_CASES
        skipped: list = []
        cases = discover(layout, root, on_bad_case=data.on_bad_case, option="data.on_bad_case",
                         workers=_check_workers(data), skipped=skipped)
        if not skipped:
            return cases, None
        shown = "\n".join(f"  - {p.id}: {p.reason}" for p in skipped[:10])  # said on the console, not only in the report
        more = f"\n  ... and {len(skipped) - 10} more" if len(skipped) > 10 else ""
        # the report is written once every check of the run passed (`write_bad_cases`): a refused run leaves none
        listed = "" if report is None else f"; {report} lists them all once every check of the run has passed"
        print(f"[asa] warning: skipped {len(skipped)} of {len(skipped) + len(cases)} case(s) that cannot be used "
              f"(data.on_bad_case=skip){listed}:\n"
              f"{shown}{more}\n  data.on_bad_case=error stops the run on any bad case instead",
              file=sys.stderr, flush=True)
        return cases, skipped_report(layout, root, len(cases), skipped)

    return on_main_then_share(find, env)


def grid_affines(cases: Sequence) -> dict[str, Any]:
    """Case id -> the affine of its first image, read from the header alone (a file that cannot be read is
    left out: the case checks name it)."""
    import nibabel as nib

    affines = {}
    for case in cases:
        try:
            affines[case.id] = nib.load(str(next(iter(case.images.values())))).affine
        except (StopIteration, OSError, ValueError, nib.filebasedimages.ImageFileError):
            continue
    return affines


ANISOTROPY_THRESHOLD = 3.0  # nnU-Net's ExperimentPlanner.anisotropy_threshold


def case_grid(case) -> tuple[list[float], list[int]] | None:
    """(voxel size in mm, shape) of ``case``'s first image, in RAS order (the order of asa's arrays and of the
    run config's `TRAINING_SPACING`), from its header alone; None when no header can be read."""
    import nibabel as nib
    import numpy as np
    from nibabel.orientations import io_orientation

    try:
        image = nib.load(str(next(iter(case.images.values()))))
    except (StopIteration, OSError, ValueError, nib.filebasedimages.ImageFileError):
        return None
    if len(image.shape) < 3:
        return None
    affine = np.asarray(image.affine, dtype=np.float64)
    zooms, shape = np.linalg.norm(affine[:3, :3], axis=0), image.shape[:3]  # as NibabelIOWithReorient reads them
    axes = io_orientation(affine)[:, 0]  # stored axis i runs along RAS axis axes[i]
    if np.isnan(axes).any():
        return None
    order = np.argsort(axes)  # the stored axis of each RAS axis
    return [float(zooms[i]) for i in order], [int(shape[i]) for i in order]


def planned_spacing(cases: Sequence) -> dict[str, Any] | None:
    """The voxel size nnU-Net v2 would plan for ``cases`` (their first image's header alone), as the run config
    records it (`TRAINING_SPACING`): ``{"median_mm": [x, y, z], "cases": n}`` in RAS order (the order of asa's arrays
    and of nnU-Net's after ``NibabelIOWithReorient`` and ``transpose_forward`` [2, 1, 0]); None when no header
    can be read.

    The rule is nnU-Net's ``ExperimentPlanner.determine_fullres_target_spacing``: the per-axis median of the
    spacings; where one axis is coarser than ``ANISOTROPY_THRESHOLD`` times the others and has fewer than a third of
    their voxels, that axis takes the 10th percentile of its spacings instead (at least the others' largest). nnU-Net
    counts the voxels of the crop to the nonzero region, here those of the whole grid (no image is read)."""
    import numpy as np

    spacings, shapes = [], []
    for case in cases:
        if (grid := case_grid(case)) is not None:
            spacings.append(grid[0])
            shapes.append(grid[1])
    if not spacings:
        return None
    spacing, size = np.vstack(spacings), np.vstack(shapes)
    target, target_size = np.percentile(spacing, 50, axis=0), np.percentile(size, 50, axis=0)
    worst = int(np.argmax(target))
    others = [i for i in range(3) if i != worst]
    if (target[worst] > ANISOTROPY_THRESHOLD * max(target[others])
            and target_size[worst] * ANISOTROPY_THRESHOLD < min(target_size[others])):
        lowres = float(np.percentile(spacing[:, worst], 10))
        target[worst] = lowres if lowres >= max(target[others]) else max(target[others]) + 1e-5
    return {"median_mm": [round(float(v), 6) for v in target], "cases": len(spacings)}


def write_bad_cases(out_dir: Path, record: dict | None) -> None:
    """``<out_dir>/bad_cases.json``: the cases the run skipped (``record`` from `load_cases`; None: none)."""
    if record is not None:
        atomic_write_json(out_dir / BAD_CASES, record)


def _cases_in_store(data: DataConfig, root: Path, layout: str) -> tuple[list, dict | None]:
    """The cases of ``data.store`` (checked when it was written), after making sure that it was
    written from this data root and that no file under it is new or changed since, and the record of
    the cases it skipped (None: none)."""
    store = open_store(data.store)
    if store.root is not None and Path(store.root).resolve() != root.resolve():  # one folder, however written
        raise StoreSettingsError(f"data.store={store.path} was written from data.root={store.root}, not {root}: "
                                 "write a store for this folder with asa-preprocess")
    cases, skipped = store.cases(discover(layout, root, on_bad_case="skip", validate="none"))
    if skipped and data.on_bad_case == "error":
        lines = "\n".join(f"  - {p['id']}: {p['reason']}" for p in skipped[:20])
        raise CaseError(f"{len(skipped)} bad case(s) in {root} (recorded in data.store={store.path}):\n{lines}\n"
                        "Nothing was trained. Fix them and rerun asa-preprocess, or set data.on_bad_case=skip")
    record = {"layout": layout, "root": str(root), "store": str(store.path), "kept": len(cases), "skipped": skipped}
    return cases, record if skipped else None


def _check_workers(data: DataConfig) -> int:
    return max(1, min(8, int(data.num_workers or 0) or (os.cpu_count() or 1)))


def split_cases(cases: list, data: DataConfig, out_dir: Path, env: DistEnv, *,
                by_subject: bool = False) -> dict[str, list]:
    """Train/val/test cases: those of ``<out_dir>/splits.json`` when it exists (a resumed run), else a
    new seeded split, computed on rank 0 and shared. Nothing is written here: `write_splits` records
    a new split once every check of the run has passed. ``by_subject``: the sessions of a subject
    stay in one part (`subject_groups`)."""
    ratios = None if data.split.ratios is None else list(data.split.ratios)
    path = out_dir / "splits.json"

    def call() -> dict[str, list[str]]:
        return make_splits([c.id for c in cases], dataset=data.name, seed=data.split.seed,
                           counts_or_ratios=ratios, path=path if path.is_file() else None,
                           groups=subject_groups(cases) if by_subject else None)

    ids = on_main_then_share(call, env)
    by_id = {c.id: c for c in cases}
    splits = {name: [by_id[i] for i in ids[name]] for name in ("train", "val", "test")}
    if not splits["train"]:
        raise OptionError(f"data={data.name}: the split left no training cases (data.split.ratios)")
    return splits


def write_splits(cases: list, data: DataConfig, out_dir: Path, env: DistEnv, *, by_subject: bool = False) -> None:
    """Rank 0 writes ``<out_dir>/splits.json`` for the split `split_cases` made (a kept file stays)."""
    path = out_dir / "splits.json"
    if env.is_main and not path.is_file():
        make_splits([c.id for c in cases], dataset=data.name, seed=data.split.seed,
                    counts_or_ratios=None if data.split.ratios is None else list(data.split.ratios), path=path,
                    groups=subject_groups(cases) if by_subject else None)
    barrier(env)


def cases_of_split(cases: Sequence, split_file: str | os.PathLike | None, subset: str, *, where: str) -> list:
    """The cases whose ids are in ``subset`` of a run's ``splits.json`` (all of them when ``split_file``
    is None); ``where`` names the cases' folder in the messages. Raises naming the file or the subset."""
    if split_file is None:
        return list(cases)
    path = Path(str(split_file)).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"split_file={path}: no such file (a run's splits.json)")
    try:
        splits = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"split_file={path}: not a splits.json ({err})") from err
    if not isinstance(splits, dict) or not isinstance(splits.get(subset), list):
        names = sorted(k for k, v in splits.items() if isinstance(v, list)) if isinstance(splits, dict) else []
        raise ValueError(f"split_file={path} has no subset {subset!r} (subsets: {', '.join(names) or 'none'})")
    wanted = set(splits[subset])
    chosen = [c for c in cases if c.id in wanted]
    if not chosen:
        raise ValueError(f"subset={subset}: none of the {len(wanted)} {subset} case(s) of {path} are in {where}")
    return chosen


def check_crop_fits(crop: int, cases: Sequence, *, option: str = "data.crop", store: str | os.PathLike | None = None,
                    hint: str = " (with a pretrained encoder, its crop size sets it)") -> None:
    """Refuse a crop larger than every case's volume along every axis: the network would see mostly
    padding, at a memory cost set by the crop (a 128³ SA-Swin crop on 64³ volumes ran out of memory).
    With ``store`` the volumes' preprocessed grids recorded in it are compared, else the files' own."""
    import nibabel as nib

    records = open_store(store).records if store is not None else {}
    largest, where = 0, None
    for case in cases:
        path = next(iter(case.images.values()))
        try:
            shape = tuple(records[case.id]["shape"]) if case.id in records else nib.load(str(path)).shape[:3]
        except Exception:  # unreadable files were refused by the case checks already
            continue
        if max(shape) > largest:
            largest, where = max(shape), (case.id, shape)
    if where is not None and crop > largest:
        raise OptionError(f"{option}={crop}: the crop is larger than every volume along every axis (the "
                          f"largest, {where[0]}, is {'×'.join(map(str, where[1]))}"
                          f"{' in ' + str(store) if case.id in records else ''}); set {option}={_fitting(largest)} "
                          f"or smaller{hint}")


def check_labels_present(cases: Sequence, *, where: str) -> None:
    """Refuse a labelled dataset whose every label map is empty (no voxel above 0): it would train to Dice 0
    without a word. The label files are read in order until the first that holds a voxel, so a dataset with
    labels costs one read; files that cannot be read here are left to the dataset's own checks."""
    import nibabel as nib
    import numpy as np

    read = []
    for case in cases:
        if case.label is None or not Path(case.label).is_file():
            continue
        try:
            if np.asanyarray(nib.load(str(case.label)).dataobj).any():
                return
        except Exception:  # unreadable files are refused by the case checks and the dataset
            continue
        read.append(case.label)
    if read:
        raise OptionError(f"{where}: every label map of the {len(read)} labelled case(s) is empty (no voxel above 0, "
                          f"e.g. {read[0]}): there is nothing to segment and training would end at Dice 0; "
                          "check the label files (or data.task, if these are not segmentation labels)")


def _fitting(largest: int) -> int:
    return max(16, largest - largest % 16)


def region_source(data: DataConfig, needed_by: list[str], *, network: str | None, env: DistEnv):
    """The `asa.data.RegionSource` of ``data.regions`` (None when no map is made); ``needed_by``
    names the options that need region maps (e.g. ``model.region_attention=alternate``), ``network``
    the one that feeds them into the network (a map made from the labels is then refused). Says at
    start-up (rank 0) which maps ``source: auto`` chose."""
    spec = dataclasses.asdict(data.regions)
    regions = RegionSource.from_config(spec, needed_by=needed_by, network=network)
    if regions is not None and str(spec.get("source") or "auto") == "auto" and env.is_main:
        print(f"[asa] data.regions.source=auto: {' and '.join(needed_by)} need(s) region maps; using "
              f"{regions.source} (k-means, data.regions.k={regions.k} tissue classes in the brain, "
              f"data.regions.seed={regions.seed}). Set data.regions.source=cluster or file to choose",
              file=sys.stderr, flush=True)
    return regions


def default_crop(data: DataConfig) -> int:
    """The fine-tuning crop edge when neither ``data.crop`` nor the pretrained file gives one:
    the demo phantoms' size (demo pretraining uses it too), else `asa.models.DEFAULT_CROP`
    (asa-pretrain's default ``data.crop``, the paper's pretraining crop)."""
    return data.demo.size if data.root is None and data.demo else DEFAULT_CROP


def on_main_then_share(fn: Callable[[], Any], env: DistEnv) -> Any:
    """``fn()`` on rank 0; its result (or its failure, re-raised as `SharedError`) reaches every rank."""
    if not env.distributed:
        return fn()
    if env.is_main:
        try:
            value = fn()
        except Exception as err:
            all_gather_objects(("error", describe_error(err)), env)
            raise
        all_gather_objects(("ok", value), env)
        return value
    status, value = all_gather_objects(None, env)[0]
    if status == "error":
        raise SharedError(f"rank 0 stopped: {value}")
    return value


class SharedError(RuntimeError):
    """Rank 0 failed a step whose result the other ranks wait for."""
