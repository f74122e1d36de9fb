"""The arms of asa-study, each declared once in `ARMS`: a new arm is one `Arm` (docs/python-api.md, "A study arm")."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from asa.study.common import refuse

SCRATCH, COORD_SCRATCH = "scratch", "scratch-coord"  # the scratch twin; with the coordinate channel
CONTROL, SUPERVISED = "noise", "supervised"  # the negative and the positive control
PILOT = "pilot"
# the labeled arm of a study recorded before each labeled arm named its own runs (report.json's "controls" a list of
# its runs' names, or absent: its one run, named after it)
RECORDED_CONTROL = SUPERVISED


@dataclasses.dataclass(frozen=True)
class Contrast:
    """A question: the arm − ``reference``, of ``kind`` question, positive or negative control (``cohorts``: sizes)."""

    reference: str
    question: str
    kind: str = "question"
    cohorts: bool = False


@dataclasses.dataclass(frozen=True)
class Arm:
    """One arm of the study.

    Args:
        name: its name on the command line (``--arms``) and in run names.
        contrasts: its questions; the first is against its twin (the arm that differs from it by its encoder alone).
        method: the pretraining method (``mae`` | ``asa``); None: not pretrained by the study.
        loss_weighting: ``uniform`` | ``attentive``: the reconstruction loss's weight (with ``patch``: its unit in
            voxels, ``power``: its exponent γ).
        coord: pretrained and fine-tuned with the coordinate channel.
        primary: its rank as the primary question (1 first; None: never the primary).
        paper: the SW-ViT pretrains it from the paper's ``experiment`` preset of its name.
        selectable: named with ``--arms`` (the scratch twins are always there).
        noise: pretrained on pure-noise volumes (the negative control: mae's recipe).
        overrides: the overrides of the runs that make its encoder: asa-pretrain's of its pretraining runs, after the
            method's (e.g. ``method.mask_ratio=0.6``, a schedule); asa-finetune's of a labeled arm's run, after the
            study's.
        labels: its encoder is trained with labels (asa-finetune) on cases no scored run reads: the positive control.
        finetune: asa-finetune overrides of its fine-tuning runs in the transfer stage (those scored), after the
            study's; its twin does not take them. A labeled arm's own run makes its encoder, as a pretraining run
            does, so it takes ``overrides``, never these: a fine-tuning recipe for an encoder (a lower encoder lr)
            is no recipe for training one from scratch.
    """

    name: str
    contrasts: tuple[Contrast, ...] = ()
    method: str | None = None
    loss_weighting: str = "uniform"
    patch: int = 8
    power: float = 1.0
    coord: bool = False
    primary: int | None = None
    paper: bool = False
    selectable: bool = True
    noise: bool = False
    overrides: tuple[str, ...] = ()
    labels: bool = False
    finetune: tuple[str, ...] = ()

    @property
    def pretrained(self) -> bool:
        """Whether the study pretrains it (a run per cohort size and replicate)."""
        return self.method is not None

    @property
    def runs(self) -> bool:
        """Whether naming it adds runs: pretrained, trained with labels, or a scratch twin (every study runs them)."""
        return self.pretrained or self.labels or not self.selectable

    @property
    def cell(self) -> tuple[str, bool]:
        """Its cell of the pretraining factorial: (loss weighting, coordinate channel)."""
        return self.loss_weighting, self.coord


# ASA's weight per 4³ unit raised to γ = 4: inside the brain (the study's 32³ crop of 48³ subjects) the paper's 8³
# unit at γ = 1 leaves it uniform in all but name (effective share 0.98), this one varies (share 0.67, CV 0.71;
# docs/studies.md, "ASA's attentive weight where it varies"). A uniform loss is the same whatever its unit.
ASA = dict(method="asa", loss_weighting="attentive", patch=4, power=4.0)
ARMS: dict[str, Arm] = {arm.name: arm for arm in (
    Arm(SCRATCH, selectable=False),
    Arm(SUPERVISED, (Contrast(SCRATCH, "the positive control: an encoder trained with labels − scratch", "positive"),),
        labels=True),
    Arm(CONTROL, (Contrast(SCRATCH, "the negative control: mae's recipe on pure noise − scratch", "negative"),),
        method="mae", noise=True),
    Arm("mae", (Contrast(SCRATCH, "does masked pretraining help? (mae − scratch)"),
                Contrast(CONTROL, "did mae learn something from the scans? (mae − the same recipe on noise)"),
                Contrast("mae", "does a larger cohort help mae? (largest − smallest cohort)", cohorts=True)),
        method="mae", primary=2, paper=True),
    Arm("asa", (Contrast(SCRATCH, "does ASA's pretraining help? (asa − scratch)"),
                Contrast("mae", "does the attentive loss add to mae? (asa − mae)"),
                Contrast("asa", "does a larger cohort help asa? (largest − smallest cohort)", cohorts=True)),
        **ASA, primary=1, paper=True),
    Arm(COORD_SCRATCH, (Contrast(SCRATCH, "does the coordinate channel help without pretraining? (scratch with it − "
                                          "scratch)"),), coord=True, selectable=False),
    Arm("asa-coord", (Contrast(COORD_SCRATCH, "does ASA's pretraining help an encoder with the coordinate channel? "
                                              "(asa-coord − scratch with the channel)"),
                      Contrast("asa", "does the coordinate channel help a pretrained encoder? (asa-coord − asa, both "
                                      "pretrained)")), **ASA, coord=True, primary=3),
    Arm("mae-coord", (Contrast(COORD_SCRATCH, "does masked pretraining help an encoder with the coordinate channel? "
                                              "(mae-coord − scratch with the channel)"),),
        method="mae", coord=True, primary=4),
)}


def check(names: Sequence[str]) -> None:
    """Refuse (exit 2, one line) a named arm that would add no run: neither pretrained nor trained with labels."""
    if idle := [n for n in names if not ARMS[n].runs]:
        refuse(f"--arms {' '.join(idle)}: declared with neither a pretraining method nor labels, so it would add no "
               "run; give its Arm a method (and overrides), or name it with --encoder NAME=FILE")


def pretraining_arms() -> list[str]:
    """The arms a study pretrains from the cohort (the negative control apart)."""
    return [a.name for a in ARMS.values() if a.pretrained and not a.noise]


def labeled_arms() -> list[str]:
    """The arms whose encoder is trained with labels."""
    return [a.name for a in ARMS.values() if a.labels]


def choices() -> list[str]:
    """What ``--arms`` takes: every selectable arm."""
    return [a.name for a in ARMS.values() if a.selectable]


def paper_arms() -> list[str]:
    """The arms the SW-ViT pretrains from the paper's presets, beside the controls."""
    return [a.name for a in ARMS.values() if a.paper]


def primary_order() -> list[str]:
    """The arms that may be the primary question, first first."""
    return [a.name for a in sorted((a for a in ARMS.values() if a.primary is not None), key=lambda a: a.primary)]


def matched_by_noise(names: Sequence[str]) -> str | None:
    """The pretrained arm among ``names`` whose question reads against the negative control (mae − noise), first by
    primary rank: the noise runs are exported at its runs' steps. None: no such arm runs."""
    for name in primary_order():
        if name in names and any(c.reference == CONTROL for c in ARMS[name].contrasts):
            return name
    return None


def twin_of(arm: str) -> str:
    """The arm ``arm`` differs from by its encoder alone: its first contrast's reference (scratch without one, and
    for an --encoder arm)."""
    return ARMS[arm].contrasts[0].reference if arm in ARMS and ARMS[arm].contrasts else SCRATCH


def scratch_twin(arm: str) -> bool:
    """Whether ``arm`` is a scratch twin (an arm every study has, never named with ``--arms``)."""
    return arm in ARMS and not ARMS[arm].selectable


def attentive_over_uniform(arm: str, reference: str) -> bool:
    """Whether arm − reference isolates the attentive weight: both pretrained, attentive − uniform, same channel."""
    a, r = ARMS.get(arm), ARMS.get(reference)
    return bool(a and r and a.pretrained and r.pretrained and not r.noise and a.coord == r.coord
                and (a.loss_weighting, r.loss_weighting) == ("attentive", "uniform"))


def label(arm: str, cohort: int | None) -> str:
    """``<arm>-c<n>`` for a pretrained arm, else the arm's name (written, never parsed back: scores carry columns)."""
    return arm if cohort is None else f"{arm}-c{cohort}"


def run_name(arm: str, cohort: int, replicate: int) -> str:
    """A pretraining run's name: ``<arm>-c<n>``, ``-p<k>`` for its k-th replicate."""
    return label(arm, cohort) + (f"-p{replicate}" if replicate else "")


def labeled_name(arm: str, draw: int | None) -> str:
    """A labeled arm's run's name: the arm's, ``-s<g>`` for the one of cross-validated draw g."""
    if draw is None:
        return arm
    return f"{arm}-s{draw}"


def contrasts(cohorts: Sequence[int], encoders: Sequence[str] = ()) -> list[tuple[tuple[str, int | None],
                                                                                   tuple[str, int | None], str, str]]:
    """Every declared question as ((arm, cohort), (reference, cohort), question, kind); --encoder arms − scratch too."""
    big, small = (max(cohorts), min(cohorts)) if cohorts else (None, None)

    def at(arm: str, cohort: int | None) -> tuple[str, int | None]:
        return arm, cohort if arm in ARMS and ARMS[arm].pretrained else None

    declared = [(at(arm.name, big), at(arm.name, small) if c.cohorts else at(c.reference, big), c.question, c.kind)
                for arm in ARMS.values() for c in arm.contrasts]
    return declared + [((name, None), (SCRATCH, None), f"does the encoder {name} help? ({name} − scratch)", "question")
                       for name in encoders]
