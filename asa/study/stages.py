"""The stages of ``asa-study``, run in order by `run_stages`: the pilot, the pretraining runs (the negative
control's among them), the frozen probes (``--probe-first``), the transfer stage (each positive control trained just
before the first run that starts from it) and the report. A stage names its units (the scheduler's processes:
`asa.study.scheduler`), is done when they are, and then reads what they wrote; a reading may stop the study (a pilot
that did not learn). Every stage's units, scoring included, run under one scheduler, within the call's time budget;
a rerun continues with the first stage not done."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from asa.data import Task
from asa.io import atomic_write_json, load_checkpoint
from asa.study import probes, readings, report, transfer
from asa.study.arms import ARMS, PILOT, SCRATCH, matched_by_noise
from asa.study.checks import Checks
from asa.study.common import REFUSED, Clock, finished, machine, module_argv, refuse
from asa.study.cost import Costs, composed, epoch_rounds
from asa.study.design import take_look
from asa.study.runs import (CrossValidated, FixedSplit, Labeled, Pretraining, finetune_arms, overlap_overrides,
                            pretraining_argv)
from asa.study.readout import pilot_budget, pilot_reading, pretraining_summary
from asa.study.scheduler import RUNNING, JsonFile, Unit, run_units
from asa.study.settings import Study
from asa.study.tables import BUDGET_WINDOW, Outputs

TRANSFER = "transfer"  # the transfer stage's folder in the study folder
EXPORTS = "pretrain/exports.json"  # each pretraining run's export step, fixed once read (`pinned_exports`)
UNFINISHED = 3  # the exit code of a call that stopped before the study's end (its budget, a stage left): rerun


@dataclasses.dataclass(frozen=True)
class Setup:
    """What the checks hand to the stages: the study, its split, checks and every run planned before any trains."""

    study: Study
    task: Task
    split: FixedSplit | CrossValidated
    checks: Checks
    runs: tuple[Pretraining, ...]
    labeled: tuple[Labeled, ...]  # the labeled arms' runs (`asa.study.runs.plan_arms` planned these and runs)
    overrides: tuple[str, ...]  # asa-finetune overrides of every fine-tuning run
    probe_channels: tuple[str, ...]  # the channels a frozen encoder is probed with: those it pretrained on

    def transfer(self, folder: str, **settings: Any) -> transfer.Transfer:
        """A `asa.study.transfer.Transfer` in ``<out>/<folder>`` with what every fine-tuning run of the study shares."""
        s, split = self.study, self.split
        return transfer.Transfer(
            self.study.out / folder, data=s.data, root=s.root, model=s.network.model,
            crop=s.scale.crop, test=s.scale.test, val_cases=s.scale.val, split_seed=s.seed, device=s.device,
            threads=s.threads, hold_out=split.supervised, workers=s.scale.workers,
            fused=s.fused, lesion_classes=s.lesion_classes, logs=s.out / "logs" / folder, folds=split.folds,
            repeats=split.repeats, **settings)


@dataclasses.dataclass
class Findings:
    """What the stages read on the way, apart from the plan: the pilot's budget, the probes' reading, the rows of the
    last fine-tuning stage read (the transfer stage's by the report: in memory, their files are the user's record)."""

    pilot: dict[str, Any] | None = None
    probes: dict[str, Any] | None = None
    scored: Outputs | None = None
    head_start: Outputs | None = None  # the same runs' rows at --head-start's steps
    looks: readings.Looks | None = None  # the looks the primary is read over, the transfer stage's reading taken
    times: dict[str, Any] = dataclasses.field(default_factory=dict)  # the study's seconds per stage and unit


@dataclasses.dataclass(frozen=True)
class StageUnits:
    """A stage's units as its `Stage.units` planned them, and what it says of them as they run (and in a dry run,
    never while only planned): handed back to its `Stage.read`."""

    units: tuple[Unit, ...] = ()
    said: str = ""


@dataclasses.dataclass(frozen=True, kw_only=True)
class FineTuningUnits(StageUnits):
    """A fine-tuning stage's plan: its `asa.study.transfer.Transfer`, its runs and the config they compose to
    (`asa.study.transfer.plan_runs`), and the units that train them (``units``: each followed by its scoring unit)."""

    settings: transfer.Transfer
    runs: tuple[transfer.Run, ...]
    cfg: Any
    trained: tuple[Unit, ...]


class Stage:
    """One stage: its units (`StageUnits`), done when they are, and what it reads once they are into ``found``
    -> None to go on, else the exit code the study ends with."""

    title = ""
    jobs: int | None = None  # units at once (None: the scale's)

    def units(self, setup: Setup, found: Findings) -> StageUnits:
        return StageUnits()

    def read(self, setup: Setup, found: Findings, staged: StageUnits) -> int | None:
        return None


class FineTuning(Stage):
    """A stage of fine-tuning runs (`asa.study.transfer`, as its subclass's ``transfer`` sets them): their units,
    scoring included, then their tables."""

    def transfer(self, setup: Setup, found: Findings) -> tuple[transfer.Transfer, str]:
        """(its runs' settings, what it says of them as they run)."""
        raise NotImplementedError

    def units(self, setup: Setup, found: Findings) -> FineTuningUnits:
        settings, said = self.transfer(setup, found)
        runs, test, cfg, ids = transfer.plan_runs(settings)
        units = transfer.units(settings, runs, test, ids, str(cfg.data.name))
        trained = [unit for unit in units if unit.config is not None]  # each followed by its scoring unit
        return FineTuningUnits(tuple(units), said, settings=settings, runs=tuple(runs), cfg=cfg, trained=tuple(trained))

    def read(self, setup: Setup, found: Findings, staged: FineTuningUnits) -> int | None:
        # every run scored: read afresh from their scores.json at every call, a resumed study's as a whole one's;
        # its seconds every sitting's (times.json), those of sittings a stop ended among them
        settings, runs = staged.settings, staged.runs
        seconds = transfer.run_seconds(settings, runs, found.times["runs"])
        found.scored = transfer.results(settings, runs, staged.cfg, seconds)
        found.head_start = transfer.head_start_results(settings, runs, staged.cfg)


class Pilot(FineTuning):
    """The scratch twin at the largest N, the recipe's warm-up then a constant lr: a scratch twin that does not learn
    the task makes every contrast noise, and the study stops before it spends the pretraining or the positive
    control. Reads the fine-tuning budget (`asa.study.readout.pilot_budget`)."""

    title = "pilot"

    def transfer(self, setup: Setup, found: Findings) -> tuple[transfer.Transfer, str]:
        s = setup.study
        settings = setup.transfer(PILOT, arms={SCRATCH: transfer.Tuned(("model.pretrained=null",))},
                                  cases=(max(s.scale.cases),), seeds=(0,), steps=s.scale.pilot_steps, n_boot=1000,
                                  overrides=(*s.network.finetune[1:], *setup.overrides, "optim.schedule=constant"))
        return settings, ""

    def read(self, setup: Setup, found: Findings, staged: FineTuningUnits) -> int | None:
        super().read(setup, found, staged)
        s, [run], [unit] = setup.study, staged.runs, staged.trained  # the scratch twin at the largest N, seed 0
        if unit.name in found.times["runs"]:  # the cost table's pilot row (not when it ran in a killed sitting)
            found.times["runs"][PILOT] = found.times["runs"][unit.name]
        record = s.out / "pilot.json"
        kept = json.loads(record.read_text()) if record.is_file() else None
        found.pilot = pilot_budget(run.scores_file, s.scale, s.budget_cap, lesion_classes=list(s.lesion_classes),
                                   tol=s.min_effect, kept=kept)
        atomic_write_json(record, found.pilot)
        if not found.pilot["learned"]:
            line = (f"[study] the pilot did not learn the task: {pilot_reading(found.pilot)}; every contrast would be "
                    "noise, so the study stops before any pretraining (make the task learnable: more labeled cases, "
                    "--pilot-steps, a larger --crop; or pass --accept-unlearned to run it anyway, its report then "
                    "reads no answer)")
            if not (s.accept_unlearned or s.scale_name == "quick"):  # the quick scale checks the plumbing, not the task
                print(line, file=sys.stderr, flush=True)
                return REFUSED
            print(line.split(";")[0] + ("; the quick scale checks the plumbing: going on" if s.scale_name == "quick"
                                        else "; --accept-unlearned: going on"), flush=True)
        else:
            print(f"[study] {report.budget_line(found.pilot, found.pilot['steps'])}", flush=True)
        return None


def with_controls(setup: Setup, units: Sequence[Unit]) -> tuple[Unit, ...]:
    """``units`` (a fine-tuning stage's, in order) with each labeled arm's run (`labeled_units`: the positive
    control's) placed just before the first unit that starts from its encoder (``model.pretrained=<encoder>`` among
    its runs' overrides), which then comes after it. A cross-validated draw's control so trains beside its draw's
    runs: a study resumed on a new machine from its progress record trains again the control of one draw at most,
    not of every draw not yet scored. A control no unit starts from is not trained."""
    controls = {f"model.pretrained={run.encoder}": unit
                for run, unit in zip(setup.labeled, labeled_units(setup), strict=True)}
    placed: list[Unit] = []
    for unit in units:
        needs = []
        for overrides in _runs_overrides(unit):
            needs += [controls[o] for o in overrides if o in controls and controls[o] not in needs]
        for control in needs:
            if control.name not in {u.name for u in placed}:
                placed.append(control)
        if needs:
            unit = dataclasses.replace(unit, after=(*unit.after, *(c.name for c in needs)))
        placed.append(unit)
    return tuple(placed)


def _runs_overrides(unit: Unit) -> tuple[tuple[str, ...], ...]:
    """The asa-finetune overrides of each run ``unit`` trains (none for a scoring unit)."""
    if unit.group:
        return unit.group
    if unit.config is None:
        return ()
    return (unit.config[1],)


def labeled_units(setup: Setup) -> list[Unit]:
    """The labeled arms' runs' units (the positive control's: one run, or one per cross-validated draw), each of its
    arm; one is done when its encoder is trained, or when every transfer run that starts from it is scored (a study
    folder resumed from its progress record trains no control whose runs it holds)."""
    s, units = setup.study, []
    for run in setup.labeled:
        overrides = (*run.overrides, *s.threads_override)
        seeds = setup.split.seeds(s.scale) if run.draw is None else (run.draw,)
        scored = [transfer.run_folder(s.out / TRANSFER, run.arm, n, seed) / "scores.json"
                  for n in s.scale.cases for seed in seeds]
        units.append(Unit(run.name, module_argv("asa.cli.finetune", *overrides),
                          lambda run=run, scored=scored: finished(run.encoder) or all(f.is_file() for f in scored),
                          s.out / "logs" / f"{run.name}.log", threads=s.threads,
                          inputs=(JsonFile(run.run_dir / "splits.json", run.splits),), config=("finetune", overrides),
                          steps=s.scale.pilot_steps, arms=(run.arm,)))
    return units


def pretraining_unit(s: Study, run: Pretraining, matched: Pretraining | None = None, pinned: int | None = None) -> Unit:
    """A pretraining run's unit: done when its last.pt went through its schedule and its encoder is exported (at its
    lowest held-out round; with ``matched``, after that run, at the step its export holds; at ``pinned``, the step
    `pinned_exports` fixed for it, where the study folder holds one)."""
    overrides = (*run.overrides, *s.threads_override, *(() if pinned is None else (f"export_step={pinned}",)))
    waits = matched if pinned is None else None  # a fixed step is known before any run is done
    late = None if waits is None else lambda: (f"export_step={export_step(waits)}",)
    return Unit(run.name, pretraining_argv(s.scale.nproc, *overrides),
                lambda: finished(run.run_dir / "checkpoints" / "last.pt") and run.encoder.is_file(),
                s.out / "logs" / f"{run.name}.log", threads=s.threads, inputs=run.inputs,
                config=("pretrain", overrides), steps=s.scale.pretrain_steps, arms=(run.arm,),
                after=() if waits is None else (waits.name,), late=late)


class Pretrain(Stage):
    """Every pretraining run of the arms (`asa.study.runs.plan_pretraining`), each exported at its lowest held-out
    round, and the negative control's: the matched arm's recipe on noise volumes, each run started once the matched
    arm's run of its replicate is done and exported at the step that run exported (`asa.study.arms.matched_by_noise`:
    mae), so that mae − noise differs in what the runs read, not in how long they trained; without a matched arm, at
    its own lowest held-out round. A noise run waits for its matched run alone: the units keep the cores busy. Once
    read, each run's export step is fixed (`pinned_exports`): a run trained again, as on another machine, exports at
    it."""

    title = "pretraining"

    def units(self, setup: Setup, found: Findings) -> StageUnits:
        s, matched, pins = setup.study, matched_runs(setup), pinned_exports(setup.study)
        arms = [pretraining_unit(s, run, pinned=pins.get(run.name)) for run in setup.runs if not ARMS[run.arm].noise]
        noise = [pretraining_unit(s, run, matched.get(run.replicate), pins.get(run.name))
                 for run in setup.runs if ARMS[run.arm].noise]
        return StageUnits((*arms, *noise))

    def read(self, setup: Setup, found: Findings, staged: StageUnits) -> int | None:
        pin_exports(setup.study, setup.runs)
        return None


def pinned_exports(s: Study) -> dict[str, int]:
    """Each pretraining run -> the step of its export, as the study folder's `EXPORTS` fixed it when the pretraining
    stage was first read (empty before). A run's floating point differs from machine to machine, and with it the round
    whose held-out loss is lowest (the end-point study's mae-c40: step 1,504 on one machine, 848 on the next, their
    losses 0.5593 and 0.5609 apart by 0.0016); a run trained again (its folder lost with its machine, and restored
    from a progress record: ``scripts/record_study.py``) exports at the step the runs already scored started from,
    so every draw's runs start from the same round of the same recipe."""
    path = s.out / EXPORTS
    if not path.is_file():
        return {}
    try:
        return {str(name): int(step) for name, step in json.loads(path.read_text()).items()}
    except (ValueError, TypeError, AttributeError) as err:
        refuse(f"{path}: expected a JSON object of pretraining run -> export step (asa-study writes it): {err}")


def pin_exports(s: Study, runs: Sequence[Pretraining]) -> None:
    """Fix each run's export step in `EXPORTS` (the steps already there kept); refuse a run whose export is not at
    its fixed step (trained before the step was fixed, its folder kept), naming the folder to remove."""
    pins = pinned_exports(s)
    for run in runs:
        step = export_step(run)
        fixed = pins.setdefault(run.name, step)
        if fixed != step:
            refuse(f"[study] {run.encoder}: exported at step {step}, but {s.out / EXPORTS} fixes {run.name}'s export "
                   f"at step {fixed} (the step its scored runs started from): remove {run.run_dir} so that "
                   "the same command trains it again and exports it there")
    atomic_write_json(s.out / EXPORTS, dict(sorted(pins.items())))


def matched_runs(setup: Setup) -> dict[int, Pretraining]:
    """Replicate -> the matched arm's run (at the largest cohort) whose export step that replicate's noise run takes."""
    matched = matched_by_noise(setup.study.arms)
    runs = [r for r in setup.runs if r.arm == matched]
    largest = max((r.cohort for r in runs), default=None)
    return {r.replicate: r for r in runs if r.cohort == largest}


def export_step(run: Pretraining) -> int:
    """The step ``run``'s export holds (its lowest held-out round)."""
    return int(load_checkpoint(run.encoder)["step"])


class Probes(Stage):
    """``--probe-first``: every pretrained encoder probed frozen (`asa.study.probes`), the factorial read and the one
    pretraining arm the transfer stage fine-tunes chosen."""

    title = "probes"

    jobs = 1  # one asa-probe over every encoder

    def units(self, setup: Setup, found: Findings) -> StageUnits:
        probe = probes.probe_unit(setup.study, setup.runs, setup.probe_channels, [*setup.split.val, *setup.split.pool],
                                  overlap_overrides(setup.checks.overlap))
        return StageUnits((probe,))

    def read(self, setup: Setup, found: Findings, staged: StageUnits) -> int | None:
        s = setup.study
        record = json.loads((s.out / "probes" / "table" / "probe.json").read_text())
        keys, label = probes.primary_probe(setup.task.output_names, s.lesion_classes)
        rows = probes.read_probes(record, setup.runs, keys)
        found.probes = {"label": label, "keys": keys, "cases": record["data"]["n"],
                        "folds": record["settings"]["folds"], "rows": rows, "effects": probes.factorial_effects(rows),
                        "shared": probes.shared_cells(rows), "chosen": probes.choose_arm(rows)}
        atomic_write_json(s.out / "probes" / "probes.json", found.probes)
        said = readings.probe_reading(found.probes, min_effect=s.min_effect)
        print("\n".join(f"[study] {line}" for line in report.probe_lines(said) if line and not line.startswith("|")),
              flush=True)


class TransferStage(FineTuning):
    """Every arm (the one the probes chose with ``--probe-first``) beside its scratch twin, fine-tuned for the
    pilot's budget at each N and seed (or cross-validated draw), scored on the test cases."""

    title = "transfer"

    def transfer(self, setup: Setup, found: Findings) -> tuple[transfer.Transfer, str]:
        s, split = setup.study, setup.split
        tuned = [r for r in setup.runs if found.probes is None or r.arm == found.probes["chosen"] or ARMS[r.arm].noise]
        seeds = split.seeds(s.scale)
        arms = finetune_arms(tuned, s.network, setup.labeled, dict(s.encoders))
        steps = found.pilot["steps"]
        head_start = s.head_start
        if head_start is not None and head_start >= steps:  # the end point came first: no run is read there
            head_start = None
        said = (f"[study] transfer: {len(arms)} arms × N {list(s.scale.cases)} × "
                + split.seeds_text(s.scale)
                + f", {steps} steps each"
                + (f", each also scored at its head start, step {head_start}" if head_start else "")
                + (", each draw's runs trained as one unit (--fused)" if s.fused else ", a process per run")
                + (" (on a CPU, where --fused was measured no faster than a process per run: --dry-run prices both "
                   "here)" if s.fused and s.memory_gib is None else "")
                + f" (logs in {s.out / 'logs' / 'transfer'})")
        if s.head_start is not None and head_start is None:
            said += (f"\n[study] --head-start {s.head_start}: not before the end point ({steps} steps), so no run is "
                     "scored there")
        return setup.transfer(TRANSFER, arms=arms, cases=tuple(s.scale.cases), seeds=seeds, steps=steps,
                              head_start=head_start, n_boot=s.n_boot, overrides=setup.overrides), said

    def units(self, setup: Setup, found: Findings) -> FineTuningUnits:
        staged = super().units(setup, found)
        return dataclasses.replace(staged, units=with_controls(setup, staged.units))

    def read(self, setup: Setup, found: Findings, staged: FineTuningUnits) -> int | None:
        # its tables give every arm's Δ to its twin: a look, recorded in design.json before the first is written
        found.looks = take_look(setup.study.out)
        return super().read(setup, found, staged)


class Report(Stage):
    """The page (`asa.study.report`), from every stage's outputs."""

    title = "report"

    def read(self, setup: Setup, found: Findings, staged: StageUnits) -> int | None:
        s, times, split, endpoint = setup.study, found.times, setup.split, setup.checks.endpoint
        info = {"scale_name": s.scale_name, "scale": dataclasses.asdict(s.scale), "network": s.network.name,
                "steps": found.pilot["steps"], "head_start": s.head_start, "fused": s.fused, "recipe": s.recipe, "encoder_lr_scale": s.encoder_lr_scale,
                "min_effect": s.min_effect, "endpoint": [endpoint.key, endpoint.label],
                "design": split.report_design(),
                "lesion_classes": list(s.lesion_classes), "machine": machine(), "stages": times["stages"],
                "runs": times["runs"], "controls": labeled_by_arm(setup),
                "checks": setup.checks.record(), "pilot": found.pilot,
                "pretraining": [pretraining_summary(run, times["runs"].get(run.name, math.nan)) for run in setup.runs],
                "classes": list(setup.task.output_names), "probes": found.probes,
                "encoders": [f"{k}={v}" for k, v in s.encoders],
                "commands": ["asa-study " + shlex.join(sys.argv[1:]),
                             *(f"asa-pretrain {shlex.join(r.overrides)}" for r in setup.runs)],
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
        folder = report.write_report(s.out, info, found.scored, n_boot=s.n_boot, looks=found.looks,
                                     head_start=found.head_start)
        print(f"[study] done: report in {folder / 'README.md'}", flush=True)
        return 0


def labeled_by_arm(setup: Setup) -> dict[str, list[str]]:
    """Each labeled arm -> its runs' units, by name (their seconds in times.json): the Cost table's control rows,
    grouped by the units' arm."""
    by_arm: dict[str, list[str]] = {}
    for unit in labeled_units(setup):
        by_arm.setdefault(str(unit.arm), []).append(unit.name)
    return by_arm


def stages(study: Study) -> list[Stage]:
    """The study's stages, in order."""
    return [Pilot(), Pretrain(), *([Probes()] if study.probe_first else []), TransferStage(),
            Report()]


def run_stages(setup: Setup, clock: Clock, times: dict[str, Any], times_file: Path) -> int:
    """Run every stage in order: its units not done yet within ``clock``'s budget, then its reading; the seconds of
    each stage and unit added to ``times`` (kept in ``times_file``). Returns the exit code: 0 (the report is
    written), `UNFINISHED` (the budget ended or a stage was left: rerun) or a stage's own."""
    s, found = setup.study, Findings(times=times)
    for stage in stages(s):
        started, staged = time.perf_counter(), stage.units(setup, found)  # its seconds count its planning
        units = staged.units
        if staged.said:
            print(staged.said, flush=True)
        try:
            complete = run_units(units, stage.jobs or s.scale.jobs, clock, times["runs"], s.memory_gib)
        finally:  # a stop (SIGTERM, SIGINT) raises through here: its sitting's seconds count all the same
            now = time.perf_counter()
            for unit, since in RUNNING.values():  # the units it stopped mid-way, their seconds so far
                times["runs"][unit.name] = times["runs"].get(unit.name, 0.0) + now - since
            if units:
                times["stages"][stage.title] = times["stages"].get(stage.title, 0.0) + now - started
            atomic_write_json(times_file, times)
        if not complete:
            why = (f"the {stage.title} stage did not finish" if s.scale.time_budget is None else
                   f"the time budget ({s.scale.time_budget:.0f} s) ended during the {stage.title} stage")
            print(f"[study] {why}: rerun the same command to continue", flush=True)
            return UNFINISHED
        if (code := stage.read(setup, found, staged)) is not None:
            return code
    return 0


def draft(setup: Setup) -> list[tuple[Stage, StageUnits]]:
    """Every stage's units as planned now, nothing written (the transfer stage at the pilot's whole length or at
    ``--budget-cap`` where that is shorter, every pretraining arm: nothing is read before anything runs)."""
    s = setup.study
    unread = Findings(pilot={"steps": min(s.scale.pilot_steps, s.budget_cap or s.scale.pilot_steps)})
    return [(stage, stage.units(setup, unread)) for stage in stages(s)]


def check_configs(units: list[Unit]) -> None:
    """Compose and check every unit's config as its console script will (`asa.api.config.load_config`): a bad
    override is refused in one line naming the unit (exit 2) before anything trains. Units that differ only in
    their folder and seed compose once (`asa.study.cost.composed`)."""
    for unit in (u for u in units if u.config is not None):
        entry, first = unit.config
        for overrides in unit.group or (first,):  # a fused unit: each of its runs
            try:
                composed(entry, overrides)
            except ValueError as err:
                refuse(f"[study] {unit.name}: its asa-{entry} config does not compose: {err}".replace("\n", " "))


def check_pilot(stage_units: list[tuple[Stage, StageUnits]]) -> None:
    """Refuse (one line naming the option and its floor, exit 2) a pilot that cannot set the budget before anything
    trains: `asa.study.tables.converged_budget` reads where its validation Dice stopped rising, over 2 ×
    `BUDGET_WINDOW` rounds at least, on --val cases, one round every ``trainer.val_every`` epochs of its cadence
    (`asa.study.transfer.cadence`) and one at its end."""
    pilot = next(units for stage, units in stage_units if isinstance(stage, Pilot))
    (run, *_), (unit, *_), least = pilot.runs, pilot.trained, 2 * BUDGET_WINDOW
    why = (f"the pilot sets the fine-tuning budget where its validation Dice stops rising, which takes {least} "
           "validation rounds at least")
    if not run.val:
        refuse(f"--val {len(run.val)}: {why}, on validation cases: expected --val 1 or more")
    trainer = composed(*unit.config).trainer
    batch, gap = int(trainer.batch_size), int(trainer.val_min_steps or 0)

    def rounds(steps: int) -> int:
        return epoch_rounds(steps, *transfer.cadence(steps, run.n, batch), gap) + 1  # and the round at its end
    if rounds(unit.steps) < least:
        floor = next(steps for steps in itertools.count(unit.steps + 1) if rounds(steps) >= least)
        refuse(f"--pilot-steps {unit.steps}: {why}, and {unit.steps} steps over N {run.n} validate "
               f"{rounds(unit.steps)} time(s): expected at least {floor}")


def schedule_lines(setup: Setup, stage_units: list[tuple[Stage, StageUnits]], costs: Costs,
                   apart: list[tuple[Stage, StageUnits]] | None = None) -> list[str]:
    """The study's schedule, nothing run: each stage's units (`draft`), how many run at once and its planned minutes
    from ``costs`` (timed on this device): the units as `asa.study.scheduler.run_units` starts them (`_makespan`:
    ``jobs`` at once within the GPU's memory), each scoring unit after its runs, a unit side by side as fast as alone
    (``jobs`` × threads ≤ the cores). ``apart``: the same stages drafted a process per run, for a --fused plan, which
    then says which of the two modes is the faster on this device."""
    memory, total, lines = setup.study.memory_gib, 0.0, [f"[study] plan: {costs.line()}"]
    for stage, staged in stage_units:
        units = staged.units
        if not units:
            continue
        jobs = stage.jobs or setup.study.scale.jobs
        lines += [staged.said] if staged.said else []
        seconds = _stage_seconds(setup, stage, staged, costs)
        total += seconds
        trained = [u for u in units if u.config is not None]
        steps = "/".join(map(str, sorted({u.steps for u in trained}))) or 0
        at_once = f"{jobs} at once"
        if memory is not None:
            at_once += f" within the GPU's {memory:.1f} GiB (up to {max(u.gib for u in units):g} GiB a unit)"
        lines.append(f"[study] plan: {stage.title}: {len(trained)} unit(s) of {steps} steps, {at_once}, "
                     f"{len(units) - len(trained)} scoring or probing unit(s): {seconds / 60:.1f} min")
    if apart is not None:
        lines.append(_modes_line(total, sum(_stage_seconds(setup, *staged, costs) for staged in apart)))
    return [*lines, f"[study] plan: {total / 60:.1f} min in all on {costs.device}; nothing was run (--dry-run)"]


def _stage_seconds(setup: Setup, stage: Stage, staged: StageUnits, costs: Costs) -> float:
    """The planned seconds of one stage: its units in order, ``jobs`` at once, a scoring unit once the unit it
    scores has ended (`_makespan`)."""
    jobs, memory, units = stage.jobs or setup.study.scale.jobs, setup.study.memory_gib, staged.units
    return _makespan([(costs.seconds(u), u.gib, _waits(u, units)) for u in units], jobs, memory)


def _waits(unit: Unit, units: Sequence[Unit]) -> tuple[int, ...]:
    """The positions in ``units`` of the units ``unit`` comes after."""
    return tuple(k for k, u in enumerate(units) if u.name in unit.after)


def _modes_line(fused: float, apart: float) -> str:
    """The dry run's word on --fused: the study's minutes with it and a process per run, priced from the same timed
    steps, and which mode is the faster here (a fused group's kernels can be slower than its units' own: on a CPU
    they were, BENCHMARKS.md "The study's units")."""
    both = f"{fused / 60:.1f} min with --fused against {apart / 60:.1f} min a process per run"
    if math.isnan(fused) or math.isnan(apart):
        verdict = "a mode was not timed here, so neither is priced the faster"
    elif fused > apart:
        verdict = "--fused is the slower here: run without it on this device (the default, a process per run)"
    elif fused < apart:
        verdict = "--fused is the faster here"
    else:
        verdict = "the two are priced the same here"
    return f"[study] plan: modes: {both}: {verdict}"


def _makespan(units: list[tuple[float, float, tuple[int, ...]]], jobs: int, memory_gib: float | None = None) -> float:
    """The seconds ``units`` (each its seconds, GiB and the positions of the units before it that it comes after)
    take by `run_units`' rule: at the start and whenever one ends, the first unit in order whose units before it
    have ended starts, while fewer than ``jobs`` run and its GiB fit beside theirs in ``memory_gib`` (None: on the
    CPU) or nothing runs. A unit waiting for another unit lets a later one start; one waiting for room does not."""
    now, ends = 0.0, [math.inf] * len(units)  # each unit's end (inf: not started)
    pending, running = list(range(len(units))), []  # running: the running units' (end, GiB)

    def fits(gib: float) -> bool:  # beside the running units on the device; with none running, any unit starts
        return memory_gib is None or not running or sum(g for _, g in running) + gib <= memory_gib

    while pending:
        while len(running) < max(1, jobs):
            first = next((i for i in pending if all(ends[k] <= now for k in units[i][2])), None)
            if first is None or not fits(units[first][1]):
                break
            seconds, gib, _ = units[first]
            pending.remove(first)
            ends[first] = now + seconds
            running.append((ends[first], gib))
        if not running:
            raise ValueError(f"units {pending} wait for units that never start (their positions: "
                             f"{[units[i][2] for i in pending]})")
        now = min(end for end, _ in running)  # the next to end
        running = [(end, g) for end, g in running if end > now]
    return max(ends, default=0.0)
