"""asa-study's checks before anything trains: overlap with the cohorts, the channels each arm meets, skull-stripping."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from asa.api.machinery.cohort import encoder_cohort
from asa.data.cohort import CohortListMissing, cohort_record
from asa.data.digests import image_signatures
from asa.data.overlap import cohort_overlap, describe_overlap
from asa.data.fingerprint import FINGERPRINT
from asa.data.layouts.pretrain import channel_of
from asa.data.masked_copies import describe_masked, masked_copies
from asa.io import load_volume
from asa.study.common import refuse
from asa.study.runs import CrossValidated, FixedSplit, supervised_channel

@dataclasses.dataclass(frozen=True)
class Endpoint:
    """The primary endpoint: its score key and its label, named before anything trains."""

    key: str
    label: str

    @property
    def line(self) -> str:
        return f"Primary endpoint: {self.label}, named before any training (every verdict reads it)."


@dataclasses.dataclass(frozen=True)
class Checks:
    """What the checks before anything trains found, in the lines said, kept in checks.json and read by the report.

    Args:
        overlap: `check_overlap`'s record: its lines, the overlapping cases, whether they were accepted.
        channels: what each arm's channels meet (`channel_lines`).
        skull: skull stripping of the cohort and the labeled set (`skull_lines`).
        endpoint: the primary endpoint.
        cohort: the store the cohort is read from (None: not a store).
        design: why the labeled set is cross-validated (None: a fixed split).
        supervised: the positive control's cases (None: no positive control).
    """

    overlap: Mapping[str, Any]
    channels: tuple[str, ...]
    skull: tuple[str, ...]
    endpoint: Endpoint
    cohort: str | None = None
    design: str | None = None
    supervised: str | None = None

    def record(self) -> dict[str, Any]:
        """As checks.json keeps it (and the report reads it): a line that is None is left out."""
        record: dict[str, Any] = {"overlap": dict(self.overlap)}
        if self.cohort is not None:
            record["cohort"] = self.cohort
        record["channels"] = list(self.channels)
        record["skull"] = list(self.skull)
        if self.design is not None:
            record["design"] = self.design
        if self.supervised is not None:
            record["supervised"] = self.supervised
        record["endpoint"] = {"key": self.endpoint.key, "label": self.endpoint.label, "line": self.endpoint.line}
        return record

    def lines(self) -> list[str]:
        """What is said before anything trains, in order."""
        said = [self.endpoint.line, self.design, self.cohort, *self.overlap["lines"], *self.channels, *self.skull,
                self.supervised]
        return [line for line in said if line]


# the parts of the labeled pool the overlap check reads, as its lines name them: every case a run scores, validates on,
# trains on in one run and holds out in another (each fine-tuning run checks every case it does not train on)
LABELED_PARTS = {"test": "test", "val": "validation", "supervised": "positive control", "pool": "training pool"}


def cohort_check_record(out: Path, cohort_cases: Sequence) -> tuple[dict[str, Any] | None, bool]:
    """(the pretraining cohort's record for the overlap check, whether it is new): the one kept in
    ``<out>/checks/cohort.json`` when it holds these cases under this asa's fingerprint, else made afresh
    (`asa.data.cohort.cohort_record`: ids, subjects, image digests and fingerprints) for the caller to keep there;
    None without a cohort. Nothing is written."""
    if not cohort_cases:
        return None, False
    record_file, ids = out / "checks" / "cohort.json", sorted(c.id for c in cohort_cases)
    record = json.loads(record_file.read_text()) if record_file.is_file() else None
    # made again for other cases, or by an asa whose fingerprint differs (it would leave near content unchecked)
    if record is None or sorted(record["cases"]) != ids or record.get("fingerprint") != FINGERPRINT:
        return cohort_record(cohort_cases, {"train": ids}, workers=2, source={"study": str(out)}), True
    return record, False


def check_overlap(cohort_cases: Sequence, record: Mapping[str, Any] | None, labeled: Sequence,
                  split: FixedSplit | CrossValidated, encoders: Mapping[str, str] | None = None, *,
                  accept: bool) -> dict[str, Any]:
    """Every labeled case (`LABELED_PARTS`) against the pretraining cohort (``record``: its `cohort_check_record`)
    and the ``encoders``' cohorts by each run's rule, and for masked copies on the cohort's grid, which the
    fingerprint misses; refused (exit 2) unless ``accept``."""
    by_id = {c.id: c for c in labeled}
    parts = {LABELED_PARTS[k]: [by_id[i] for i in getattr(split, k)] for k in LABELED_PARTS if getattr(split, k)}
    cohorts: dict[str, Mapping[str, Any]] = {}
    if record is not None:
        cohorts["--pretrain-data"] = record
    unchecked = []
    for name, path in (encoders or {}).items():
        try:
            if (carried := encoder_cohort(path, option=f"--encoder {name}")) is not None:
                cohorts[f"--encoder {name}"] = carried
        except CohortListMissing as missing:  # said, never taken for "no overlap"
            unchecked.append(f"--encoder {name}: not checked: {missing}")
    if not cohorts:
        why = "the --encoder files carry none" if encoders else "no --pretrain-data and no --encoder given"
        return {"lines": unchecked or [f"no cohort to check ({why})"], "overlapping": [], "accepted": False}
    everyone = [c for cases in parts.values() for c in cases]
    digests, prints = image_signatures(everyone, workers=2)
    lines, found = list(unchecked), set()
    for source, cohort in cohorts.items():
        overlap = cohort_overlap(cohort, parts, digests=digests, fingerprints=prints)
        lines += [f"{source}: {line}" for line in describe_overlap(overlap, cohort_size=len(cohort.get("cases") or {}))]
        found |= {c for part in overlap.values() for c in part["overlapping"]}
    if cohort_cases:  # on disk: skull-stripped and defaced copies on the cohort's grid, which the fingerprint misses
        copies = masked_copies(everyone, cohort_cases)
        lines.append(f"--pretrain-data: {describe_masked(copies, len(everyone))}")
        found |= set(copies)
    if found and not accept:
        refuse("[study] the pretraining cohort holds labeled cases the study's runs score, validate on or hold out:\n  "
               + "\n  ".join(lines) + "\npretraining on them would score the arms on what they have seen: remove them "
               "from --pretrain-data, or pass --accept-overlap to run anyway (every run then accepts them, and the "
               "report lists them)")
    lines += [f"accepted with --accept-overlap ({len(found)} case(s), every run told so): "
              + ", ".join(sorted(found))] if found else []
    return {"lines": lines, "overlapping": sorted(found), "accepted": bool(found)}


def channel_lines(fine: Sequence[str], pretrain: Sequence[str], held: Sequence[str], *,
                  store: bool = False) -> list[str]:
    """How each arm meets the fine-tuning channels ``fine`` (``held``: the cohort's channels, or the store's)."""
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
    """One line per set whose first ``sample`` scans are whole heads (over `STRIPPED` of their voxels non-zero)."""
    shares = {name: [float((load_volume(next(iter(c.images.values()))).array != 0).mean())
                     for c in list(cases)[:sample]] for name, cases in sets.items()}
    return [f"{name}: the scans are not skull-stripped ({min(s):.0%} or more of their voxels are non-zero): asa's "
            "brain mask, brain centre and in-brain z-score assume skull-stripped scans, and on whole heads the mask "
            "takes in scalp and neck (docs/data-and-orientation.md); strip the skulls first (asa-prepare: N4, "
            "alignment to the symmetric MNI template and brain extraction, docs/own-data.md), or read every arm's "
            "numbers as made on a mis-centred, mis-normalised crop." for name, s in shares.items()
            if s and min(s) > STRIPPED]
