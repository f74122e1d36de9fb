"""The stages of ``asa-study``, run in order by `run_stages`: the pilot (with the positive control beside it), the
pretraining runs, the frozen probes (``--probe-first``), the transfer stage and the report. A stage names its units
(the scheduler's processes: `asa.study.scheduler`), is done when they are, and then reads what they wrote; a reading
may stop the study (a pilot that did not learn). Every stage's units, scoring included, run under one scheduler,
within the call's time budget; a rerun continues with the first stage not done."""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import shlex
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from asa.io import atomic_write_json
from asa.study import probes, report, transfer
from asa.study.arms import CONTROL, PILOT, SCRATCH, SUPERVISED
from asa.study.common import REFUSED, Clock, finished, machine, module_argv
from asa.study.plan import (UNIT_SECONDS, Pretraining, Supervised, finetune_arms, overlap_overrides,
                            pretraining_argv, supervised_overrides, supervised_splits)
from asa.study.readout import pilot_budget, pilot_reading, pretraining_summary
from asa.study.scheduler import Unit, run_units
from asa.study.settings import Study

UNFINISHED = 3  # the exit code of a call that stopped before the study's end (its budget, a stage left): rerun


@dataclasses.dataclass
class Plan:
    """What the checks hand to the stages, and what the stages read on the way (the pilot's budget, the probes)."""

    study: Study
    task: Any
    split: Mapping[str, Any]
    checks: Mapping[str, Any]
    runs: list[Pretraining]
    supervised: list[Supervised]
    overrides: list[str]  # asa-finetune overrides of every fine-tuning run
    probe_channels: list[str]  # the channels a frozen encoder is probed with: those it pretrained on
    pilot: dict[str, Any] | None = None
    probes: dict[str, Any] | None = None

    def transfer(self, folder: str, **settings: Any) -> transfer.Transfer:
        """A `asa.study.transfer.Transfer` in ``<out>/<folder>`` with what every fine-tuning run of the study shares."""
        s, split = self.study, self.split
        return transfer.Transfer(
            self.study.out / folder, data=s.data, root=s.root, model=s.network.finetune[0].split("=", 1)[1],
            crop=s.scale.crop, test=s.scale.test, val_cases=s.scale.val, split_seed=s.seed, device=s.device,
            threads=s.threads, hold_out=tuple(split["supervised"]), workers=s.scale.workers, jobs=s.scale.jobs,
            lesion_classes=s.lesion_classes, logs=s.out / "logs" / folder,
            **({"folds": split["folds"], "repeats": split["repeats"]} if "draws" in split else {}), **settings)


class Stage:
    """One stage: its units, done when they are, and what it reads once they are (``times``: the study's seconds per
    stage and unit; ``spent``: each of its units' seconds in this call) -> None to go on, else the exit code the
    study ends with."""

    title = ""

    def units(self, plan: Plan) -> list[Unit]:
        return []

    def read(self, plan: Plan, times: Mapping[str, Any], spent: Mapping[str, float]) -> int | None:
        return None


class FineTuning(Stage):
    """A stage of fine-tuning runs (`asa.study.transfer`): their units, scoring included, then their tables."""

    def transfer(self, plan: Plan) -> transfer.Transfer:
        raise NotImplementedError

    def units(self, plan: Plan) -> list[Unit]:
        self.settings = self.transfer(plan)
        self.runs, test, self.cfg, ids = transfer.plan_runs(self.settings)
        return transfer.units(self.settings, self.runs, test, ids, str(self.cfg.data.name))

    def read(self, plan: Plan, times: Mapping[str, Any], spent: Mapping[str, float]) -> int | None:
        transfer.results(self.settings, self.runs, self.cfg, spent)
        return None


class Pilot(FineTuning):
    """The scratch twin at the largest N, the recipe's warm-up then a constant lr, and the positive control beside
    it: a scratch twin that does not learn the task makes every contrast noise, and the study stops before it
    spends the pretraining. Reads the fine-tuning budget (`asa.study.readout.pilot_budget`)."""

    title = "pilot and positive control"

    def transfer(self, plan: Plan) -> transfer.Transfer:
        s = plan.study
        return plan.transfer(PILOT, arms={SCRATCH: transfer.Tuned(("model.pretrained=null",))},
                             cases=(max(s.scale.cases),), seeds=(0,), steps=s.scale.pilot_steps, n_boot=1000,
                             overrides=(*s.network.finetune[1:], *plan.overrides, "optim.schedule=constant"))

    def units(self, plan: Plan) -> list[Unit]:
        s, controls = plan.study, []
        for control in plan.supervised:
            atomic_write_json(control.run_dir / "splits.json", supervised_splits(control, plan.split, s.seed))
            argv = module_argv("asa.cli.finetune", *supervised_overrides(control, s.network, s.scale, s.seed,
                                                                         plan.overrides), *s.threads_override)
            controls.append(Unit(control.run_dir.name, argv,
                                 lambda control=control: finished(control.run_dir / "checkpoints" / "last.pt"),
                                 s.out / "logs" / f"{control.run_dir.name}.log", threads=s.threads))
        return [*super().units(plan), *controls]

    def read(self, plan: Plan, times: Mapping[str, Any], spent: Mapping[str, float]) -> int | None:
        super().read(plan, times, spent)
        s = plan.study
        plan.pilot = pilot_budget(s.out, s.scale, s.budget_cap, lesion_classes=list(s.lesion_classes))
        atomic_write_json(s.out / "pilot.json", plan.pilot)
        if plan.pilot["learned"]:
            return None
        line = (f"[study] the pilot did not learn the task: {pilot_reading(plan.pilot)}; every contrast would be "
                "noise, so the study stops before any pretraining (make the task learnable: more labeled cases, "
                "--pilot-steps, a larger --crop; or pass --accept-unlearned to run it anyway, its report then reads "
                "no answer)")
        if not (s.accept_unlearned or s.scale_name == "quick"):  # the quick scale checks the plumbing, not the task
            print(line, file=sys.stderr, flush=True)
            return REFUSED
        print(line.split(";")[0] + ("; the quick scale checks the plumbing: going on" if s.scale_name == "quick" else
                                    "; --accept-unlearned: going on"), flush=True)
        return None


class Pretrain(Stage):
    """Every pretraining run (`asa.study.plan.plan_pretraining`): done when its last.pt went through its schedule
    and its encoder is exported."""

    title = "pretraining"

    def units(self, plan: Plan) -> list[Unit]:
        s = plan.study
        return [Unit(run.name, pretraining_argv(s.scale.nproc, *run.overrides, *s.threads_override),
                     lambda run=run: finished(run.run_dir / "checkpoints" / "last.pt") and run.encoder.is_file(),
                     s.out / "logs" / f"{run.name}.log", threads=s.threads) for run in plan.runs]


class Probes(Stage):
    """``--probe-first``: every pretrained encoder probed frozen (`asa.study.probes`), the factorial read and the one
    pretraining arm the transfer stage fine-tunes chosen."""

    title = "probes"

    def units(self, plan: Plan) -> list[Unit]:
        s = plan.study
        return [probes.probe_unit(s.out, plan.runs, data=s.data, root=s.root, channels=plan.probe_channels,
                                  cases=[*plan.split["val"], *plan.split["pool"]], seed=s.seed, device=s.device,
                                  threads=s.threads,
                                  overrides=overlap_overrides(plan.checks["overlap"]))]

    def read(self, plan: Plan, times: Mapping[str, Any], spent: Mapping[str, float]) -> int | None:
        s = plan.study
        record = json.loads((s.out / "probes" / "table" / "probe.json").read_text())
        keys, label = probes.primary_probe(plan.task.output_names, s.lesion_classes)
        rows = probes.read_probes(record, plan.runs, keys)
        plan.probes = {"label": label, "keys": keys, "cases": record["data"]["n"],
                       "folds": record["settings"]["folds"], "rows": rows, "effects": probes.factorial_effects(rows),
                       "chosen": probes.choose_arm(rows)}
        atomic_write_json(s.out / "probes" / "probes.json", plan.probes)
        for line in probes.probe_lines(plan.probes, min_effect=s.min_effect):
            if line and not line.startswith("|"):
                print(f"[study] {line}", flush=True)
        return None


class TransferStage(FineTuning):
    """Every arm (the one the probes chose with ``--probe-first``) beside its scratch twin, fine-tuned for the
    pilot's budget at each N and seed (or cross-validated draw), scored on the test cases."""

    title = "transfer"

    def transfer(self, plan: Plan) -> transfer.Transfer:
        s, split = plan.study, plan.split
        control = (None if not plan.supervised else plan.supervised[0].run_dir if "draws" not in split
                   else s.out / "pretrain" / f"{SUPERVISED}-s{transfer.DRAW}")  # one control per draw
        tuned = plan.runs if plan.probes is None else [r for r in plan.runs if r.arm in (plan.probes["chosen"],
                                                                                        CONTROL)]
        seeds = tuple(range(len(split["draws"]))) if "draws" in split else tuple(s.scale.seeds)
        arms = finetune_arms(tuned, s.network, control, dict(s.encoders))
        print(f"[study] transfer: {len(arms)} arms × N {list(s.scale.cases)} × "
              + (f"{len(seeds)} cross-validation draws" if "draws" in split else f"seeds {list(seeds)}")
              + f", {plan.pilot['steps']} steps each (logs in {s.out / 'logs' / 'transfer'})", flush=True)
        return plan.transfer("transfer", arms=arms, cases=tuple(s.scale.cases), seeds=seeds,
                             steps=plan.pilot["steps"], n_boot=s.n_boot, overrides=tuple(plan.overrides))


class Report(Stage):
    """The page (`asa.study.report`), from every stage's outputs."""

    title = "report"

    def read(self, plan: Plan, times: Mapping[str, Any], spent: Mapping[str, float]) -> int | None:
        s = plan.study
        info = {"scale_name": s.scale_name, "scale": dataclasses.asdict(s.scale), "network": s.network.name,
                "steps": plan.pilot["steps"], "recipe": s.recipe, "encoder_lr_scale": s.encoder_lr_scale,
                "min_effect": s.min_effect,
                "endpoint": [plan.checks["endpoint"]["key"], plan.checks["endpoint"]["label"]],
                "design": ({"folds": plan.split["folds"], "repeats": plan.split["repeats"],
                            "draws": len(plan.split["draws"]), "cases": len(plan.split["test"])}
                           if "draws" in plan.split else None),
                "lesion_classes": list(s.lesion_classes), "machine": machine(), "stages": times["stages"],
                "runs": times["runs"], "checks": plan.checks, "pilot": plan.pilot,
                "pretraining": [pretraining_summary(run, times["runs"].get(run.name, math.nan)) for run in plan.runs],
                "classes": list(plan.task.output_names), "probes": plan.probes,
                "encoders": [f"{k}={v}" for k, v in s.encoders],
                "commands": ["asa-study " + shlex.join(sys.argv[1:]),
                             *(f"asa-pretrain {shlex.join(r.overrides)}" for r in plan.runs)],
                "finished": datetime.datetime.now().isoformat(timespec="seconds")}
        folder = report.write_report(s.out, info, n_boot=s.n_boot)
        print(f"[study] done: report in {folder / 'README.md'}", flush=True)
        return 0


def stages(study: Study) -> list[Stage]:
    """The study's stages, in order."""
    return [Pilot(), Pretrain(), *([Probes()] if study.probe_first else []), TransferStage(), Report()]


def run_stages(plan: Plan, clock: Clock, times: dict[str, Any], times_file: Path) -> int:
    """Run every stage in order: its units not done yet within ``clock``'s budget, then its reading; the seconds of
    each stage and unit added to ``times`` (kept in ``times_file``). Returns the exit code: 0 (the report is
    written), `UNFINISHED` (the budget ended or a stage was left: rerun) or a stage's own."""
    s = plan.study
    for stage in stages(s):
        started = time.perf_counter()
        units = stage.units(plan)
        before = {u.name: times["runs"].get(u.name, 0.0) for u in units}
        complete = run_units(units, s.scale.jobs if not isinstance(stage, Probes) else 1, clock, times["runs"])
        if stage.title == Pilot.title:  # the cost table's pilot
            times["runs"][PILOT] = times["runs"].get(f"{PILOT}/{SCRATCH}-n{max(s.scale.cases)}-s0", math.nan)
        if units:
            times["stages"][stage.title] = times["stages"].get(stage.title, 0.0) + time.perf_counter() - started
        atomic_write_json(times_file, times)
        if not complete:
            why = (f"the {stage.title} stage did not finish" if s.scale.time_budget is None else
                   f"the time budget ({s.scale.time_budget:.0f} s) ended during the {stage.title} stage")
            print(f"[study] {why}: rerun the same command to continue", flush=True)
            return UNFINISHED
        spent = {u.name: times["runs"].get(u.name, 0.0) - before[u.name] for u in units}
        if (code := stage.read(plan, times, spent)) is not None:
            return code
    return 0


def schedule_lines(plan: Plan, unit_seconds: float = UNIT_SECONDS) -> list[str]:
    """The study's schedule, nothing run: each stage's units, how many run at once (``jobs``) and its planned minutes,
    every unit costing ``unit_seconds`` per 1200 steps (the transfer stage at the pilot's whole length, the budget it
    cannot exceed), waves of ``jobs`` units, a unit side by side as fast as alone (the GPU window measures it)."""
    s, jobs, total, lines = plan.study, plan.study.scale.jobs, 0.0, []
    plan.pilot = plan.pilot or {"steps": plan.study.scale.pilot_steps}
    for stage in stages(s)[:-1]:
        units = stage.units(plan)
        scoring = [u for u in units if u.name.rsplit("/", 1)[-1].startswith("scoring-")]
        steps = s.scale.pretrain_steps if isinstance(stage, Pretrain) else s.scale.pilot_steps
        waves = -(-(len(units) - len(scoring)) // jobs)
        seconds = waves * unit_seconds * steps / 1200
        total += seconds
        lines.append(f"[study] plan: {stage.title}: {len(units) - len(scoring)} unit(s) of {steps} steps, {jobs} at "
                     f"once ({waves} wave(s)), {len(scoring)} scoring unit(s): {seconds / 60:.1f} min")
    return [*lines, f"[study] plan: {total / 60:.1f} min in all at {unit_seconds:g} s per 1200-step unit, the scoring "
                    "and the probes' own time beside; nothing was run (--dry-run)"]
