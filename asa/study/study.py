"""asa-study: does pretraining help on my data? One resumable command over your own pretraining cohort and
labeled set: the pilot that sets the fine-tuning budget, the pretraining arms, a negative and a positive control,
fine-tuning of every arm beside its scratch twin over N labeled cases × seeds, and a report with plots.

Stages (rerun the same command to continue; every finished unit is kept; a rerun may also add arms, seeds,
budget points, and cohorts and N below the largest: the new units run, the finished ones are read as they are):

0. checks, before anything trains: the study's fixed test and validation cases against the pretraining cohort
   (a BIDS or CAPS folder, a file list, or a store written by asa-preprocess; same id, subject or image content:
   refused, exit 2, unless --accept-overlap); which channels each arm pretrains and fine-tunes on (the
   fine-tuning channels, in their order, when every cohort case has them; else the T1, through an adapted stem:
   --pretrain-channels) and how a pretrained stem meets the fine-tuning channels (the positive control then
   trains on the T1 alone and takes the same adapted stem); whether the labeled pool
   holds the positive control's cases beside the study's (else the control is left out, and the report says so).
1. the pilot: the scratch twin at the largest N, the recipe's warm-up then a constant lr; the fine-tuning budget is
   the step at which its validation Dice stops rising (a --budget-cap below it is said in the report);
   pretraining: ``asa-pretrain`` per arm (``mae``, ``asa``, ``asa-coord``) and cohort size, each arm's options all
   stated; the negative control (``noise``: mae's recipe on pure-noise volumes on the cohort's grid); the positive
   control (``supervised``: the same network trained with labels on labeled cases no study run sees).
2. transfer: every arm fine-tuned for the budget at each N and seed with the same recipe and encoder lr, scored on
   the fixed test cases (Dice, NSD, HD95), paired differences to the scratch twin with seed × case bootstrap CIs.
3. report: ``<out>/report/README.md`` (with SVG plots) and ``report.json``: the checks, the pilot's curve, each
   pretraining run's held-out masked loss with a plateau check, Dice against N per arm, per-class differences, the
   attentive weights' spread, each control's verdict, each contrast's CI, the cost per arm, one line per question.

Scales: ``--scale cpu`` (ResEnc S, 32³ crops, N = 8 × 3 seeds: one sitting on two CPU cores), ``--scale gpu``
(ResEnc M, 96³ crops; each call stops within ``--time-budget``, 510 s by default, and the next call continues),
``--scale quick`` (a plumbing check: a few steps per run, minutes; its report reads no answer).
SIGTERM or SIGINT stops every child (each saves what it can), then the study exits 143 or 130; a refusal exits 2.

Example::

    asa-demo-data --layout bids --out cohort --cases 40 --size 48
    asa-demo-data --layout msd --out labeled --cases 32 --size 48
    asa-study --pretrain-data cohort --data msd --root labeled --out study --scale quick
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np

from asa.api.config import compose_config
from asa.api.machinery.cohort import ACCEPT_OPTION, encoder_cohort
from asa.api.machinery.dataset import load_cases
from asa.data import discover, get_task, load_volume
from asa.data.case import Case
from asa.data.cohort import cohort_overlap, cohort_record, describe_overlap, image_signatures
from asa.data.fingerprint import FINGERPRINT
from asa.data.layouts.pretrain import CHANNELS, channel_of
from asa.data.masked_copies import describe_masked, masked_copies
from asa.data.preprocessing import PretrainPreprocess
from asa.data.splits import make_splits
from asa.data.store import INDEX, SETTINGS, StoreError, open_store, store_settings
from asa.io import atomic_write_json, atomic_write_text, load_checkpoint
from asa.models.family import Family, families
from asa.models.registry import keyword_options
from asa.study import report, transfer
from asa.study.common import (REFUSED, Clock, add_scale_options, child_env, finished, machine, module_argv, refuse,
                              record_settings, scale_from_args)
from asa.study.noise import write_noise_dataset
from asa.train.distributed import DistEnv
from asa.train.schedule import lr_at

# the pretraining arms of the CNN: method and every ASA option stated (loss weighting and its exponent, the coordinate
# channel), so that a changed default changes no arm; the masking is `MASKING` for every arm
ARMS: dict[str, dict[str, Any]] = {
    "mae": {"method": "mae", "loss_weighting": "uniform", "power": 1.0, "coord": False},
    "asa": {"method": "asa", "loss_weighting": "attentive", "power": 1.0, "coord": False},
    "asa-coord": {"method": "asa", "loss_weighting": "attentive", "power": 1.0, "coord": True},
}
SWVIT_ARMS = ("mae", "asa")  # the SW-ViT's: the paper's Table 4 rows (configs/pretrain/experiment)
CONTROL, SUPERVISED = "noise", "supervised"  # the negative and the positive control
CHOICES = (*ARMS, CONTROL, SUPERVISED)
MASK_BLOCK = 16
MASKING = (f"model.mask_block={MASK_BLOCK}", "model.densify=spark", "model.weight_patch=8", "model.mirror_visible=null")
SCRATCH, COORD_SCRATCH = "scratch", "scratch-coord"  # the scratch twin; with the coordinate channel (asa-coord's twin)
PILOT = "pilot"
RECIPES = {"adamw": "optim=adamw", "nnunet": "optim=nnunet"}
# relative drop (and rise from the best) of the held-out masked loss over the last quarter of the optimiser's progress
# below which a pretraining run has levelled: a held-out loss on fixed volumes is not noisy, and 5 % let through a
# curve still falling
PLATEAU_TOL = 0.02


@dataclasses.dataclass
class Scale:
    """How big the study is. ``cohorts``: pretraining subjects per cohort size (empty: the whole cohort);
    ``pretrain_steps``: optimiser steps of every pretraining run; ``pilot_steps``: the pilot's constant-lr steps;
    ``cases``: labeled training cases N; ``test`` / ``val``: the fixed test and validation cases; ``supervised``:
    labeled cases of the positive control, apart from all of those."""

    crop: int
    pretrain_steps: int
    pilot_steps: int
    cases: tuple[int, ...]
    seeds: tuple[int, ...]
    test: int
    val: int
    supervised: int
    resenc: str  # the ResEnc size of --network resenc
    swvit: str  # the SW-ViT preset of --network swvit
    cohorts: tuple[int, ...] = ()
    pretrain_crop: int | None = None  # the pretraining crop (None: crop; the coordinate channel's arm always at crop)
    jobs: int = 1
    time_budget: float | None = None  # seconds per call (None: no limit)
    workers: int = 0  # loader workers of every run (pretraining, pilot, fine-tuning, the positive control)
    nproc: int = 1  # processes (GPUs) of each pretraining run, through torchrun; the global batch stays the recipe's


SCALES = {
    # two CPU cores, one sitting: the pilot and the positive control side by side, then the pretraining runs two at a
    # time, then every fine-tuning run two at a time (docs/studies.md: the cost table these were chosen from)
    "cpu": Scale(crop=32, pretrain_steps=800, pilot_steps=1200, cases=(8,), seeds=(0, 1, 2), test=16, val=4,
                 supervised=8, resenc="S", swvit="tiny", jobs=2),
    "gpu": Scale(crop=96, pretrain_steps=4000, pilot_steps=4000, cases=(2, 8), seeds=(0, 1, 2, 3, 4), test=16, val=4,
                 supervised=16, resenc="M", swvit="small", jobs=3, time_budget=510.0, workers=8),
    "quick": Scale(crop=32, pretrain_steps=4, pilot_steps=12, cases=(2,), seeds=(0, 1), test=3, val=2, supervised=2,
                   resenc="tiny", swvit="tiny"),
}
# what a rerun into the same --out may add to (more units, the finished ones kept)
GROWS = ("arms", "encoders", "scale.cohorts", "scale.cases", "scale.seeds")


# ------------------------------------------------------------------------------------------------- plan
@dataclasses.dataclass(frozen=True)
class Pretraining:
    """One pretraining run: ``<arm>-c<subjects>``, the cohort it reads and its overrides."""

    name: str
    arm: str
    cohort: int
    overrides: tuple[str, ...]
    coord: bool = False

    @property
    def run_dir(self) -> Path:
        return Path(next(o.split("=", 1)[1] for o in self.overrides if o.startswith("output_dir=")))

    @property
    def encoder(self) -> Path:
        return self.run_dir / "checkpoints" / "encoder.pt"


@dataclasses.dataclass(frozen=True)
class Network:
    """The network every arm shares: a network family with a masked twin and a segmentation network
    (`asa.models.family`: ``resenc``, ``swvit``, a plug-in's) and one of its sizes (None: it declares none)."""

    family: str
    size: Optional[str]

    @property
    def declared(self) -> Family:
        return families()[self.family]

    @property
    def by_preset(self) -> bool:
        """Whether the family's sizes are ``model`` presets whose pretraining section names no arch (the SW-ViT's
        ``model=tiny|small|base``, pretrained through the paper's ``experiment`` presets), not ``model.size``."""
        return "arch" not in self.declared.options()

    @property
    def finetune(self) -> list[str]:
        if self.by_preset:
            return [f"model={self.size}"]
        return [f"model={self.declared.segmenter}", *([f"model.size={self.size}"] if self.size else [])]

    def missing(self, arm: str) -> list[str]:
        """What the pretraining arm ``arm`` needs that the family's masked twin does not take (none: it can run)."""
        if self.by_preset or arm not in ARMS:
            return []
        spec, taken = ARMS[arm], keyword_options(str(self.declared.masked))
        needs = ["loss_weighting"] if spec["loss_weighting"] != "uniform" else []
        return [k for k in (*needs, *(["coord_channel"] if spec["coord"] else [])) if k not in taken]

    def pretrain(self, arm: str) -> list[str]:
        if self.by_preset:
            return [f"experiment={arm}", f"model={self.size}"]
        spec, section = ARMS[arm], self.declared.options()
        stated = [f"model.weight_power={spec['power']}", *MASKING, f"model.coord_channel={str(bool(spec['coord'])).lower()}"]
        return [f"model={self.family}", *([f"model.size={self.size}"] if self.size else []), f"method={spec['method']}",
                f"method.loss_weighting={spec['loss_weighting']}",
                *(o for o in stated if o.split("=")[0].removeprefix("model.") in section)]  # the section's own

    @property
    def name(self) -> str:
        return f"{self.family}-{self.size}" if self.size else self.family


def parse_network(text: str, scale: Scale) -> Network:
    """``<family>`` (the scale's size of it: ``resenc``, ``swvit``) or ``<family>-<size>`` (``resenc-S|M|L|tiny``,
    ``swvit-tiny|small|base``) for every family that declares a masked twin and a segmentation network."""
    family, _, size = text.partition("-")
    studied = {name: f for name, f in families().items() if f.masked and f.segmenter}
    sizes = {name: tuple(f.presets) for name, f in studied.items()}
    if family not in studied or (size and size not in sizes[family]):
        refuse(f"--network {text}: expected a network family with a masked twin, optionally with a size: "
               + "; ".join(f"{f}-{'|'.join(s)}" if s else f for f, s in sizes.items()))
    return Network(family, size or getattr(scale, family, None))


def pretrain_layout(path: Path) -> tuple[str, Path]:
    """(layout, root) of a pretraining cohort: a BIDS or CAPS folder, a file list (a .csv/.tsv/.txt file, or a
    folder holding files.csv), or a store written by asa-preprocess (``store``: a folder holding its index.json,
    or the settings.json of an unfinished one, which `read_store` refuses with asa's hint)."""
    if path.is_file():
        return "filelist", path
    if not path.is_dir():
        refuse(f"--pretrain-data {path}: no such file or folder (expected a BIDS or CAPS folder, a file list or a "
               "store written by asa-preprocess)")
    if (path / INDEX).is_file() or (path / SETTINGS).is_file():
        return "store", path
    if any(path.glob("sub-*/anat")) or any(path.glob("sub-*/ses-*/anat")):
        return "bids", path
    if (path / "subjects").is_dir():
        return "caps", path
    if any((path / name).is_file() for name in ("files.csv", "files.tsv", "files.txt", "filelist.csv", "filelist.txt")):
        return "filelist", path
    refuse(f"--pretrain-data {path}: neither a BIDS folder (sub-*/[ses-*/]anat/*_T1w.nii.gz), a CAPS folder "
           f"(subjects/), a file list (files.csv) nor a store written by asa-preprocess ({INDEX})")


@dataclasses.dataclass(frozen=True)
class StoreCohort:
    """A pretraining cohort held in a store of asa-preprocess: its folder, the data root and layout it was written
    from (the files its records were checked against), its channels in their order and its resampling. A run
    reads a store only with the options it was written under, so these are the runs' data options."""

    path: Path
    root: Path
    layout: str
    channels: tuple[str, ...]
    resample_mm: float | None = None

    def data(self) -> list[str]:
        """A pretraining run's overrides that read the store (the layout aside: `plan_pretraining` places it);
        which of its cases a run reads is the run's ``splits.json`` (`write_store_splits`)."""
        return [f"data.root={self.root}", f"data.store={self.path}"]

    def resampling(self) -> list[str]:
        """The store's resampling, for every run of the study (the noise volumes sit on the resampled grid too)."""
        return [] if self.resample_mm is None else [f"data.resample_mm={self.resample_mm}"]


def read_store(path: Path) -> tuple[StoreCohort, list[Case]]:
    """The store of asa-preprocess at ``path`` as a pretraining cohort, and its cases as asa-pretrain finds them
    (`asa.api.machinery.dataset.load_cases`: the cases of its data root it holds, their files unchanged since).
    Refused (exit 2, naming the folder): an unfinished or broken store, a fine-tuning preset's store, one written
    under preprocessing settings a pretraining run does not take, one out of date with its files."""
    try:
        store = open_store(path, option="--pretrain-data")
    except StoreError as err:
        refuse(str(err))
    settings = store.settings
    if settings.get("kind") != "pretrain" or store.root is None or store.layout is None:
        refuse(f"--pretrain-data {path}: a store of asa-preprocess written from a fine-tuning preset (kind "
               f"{settings.get('kind')!r}); expected one of a pretraining preset (asa-preprocess data=bids "
               "data.root=COHORT data.store=STORE)")
    cohort = StoreCohort(path, Path(store.root), str(store.layout), tuple(settings.get("channels") or ("t1",)),
                         settings.get("resample_mm"))
    wanted = PretrainPreprocess(1, resample_mm=cohort.resample_mm).settings()  # the crop is not a store setting
    try:
        store.check_settings(store_settings(wanted, channels=cohort.channels, dtype="float16"), ignore_regions=True,
                             option="--pretrain-data")
        data = compose_config("pretrain", ["data=bids", f"data.layout={cohort.layout}", *cohort.data()]).data
        cases, _ = load_cases(data, None, DistEnv())
    except (StoreError, OSError, ValueError) as err:
        refuse(f"--pretrain-data {path}: {err}")
    return cohort, list(cases)


def cohort_order(ids: Sequence[str], seed: int) -> list[str]:
    """The cohort's subjects in a seeded order: a cohort of n is the first n, so a smaller cohort is part of a larger."""
    ids = sorted(ids)
    return [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]


def write_cohorts(out: Path, cases: Sequence, sizes: Sequence[int], seed: int,
                  channels: Sequence[str] = ("t1",)) -> dict[int, Path]:
    """One file list per cohort size (``<out>/data/cohort-<n>/files.csv``, the first n subjects of `cohort_order`):
    the T1 in ``path``, each other of ``channels`` in a column of its name, in their order (the filelist layout)."""
    by_id = {c.id: c for c in cases}
    order = cohort_order(list(by_id), seed)
    others = [c for c in channels if c != "t1"]
    head = ",".join(["id", "path", *others]) + "\n"
    folders = {}
    for n in sizes:
        folder = out / "data" / f"cohort-{n}"
        rows = "".join(",".join([i, *(str(by_id[i].images[c]) for c in ("t1", *others))]) + "\n" for i in order[:n])
        if not (folder / "files.csv").is_file() or (folder / "files.csv").read_text() != head + rows:
            atomic_write_text(folder / "files.csv", head + rows)
        folders[n] = folder
    return folders


def write_noise(out: Path, cases: Sequence, n: int, seed: int, channels: Sequence[str] = ("t1",)) -> Path:
    """The negative control's pure-noise volumes, as many as the largest cohort, on the grid of the cohort's first
    image, with a noise channel for each of ``channels`` (the T1 always, as a file list needs it; written once)."""
    folder = out / "data" / f"noise-{n}"
    if not (folder / ".complete").is_file():
        first = load_volume(cases[0].images["t1"])
        shape = tuple(int(s) for s in first.array.shape[-3:])
        write_noise_dataset(folder, cases=n, size=shape, seed=seed + 7919, affine=first.affine, overwrite=True,
                            channels=["t1", *(c for c in channels if c != "t1")])
        atomic_write_text(folder / ".complete", "done\n")
    return folder


def cohort_channels(cases: Sequence) -> list[str]:
    """The channels every case of the cohort has (`CHANNELS`' order)."""
    return [c for c in CHANNELS if all(c in case.images for case in cases)]


def pretraining_channels(held: Sequence[str], fine: Sequence[str], choice: str | None) -> list[str]:
    """The cohort channels the pretraining runs read, in the order of the fine-tuning channels ``fine`` (the
    labeled set's names, matched by meaning, `channel_of`), so that the pretrained stem's channel k is fine-tuning
    channel k: all of them when ``choice`` is ``all``, or None and the cohort (its channels ``held``) has them; the
    T1 alone when ``choice`` is ``t1``, or None and the cohort lacks one. ``all`` on a cohort that lacks one is
    refused (exit 2)."""
    wanted = [channel_of(name) for name in fine]
    lacking = [name for name, c in zip(fine, wanted) if c is None or c not in held]
    if len(set(wanted)) != len(wanted):  # two fine-tuning channels of one meaning: no order to keep
        lacking = list(fine)
    if choice == "all" and lacking:
        refuse(f"--pretrain-channels all: the pretraining cohort's cases all have {', '.join(held)}; the fine-tuning "
               f"channels {', '.join(lacking)} have no channel of the cohort ({', '.join(CHANNELS)}, the meanings "
               "asa reads) in every case: give the cohort those contrasts, or pass --pretrain-channels t1")
    return list(wanted) if choice == "all" or (choice is None and not lacking) else ["t1"]


def channel_overrides(channels: Sequence[str]) -> list[str]:
    """The pretraining overrides that read ``channels`` (none for the T1 alone, the default of every preset): the
    data's channels, in that order; every method's network takes its input channels from them."""
    return [] if list(channels) == ["t1"] else [f"data.channels=[{','.join(channels)}]"]


def pretraining_epochs(steps: int, subjects: int, batch: int) -> int:
    """Epochs giving about ``steps`` optimiser steps on ``subjects`` (80 % train split)."""
    return max(1, round(steps / max(1, int(0.8 * subjects) // batch)))


def plan_pretraining(out: Path, scale: Scale, network: Network, arms: Sequence[str], cohorts: Mapping[int, Path],
                     noise: Path | None, *, seed: int, channels: Sequence[str] = ("t1",),
                     store: StoreCohort | None = None) -> list[Pretraining]:
    """Every pretraining run: each pretraining arm per cohort size, and the negative control on the noise volumes
    (mae's recipe, as many volumes as the largest cohort), all reading ``channels`` in their order
    (`pretraining_channels`). The arms read ``cohorts`` (size -> its file list's folder, `write_cohorts`) or, with
    ``store``, the store (its cases of a cohort size chosen by the run's ``splits.json``, `write_store_splits`)."""
    common = ["data=bids", "data.layout=filelist", *channel_overrides(channels), f"data.num_workers={scale.workers}",
              "data.split.ratios=[0.8,0.2,0.0]", "optim=adamw_demo", "trainer.progress=false", "trainer.panel_every=0",
              "probe.every=0", f"seed={seed}", "resume=auto"]
    batch = int(compose_config("pretrain", [*network.pretrain("mae"), *common[:2], f"data.crop={scale.crop}"])
                .trainer.batch_size)
    if scale.nproc < 1 or batch % scale.nproc:
        refuse(f"--nproc {scale.nproc}: the pretraining's global batch is {batch}; take a number of processes that "
               "divides it (each process takes an equal share, so the recipe stays the one-process run's)")
    per_rank = [f"trainer.batch_size={batch // scale.nproc}"] if scale.nproc > 1 else []
    units = [(arm, n, folder) for n, folder in cohorts.items() for arm in arms if arm in ARMS]
    if noise is not None:
        units.append((CONTROL, max(cohorts), noise))
    runs = []
    for arm, n, data in units:
        spec = ARMS["mae" if arm == CONTROL else arm]
        crop = scale.crop if spec["coord"] else (scale.pretrain_crop or scale.crop)  # the channel ties it to the crop
        stored = store is not None and arm != CONTROL  # the noise control reads its own volumes' file list
        resampling = store.resampling() if store is not None else []
        source = [*store.data(), *resampling] if stored else [f"data.root={data}", *resampling]
        layout = [f"data.layout={store.layout}"] if stored else common[1:2]
        epochs = pretraining_epochs(scale.pretrain_steps, n, batch)
        overrides = (*network.pretrain("mae" if arm == CONTROL else arm), common[0], *layout, *common[2:],
                     f"data.crop={crop}", *source, f"trainer.epochs={epochs}", *per_rank,
                     f"output_dir={out / 'pretrain' / f'{arm}-c{n}'}")
        runs.append(Pretraining(f"{arm}-c{n}", arm, n, overrides, coord=bool(spec["coord"])))
    return runs


def pretraining_argv(nproc: int, *overrides: str) -> tuple[str, ...]:
    """The argv of a pretraining run: asa-pretrain in this interpreter, or with ``nproc`` > 1 its ``nproc``
    processes through asa-torchrun (torchrun on one machine, ending with the job's exit code: 143 after a stop
    signal, so the study can tell a stopped run from a failed one)."""
    if nproc == 1:
        return module_argv("asa.cli.pretrain", *overrides)
    return module_argv("asa.cli.launch", "--standalone", f"--nproc_per_node={nproc}", "-m", "asa.cli.pretrain",
                       *overrides)


def write_store_splits(runs: Sequence[Pretraining], ids: Sequence[str], seed: int) -> None:
    """The ``splits.json`` of each run that reads a store, before it starts: the train and validation cases its
    own split would make of its cohort's subjects (the first n of `cohort_order`, split as the run's data options
    say), and the store's other cases as its test part, which pretraining never reads (a run sees the whole store,
    and its split must name every case). A run's existing file is kept (a started run keeps its split)."""
    order = cohort_order(ids, seed)
    for run in runs:
        path = run.run_dir / "splits.json"
        if not any(o.startswith("data.store=") for o in run.overrides) or path.is_file():
            continue
        data = compose_config("pretrain", list(run.overrides)).data
        shares = list(data.split.ratios)
        parts = make_splits(order[:run.cohort], dataset=str(data.name), seed=int(data.split.seed),
                            counts_or_ratios=shares)
        rest = sorted(set(ids) - set(order[:run.cohort]))
        atomic_write_json(path, {"train": parts["train"], "val": parts["val"], "test": sorted([*parts["test"], *rest]),
                                 "dataset": str(data.name), "seed": int(data.split.seed), "shares": shares})


# ---------------------------------------------------------------------------------- the positive control
@dataclasses.dataclass(frozen=True)
class Supervised:
    """The positive control: its run folder, the labeled set it trains on (the study's ``data`` preset at ``root``),
    its cases, and with ``channel`` the one fine-tuning channel it reads (``data.channels=[<channel>]``; None: all
    of them)."""

    run_dir: Path
    data: str
    root: Path
    cases: tuple[str, ...]
    channel: str | None = None


def supervised_channel(fine: Sequence[str], pretrain: Sequence[str] | None) -> str | None:
    """The fine-tuning channel the positive control trains on alone, or None (all of ``fine``): the one of ``fine``
    that means t1 (`channel_of`) when the pretraining runs read the T1 alone (``pretrain`` ``["t1"]``) and the task
    has more channels, so that its encoder reaches the task through the stem adaptation the pretrained arms take."""
    if pretrain is None or list(pretrain) != ["t1"] or len(fine) < 2:
        return None
    t1 = [name for name in fine if channel_of(name) == "t1"]
    return t1[0] if len(t1) == 1 else None


def supervised_overrides(control: Supervised, network: Network, scale: Scale, seed: int,
                         overrides: Sequence[str]) -> list[str]:
    """The positive control's asa-finetune overrides: its labeled set (`Supervised`), every case of it training,
    for about the pilot's steps, with the study's fine-tuning ``overrides``."""
    batch = int(compose_config("finetune", [f"data={control.data}", *network.finetune]).trainer.batch_size)
    epochs = max(1, round(scale.pilot_steps / max(1, len(control.cases) // batch)))  # all its cases train
    return [f"data={control.data}", f"data.root={control.root}",
            *([f"data.channels=[{control.channel}]"] if control.channel else []), *network.finetune,
            f"data.crop={scale.crop}", f"data.num_workers={scale.workers}", f"trainer.epochs={epochs}", "trainer.progress=false",
            "trainer.panel_every=0", f"seed={seed}", "resume=auto", *overrides, f"output_dir={control.run_dir}"]


def supervised_splits(control: Supervised, split: Mapping[str, list[str]], seed: int) -> dict[str, Any]:
    """The positive control's ``splits.json``: its cases train; every other labeled case is its test part (never
    seen by it)."""
    others = sorted({*split["test"], *split["val"], *split["pool"]})
    return {"train": list(control.cases), "val": [], "test": others, "dataset": control.data, "seed": seed}


def finetune_arms(runs: Sequence[Pretraining], network: Network, supervised: Path | None,
                  encoders: Mapping[str, Path]) -> dict[str, str]:
    """`asa.study.transfer` --arm specs (name -> ``key=value,...``): the scratch twin, with the coordinate channel too
    when an arm pretrains with it, the positive control, every pretrained encoder and every --encoder file."""
    base = ",".join(network.finetune)
    arms = {SCRATCH: base}
    if any(run.coord for run in runs):
        arms[COORD_SCRATCH] = f"{base},model.coord_channel=true"
    if supervised is not None:
        arms[SUPERVISED] = f"{base},model.pretrained={supervised / 'checkpoints' / 'last.pt'}"
    for run in runs:
        arms[run.name] = f"{base},model.pretrained={run.encoder}" + (",model.coord_channel=true" if run.coord else "")
    for name, path in encoders.items():
        arms[name] = f"{base},model.pretrained={path}"
    return arms


# ------------------------------------------------------------------------------------------------ checks
def labeled_split(cases: Sequence, scale: Scale, seed: int) -> dict[str, list[str]]:
    """The study's fixed split of the labeled pool, as `asa.study.transfer` makes it: test, validation, the training
    pool, and the positive control's cases (the last of the pool, never drawn by a run: `transfer --hold-out`)."""
    ids = [c.id for c in cases]
    need = scale.test + scale.val + max(scale.cases)
    if len(ids) < need:
        refuse(f"--root: {len(ids)} labeled cases; the study needs at least {need} (--test {scale.test} + --val "
               f"{scale.val} + the largest of --cases {max(scale.cases)})")
    test, pool = transfer.split_cases(ids, test=scale.test, seed=seed)
    val, pool = sorted(pool[:scale.val]), pool[scale.val:]
    spare = len(pool) - max(scale.cases)
    held = sorted(pool[len(pool) - scale.supervised:]) if spare >= scale.supervised else []
    return {"test": test, "val": val, "pool": sorted(set(pool) - set(held)), "supervised": held}


# the parts of the labeled pool the overlap check reads, as its lines name them: every case a run scores, validates on,
# trains on in one run and holds out in another (each fine-tuning run checks every case it does not train on)
LABELED_PARTS = {"test": "test", "val": "validation", "supervised": "positive control", "pool": "training pool"}


def check_overlap(out: Path, cohort_cases: Sequence, labeled: Sequence, split: Mapping[str, list[str]],
                  encoders: Mapping[str, str] | None = None, *, accept: bool) -> dict[str, Any]:
    """The study's one overlap check, before anything trains: every labeled case (test, validation, the positive
    control's and the training pool's: `LABELED_PARTS`) against the pretraining cohort and the cohort each
    ``encoders`` file carries (by id, subject, image content and near content: `asa.data.cohort.cohort_overlap`, the
    rule each fine-tuning run applies to the cases it does not train on), and against the pretraining cohort's files
    for skull-stripped or defaced copies on their grid (`asa.data.masked_copies`, which the fingerprint misses; the
    runs' own check cannot see them). Refused (exit 2) when any case was in one,
    unless ``accept``; accepted cases are listed, and every run is told to accept them (`overlap_overrides`). The
    cohort's digests are kept in the study folder."""
    by_id = {c.id: c for c in labeled}
    parts = {LABELED_PARTS[k]: [by_id[i] for i in split[k]] for k in LABELED_PARTS if split.get(k)}
    cohorts: dict[str, dict[str, Any]] = {}
    if cohort_cases:
        record_file = out / "checks" / "cohort.json"
        ids = sorted(c.id for c in cohort_cases)
        record = json.loads(record_file.read_text()) if record_file.is_file() else None
        # written again for other cases, or by an asa whose fingerprint differs (it would leave near content unchecked)
        if record is None or sorted(record["cases"]) != ids or record.get("fingerprint") != FINGERPRINT:
            record = cohort_record(cohort_cases, {"train": ids}, workers=2, source={"study": str(out)})
            atomic_write_json(record_file, record)
        cohorts["--pretrain-data"] = record
    for name, path in (encoders or {}).items():
        if (carried := encoder_cohort(path, option=f"--encoder {name}")) is not None:
            cohorts[f"--encoder {name}"] = carried
    if not cohorts:
        return {"lines": ["no cohort to check (the --encoder files carry none)"], "overlapping": [], "accepted": False}
    everyone = [c for cases in parts.values() for c in cases]
    digests, prints = image_signatures(everyone, workers=2)
    lines, found = [], set()
    for source, cohort in cohorts.items():
        overlap = cohort_overlap(cohort, parts, digests=digests, fingerprints=prints)
        size = len(cohort.get("cases") or {})
        lines += [f"{source}: {line}" for line in describe_overlap(overlap, cohort_size=size)]
        found |= {c for part in overlap.values() for c in part["overlapping"]}
    if cohort_cases:  # on disk: skull-stripped and defaced copies on the cohort's grid, which the fingerprint misses
        copies = masked_copies(everyone, cohort_cases)
        lines.append(f"--pretrain-data: {describe_masked(copies, len(everyone))}")
        found |= set(copies)
    found_ids = sorted(found)
    if found_ids and not accept:
        refuse("[study] the pretraining cohort holds labeled cases the study's runs score, validate on or hold out:\n  "
               + "\n  ".join(lines) + "\npretraining on them would score the arms on what they have seen: remove them "
               "from --pretrain-data, or pass --accept-overlap to run anyway (every run then accepts them, and the "
               "report lists them)")
    if found_ids:
        lines.append(f"accepted with --accept-overlap ({len(found_ids)} case(s), every run told so): "
                     + ", ".join(found_ids))
    return {"lines": lines, "overlapping": found_ids, "accepted": bool(found_ids)}


def recipe_overrides(recipe: str, encoder_lr_scale: float) -> list[str]:
    """The fine-tuning recipe of every run of the study: ``optim=<recipe>`` and, for ``adamw``, one encoder lr scale
    for every arm, the pretrained arms' (``optim.encoder_lr_scale``) and the scratch twins' (the preset keeps a
    scale of its own for an encoder from scratch, ``optim.scratch_encoder_lr_scale``)."""
    scales = [f"optim.encoder_lr_scale={encoder_lr_scale}", f"optim.scratch_encoder_lr_scale={encoder_lr_scale}"]
    return [RECIPES[recipe], *(scales if recipe == "adamw" else [])]


def overlap_overrides(overlap: Mapping[str, Any]) -> list[str]:
    """The fine-tuning overrides that carry an accepted overlap to every run (each run checks the cases it does not
    train on by the same rule, and would refuse what the study accepted): none when nothing was accepted."""
    return [f"{ACCEPT_OPTION}=true"] if overlap.get("accepted") else []


def channel_lines(fine: Sequence[str], pretrain: Sequence[str], held: Sequence[str], *,
                  store: bool = False) -> list[str]:
    """How each arm meets the fine-tuning channels ``fine``: the pretrained arms and the negative control through
    the cohort's channels ``pretrain`` they read (`pretraining_channels`), the scratch twin through the fine-tuning
    ones, the positive control through the pretrained arms' path when they read the T1 alone
    (`supervised_channel`), else through the fine-tuning channels. ``held``: the channels every cohort case has
    (with ``store``: the channels the store holds)."""
    if [channel_of(name) for name in fine] == list(pretrain):
        pairs = ", ".join(f"{c} as {name}" for c, name in zip(pretrain, fine))
        return [f"Every arm pretrains and fine-tunes on the same channels: the pretraining runs read the cohort's "
                f"{pairs}, in the fine-tuning order, so the pretrained stem's channel k is fine-tuning channel k and "
                f"no stem is adapted (the negative control's noise volumes have {len(pretrain)} channel(s) too)."]
    lacking = [n for n in fine if channel_of(n) not in held]
    why = ("--pretrain-channels t1" if not lacking else f"the store holds {', '.join(held)} only" if store else
           f"the cohort lacks {', '.join(lacking)} in some or all cases")
    if len(fine) == 1:
        return [f"The pretraining runs read the cohort's t1 only ({why}); fine-tuning reads {fine[0]}: every "
                "pretrained arm (and the negative control) enters through its T1 stem as it is, on another contrast, "
                "while the scratch twin and the positive control are trained on it from the start."]
    head = (f"The pretraining runs read the cohort's t1 only ({why}); fine-tuning reads {', '.join(fine)}: every "
            f"pretrained arm (and the negative control) enters through its 1-channel stem adapted to {len(fine)} "
            f"channels (the pretrained kernel copied to each channel and divided by {len(fine)}, asa's stem "
            "adaptation)")
    if (t1 := supervised_channel(fine, pretrain)) is not None:
        return [f"{head}, and so does the positive control, trained with labels on {t1} alone; the scratch twin is "
                "trained on the fine-tuning channels from the start and takes no adaptation: a deficit of the "
                "pretrained arms against scratch may be the adaptation's, one against the positive control is not."]
    return [f"{head}, while the scratch twin and the positive control are trained on the fine-tuning channels from "
            "the start and take no adaptation (no fine-tuning channel is the T1 the control could train on alone): "
            "a deficit of the pretrained arms may be the adaptation's."]


STRIPPED = 0.9  # the share of non-zero voxels above which asa's brain mask takes a scan for a whole head


def skull_lines(sets: Mapping[str, Sequence], sample: int = 3) -> list[str]:
    """One line per set of cases whose first ``sample`` scans are whole heads (more than `STRIPPED` of their
    voxels non-zero): asa's brain mask, brain centre and in-brain z-score assume skull-stripped scans."""
    lines = []
    for name, cases in sets.items():
        shares = [float((load_volume(next(iter(c.images.values()))).array != 0).mean()) for c in list(cases)[:sample]]
        if shares and min(shares) > STRIPPED:
            lines.append(f"{name}: the scans are not skull-stripped ({min(shares):.0%} or more of their voxels are "
                         "non-zero): asa's brain mask, brain centre and in-brain z-score assume skull-stripped scans, "
                         "and on whole heads the mask takes in scalp and neck (docs/data-and-orientation.md); strip "
                         "the skulls first (asa-prepare: N4, alignment to the symmetric MNI template and brain "
                         "extraction, docs/own-data.md), or read every arm's numbers as made on a mis-centred, "
                         "mis-normalised crop.")
    return lines


# --------------------------------------------------------------------------------------------- the units
STOP_MARGIN = 25.0  # seconds before the budget ends at which running units are told to save and stop
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
RUNNING: dict[subprocess.Popen, str] = {}  # every child process of this study, and its name


@dataclasses.dataclass(frozen=True)
class Unit:
    """One process: the pilot, the positive control, a pretraining run or the transfer stage. ``done``: whether its
    result is on disk; ``resumable``: a unit stopped by SIGUSR1 (last.pt saved) continues on the next call."""

    name: str
    argv: tuple[str, ...]
    done: Callable[[], bool]
    log: Path
    resumable: bool = True
    threads: int | None = None


def launch(unit: Unit) -> subprocess.Popen:
    """Start ``unit`` in its own process group (the study forwards a stop signal to the whole group), its output in
    its log."""
    unit.log.parent.mkdir(parents=True, exist_ok=True)
    env = child_env(**({k: str(unit.threads) for k in THREAD_VARS} if unit.threads else {}))
    with open(unit.log, "a") as log:
        proc = subprocess.Popen(list(unit.argv), stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    RUNNING[proc] = unit.name
    return proc


def signal_children(sig: int) -> None:
    """Send ``sig`` to every running child's process group (its own workers included)."""
    for proc in list(RUNNING):
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass


def wait_children(timeout: float = 300.0) -> list[str]:
    """Wait for every child (SIGKILL to a group still running after ``timeout`` s); the names of those that ran."""
    deadline = time.monotonic() + timeout
    names = []
    for proc, name in list(RUNNING.items()):
        try:
            proc.wait(max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        names.append(name)
        RUNNING.pop(proc, None)
    return names


class Stopped(Exception):
    """SIGTERM or SIGINT reached the study."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_stopped(signum: int, frame: Any) -> None:
    raise Stopped(signum)


def run_units(units: Sequence[Unit], jobs: int, clock: Clock, times: dict[str, float]) -> bool:
    """Run the units not done yet, ``jobs`` at once, in order; when the budget is about to end every running unit
    gets SIGUSR1 (save and stop) and the call stops (False: the next call continues); a failed unit ends the study
    naming its log."""
    pending = [u for u in units if not u.done()]
    running: dict[subprocess.Popen, tuple[Unit, float]] = {}

    def stop_all() -> None:
        signal_children(signal.SIGUSR1)
        for proc, (unit, started) in running.items():
            proc.wait()
            RUNNING.pop(proc, None)
            times[unit.name] = times.get(unit.name, 0.0) + time.perf_counter() - started

    while pending or running:
        while pending and len(running) < max(1, jobs):
            unit = pending[0]
            if not clock.fits(STOP_MARGIN + (0.0 if unit.resumable else times.get(unit.name, 0.0) * 1.2)):
                break
            pending.pop(0)
            print(f"[study] {unit.name}: {shlex.join(unit.argv)} (log {unit.log})", flush=True)
            running[launch(unit)] = (unit, time.perf_counter())
        if not running:
            return False
        time.sleep(0.5)
        for proc in [p for p in running if p.poll() is not None]:
            unit, started = running.pop(proc)
            RUNNING.pop(proc, None)
            times[unit.name] = times.get(unit.name, 0.0) + time.perf_counter() - started
            if proc.returncode != 0 or not unit.done():
                stop_all()
                raise SystemExit(f"[study] {unit.name} failed (exit {proc.returncode}): see {unit.log}")
        left = clock.left()
        if left is not None and left < STOP_MARGIN and running:
            stop_all()
            return False
    return True


# ------------------------------------------------------------------------------------------ the pilot
def pilot_scores(out: Path, scale: Scale) -> Path:
    return out / PILOT / "runs" / f"{SCRATCH}-n{max(scale.cases)}-s0" / "scores.json"


PILOT_FLOOR = 0.1  # the pilot's best validation Dice (mean, and the lesion classes' when named) under which it did not learn


def pilot_budget(out: Path, scale: Scale, cap: int | None = None, *,
                 lesion_classes: Sequence[str] = ()) -> dict[str, Any]:
    """The pilot's validation curve, whether it learned, and the converged budget found on it
    (`transfer.converged_budget`). ``learned``: its best validation Dice reached `PILOT_FLOOR`, and so did the mean
    Dice of ``lesion_classes`` when named (``lesion_curve``); a curve that stayed under it did not learn, and has no
    budget to level off at (``converged`` False). ``steps``: the study's fine-tuning steps, rounded up to ten, or
    the pilot's length when still rising at its end; at most ``cap``, and then ``capped`` says the arms compare
    before the scratch twin levels off."""
    record = json.loads(pilot_scores(out, scale).read_text())
    curve = record["budget"].get("val_curve") or []
    lesion = pilot_lesion_curve(out / PILOT / "runs" / f"{SCRATCH}-n{max(scale.cases)}-s0", lesion_classes)
    best = max((d for _, d in curve), default=0.0)
    best_lesion = max((d for _, d in lesion), default=math.nan)
    learned = best >= PILOT_FLOOR and (not lesion_classes or best_lesion >= PILOT_FLOOR)
    found = transfer.converged_budget(curve)
    found["converged"] = found["converged"] and learned
    steps = max(int(10 * math.ceil(found["budget"] / 10)) if found["converged"] else int(scale.pilot_steps), 10)
    capped = cap is not None and cap < steps
    rows = record.get("scores") or []
    test = {name: float(np.mean([float(r[f"Dice_{name}"]) for r in rows]))
            for name in record.get("names", []) if rows and f"Dice_{name}" in rows[0]}
    return {**found, "steps": cap if capped else steps, "capped": capped, "asked": steps,
            "pilot_steps": scale.pilot_steps, "curve": curve, "test": test, "test_cases": len(rows),
            "learned": learned, "floor": PILOT_FLOOR, "best_dice": best, "lesion_classes": list(lesion_classes),
            "lesion_curve": lesion, "best_lesion_dice": best_lesion}


def pilot_lesion_curve(run_dir: Path, classes: Sequence[str]) -> list[list[float]]:
    """[step, mean validation Dice of ``classes``] per round of the pilot (its logged ``val/dice_<class>``); empty
    without classes."""
    if not classes:
        return []
    series = transfer.logged_series(run_dir, [f"val/dice_{c}" for c in classes])
    rounds = [dict(series[f"val/dice_{c}"]) for c in classes]
    steps = sorted(set.intersection(*(set(r) for r in rounds)))
    return [[step, float(np.mean([r[step] for r in rounds]))] for step in steps]


def pilot_reading(pilot: Mapping[str, Any]) -> str:
    """What the pilot's curve says, in words: its best validation Dice (and the lesions'), against the floor."""
    said = f"best validation Dice {pilot['best_dice']:.3f}"
    if pilot.get("lesion_classes"):
        said += f", lesion Dice ({', '.join(pilot['lesion_classes'])}) {pilot['best_lesion_dice']:.3f}"
    return said + f" over {pilot['pilot_steps']} steps (the floor: {pilot['floor']})"


def pretraining_summary(run: Pretraining, seconds: float) -> dict[str, Any]:
    """Steps, wall time, the held-out masked loss curve with its plateau check (`loss_plateau`, read against the
    optimiser's progress, `optimiser_progress`), and the loss weights' spread (mean logged CV and effective share)."""
    state = load_checkpoint(run.run_dir / "checkpoints" / "last.pt")
    curve = [(int(h.get("step", i)), float(h["val/loss"])) for i, h in enumerate(state.get("history", []))
             if "val/loss" in h]
    optim = (state.get("config") or {}).get("optim") or {}
    progress = optimiser_progress([s for s, _ in curve], state["scheduler"], min_lr=float(optim.get("min_lr", 0.0)),
                                  power=float(optim.get("power", 0.9)))
    spread = transfer.logged_series(run.run_dir, ("train/weights/cv", "train/weights/effective_share"))
    mean = lambda tag: float(np.mean([v for _, v in spread[tag]])) if spread[tag] else math.nan  # noqa: E731
    return {"run": run.name, "arm": run.arm, "cohort": run.cohort, "steps": int(state["step"]), "seconds": seconds,
            "val_curve": curve, **loss_plateau([v for _, v in curve], progress=progress),
            "weights_cv": mean("train/weights/cv"), "weights_share": mean("train/weights/effective_share")}


def optimiser_progress(steps: Sequence[int], scheduler: Mapping[str, Any], *, min_lr: float = 0.0,
                       power: float = 0.9) -> list[float]:
    """How far the optimiser had moved by each of ``steps``: the learning rate summed over the steps before it,
    over the sum of the whole schedule (``scheduler``: a checkpoint's record of it, `asa.train.schedule.lr_at`).
    A constant lr gives step / total; under a cosine decay the last quarter of the steps holds a twentieth of it,
    so a loss that flattens there has been given no lr to fall with, not levelled."""
    total = int(scheduler["total_steps"])
    lrs = np.array([lr_at(t, total_steps=total, warmup_steps=int(scheduler.get("warmup_steps", 0)),
                          base_lr=float(scheduler.get("base_lr", 1.0)), schedule=str(scheduler.get("name", "constant")),
                          min_lr=min_lr, power=power) for t in range(total)])
    summed = np.concatenate([[0.0], np.cumsum(lrs)])
    return [float(summed[min(max(int(s), 0), total)] / summed[-1]) if summed[-1] > 0 else 0.0 for s in steps]


def loss_plateau(losses: Sequence[float], *, tol: float = PLATEAU_TOL,
                 progress: Sequence[float] | None = None) -> dict[str, Any]:
    """Whether a held-out loss curve levelled off: its relative drop over the last quarter of the optimiser's
    progress (from the last value at or before 3/4 of it to the lowest after) is under ``tol``, and its last value
    is within ``tol`` of the run's lowest (``loss_rise``: a curve that climbed back from its best, as an encoder
    that memorises its training volumes gives, has not levelled either). ``progress``: each value's share of the
    schedule's summed learning rate (`optimiser_progress`); None: evenly spaced rounds of a constant lr (round i of
    n at (i + 1) / n). Needs at least 4 points; fewer: ``plateau`` None, not checked."""
    if len(losses) < 4:
        return {"plateau": None, "loss_drop": math.nan, "loss_rise": math.nan, "tol": tol}
    n = len(losses)
    at = np.asarray(progress if progress is not None else [(i + 1) / n for i in range(n)], dtype=float)
    edge = 0.75 * at[-1]
    first = max(1, int(np.searchsorted(at, edge, side="right")))  # the first value past 3/4 of the progress
    first = min(first, n - 1)  # at least one value in the last quarter
    start = losses[first - 1]
    drop = (start - min(losses[first:])) / abs(start) if start else 0.0
    best = min(losses)
    rise = (losses[-1] - best) / abs(best) if best else 0.0
    return {"plateau": bool(drop < tol and rise < tol), "loss_drop": float(drop), "loss_rise": float(rise), "tol": tol}


# -------------------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    """The command line of ``asa-study``."""
    p = argparse.ArgumentParser(prog="asa-study", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--pretrain-data", type=Path,
                   help="the unlabeled pretraining cohort: a BIDS or CAPS folder, a file list (files.csv), or a store "
                        "written by asa-preprocess from a pretraining preset (read as it was written: its channels, "
                        "its resampling)")
    p.add_argument("--data", required=True, help="the labeled set's preset: brats | ibsr | wmh | msd (nnU-Net raw)")
    p.add_argument("--root", type=Path, required=True, help="the labeled set's folder")
    p.add_argument("--out", type=Path, required=True, help="the study folder (a rerun continues it)")
    p.add_argument("--network", default="resenc",
                   help="a network family with a masked twin, optionally with one of its sizes: resenc[-tiny|-S|-M|-L], "
                        "swvit[-tiny|-small|-base] or a plug-in's family (asa.models.Family); default: resenc at the "
                        "scale's size")
    p.add_argument("--pretrain-channels", choices=("t1", "all"),
                   help="the channels the pretraining runs (and the negative control) read: all (the fine-tuning "
                        "channels, in their order, matched by meaning: T1gd is t1ce) or t1 (its stem adapted to the "
                        "fine-tuning channels); default: all when every cohort case has them, else t1")
    p.add_argument("--arms", nargs="*", default=["mae", "asa", CONTROL, SUPERVISED], choices=CHOICES,
                   help="pretraining arms and controls beside the scratch twin (default: mae asa noise supervised)")
    p.add_argument("--encoder", action="append", default=[], metavar="NAME=FILE",
                   help="an arm fine-tuned from any file asa loads (an asa encoder, an nnssl/OpenMind or nnU-Net "
                        "checkpoint); repeatable")
    p.add_argument("--recipe", choices=sorted(RECIPES), default="adamw",
                   help="the fine-tuning recipe of every arm: adamw (asa's, one encoder lr for all arms) or nnunet "
                        "(nnU-Net's PretrainedTrainer: 1e-3 for a pretrained network, 1e-2 from scratch)")
    p.add_argument("--encoder-lr-scale", type=float, default=1.0,
                   help="with --recipe adamw: the encoder's lr over the decoder's, the same for every arm (default 1)")
    add_scale_options(p, Scale, SCALES, "cpu")
    p.add_argument("--budget-cap", type=int, metavar="STEPS",
                   help="fine-tune at most STEPS steps whatever the pilot asks for (the report says so)")
    p.add_argument("--accept-overlap", action="store_true",
                   help="run although labeled cases (test, validation, the positive control's or the training pool's) "
                        "are in the pretraining cohort: every run accepts them, and the report lists them")
    p.add_argument("--accept-unlearned", action="store_true",
                   help="go on when the pilot did not learn the task (its best validation Dice under "
                        f"{PILOT_FLOOR}): the study then pretrains and fine-tunes, and its report reads no answer")
    p.add_argument("--seed", type=int, default=0, help="split, cohort order and pretraining seed")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, help="torch threads per run")
    p.add_argument("--n-boot", type=int, default=10000, help="bootstrap resamples of the CIs")
    p.add_argument("--min-effect", type=float, default=0.01, metavar="DICE",
                   help="the smallest difference in Dice the study reads as an effect: a contrast whose estimate is "
                        "smaller is 'no difference this study can detect', whatever its CI (default 0.01)")
    p.add_argument("--lesion-classes", nargs="+", default=[], metavar="CLASS",
                   help="classes whose mean Dice is read as a contrast of its own (lesion Dice), e.g. the lesions of a "
                        "task that also labels tissue")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="an asa-finetune override for every fine-tuning run")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    name, scale = scale_from_args(args, SCALES)
    network = parse_network(args.network, scale)
    out = args.out.expanduser().absolute()
    encoders = {}
    for spec in args.encoder:
        key, _, path = spec.partition("=")
        if not key or not path or key in (*CHOICES, SCRATCH, COORD_SCRATCH, PILOT) or not Path(path).is_file():
            refuse(f"--encoder {spec}: expected NAME=FILE with a name of its own and an existing file")
        encoders[key] = str(Path(path).expanduser().absolute())
    pretraining_arms = [a for a in args.arms if a in ARMS]
    if network.by_preset and (odd := [a for a in args.arms if a not in (*SWVIT_ARMS, CONTROL, SUPERVISED)]):
        refuse(f"--arms {' '.join(odd)}: with --network {network.family} the arms are "
               f"{', '.join((*SWVIT_ARMS, CONTROL, SUPERVISED))}")
    if lacking := {arm: need for arm in args.arms if (need := network.missing(arm))}:
        refuse("--arms: " + "; ".join(f"{arm} needs {', '.join(need)}, which the {network.family} family's masked twin "
                                      f"({network.declared.masked}) does not take" for arm, need in lacking.items()))
    if (pretraining_arms or CONTROL in args.arms) and args.pretrain_data is None:
        refuse(f"--arms {' '.join(args.arms)}: pretraining arms need --pretrain-data (or name only --encoder arms "
               "and supervised)")
    if not 0.0 <= args.min_effect < 1.0:
        refuse(f"--min-effect {args.min_effect}: expected a difference in Dice in [0, 1)")
    if args.budget_cap is not None and args.budget_cap < 10:
        refuse(f"--budget-cap {args.budget_cap}: expected at least 10 steps")
    if not args.root.is_dir():
        refuse(f"--root {args.root}: no such folder (the labeled set, in the layout of --data {args.data})")
    probe = compose_config("finetune", [f"data={args.data}", f"data.root={args.root.expanduser().absolute()}",
                                        *network.finetune])
    labeled = discover(str(probe.data.layout) if "layout" in probe.data else args.data, args.root.expanduser().absolute())
    split = labeled_split(labeled, scale, args.seed)
    task = get_task(str(probe.data.task), root=args.root.expanduser().absolute())
    if odd := [c for c in args.lesion_classes if c not in task.output_names]:
        refuse(f"--lesion-classes {' '.join(odd)}: not classes of {args.root} (its classes: "
               f"{', '.join(task.output_names)})")
    cohort_cases, held, channels, store = [], [], None, None
    if args.pretrain_data is not None:
        layout, root = pretrain_layout(args.pretrain_data.expanduser().absolute())
        if layout == "store":
            store, cohort_cases = read_store(root)
        else:
            cohort_cases = discover(layout, root, on_bad_case="skip")
        if len(cohort_cases) < 2:
            refuse(f"--pretrain-data {args.pretrain_data}: {len(cohort_cases)} readable scan(s) ({layout}); the "
                   "pretraining runs need at least 2 (train and held-out)")
        held = list(store.channels) if store is not None else cohort_channels(cohort_cases)
        channels = pretraining_channels(held, task.channels, args.pretrain_channels)
        if store is not None and channels != held:  # a run reads a store with the channels it was written with
            refuse(f"--pretrain-data {args.pretrain_data}: the store holds {', '.join(held)} (asa-preprocess "
                   f"data.channels), and a run reads a store with the channels it was written with; the pretraining "
                   f"runs read {', '.join(channels)} here (for the fine-tuning channels {', '.join(task.channels)}"
                   + (f", --pretrain-channels {args.pretrain_channels}" if args.pretrain_channels else "")
                   + f"): write a store with data.channels=[{','.join(channels)}]")
    elif args.pretrain_channels is not None:
        refuse(f"--pretrain-channels {args.pretrain_channels}: no --pretrain-data to read them from")
    # the positive control takes the pretrained arms' T1-and-adapted-stem path when they read the T1 alone
    control_channel = supervised_channel(task.channels, channels)

    settings = {"scale": dataclasses.asdict(scale) | {"time_budget": None, "jobs": None}, "network": network.name,
                "arms": sorted(args.arms), "encoders": sorted(f"{k}={v}" for k, v in encoders.items()),
                "data": args.data, "root": str(args.root.expanduser().absolute()),
                "pretrain_data": str(args.pretrain_data.expanduser().absolute()) if args.pretrain_data else None,
                "recipe": args.recipe, "encoder_lr_scale": args.encoder_lr_scale, "seed": args.seed,
                "budget_cap": args.budget_cap, "override": args.override, "lesion_classes": args.lesion_classes,
                "largest_cohort": max(scale.cohorts) if scale.cohorts else None, "pilot_cases": max(scale.cases),
                "pretrain_channels": channels,
                "supervised_channels": ([control_channel] if control_channel else list(task.channels))
                if SUPERVISED in args.arms else None,
                **({"pretrain_store": {"root": str(store.root), "layout": store.layout}} if store else {})}
    out.mkdir(parents=True, exist_ok=True)
    # a study recorded before the options pretrained on the T1 alone, trained the positive control on every
    # fine-tuning channel and ran each pretraining in one process
    record_settings(out, settings, grows=GROWS, recorded_as=lambda old: {
        "pretrain_channels": ["t1"] if old.get("pretrain_data") else None,
        "supervised_channels": list(task.channels) if SUPERVISED in old.get("arms", []) else None, **old,
        **({"scale": {"nproc": 1, **old["scale"]}} if isinstance(old.get("scale"), dict) else {})})  # one process

    # --- checks, before anything trains
    cohorts, noise = {}, None
    checks: dict[str, Any] = {"overlap": check_overlap(out, cohort_cases, labeled, split, encoders,
                                                       accept=args.accept_overlap)}
    if args.pretrain_data is not None:
        sizes = [n for n in scale.cohorts if n <= len(cohort_cases)] or [len(cohort_cases)]
        if odd := [n for n in scale.cohorts if n > len(cohort_cases)]:
            refuse(f"--cohorts {' '.join(map(str, odd))}: the cohort holds {len(cohort_cases)} scans")
        if store is None:
            cohorts = write_cohorts(out, cohort_cases, sizes, args.seed, channels)
        else:
            cohorts = {n: store.path for n in sizes}
            checks["cohort"] = (f"The pretraining cohort is a store of asa-preprocess ({store.path}): "
                                f"{len(cohort_cases)} cases of {store.root} ({store.layout}), channels "
                                f"{', '.join(store.channels)}" + (f", resampled to {store.resample_mm} mm"
                                                                  if store.resample_mm else "")
                                + "; each pretraining run reads its cohort's cases from it (their split in the "
                                "run's splits.json, the store's other cases as its unread test part).")
        if CONTROL in args.arms:
            noise = write_noise(out, cohort_cases, max(sizes), args.seed, channels)
    checks["channels"] = (channel_lines(task.channels, channels, held, store=store is not None)
                          if channels is not None else
                          [f"No pretraining cohort: an --encoder file's 1-channel stem is adapted to the "
                           f"{len(task.channels)} fine-tuning channels ({', '.join(task.channels)}; copied to each "
                           "and divided by their number), a file of that many channels is loaded as it is."])
    checks["skull"] = skull_lines({"--pretrain-data": cohort_cases, "--root": labeled})
    supervised = None  # the split holds its cases out either way
    if SUPERVISED in args.arms and not split["supervised"]:
        checks["supervised"] = (f"The positive control is left out: the labeled pool holds {len(labeled)} cases, and "
                                f"after {scale.test} test, {scale.val} validation and the {max(scale.cases)} a run "
                                f"draws from, fewer than the {scale.supervised} it needs (--supervised) are left.")
    elif SUPERVISED in args.arms:
        run_dir, ids = out / "pretrain" / SUPERVISED, tuple(split["supervised"])
        checks["supervised"] = (f"The positive control trains on {len(ids)} labeled cases no other run sees (held "
                                "out of the training pool)")
        supervised = Supervised(run_dir, args.data, args.root.expanduser().absolute(), ids, control_channel)
        if control_channel is None:
            checks["supervised"] += "."
        else:
            k = len(task.channels)
            checks["supervised"] += (f", on their {control_channel} alone (data.channels=[{control_channel}]), as the "
                                     f"pretraining runs read the T1: its 1-channel encoder enters the {k}-channel "
                                     "fine-tuning through the pretrained arms' adapted stem (its kernel copied to each "
                                     f"channel and divided by {k}), so that it controls their path.")
    atomic_write_json(out / "checks" / "checks.json", {**checks, "split": split})
    for line in [*([checks["cohort"]] if "cohort" in checks else []), *checks["overlap"]["lines"],
                 *checks["channels"], *checks["skull"], *([checks["supervised"]] if "supervised" in checks else [])]:
        print(f"[study] {line}", flush=True)

    runs = plan_pretraining(out, scale, network, pretraining_arms, cohorts, noise, seed=args.seed,
                            channels=channels or ("t1",), store=store)
    if store is not None:
        write_store_splits(runs, [c.id for c in cohort_cases], args.seed)
    overrides = [*recipe_overrides(args.recipe, args.encoder_lr_scale), *overlap_overrides(checks["overlap"]),
                 *args.override]
    clock = Clock(scale.time_budget)
    times_file = out / "times.json"
    times = json.loads(times_file.read_text()) if times_file.is_file() else {"stages": {}, "runs": {}}
    previous = {s: signal.signal(s, _raise_stopped) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        return _run(args, out, scale, network, runs, split, checks, encoders, supervised, overrides, clock,
                    times, times_file, name, task)
    except Stopped as stop:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal_children(signal.SIGTERM)
        stopped = wait_children()
        atomic_write_json(times_file, times)
        print(f"[study] {stop}: stopped {', '.join(stopped) or 'no run'}; finished runs and the checkpoints the "
              f"stopped ones saved are kept in {out}: rerun the same command to continue", file=sys.stderr, flush=True)
        return 128 + stop.signum
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _run(args, out: Path, scale: Scale, network: Network, runs: list[Pretraining], split: Mapping[str, list[str]],
         checks: Mapping[str, Any], encoders: Mapping[str, str], supervised: Supervised | None, overrides: list[str],
         clock: Clock, times: dict[str, Any], times_file: Path, name: str, task) -> int:
    def stage(key: str, started: float) -> None:
        times["stages"][key] = times["stages"].get(key, 0.0) + time.perf_counter() - started
        atomic_write_json(times_file, times)

    def unfinished(what: str) -> int:
        atomic_write_json(times_file, times)
        print(f"[study] the time budget ({scale.time_budget:.0f} s) ended during {what}: rerun the same command to "
              "continue", flush=True)
        return 3

    data = dict(data=args.data, root=args.root.expanduser().absolute(), model=network.finetune[0].split("=", 1)[1],
                crop=scale.crop, test=scale.test, val_cases=scale.val,
                split_seed=args.seed, device=args.device, threads=args.threads, hold_out=split["supervised"],
                workers=scale.workers,
                lesion_classes=args.lesion_classes)
    resenc = network.finetune[1:]  # model.size beside the model preset, for a family sized by option
    started = time.perf_counter()
    units = [Unit(PILOT, module_argv("asa.study.transfer", *transfer.command_line(
        **data, cases=[max(scale.cases)], seeds=[0], steps=scale.pilot_steps, n_boot=1000, out=out / PILOT,
        overrides=[*resenc, *overrides, "optim.schedule=constant"])), lambda: pilot_scores(out, scale).is_file(),
        out / "logs" / f"{PILOT}.log", resumable=False, threads=args.threads)]
    threads = [f"trainer.threads={args.threads}"] if args.threads else []
    if supervised is not None:
        atomic_write_json(supervised.run_dir / "splits.json", supervised_splits(supervised, split, args.seed))
        sup = supervised_overrides(supervised, network, scale, args.seed, overrides)
        units.append(Unit(SUPERVISED, module_argv("asa.cli.finetune", *sup, *threads),
                          lambda: finished(supervised.run_dir / "checkpoints" / "last.pt"),
                          out / "logs" / f"{SUPERVISED}.log", threads=args.threads))
    # the pilot (and the positive control, a labeled run) before any pretraining: a scratch twin that does not learn
    # the task makes every contrast noise, and the study stops before it spends the pretraining
    complete = run_units(units, scale.jobs, clock, times["runs"])
    stage("pilot and positive control", started)
    if not complete:
        return unfinished("the pilot and the positive control")
    pilot = pilot_budget(out, scale, args.budget_cap, lesion_classes=args.lesion_classes)
    atomic_write_json(out / "pilot.json", pilot)
    if not pilot["learned"]:
        line = (f"[study] the pilot did not learn the task: {pilot_reading(pilot)}; every contrast would be noise, so "
                "the study stops before any pretraining (make the task learnable: more labeled cases, --pilot-steps, "
                "a larger --crop; or pass --accept-unlearned to run it anyway, its report then reads no answer)")
        if not (args.accept_unlearned or name == "quick"):  # the quick scale checks the plumbing, not the task
            print(line, file=sys.stderr, flush=True)
            return REFUSED
        print(line.split(";")[0] + ("; the quick scale checks the plumbing: going on" if name == "quick" else
                                    "; --accept-unlearned: going on"), flush=True)
    started = time.perf_counter()
    units = [Unit(run.name, pretraining_argv(scale.nproc, *run.overrides, *threads),
                  lambda run=run: finished(run.run_dir / "checkpoints" / "last.pt") and run.encoder.is_file(),
                  out / "logs" / f"{run.name}.log", threads=args.threads) for run in runs]
    complete = run_units(units, scale.jobs, clock, times["runs"])
    stage("pretraining", started)
    if not complete:
        return unfinished("the pretraining runs")
    steps = pilot["steps"]
    left = clock.left()
    arms = finetune_arms(runs, network, None if supervised is None else supervised.run_dir, encoders)
    targv = transfer.command_line(**data, cases=scale.cases, seeds=scale.seeds, steps=steps, n_boot=args.n_boot,
                                  out=out / "transfer", jobs=scale.jobs, reference=SCRATCH, arms=arms,
                                  overrides=overrides, scratch=False, time_budget=None if left is None else left - 60)
    started = time.perf_counter()
    unit = Unit("transfer", module_argv("asa.study.transfer", *targv), lambda: True, out / "logs" / "transfer.log",
                threads=args.threads)
    print(f"[study] transfer: {len(arms)} arms × N {list(scale.cases)} × seeds {list(scale.seeds)}, {steps} steps "
          f"each (log {unit.log})", flush=True)
    proc = launch(unit)
    code = proc.wait()
    RUNNING.pop(proc, None)
    stage("transfer", started)
    if code != 0:
        raise SystemExit(f"[study] the transfer stage failed (exit {code}): see {unit.log}")
    table = out / "transfer" / "transfer.md"
    if not table.is_file() or table.read_text().startswith("**Partial"):
        return unfinished("the transfer stage")
    pretrained = [pretraining_summary(run, times["runs"].get(run.name, math.nan)) for run in runs]
    info = {"scale_name": name, "scale": dataclasses.asdict(scale), "network": network.name, "steps": steps,
            "recipe": args.recipe, "encoder_lr_scale": args.encoder_lr_scale, "min_effect": args.min_effect,
            "machine": machine(),
            "stages": times["stages"], "runs": times["runs"], "checks": checks, "pilot": pilot,
            "pretraining": pretrained, "classes": list(task.output_names),
            "encoders": [f"{k}={v}" for k, v in encoders.items()],
            "commands": ["asa-study " + shlex.join(sys.argv[1:]),
                         *(f"asa-pretrain {shlex.join(r.overrides)}" for r in runs),
                         f"python -m asa.study.transfer {shlex.join(targv)}"],
            "finished": datetime.datetime.now().isoformat(timespec="seconds")}
    folder = report.write_report(out, info, n_boot=args.n_boot)
    print(f"[study] done: report in {folder / 'README.md'}", flush=True)
    return 0
