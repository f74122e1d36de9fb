"""asa-study's pretraining cohort: where it is, its cohorts of each size, the noise volumes and the channels read."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from asa.api.config import compose_config
from asa.api.machinery.dataset import load_cases
from asa.data import Case, load_volume
from asa.data.layouts.pretrain import CHANNELS, channel_of
from asa.data.preprocessing import PretrainPreprocess
from asa.data.store import INDEX, SETTINGS, StoreError, open_store, store_settings
from asa.io import atomic_write_text
from asa.study.common import refuse
from asa.data.synthetic.noise import write_noise_dataset
from asa.train.distributed import DistEnv

def pretrain_layout(path: Path) -> tuple[str, Path]:
    """(layout, root) of a pretraining cohort (an unfinished store too: `read_store` refuses it with asa's hint)."""
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
    """A cohort in a store of asa-preprocess, with the options it was written under (a run reads it only with those)."""

    path: Path
    root: Path
    layout: str
    channels: tuple[str, ...]
    resample_mm: float | None = None

    def data(self) -> list[str]:
        """The overrides that read the store (the cases: the run's splits.json, `asa.study.runs.StoreSplits`)."""
        return [f"data.root={self.root}", f"data.store={self.path}"]


def read_store(path: Path) -> tuple[StoreCohort, list[Case]]:
    """The store at ``path`` as a cohort and its cases; refused (exit 2): unfinished, fine-tuning's or out of date."""
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


def cohort_order(ids: Sequence[str], seed: int | tuple[int, ...]) -> list[str]:
    """The subjects in a seeded order (``seed`` as numpy's ``default_rng`` takes it): a cohort of n is the first n, so a
    smaller cohort is part of a larger; a labeled draw's order too."""
    ids = sorted(ids)
    return [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]


@dataclasses.dataclass(frozen=True)
class CohortList:
    """A cohort's file list ``<folder>/files.csv`` (a column per channel), the data.root of its pretraining runs: an
    input of each (`asa.study.scheduler.Input`), written as the first of them starts."""

    folder: Path
    text: str = dataclasses.field(repr=False)

    def write(self) -> None:
        """Written where missing or other (in one rename: a run never reads half a list), else kept as it is."""
        file = self.folder / "files.csv"
        if not file.is_file() or file.read_text() != self.text:
            atomic_write_text(file, self.text)


def cohort_lists(out: Path, cases: Sequence, sizes: Sequence[int], seed: int,
                 channels: Sequence[str] = ("t1",)) -> dict[int, CohortList]:
    """Size n -> ``<out>/data/cohort-<n>``'s list: the first n of `cohort_order`, the T1 then ``channels``' others."""
    by_id = {c.id: c for c in cases}
    order, others = cohort_order(list(by_id), seed), [c for c in channels if c != "t1"]
    lists = {}
    for n in sizes:
        rows = [["id", "path", *others], *([i, *(str(by_id[i].images[c]) for c in ("t1", *others))] for i in order[:n])]
        lists[n] = CohortList(out / "data" / f"cohort-{n}", "".join(",".join(row) + "\n" for row in rows))
    return lists


@dataclasses.dataclass(frozen=True)
class NoiseVolumes:
    """The negative control's ``cases`` noise volumes in ``folder`` (a file list, its runs' data.root) on the grid of
    the scan ``like``: an input of each of its runs, written once, by the first to start (``.complete`` marks them
    whole; a folder without it, left by a stopped write, is written afresh)."""

    folder: Path
    cases: int
    like: Path
    seed: int
    channels: tuple[str, ...]

    def write(self) -> None:
        if (self.folder / ".complete").is_file():
            return
        first = load_volume(self.like)
        write_noise_dataset(self.folder, cases=self.cases, size=tuple(int(s) for s in first.array.shape[-3:]),
                            seed=self.seed, affine=first.affine, overwrite=True, channels=list(self.channels))
        atomic_write_text(self.folder / ".complete", "done\n")


def noise_volumes(out: Path, cases: Sequence, n: int, seed: int, channels: Sequence[str] = ("t1",)) -> NoiseVolumes:
    """``<out>/data/noise-<n>``: ``n`` volumes on the grid of the cohort's first scan, the T1 always (a file list
    needs it) then ``channels``' others, seeded apart from every run (``seed`` + 7919)."""
    return NoiseVolumes(out / "data" / f"noise-{n}", n, cases[0].images["t1"], seed + 7919,
                        ("t1", *(c for c in channels if c != "t1")))


def cohort_channels(cases: Sequence) -> list[str]:
    """The channels every case of the cohort has (`CHANNELS`' order)."""
    return [c for c in CHANNELS if all(c in case.images for case in cases)]


def pretraining_channels(held: Sequence[str], fine: Sequence[str], choice: str | None) -> list[str]:
    """The cohort channels runs read, in the fine-tuning order (stem channel k is fine-tuning channel k), or the T1."""
    wanted = [channel_of(name) for name in fine]
    # two fine-tuning channels of one meaning: no order to keep, so every one counts as lacking
    lacking = list(fine) if len(set(wanted)) != len(wanted) else [n for n, c in zip(fine, wanted) if c not in held]
    if choice == "all" and lacking:
        refuse(f"--pretrain-channels all: the pretraining cohort's cases all have {', '.join(held)}; the fine-tuning "
               f"channels {', '.join(lacking)} have no channel of the cohort ({', '.join(CHANNELS)}, the meanings "
               "asa reads) in every case: give the cohort those contrasts, or pass --pretrain-channels t1")
    return list(wanted) if choice == "all" or (choice is None and not lacking) else ["t1"]
