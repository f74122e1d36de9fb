"""asa-study's runs, drafted pure (it starts nothing): scales, the network, every run and its overrides, the labeled
split."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

from asa.api.config import compose_config
from asa.api.machinery.cohort import ACCEPT_OPTION
from asa.data.layouts.pretrain import channel_of
from asa.data.splits import make_splits
from asa.io import atomic_write_json
from asa.models.family import Family, families
from asa.models.registry import keyword_options
from asa.study import transfer
from asa.study.arms import ARMS, CONTROL, COORD_SCRATCH, SCRATCH, labeled_name, run_name
from asa.study.cohort import CohortList, NoiseVolumes, StoreCohort, cohort_order
from asa.study.common import module_argv, refuse
from asa.study.scheduler import UNIT_GIB, Input

MASKING = ("mask_block=16", "densify=spark", "mirror_visible=null")  # model.<key> where the family takes it
RECIPES = {"adamw": "optim=adamw", "nnunet": "optim=nnunet"}


@dataclasses.dataclass(frozen=True)
class Scale:
    """How big the study is (every field an ``--<field>`` option of asa-study)."""

    crop: int
    pretrain_steps: int  # optimiser steps of every pretraining run
    pilot_steps: int  # the pilot's constant-lr steps
    cases: tuple[int, ...]  # labeled training cases N
    seeds: tuple[int, ...]
    test: int  # the fixed test cases
    val: int  # the fixed validation cases
    supervised: int  # labeled cases of the positive control, apart from all of those
    resenc: str  # the ResEnc size of --network resenc
    swvit: str  # the SW-ViT preset of --network swvit
    cohorts: tuple[int, ...] = ()  # pretraining subjects per cohort size (empty: the whole cohort)
    pretrain_crop: int | None = None  # the pretraining crop (None: crop; the coordinate channel's arm always at crop)
    jobs: int = 1  # units at once (0: as many as the machine holds, `units_at_once`)
    time_budget: float | None = None  # seconds per call (None: no limit)
    workers: int = 0  # loader workers of every run (pretraining, pilot, fine-tuning, the positive control)
    nproc: int = 1  # processes (GPUs) of each pretraining run, through torchrun; the global batch stays the recipe's
    folds: int = 3  # cross-validation of a labeled set too small for the fixed split (`labeled_split`): K folds ...
    repeats: int = 2  # ... × R repeats, every case scored R times
    min_scored: int = 16  # test cases per arm under which the study refuses (0: the quick scale, a plumbing check)
    pretrain_runs: int = 3  # pretraining runs per arm and cohort (the pretraining seed a level of the intervals)

    def check(self) -> None:
        """Refuse (exit 2, one line naming the option) a value out of range (`LEAST`), before anything is written."""
        for name, least in LEAST.items():
            value = getattr(self, name)
            values = value if isinstance(value, tuple) else () if value is None else (value,)
            if bad := [v for v in values if not (v > least if name == "time_budget" else v >= least)]:
                refuse(f"--{name.replace('_', '-')} {' '.join(map(str, bad))}: expected "
                       + ("seconds above 0" if name == "time_budget" else f"at least {least}")
                       + (" (0: as many units at once as the machine holds)" if name == "jobs" else ""))


# the least value of each numeric field of a `Scale` (every entry of a tuple); the time budget must exceed its 0
LEAST = {"crop": 8, "pretrain_steps": 1, "pilot_steps": 1, "cases": 1, "seeds": 0, "test": 0, "val": 0,
         "supervised": 1, "cohorts": 2, "pretrain_crop": 8, "jobs": 0, "time_budget": 0.0, "workers": 0, "nproc": 1,
         "folds": 2, "repeats": 1, "min_scored": 0, "pretrain_runs": 1}

SCALES = {
    # two CPU cores, one sitting: the pilot, then the pretraining runs (two per arm) two at a time, then every
    # fine-tuning run (each draw's positive control first) two at a time; a small labeled set by 3 folds × 1 repeat
    # (docs/studies.md: the cost table these were chosen from)
    "cpu": Scale(crop=32, pretrain_steps=800, pilot_steps=1200, cases=(8,), seeds=(0, 1, 2), test=16, val=4,
                 supervised=8, resenc="S", swvit="tiny", jobs=2, repeats=1),
    # one GPU, the planted bed's design in one window: units side by side (as many as the device's memory and the
    # host's cores hold), N = 2 by 4 folds × 2 repeats (8 draws, every case scored twice), 4 pretraining runs per arm
    # (docs/studies.md, "The whole study in one GPU window": its plan and its dry run)
    "gpu": Scale(crop=32, pretrain_steps=480, pilot_steps=1200, cases=(2,), seeds=(0, 1, 2, 3, 4), test=32, val=4,
                 supervised=4, resenc="S", swvit="tiny", jobs=0, time_budget=510.0, folds=4, repeats=2,
                 pretrain_runs=4),
    # the planted bed (asa-demo-data --placement planted: a cohort carrying the labeled set's lesions, unlabeled):
    # few labels, a budget one loaded 2-core sitting holds (docs/studies.md: "A planted self-supervised positive")
    "planted": Scale(crop=32, pretrain_steps=320, pilot_steps=240, cases=(2,), seeds=(0, 1), test=16, val=4,
                     supervised=4, resenc="S", swvit="tiny", jobs=2),
    # the plumbing check: a few steps per run; a set smaller than 16 test + the rest cross-validated, as at every scale
    "quick": Scale(crop=32, pretrain_steps=4, pilot_steps=12, cases=(2,), seeds=(0, 1), test=16, val=2, supervised=2,
                   resenc="tiny", swvit="tiny", folds=2, repeats=1, min_scored=0, pretrain_runs=2),
}


def units_at_once(threads: int | None, workers: int, memory_gib: float | None, cores: int) -> int:
    """Units sharing the machine: a core per torch thread and loader worker, and on a GPU `UNIT_GIB` each (a fused
    unit takes more: `asa.study.scheduler.run_units` starts units only while their memory fits too)."""
    by_cores = cores // ((threads or 1) + workers)
    return max(1, min(by_cores, int(memory_gib // UNIT_GIB)) if memory_gib else by_cores)


# what a rerun into the same --out may add to (more units, the finished ones kept)
GROWS = ("arms", "encoders", "scale.cohorts", "scale.cases", "scale.seeds", "scale.repeats")


@dataclasses.dataclass(frozen=True)
class Pretraining:
    """One pretraining run: ``<arm>-c<subjects>``, the cohort it reads, its folder and its overrides (its folder
    among them, as ``output_dir``)."""

    name: str
    arm: str
    cohort: int
    overrides: tuple[str, ...]
    run_dir: Path
    coord: bool = False
    replicate: int = 0  # the pretraining seed's offset: run k of its arm is <arm>-c<n>-p<k> (k = 0: <arm>-c<n>)
    stored: bool = False  # reads its cohort from a store of asa-preprocess (its cases: its splits.json)
    inputs: tuple[Input, ...] = ()  # what its unit writes as it starts: its file list or noise, a store's splits.json

    @property
    def encoder(self) -> Path:
        return self.run_dir / "checkpoints" / "encoder.pt"


@dataclasses.dataclass(frozen=True)
class Network:
    """The network every arm shares: a family with a masked twin and a segmenter and its size (None: it has none)."""

    family: str
    size: Optional[str]

    @property
    def declared(self) -> Family:
        return families()[self.family]

    @property
    def by_preset(self) -> bool:
        """Whether its sizes are ``model`` presets with no arch (the SW-ViT's, pretrained by ``experiment`` presets)."""
        return "arch" not in self.declared.options()

    @property
    def model(self) -> str:
        """The fine-tuning ``model`` preset: the SW-ViT's size, else the family's segmenter."""
        return str(self.size) if self.by_preset else str(self.declared.segmenter)

    @property
    def finetune(self) -> list[str]:
        return [f"model={self.model}", *([f"model.size={self.size}"] if self.size and not self.by_preset else [])]

    def missing(self, arm: str) -> list[str]:
        """What the pretraining arm ``arm`` needs that the family's masked twin does not take."""
        if self.by_preset or not (arm in ARMS and ARMS[arm].pretrained):
            return []
        spec, taken = ARMS[arm], keyword_options(str(self.declared.masked))
        needs = ["loss_weighting"] if spec.loss_weighting != "uniform" else []
        return [k for k in (*needs, *(["coord_channel"] if spec.coord else [])) if k not in taken]

    def pretrain(self, arm: str) -> list[str]:
        """The arm's asa-pretrain overrides on this network, its own (`Arm.overrides`) last."""
        spec = ARMS[arm]
        if self.by_preset:  # the paper's preset of the arm, or of its method (the noise control: mae's)
            return [f"experiment={arm if spec.paper else spec.method}", f"model={self.size}", *spec.overrides]
        section = self.declared.options()
        stated = {"weight_power": spec.power, "weight_patch": spec.patch, **dict(m.split("=") for m in MASKING),
                  "coord_channel": str(spec.coord).lower()}
        return [f"model={self.family}", *([f"model.size={self.size}"] if self.size else []), f"method={spec.method}",
                f"method.loss_weighting={spec.loss_weighting}",
                *(f"model.{k}={v}" for k, v in stated.items() if k in section), *spec.overrides]  # the section's own

    @property
    def name(self) -> str:
        return f"{self.family}-{self.size}" if self.size else self.family


def parse_network(text: str, scale: Scale) -> Network:
    """``<family>`` (at the scale's size of it) or ``<family>-<size>``, for every family `studied_networks` lists."""
    family, _, size = text.partition("-")
    sizes = studied_networks()
    if family not in sizes or (size and size not in sizes[family]):
        refuse(f"--network {text}: expected a network family with a masked twin, optionally with a size: "
               + "; ".join(f"{f}-{'|'.join(s)}" if s else f for f, s in sizes.items()))
    return Network(family, size or getattr(scale, family, None))


def studied_networks() -> dict[str, tuple[str, ...]]:
    """Every family a study can run (a masked twin and a segmentation network) -> its sizes."""
    return {name: tuple(f.presets) for name, f in families().items() if f.masked and f.segmenter}


def epochs_for(steps: int, cases: int, batch: int) -> int:
    """Epochs giving about ``steps`` optimiser steps over ``cases`` training cases in batches of ``batch``."""
    return max(1, round(steps / max(1, cases // batch)))


def plan_pretraining(out: Path, scale: Scale, network: Network, arms: Sequence[str],
                     cohorts: Mapping[int, CohortList | None], noise: NoiseVolumes | None, *, seed: int,
                     channels: Sequence[str] = ("t1",), store: StoreCohort | None = None) -> list[Pretraining]:
    """Each arm per cohort size (its file list; None: read from ``store``) and the negative control, on ``noise``,
    ``scale.pretrain_runs`` times (run k seeded ``seed`` + k)."""
    batch = int(compose_config("pretrain", [*network.pretrain("mae"), "data=bids", "data.layout=filelist",
                                            f"data.crop={scale.crop}"]).trainer.batch_size)
    if scale.nproc < 1 or batch % scale.nproc:
        refuse(f"--nproc {scale.nproc}: the pretraining's global batch is {batch}; take a number of processes that "
               "divides it (each process takes an equal share, so the recipe stays the one-process run's)")
    per_rank = [f"trainer.batch_size={batch // scale.nproc}"] if scale.nproc > 1 else []
    # the store's resampling, for every run (the noise volumes sit on the resampled grid too)
    resampling = [] if store is None or store.resample_mm is None else [f"data.resample_mm={store.resample_mm}"]
    read = [] if list(channels) == ["t1"] else [f"data.channels=[{','.join(channels)}]"]  # the T1 alone: every preset's
    units = [(arm, n, cohort) for n, cohort in cohorts.items() for arm in arms if ARMS[arm].pretrained
             and not ARMS[arm].noise] + ([(CONTROL, max(cohorts), noise)] if noise is not None else [])

    def planned(arm: str, n: int, data: CohortList | NoiseVolumes | None, k: int) -> Pretraining:
        spec, run_dir = ARMS[arm], out / "pretrain" / run_name(arm, n, k)
        crop = scale.crop if spec.coord else (scale.pretrain_crop or scale.crop)  # the channel ties it to the crop
        if data is None:  # the store's cases (the noise control reads its own volumes' file list)
            layout, source, inputs = store.layout, store.data(), ()
        else:
            layout, source, inputs = "filelist", [f"data.root={data.folder}"], (data,)
        overrides = (*network.pretrain(arm), "data=bids", f"data.layout={layout}", *read,
                     f"data.num_workers={scale.workers}", "data.split.ratios=[0.8,0.2,0.0]", "optim=adamw_demo",
                     "trainer.progress=false", "trainer.panel_every=0", "probe.every=0", "trainer.val_min_steps=0",
                     f"seed={seed + k}", "resume=auto", f"data.crop={crop}", *source, *resampling,
                     f"trainer.epochs={epochs_for(scale.pretrain_steps, int(0.8 * n), batch)}", *per_rank,
                     f"output_dir={run_dir}")
        return Pretraining(run_dir.name, arm, n, overrides, run_dir, coord=spec.coord, replicate=k,
                           stored=data is None, inputs=inputs)
    return [planned(arm, n, data, k) for arm, n, data in units for k in range(scale.pretrain_runs)]


def pretraining_argv(nproc: int, *overrides: str) -> tuple[str, ...]:
    """asa-pretrain, or with ``nproc`` > 1 asa-torchrun (its exit code the job's: 143 after a stop, not a failure)."""
    torchrun = () if nproc == 1 else ("asa.cli.launch", "--standalone", f"--nproc_per_node={nproc}", "-m")
    return module_argv(*torchrun, "asa.cli.pretrain", *overrides)


@dataclasses.dataclass(frozen=True)
class StoreSplits:
    """A store-reading pretraining run's splits.json: its split of its ``subjects``, the store's ``others`` as its test
    part (named, never read); an input of its unit, written as it starts where it is missing."""

    path: Path
    overrides: tuple[str, ...]  # the run's (its data.split)
    subjects: tuple[str, ...]  # its cohort, in `cohort_order`
    others: tuple[str, ...]

    def write(self) -> None:
        if self.path.is_file():
            return
        data = compose_config("pretrain", list(self.overrides)).data
        shares, split_seed = list(data.split.ratios), int(data.split.seed)
        parts = make_splits(list(self.subjects), dataset=str(data.name), seed=split_seed, counts_or_ratios=shares)
        atomic_write_json(self.path, {
            "train": parts["train"], "val": parts["val"], "test": sorted([*parts["test"], *self.others]),
            "dataset": str(data.name), "seed": split_seed, "shares": shares})


def with_store_splits(runs: Sequence[Pretraining], ids: Sequence[str], seed: int) -> list[Pretraining]:
    """``runs``, each store-reading one with its `StoreSplits` among its inputs (its subjects: the first of the store's
    cases ``ids`` in `cohort_order`)."""
    order, planned = cohort_order(ids, seed), []
    for run in runs:
        if run.stored:
            subjects = order[:run.cohort]
            split = StoreSplits(run.run_dir / "splits.json", run.overrides, tuple(subjects),
                                tuple(sorted(set(ids) - set(subjects))))
            run = dataclasses.replace(run, inputs=(*run.inputs, split))
        planned.append(run)
    return planned


@dataclasses.dataclass(frozen=True)
class Labeled:
    """A labeled arm's run: asa-finetune trains its encoder with labels on ``cases``, which no run of its draw
    scores (cross-validated ``draw``; None: the one run of a fixed split, for every seed), with its ``overrides``
    (its folder among them, as ``output_dir``) and ``splits`` (its splits.json)."""

    name: str
    arm: str
    cases: tuple[str, ...]
    overrides: tuple[str, ...]
    run_dir: Path
    splits: Mapping[str, Any]
    draw: int | None = None

    @property
    def encoder(self) -> Path:
        """What its fine-tuning runs start from: its last checkpoint (the whole network; its encoder is loaded)."""
        return self.run_dir / "checkpoints" / "last.pt"


def supervised_channel(fine: Sequence[str], pretrain: Sequence[str] | None) -> str | None:
    """The t1 of ``fine`` the labeled arms train on alone when pretraining reads the T1 alone (one stem path)."""
    t1 = [name for name in fine if channel_of(name) == "t1"]
    return t1[0] if pretrain is not None and list(pretrain) == ["t1"] and len(fine) > 1 and len(t1) == 1 else None


def plan_labeled(out: Path, arm: str, split: FixedSplit | CrossValidated, network: Network, scale: Scale, *,
                 data: str, root: Path, seed: int, finetune: Sequence[str] = (),
                 channel: str | None = None) -> list[Labeled]:
    """The labeled arm ``arm``'s runs in ``<out>/pretrain``: one on the cases a fixed split holds apart, or one per
    cross-validated draw on its training part; each trains on all its cases for about the pilot's steps, with the
    study's fine-tuning overrides ``finetune`` and then the arm's own (`Arm.overrides`), on ``channel`` alone where
    one is given (`supervised_channel`)."""
    batch = int(compose_config("finetune", [f"data={data}", *network.finetune]).trainer.batch_size)
    runs = []
    for draw, cases in split.labeled_cases().items():
        name = labeled_name(arm, draw)
        run_dir = out / "pretrain" / name
        overrides = (f"data={data}", f"data.root={root}", *([f"data.channels=[{channel}]"] if channel else []),
                     *network.finetune, f"data.crop={scale.crop}", f"data.num_workers={scale.workers}",
                     f"trainer.epochs={epochs_for(scale.pilot_steps, len(cases), batch)}", "trainer.progress=false",
                     "trainer.panel_every=0", f"seed={seed}", "resume=auto", *finetune, *ARMS[arm].overrides,
                     f"output_dir={run_dir}")
        # its cases train; every other labeled case is its test part
        others = sorted({*split.test, *split.val, *split.pool, *split.supervised} - set(cases))
        splits = {"train": list(cases), "val": [], "test": others, "dataset": data, "seed": seed}
        runs.append(Labeled(name, arm, cases, overrides, run_dir, splits, draw))
    return runs


@dataclasses.dataclass(frozen=True)
class ArmRuns:
    """Every run the arms add before the transfer stage: the pretraining runs (the negative control's among them)
    and the labeled arms' runs."""

    pretraining: tuple[Pretraining, ...]
    labeled: tuple[Labeled, ...]


def plan_arms(out: Path, scale: Scale, network: Network, arms: Sequence[str], split: FixedSplit | CrossValidated,
              cohorts: Mapping[int, CohortList | None], noise: NoiseVolumes | None, *, data: str, root: Path,
              seed: int, finetune: Sequence[str] = (), channel: str | None = None, channels: Sequence[str] = ("t1",),
              store: StoreCohort | None = None) -> ArmRuns:
    """Every run of the arms ``arms`` (in the order named): a pretrained arm's at each cohort size and replicate and
    the negative control's (`plan_pretraining`), a labeled arm's (`plan_labeled`), each named after its arm."""
    pretraining = plan_pretraining(out, scale, network, [a for a in arms if ARMS[a].pretrained], cohorts, noise,
                                   seed=seed, channels=channels, store=store)
    labeled = [run for a in arms if ARMS[a].labels
               for run in plan_labeled(out, a, split, network, scale, data=data, root=root, seed=seed,
                                       finetune=finetune, channel=channel)]
    return ArmRuns(tuple(pretraining), tuple(labeled))


def finetune_arms(runs: Sequence[Pretraining], network: Network, labeled: Sequence[Labeled],
                  encoders: Mapping[str, str]) -> dict[str, transfer.Tuned]:
    """`transfer.Transfer.arms`: the scratch twins, each labeled arm (its run per draw, or one for every draw), every
    pretrained encoder and --encoder; a declared arm's fine-tuning overrides (`Arm.finetune`) after the study's."""
    base, coord = tuple(network.finetune), "model.coord_channel=true"
    arms = {SCRATCH: transfer.Tuned((*base, *ARMS[SCRATCH].finetune))}
    if any(run.coord for run in runs):
        arms[COORD_SCRATCH] = transfer.Tuned((*base, coord, *ARMS[COORD_SCRATCH].finetune), COORD_SCRATCH)
    for arm in dict.fromkeys(run.arm for run in labeled):
        arms[arm] = transfer.Tuned((*base, *ARMS[arm].finetune), arm, labeled=tuple(
            (run.encoder, run.cases) for run in labeled if run.arm == arm))
    for run in runs:
        arms[run.name] = transfer.Tuned((*base, f"model.pretrained={run.encoder}", *([coord] if run.coord else []),
                                         *ARMS[run.arm].finetune), run.arm, run.cohort, run.replicate)
    return arms | {name: transfer.Tuned((*base, f"model.pretrained={path}"), name) for name, path in encoders.items()}


@dataclasses.dataclass(frozen=True)
class FixedSplit:
    """A labeled set that holds a fixed split: the test and validation cases of every run, the training pool each
    seed draws its N from, and the positive control's cases apart from all of those."""

    test: tuple[str, ...]
    val: tuple[str, ...]
    pool: tuple[str, ...]
    supervised: tuple[str, ...]
    folds = 0  # not cross-validated (as design.json says it)
    repeats = 0

    def seeds(self, scale: Scale) -> tuple[int, ...]:
        """The fine-tuning seeds: the scale's, each a draw of N from the pool."""
        return tuple(scale.seeds)

    def registered_seeds(self, scale: Scale) -> tuple[int, ...]:
        """The seeds design.json registers."""
        return tuple(scale.seeds)

    def seeds_text(self, scale: Scale) -> str:
        return f"seeds {list(self.seeds(scale))}"

    def report_design(self) -> dict[str, int] | None:
        """The report's design line: none for a fixed split."""
        return None

    def design_line(self, labeled: int, scale: Scale, control: bool) -> str | None:
        """The checks' line on the split: none for a fixed split."""
        return None

    def labeled_cases(self) -> dict[int | None, tuple[str, ...]]:
        """The cases of a labeled arm's run: one run, for every draw, on the cases held out of the training pool."""
        return {None: self.supervised}

    def control_line(self, channel: str | None, k: int) -> str:
        """The checks' line on the positive control (``k``: the fine-tuning channels)."""
        stem = "."
        if channel:
            stem = (f", on their {channel} alone (data.channels=[{channel}]), as the pretraining runs read the T1: its "
                    f"1-channel encoder enters the {k}-channel fine-tuning through the pretrained arms' adapted stem "
                    f"(its kernel copied to each channel and divided by {k}), so that it controls their path.")
        return (f"The positive control trains on {len(self.supervised)} labeled cases no other run sees (held out of "
                f"the training pool){stem}")

    def record(self) -> dict[str, Any]:
        """As checks.json keeps it."""
        return {"test": list(self.test), "val": list(self.val), "pool": list(self.pool),
                "supervised": list(self.supervised)}


@dataclasses.dataclass(frozen=True)
class CrossValidated:
    """A labeled set too small for a fixed split: ``folds`` × ``repeats`` draws (`asa.study.transfer.cv_draws`), each
    scoring its fold, so that every case is scored once per repeat by runs that did not see it."""

    test: tuple[str, ...]  # every labeled case
    folds: int
    repeats: int
    draws: tuple[transfer.Draw, ...]
    val = ()  # no case is kept apart from the draws
    pool = ()
    supervised = ()

    def seeds(self, scale: Scale) -> tuple[int, ...]:
        """The fine-tuning seeds: one per draw."""
        return tuple(range(len(self.draws)))

    def registered_seeds(self, scale: Scale) -> tuple[int, ...]:
        """The seeds design.json registers: none (the folds and repeats are the draws)."""
        return ()

    def seeds_text(self, scale: Scale) -> str:
        return f"{len(self.draws)} cross-validation draws"

    def report_design(self) -> dict[str, int] | None:
        """The report's design line: folds, repeats, draws and the cases scored."""
        return {"folds": self.folds, "repeats": self.repeats, "draws": len(self.draws), "cases": len(self.test)}

    def design_line(self, labeled: int, scale: Scale, control: bool) -> str | None:
        """The checks' line on the split: why it is cross-validated and what each draw reads (``labeled``: the
        labeled cases; ``control``: whether the positive control needs cases of its own)."""
        needs = f"{scale.test} test + {scale.val} validation + N {max(scale.cases)}"
        if control:
            needs += f" + the positive control's {scale.supervised}"
        return (f"Cross-validation: the {labeled} labeled cases are fewer than a fixed split needs ({needs}), so each "
                f"case is scored by models that did not see it: {self.folds} folds × {self.repeats} repeat(s), "
                f"{len(self.draws)} distinct labeled draws per arm (each fold's test cases scored by a run whose N "
                f"cases and {scale.val} validation cases were drawn from the other folds), every case scored once "
                "per repeat.")

    def labeled_cases(self) -> dict[int | None, tuple[str, ...]]:
        """The cases of a labeled arm's runs: one run per draw, on its pool, so that it consumes none of the scored
        cases."""
        return {g: tuple(sorted(d.pool)) for g, d in enumerate(self.draws)}

    def control_line(self, channel: str | None, k: int) -> str:
        """The checks' line on the positive control."""
        pools = [len(cases) for cases in self.labeled_cases().values()]
        alone = ""
        if channel:
            alone = f", on their {channel} alone (data.channels=[{channel}])"
        return (f"The positive control is nested in each of the {len(pools)} draws: an encoder trained with labels "
                "on that draw's training part (its pool, " + "–".join(map(str, sorted({min(pools), max(pools)})))
                + f" cases), never on the fold it is scored on, so it consumes none of the scored cases{alone}.")

    def record(self) -> dict[str, Any]:
        """As checks.json keeps it."""
        return {"test": list(self.test), "val": [], "pool": [], "supervised": [], "folds": self.folds,
                "repeats": self.repeats, "draws": [dataclasses.asdict(d) for d in self.draws]}


def labeled_split(cases: Sequence, scale: Scale, seed: int, *, control: bool = True) -> FixedSplit | CrossValidated:
    """The split of the labeled pool: test, validation, pool and the control's cases if it holds them, else ``folds`` ×
    ``repeats`` cross-validation; refused (exit 2) under ``min_scored`` cases scored, or a fold's part under val + N."""
    ids = [c.id for c in cases]
    if len(ids) >= scale.test + scale.val + max(scale.cases) + (scale.supervised if control else 0):
        if scale.test < scale.min_scored:
            refuse(f"--test {scale.test}: fewer than the {scale.min_scored} test cases a study reads an answer from (a "
                   "labeled set too small for a fixed split is cross-validated: every case scored)")
        test, pool = transfer.split_cases(ids, test=scale.test, seed=seed)
        val, pool = sorted(pool[:scale.val]), pool[scale.val:]
        held = []
        if control:  # the pool holds them: the test above
            held = sorted(pool[len(pool) - scale.supervised:])
        return FixedSplit(tuple(test), tuple(val), tuple(sorted(set(pool) - set(held))), tuple(held))
    if len(ids) < scale.min_scored:
        refuse(f"--root: {cases_text(len(ids))}: cross-validation would score {len(ids)} per arm, fewer than the "
               f"{scale.min_scored} a study reads an answer from")
    least = len(ids) - math.ceil(len(ids) / scale.folds)
    if least < scale.val + max(scale.cases):
        refuse(f"--root: {cases_text(len(ids))}: a training part of {scale.folds}-fold cross-validation holds "
               f"{least}, fewer than --val {scale.val} + the largest of --cases {max(scale.cases)}")
    draws = transfer.cv_draws(ids, folds=scale.folds, repeats=scale.repeats, val=scale.val, seed=seed)
    return CrossValidated(tuple(sorted(ids)), scale.folds, scale.repeats, tuple(draws))


def cases_text(n: int) -> str:
    """"1 labeled case", "3 labeled cases"."""
    return f"{n} labeled case" + ("" if n == 1 else "s")


def recipe_overrides(recipe: str, encoder_lr_scale: float) -> list[str]:
    """``optim=<recipe>``; for adamw one encoder lr scale for every arm (the preset keeps its own for scratch)."""
    scales = [f"optim.encoder_lr_scale={encoder_lr_scale}", f"optim.scratch_encoder_lr_scale={encoder_lr_scale}"]
    return [RECIPES[recipe], *(scales if recipe == "adamw" else [])]


def overlap_overrides(overlap: Mapping[str, Any]) -> list[str]:
    """An accepted overlap, for every run (each checks the cases it does not train on, and would refuse them)."""
    return [f"{ACCEPT_OPTION}=true"] if overlap.get("accepted") else []


