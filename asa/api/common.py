"""What the jobs share: the run set-up, data from a preset, splits, the optimiser and the engine settings."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from asa.api.rundir import RunDir, RunDirError, command_line, override, prepare_run_dir, shell_path
from asa.api.schema import DataConfig, FinetuneConfig, PretrainConfig
from asa.data import (CaseError, RegionSource, detect_layout, discover, ensure_demo_dataset, make_splits,
                      subject_groups)
from asa.data.datasets import CaseLoadError
from asa.data.store import StoreError, StoreSettingsError, open_store
from asa.io import CheckpointError, VolumeError, WriteError, atomic_write_json
from asa.models import DEFAULT_CROP, SYMMETRY_KEYS, network_spec
from asa.models.swvit.patch import to_3tuple
from asa.train import IncompatibleCheckpointError, TrainConfig, build_optimizer, cleanup_distributed, setup_distributed
from asa.train.distributed import DistEnv, all_gather_objects, barrier
from asa.train.optim import LOW_LR, describe_lr
from asa.train.preemption import mark_finished

__all__ = ["OptionError", "TrainingRun", "cases_of_split", "dataset_root", "load_cases", "on_main_then_share",
           "optimizer_and_config", "refusing", "region_source", "split_cases", "trainer_config", "describe_error",
           "write_splits", "check_crop_fits", "report_fine_tuning", "training_ended"]


class OptionError(ValueError):
    """A bad option or value, found before anything was written: the job is refused (exit 2)."""


def _is_refusal(err: BaseException) -> bool:
    """A bad value or missing input that is not yet reported as a refusal of its own kind."""
    if isinstance(err, (OptionError, RunDirError, CaseError, IncompatibleCheckpointError)):
        return False
    # a TypeError is a caller's mistake in Python (a config object of the wrong kind), not an option
    return isinstance(err, (ValueError, FileNotFoundError, NotADirectoryError, CheckpointError))


@contextlib.contextmanager
def refusing() -> Iterator[None]:
    """Checks that run before a job writes anything: a bad value (``ValueError``), a missing input
    (``FileNotFoundError``) or an unreadable checkpoint raised inside becomes an `OptionError` with
    the same one-line message, so the job ends as refused (exit 2), not failed."""
    try:
        yield
    except Exception as err:
        if not _is_refusal(err):
            raise
        raise OptionError(describe_error(err)) from err


def _refused_before_writing(err: BaseException) -> bool:
    """A refusal raised by a check that runs before a job writes (a store that cannot be used, bad cases,
    a bad value)."""
    return isinstance(err, (OptionError, RunDirError, CaseError, IncompatibleCheckpointError, StoreError)) or \
        _is_refusal(err)


class TrainingRun:
    """The set-up that pretraining and fine-tuning share: ``with TrainingRun(cfg, app) as run:`` joins
    the process group (``run.env``); ``run.prepare_dir(resolved)`` locks and checks ``cfg.output_dir``
    (``run.dir``). On leaving, the run folder's lock is released and the process group left, also
    when the job failed (then without the final barrier: the peers may be gone). A bad value raised
    before ``prepare_dir`` (nothing written yet) leaves as an `OptionError`: the run is refused."""

    def __init__(self, cfg: PretrainConfig | FinetuneConfig, app: str) -> None:
        self.cfg, self.app = cfg, app
        self.env = DistEnv()
        self.dir: RunDir | None = None

    def __enter__(self) -> "TrainingRun":
        self.env = setup_distributed(self.cfg.device)
        return self

    def prepare_dir(self, resolved: Mapping[str, Any]) -> RunDir:
        """Lock and check the run folder for the fully resolved run config (`prepare_run_dir`); resume
        compares its ``resume_must_match`` keys."""
        cfg = self.cfg
        self.dir = prepare_run_dir(cfg.output_dir, app=self.app, resume=cfg.resume, overwrite=cfg.overwrite,
                                   run_config=resolved, compat_keys=list(resolved.get("resume_must_match", cfg.resume_must_match)), env=self.env)
        return self.dir

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.dir is not None:  # a refusal after the folder was locked leaves no empty folder behind
            self.dir.release(refused=exc is not None and _refused_before_writing(exc))
        cleanup_distributed(finished=exc_type is None)
        if self.dir is None and exc is not None and _is_refusal(exc):
            # the run folder was never touched: a bad option or value refuses the run (exit 2)
            raise OptionError(describe_error(exc)) from exc


def dataset_root(data: DataConfig) -> tuple[Path, str]:
    """(folder, layout) of a data preset: ``data.root``, or the generated demo dataset when it is null."""
    if data.root is None:
        if data.demo is None:
            raise ValueError(f"data={data.name}: data.root is required (a {data.layout} folder)")
        demo = data.demo
        root = ensure_demo_dataset(demo.layout, cases=demo.cases, size=demo.size, seed=demo.seed,
                                   cache_dir=demo.cache_dir, targets=bool(demo.targets))
        return root, demo.layout
    root = Path(str(data.root)).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"data.root={root}: no such file or folder")
    return root, (detect_layout(root) if data.layout == "auto" else data.layout)


def load_cases(data: DataConfig, out_dir: Path | None, env: DistEnv) -> list:
    """The validated cases of a data preset, found once on rank 0 and shared with the other ranks.

    Every volume is read once in every run (in parallel) with the
    checks of `load_volume`; bad cases stop the run or are skipped per ``data.on_bad_case`` and then
    listed in ``<out_dir>/bad_cases.json``. With ``data.store`` nothing is read: the store's
    index holds the checks' outcome, and only the files' sizes and mtimes are compared with it.
    """
    def find() -> list:
        root, layout = dataset_root(data)
        if data.store is not None:
            return _cases_in_store(data, root, layout, out_dir)
        report = None if out_dir is None else out_dir / "bad_cases.json"
        skipped: list = []
        cases = discover(layout, root, on_bad_case=data.on_bad_case, option="data.on_bad_case",
                         report_path=report, workers=_check_workers(data),
                         skipped=skipped)
        if skipped:  # said on the console, not only in the report
            shown = "\n".join(f"  - {p.id}: {p.reason}" for p in skipped[:10])
            more = f"\n  ... and {len(skipped) - 10} more" if len(skipped) > 10 else ""
            print(f"[asa] warning: skipped {len(skipped)} of {len(skipped) + len(cases)} case(s) that cannot be used "
                  f"(data.on_bad_case=skip){f'; all listed in {report}' if report is not None else ''}:\n"
                  f"{shown}{more}\n  data.on_bad_case=error stops the run on any bad case instead",
                  file=sys.stderr, flush=True)
        return cases

    return on_main_then_share(find, env)


def _cases_in_store(data: DataConfig, root: Path, layout: str, out_dir: Path | None) -> list:
    """The cases of ``data.store`` (checked when it was written), after making sure that it was
    written from this data root and that no file under it is new or changed since."""
    store = open_store(data.store)
    if store.root is not None and Path(store.root).resolve() != root.resolve():  # one folder, however written
        raise StoreSettingsError(f"data.store={store.path} was written from data.root={store.root}, not {root}: "
                                 "write a store for this folder with asa-preprocess")
    cases, skipped = store.cases(discover(layout, root, on_bad_case="skip", validate="none"))
    if skipped and data.on_bad_case == "error":
        lines = "\n".join(f"  - {p['id']}: {p['reason']}" for p in skipped[:20])
        raise CaseError(f"{len(skipped)} bad case(s) in {root} (recorded in data.store={store.path}):\n{lines}\n"
                        "Nothing was trained. Fix them and rerun asa-preprocess, or set data.on_bad_case=skip")
    if skipped and out_dir is not None:
        atomic_write_json(out_dir / "bad_cases.json", {"layout": layout, "root": str(root), "store": str(store.path),
                                                       "kept": len(cases), "skipped": skipped})
    return cases


def _check_workers(data: DataConfig) -> int:
    return max(1, min(8, int(data.num_workers or 0) or (os.cpu_count() or 1)))


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


def optimizer_and_config(cfg: PretrainConfig | FinetuneConfig, model: torch.nn.Module,
                         env: DistEnv) -> tuple[torch.optim.Optimizer, float, TrainConfig]:
    """Optimiser (``cfg.optim``), its peak learning rate — scaled by the global batch
    (per-device batch × world size × accumulation) / 256 when ``optim.scale_lr`` — and the engine
    settings (``cfg.trainer``, whose schedule keys interpolate ``optim``).

    The peak lr is printed with the rule that produced it (rank 0), with a warning below 1e-5."""
    tr, opt = cfg.trainer, cfg.optim
    global_batch = tr.batch_size * env.world_size * tr.accum_steps
    lr, rule = describe_lr(opt.base_lr, global_batch, opt.scale_lr)
    if env.is_main:
        print(f"[asa] peak learning rate: {rule}", file=sys.stderr, flush=True)
        if lr < LOW_LR:
            print(f"[asa] warning: the peak learning rate {lr:.3g} is below {LOW_LR:g}: the run will barely learn. "
                  f"Raise optim.base_lr, or set optim.scale_lr=false to use optim.base_lr as given",
                  file=sys.stderr, flush=True)
    extra = {k: v for k, v in dataclasses.asdict(opt).items()
             if k in ("betas", "momentum", "nesterov", "encoder_lr_scale", "layer_decay", "freeze_encoder_epochs")
             and v is not None}
    if "betas" in extra:
        extra["betas"] = tuple(extra["betas"])
    if isinstance(cfg, FinetuneConfig):
        extra["encoder_lr_scale"] = encoder_lr_scale(cfg)
        if env.is_main and extra["encoder_lr_scale"] != 1.0:
            source = "pretrained" if cfg.model.pretrained else "from scratch"
            print(f"[asa] encoder learning rate: {lr:.3g} × {extra['encoder_lr_scale']:g} = "
                  f"{lr * extra['encoder_lr_scale']:.3g} (encoder {source}; the rest of the network at {lr:.3g})",
                  file=sys.stderr, flush=True)
    optimizer = build_optimizer(model, name=opt.name, lr=lr, weight_decay=opt.weight_decay, **extra)
    return optimizer, lr, trainer_config(cfg)


def encoder_lr_scale(cfg: FinetuneConfig) -> float:
    """The encoder's lr multiplier of a fine-tuning run: ``optim.encoder_lr_scale`` for an encoder
    initialised from ``model.pretrained``, else ``optim.scratch_encoder_lr_scale`` (null: the same)."""
    opt = cfg.optim
    if cfg.model.pretrained or opt.scratch_encoder_lr_scale is None:
        return opt.encoder_lr_scale
    return float(opt.scratch_encoder_lr_scale)


def trainer_config(cfg: PretrainConfig | FinetuneConfig) -> TrainConfig:
    """The engine settings: ``cfg.trainer`` plus the DataLoader workers of ``cfg.data`` and the
    schedule of ``cfg.optim`` (their keys and types were checked against the schema when composed)."""
    opt = cfg.optim
    return TrainConfig(**dataclasses.asdict(cfg.trainer), num_workers=cfg.data.num_workers,
                       schedule=opt.schedule, min_lr=opt.min_lr, power=opt.power,
                       warmup_fraction=opt.warmup_fraction)

def describe_error(err: BaseException) -> str:
    """One line naming the file and the fault: the innermost asa error of the chain, or the last line
    of a DataLoader worker's re-raised traceback, or ``Type: message``."""
    seen, e = [], err
    while e is not None and e not in seen:
        seen.append(e)
        e = e.__cause__ or e.__context__
    for kind in (CaseLoadError, VolumeError):
        for e in seen:
            if isinstance(e, kind) and "Original Traceback" not in str(e):
                return str(e)
    for e in seen:
        text = str(e)
        if "Original Traceback" in text:  # raised again in the main process by a DataLoader worker
            last = [ln for ln in text.strip().splitlines() if ln.strip()][-1]
            name, _, message = last.partition(": ")
            return message if name.split(".")[-1] in {"VolumeError", "CaseLoadError"} else last

    text = str(err).strip()
    if isinstance(err, WriteError):
        return err.strerror or text
    return text if isinstance(err, (ValueError, RuntimeError, FileNotFoundError, KeyError)) and text else \
        f"{type(err).__name__}: {text}"


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


def training_ended(result: Any, env: DistEnv, app: str, *, unsaved: str = "") -> bool:
    """After `Engine.fit`: True when training finished (a stop signal from here on no longer stops
    the job: nothing is left to save); when a stop signal ended it, rank 0 prints where it stopped
    and the resume command (``unsaved``: what the stopped run did not write) and this is False."""
    if not result.preempted:
        mark_finished()
        return True
    if env.is_main:
        what = signal.Signals(result.signal).name if result.signal else "a stop signal on another rank"
        print(f"[asa] stopped early at step {result.step} ({what}); last.pt saved{unsaved}. "
              f"Resume with: {command_line(app)} resume=true", file=sys.stderr, flush=True)
    return False


def report_fine_tuning(result: Any, out_dir: Path, best: str) -> None:
    """Rank 0's closing lines of a fine-tuning run: its checkpoints (``best``: what best.pt follows),
    TensorBoard and the asa-predict command for the checkpoint to use."""
    ckpts = out_dir / "checkpoints"
    if (ckpts / "best.pt").is_file():
        written, use = f"last.pt, best.pt ({best})", ckpts / "best.pt"
    else:
        written, use = "last.pt only (no validation cases, so no best.pt: last.pt is the final weights)", ckpts / "last.pt"
    print(f"[asa] fine-tuning finished at step {result.step}. Outputs in {out_dir}:\n"
          f"  checkpoints: {ckpts}/{written}\n"
          f"  TensorBoard: tensorboard --logdir {shell_path(out_dir / 'tb')}\n"
          f"  next: asa-predict {override('checkpoint', use)} input=DIR output=PRED", flush=True)


def default_crop(data: DataConfig) -> int:
    """The fine-tuning crop edge when neither ``data.crop`` nor the pretrained file gives one:
    the demo phantoms' size (demo pretraining uses it too), else `asa.models.DEFAULT_CROP`
    (asa-pretrain's default ``data.crop``, the paper's pretraining crop)."""
    return data.demo.size if data.root is None and data.demo else DEFAULT_CROP


def record_geometry(resolved: dict, model: torch.nn.Module) -> int:
    """Record in the run config ``resolved`` the geometry ``model`` was built with, read from its
    network spec (the settings left null follow the pretrained file, `asa.api.networks.pretrained_geometry`):
    the crop ``data.crop``, ``model.pos_mode`` / ``model.lr_axis`` where the network has them and
    an SW-ViT's ``segmenter.reference_grid``. Returns the crop edge."""
    spec = network_spec(model)
    if spec is None:
        raise TypeError(f"{type(model).__name__} records no network spec, so its geometry is unknown")
    kwargs = spec["kwargs"]
    crop = int(to_3tuple(kwargs["img_size"], "img_size")[0])
    resolved["data"]["crop"] = crop
    resolved["model"].update({key: kwargs[key] for key in SYMMETRY_KEYS if key in kwargs})
    if kwargs.get("reference_grid") is not None:
        resolved["segmenter"]["reference_grid"] = list(kwargs["reference_grid"])
    return crop
