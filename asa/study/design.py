"""The design ``asa-study`` registers before any score, in ``<out>/design.json``: its arms, the primary question, the
draws, the budgets, the reading rule and the looks planned. A change before any look amends the registration; a
change after a look extends the study, and its next reading is another look, over which the primary is read
(`asa.study.readings.Looks`: Bonferroni). The record is the reader's: it says when each look was taken and what
changed between them."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from asa.io import atomic_write_json
from asa.study.arms import primary_order, twin_of
from asa.study.runs import CrossValidated, FixedSplit
from asa.study.readings import ALPHA, Looks
from asa.study.settings import Study

FILE = "design.json"


@dataclasses.dataclass(frozen=True)
class Design:
    """What a study is read on, fixed before its first unit.

    Args:
        arms: the arms beside the scratch twins (--arms and the --encoder names), sorted.
        primary: the primary question, "<arm> − <its twin>" (None: no arm is read against its twin).
        n: the labeled cases N the primary is read at (the smallest).
        cases: every N.
        seeds: the seeds of a fixed test split (empty when cross-validated).
        folds: cross-validation's folds (0: a fixed test split).
        repeats: cross-validation's repeats, folds × repeats draws (0: a fixed test split).
        pretrain_runs: pretraining runs per arm and cohort.
        pretrain_steps: optimiser steps of every pretraining run.
        pilot_steps: the pilot's steps (the fine-tuning budget is where its validation Dice levels off).
        budget_cap: --budget-cap (None: the pilot's budget).
        head_start: the shorter budget every unit is also scored at (None: none).
        endpoint: the primary endpoint.
        alpha: the primary's two-sided error rate over all its looks.
        min_effect: --min-effect, in Dice.
        looks: the looks planned (--looks).
    """

    arms: tuple[str, ...]
    primary: str | None
    n: int
    cases: tuple[int, ...]
    seeds: tuple[int, ...]
    folds: int
    repeats: int
    pretrain_runs: int
    pretrain_steps: int
    pilot_steps: int
    budget_cap: int | None
    head_start: int | None
    endpoint: str
    alpha: float
    min_effect: float
    looks: int

    @classmethod
    def of(cls, study: Study, split: FixedSplit | CrossValidated, endpoint: str) -> Design:
        """The design of ``study`` with its labeled ``split`` and the label of its primary ``endpoint``."""
        scale, encoders = study.scale, [name for name, _ in study.encoders]
        named = [a for a in primary_order() if a in study.arms] + encoders[:1]  # as `readings.family` picks it
        primary = f"{named[0]} − {twin_of(named[0])}" if named else None
        if study.probe_first:
            primary = "the pretraining arm the probes choose − its twin"
        return cls(arms=tuple(sorted({*study.arms, *encoders})), primary=primary, n=min(scale.cases),
                   cases=tuple(scale.cases), seeds=split.registered_seeds(scale), folds=split.folds,
                   repeats=split.repeats,
                   pretrain_runs=scale.pretrain_runs, pretrain_steps=scale.pretrain_steps,
                   pilot_steps=scale.pilot_steps, budget_cap=study.budget_cap,
                   head_start=study.head_start, endpoint=endpoint, alpha=ALPHA,
                   min_effect=study.min_effect, looks=study.looks)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Design:
        """A design as design.json holds it (a field it lacks: None, a design before that field)."""
        values = {}
        for field in dataclasses.fields(cls):
            value = d.get(field.name)
            values[field.name] = tuple(value) if isinstance(value, list) else value
        return cls(**values)

    def changes(self, old: Design) -> tuple[str, ...]:
        """What differs from ``old``, one "<field> <old> → <new>" each."""
        said = []
        for field in dataclasses.fields(self):
            before, now = getattr(old, field.name), getattr(self, field.name)
            if before != now:
                said.append(f"{field.name} {_text(before)} → {_text(now)}")
        return tuple(said)


def _text(value: Any) -> str:
    if isinstance(value, tuple):
        return " ".join(map(str, value)) or "none"
    return "none" if value is None else str(value)


@dataclasses.dataclass(frozen=True)
class Change:
    """A change of the registered design: when, after how many looks (0: an amendment before any score was read,
    else an extension after that look), and what changed."""

    at: str
    after_look: int
    changed: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Look:
    """A reading of the scores: when the report first read them under ``design``."""

    at: str
    design: Design


@dataclasses.dataclass(frozen=True)
class Registration:
    """design.json: the design now, when it was first registered, every change and every look."""

    design: Design
    registered: str
    changes: tuple[Change, ...] = ()
    looks: tuple[Look, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Registration:
        return cls(Design.from_dict(d["design"]), d["registered"],
                   tuple(Change(c["at"], c["after_look"], tuple(c["changed"])) for c in d["changes"]),
                   tuple(Look(k["at"], Design.from_dict(k["design"])) for k in d["looks"]))

    @property
    def taken(self) -> Looks:
        """The looks the primary is read over: those taken (at least one: the reading about to be drawn), those
        planned, and each extension that a later look read."""
        extended = tuple(f"{self.looks[c.after_look - 1].at}: {', '.join(c.changed)}" for c in self.changes
                         if 0 < c.after_look < len(self.looks))
        return Looks(taken=max(1, len(self.looks)), planned=self.design.looks, extended=extended)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def load(out: Path) -> Registration:
    """The registration in ``<out>/design.json``."""
    return Registration.from_dict(json.loads((out / FILE).read_text()))


def register_design(out: Path, design: Design, *, now: str | None = None) -> Registration:
    """Register ``design`` in ``<out>/design.json`` before the study's first unit: the first time as it is, a rerun of
    the same design adds nothing, another design replaces it with the change kept (an amendment before any look, an
    extension after one)."""
    path, at = out / FILE, now or _now()
    if not path.is_file():
        registration = Registration(design, at)
    else:
        old = load(out)
        if old.design == design:
            return old
        change = Change(at, len(old.looks), design.changes(old.design))
        registration = dataclasses.replace(old, design=design, changes=(*old.changes, change))
    atomic_write_json(path, registration.to_dict())
    return registration


def take_look(out: Path, *, now: str | None = None) -> Looks:
    """The report reads the scores: a look under the registered design, recorded unless the last look read the same
    design (a rerun of the report); returns the looks the primary is read over."""
    registration = load(out)
    if not registration.looks or registration.looks[-1].design != registration.design:
        registration = dataclasses.replace(registration,
                                           looks=(*registration.looks, Look(now or _now(), registration.design)))
        atomic_write_json(out / FILE, registration.to_dict())
    return registration.taken
