"""asa-study: does pretraining help on my data? One resumable command over your own pretraining cohort and
labeled set: the pilot that sets the fine-tuning budget, the pretraining arms, a negative and a positive control,
fine-tuning of every arm beside its scratch twin over N labeled cases × draws, and a report with plots.

Stages (asa.study.stages; rerun the same command to continue: finished units are kept, and a rerun may add arms,
seeds, --repeats, and cohorts and N below the largest): the checks before anything trains (test and validation cases against
the pretraining cohort, refused unless --accept-overlap; the channels each arm reads; the positive control's
cases); the pilot (the scratch twin at a constant lr: the fine-tuning budget is where its validation Dice stops
rising); the pretraining runs of every arm and of the negative control (mae's recipe on noise); with --probe-first,
frozen probes that choose the one arm fine-tuned; the transfer stage (every arm beside its twin at each N and draw,
scored on the test cases, each positive control trained just before its draw's runs); the report
(<out>/report/README.md), read on the primary endpoint named before anything trains (the lesion Dice with
--lesion-classes or one foreground class).

Every scale pretrains each arm three times (the gpu scale four, the quick scale twice) and cross-validates a labeled
set too small for its fixed split (--folds × --repeats; fewer than --min-scored scored cases: refused). SIGTERM or SIGINT stops every
child (each saves what it can) and the study exits 143 or 130; a refusal exits 2; a call stopped by its
--time-budget exits 3 (rerun). docs/studies.md holds the full account.

Example::

    asa-demo-data --layout bids --out cohort --cases 40 --size 48
    asa-demo-data --layout msd --out labeled --cases 32 --size 48
    asa-study --pretrain-data cohort --data msd --root labeled --out study --scale quick
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from asa.api.config import compose_config
from asa.data import Task, discover, get_task
from asa.io import atomic_write_json
from asa.study import readings
from asa.study.arms import (ARMS, CONTROL, PILOT, choices, labeled_arms, paper_arms, pretraining_arms,
                            primary_order)
from asa.study.checks import Checks, Endpoint, check_overlap, channel_lines, cohort_check_record, skull_lines
from asa.study.cohort import (CohortList, NoiseVolumes, StoreCohort, cohort_channels, cohort_lists, noise_volumes,
                              pretrain_layout, pretraining_channels, read_store)
from asa.study.common import Clock, add_scale_options, record_settings, refuse, study_folder
from asa.study.design import Design, register_design
from asa.study.runs import (GROWS, RECIPES, SCALES, ArmRuns, CrossValidated, FixedSplit, labeled_split,
                            overlap_overrides, plan_arms, recipe_overrides, studied_networks, supervised_channel,
                            with_store_splits)
from asa.study.readout import PILOT_FLOOR
from asa.study.scheduler import stop_on_signals, wait_for_orphans
from asa.study.settings import Study
from asa.study.sittings import keep_sitting
from asa.study.cost import composed, measure
from asa.study.stages import Setup, check_configs, check_pilot, draft, run_stages, schedule_lines


# the fine-tuning keys that name a file or folder a run reads: an --override naming one that is not there is refused
READ_PATHS = ("model.pretrained", "data.root", "data.store", "data.regions.dir")


# -------------------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    """The command line of ``asa-study``."""
    description, epilog = __doc__.split("\n\n", 1)
    p = argparse.ArgumentParser(prog="asa-study", description=description, epilog=epilog,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pretrain-data", type=Path, help=(
        "the unlabeled pretraining cohort: a BIDS or CAPS folder, a file list (files.csv), or a store written by "
        "asa-preprocess from a pretraining preset (read as it was written: its channels, its resampling)"))
    p.add_argument("--data", required=True, help="the labeled set's preset: brats | ibsr | wmh | msd (nnU-Net raw)")
    p.add_argument("--root", type=Path, required=True, help="the labeled set's folder")
    p.add_argument("--out", type=Path, required=True, help="the study folder (a rerun continues it)")
    p.add_argument("--network", default="resenc", help=(
        "a network family with a masked twin, optionally with one of its sizes: "
        + ", ".join(f"{f}[-{'|-'.join(s)}]" if s else f for f, s in studied_networks().items())
        + " or a plug-in's family (asa.models.Family); default: resenc at the scale's size"))
    p.add_argument("--pretrain-channels", choices=("t1", "all"), help=(
        "the channels the pretraining runs (and the negative control) read: all (the fine-tuning channels, in their "
        "order, matched by meaning: T1gd is t1ce) or t1 (its stem adapted to the fine-tuning channels); default: "
        "all when every cohort case has them, else t1"))
    p.add_argument("--arms", nargs="*", default=["mae", "asa", "noise", "supervised"], choices=choices(),
                   help="pretraining arms and controls beside the scratch twin (default: mae asa noise supervised)")
    p.add_argument("--probe-first", action="store_true", help=(
        "probe every pretrained encoder frozen (asa-probe on the validation and training-pool cases, never on the "
        "scored test cases; a cross-validated set is refused) before any fine-tuning, and fine-tune only the "
        "pretraining arm whose encoders the probes read best on the primary endpoint's classes (with the scratch "
        "twins and the controls); with the arms mae asa mae-coord asa-coord the report reads the factorial's main "
        "effects"))
    p.add_argument("--encoder", action="append", default=[], metavar="NAME=FILE", help=(
        "an arm fine-tuned from any file asa loads (an asa encoder, an nnssl/OpenMind or nnU-Net checkpoint); "
        "repeatable"))
    p.add_argument("--recipe", choices=sorted(RECIPES), default="adamw", help=(
        "the fine-tuning recipe of every arm: adamw (asa's, one encoder lr for all arms) or nnunet (nnU-Net's "
        "PretrainedTrainer: 1e-3 for a pretrained network, 1e-2 from scratch)"))
    p.add_argument("--encoder-lr-scale", type=float, default=1.0,
                   help="with --recipe adamw: the encoder's lr over the decoder's, the same for every arm (default 1)")
    add_scale_options(p, SCALES, "cpu", {
        "cpu": "ResEnc S, 32³ crops, N = 8: one sitting on two CPU cores",
        "gpu": "ResEnc S, 32³ crops, N = 2 by 4 folds × 2 repeats, units side by side on one GPU, each call within "
               "--time-budget; refused without a GPU",
        "planted": "the planted bed of asa-demo-data --placement planted",
        "quick": "a plumbing check: a few steps per run, minutes; its report reads no answer"})
    p.add_argument("--budget-cap", type=int, metavar="STEPS",
                   help="fine-tune at most STEPS steps whatever the pilot asks for (the report says so)")
    p.add_argument("--head-start", type=int, metavar="STEPS", help=(
        "also score every fine-tuning run at STEPS, from its state kept at that step, and read every question there "
        "too: the gain at a short budget (a head start) beside the gain at the end point, from the same runs"))
    p.add_argument("--accept-overlap", action="store_true", help=(
        "run although labeled cases (test, validation, the positive control's or the training pool's) are in the "
        "pretraining cohort: every run accepts them, and the report lists them"))
    p.add_argument("--accept-unlearned", action="store_true", help=(
        f"go on when the pilot did not learn the task (its best validation Dice under {PILOT_FLOOR}): the study "
        "then pretrains and fine-tunes, and its report reads no answer"))
    p.add_argument("--seed", type=int, default=0, help="split, cohort order and pretraining seed")
    p.add_argument("--device", default="auto", help=(
        "where every run trains and is scored: auto (the GPU when there is one, else the CPU), cpu, cuda or "
        "cuda:<k> (default auto)"))
    p.add_argument("--threads", type=int, help=(
        "torch threads per run (default: the usable cores shared by the units at once; --jobs × --threads above the "
        "cores is refused)"))
    p.add_argument("--fused", action="store_true", help=(
        "train each draw's fine-tuning runs (its arms at one N and seed with one network, which share their batches) "
        "as one unit: their networks stacked under torch.vmap, one loader, each validation round and the scoring one "
        "pass over the cases for all of them, each run its own optimiser, schedule, checkpoints and folder, its "
        "numbers its own command's to float rounding; a run's wall time is its unit's shared out evenly; "
        "--dry-run prices it from a fused run timed here, beside a process per run from the same timed steps, and "
        "says which is the faster here (on a CPU a process per run was); on a GPU a unit of K runs is planned at K "
        "GiB, and units start only while theirs fit in the device's memory. Measured 5x slower than a process per "
        "run on one H200 before its host work was cut (BENCHMARKS.md, 'The study's units') "
        "(default: a process per run, the bit-reproducible reference)"))
    p.add_argument("--n-boot", type=int, default=10000, help="bootstrap resamples of the CIs")
    p.add_argument("--min-effect", type=float, default=0.01, metavar="DICE", help=(
        "the smallest difference in Dice the study reads as an effect: a contrast whose estimate is smaller is 'no "
        "difference this study can detect', whatever its CI; also the level of the pilot: the budget is the first "
        "round from which its validation Dice's trend rises less than this at its one-sided 95 %% upper bound, "
        "else the pilot's steps (default 0.01)"))
    p.add_argument("--looks", type=int, default=1, metavar="K", help=(
        "the looks at the scores the design plans (registered in <out>/design.json before the first unit): the "
        "primary is read at 1 − 0.05/K (Bonferroni), and over the looks taken where more (a rerun that changes the "
        "design after a report read the scores takes another look; default 1)"))
    p.add_argument("--lesion-classes", nargs="+", default=[], metavar="CLASS", help=(
        "classes whose mean Dice (lesion Dice) is the primary endpoint every verdict reads, e.g. the lesions of a "
        "task that also labels tissue; without it, the one foreground class of a one-class set, else mean Dice over "
        "every class"))
    p.add_argument("--dry-run", action="store_true", help=(
        "check and plan, then print each stage's units, how many run at once and the minutes they are planned to "
        "take on this machine (priced from a short run of each kind of unit timed here, in a scratch folder: a "
        "minute or two), and stop: nothing trains and nothing is written to --out"))
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="an asa-finetune override for every fine-tuning run")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``asa-study``: one study at a time in --out (`study_folder`; a dry run writes nothing there), then `_study`."""
    args = build_parser().parse_args(argv)
    if args.dry_run:
        return _study(args)
    with study_folder(args.out.expanduser().absolute()):
        return _study(args)


def _study(args: argparse.Namespace) -> int:
    """Refuse what cannot run, record the study's settings, check, setup, then run what is left."""
    study = Study.from_args(args, _encoders(args.encoder))
    _refuse_options(study)
    _check_overrides(study)
    labeled, split, task = _labeled_set(study)
    cohort_cases, held, channels, store = _pretraining_cohort(study, task)
    # the positive control takes the pretrained arms' T1-and-adapted-stem path when they read the T1 alone
    control_channel = supervised_channel(task.channels, channels)
    if not study.dry_run:  # a folder holding another study refused before anything is written (a dry run writes none)
        _record(study, task, channels, control_channel, store, keep=False)
    record, made = cohort_check_record(study.out, cohort_cases)
    if made and not study.dry_run:  # kept before the checks may refuse: a rerun with --accept-overlap reads it
        atomic_write_json(study.out / "checks" / "cohort.json", record)
    checks, cohorts, noise = _checks(study, labeled, split, task, cohort_cases, record, held, channels, store,
                                     control_channel)
    if not study.dry_run:
        atomic_write_json(study.out / "checks" / "checks.json", {**checks.record(), "split": split.record()})
    for line in checks.lines():
        print(f"[study] {line}", flush=True)
    # the overrides of every fine-tuning run
    finetune = (*recipe_overrides(study.recipe, study.encoder_lr_scale), *overlap_overrides(checks.overlap),
                *study.overrides)
    runs = plan_arms(study.out, study.scale, study.network, study.arms, split, cohorts, noise, data=study.data,
                     root=study.root, seed=study.seed, finetune=finetune, channel=control_channel,
                     channels=channels or ("t1",), store=store)
    if store is not None:
        runs = ArmRuns(tuple(with_store_splits(runs.pretraining, [c.id for c in cohort_cases], study.seed)),
                       runs.labeled)
    times_file = study.out / "times.json"
    times = json.loads(times_file.read_text()) if times_file.is_file() else {"stages": {}, "runs": {}}
    # the channels a frozen encoder is probed with: those it pretrained on, by their fine-tuning names
    setup = Setup(study, task, split, checks, runs.pretraining, runs.labeled, finetune,
                     (control_channel,) if control_channel else tuple(task.channels))

    def stopped(stop: BaseException, names: list[str]) -> None:
        atomic_write_json(times_file, times)
        # every stopped run saved its last.pt on the signal and continues from it (resume=auto)
        print(f"[study] {stop}: stopped {', '.join(names) or 'no run'}; finished runs are kept in {study.out} and "
              "each stopped run continues from the checkpoint it saved: rerun the same command to continue",
              file=sys.stderr, flush=True)

    stage_units = draft(setup)
    check_configs([u for _, staged in stage_units for u in staged.units])  # a bad override refused before training
    check_pilot(stage_units)
    if not study.dry_run:  # kept once every config composed: a refused command does not hold the folder
        _record(study, task, channels, control_channel, store)
        # before the first unit: what the scores will be read on
        register_design(study.out, Design.of(study, split, checks.endpoint.label))
    if study.dry_run:
        def plan_only() -> int:
            print("\n".join(_dry_run(setup, stage_units, cohorts)), flush=True)
            return 0

        def plan_stopped(stop: BaseException, names: list[str]) -> None:  # as a run's stop: one line, 143 or 130
            print(f"[study] {stop}: the dry run stopped; nothing was written to {study.out}", file=sys.stderr,
                  flush=True)
        return stop_on_signals(plan_only, plan_stopped)

    def work() -> int:
        wait_for_orphans(study.out)  # a study killed just before: its units end with it, saving first
        return run_stages(setup, Clock(study.scale.time_budget), times, times_file)
    return keep_sitting(times, times_file, lambda: stop_on_signals(work, stopped))


def _dry_run(setup: Setup, stage_units: list, cohorts: Mapping[int, CohortList | None]) -> list[str]:
    """The schedule of a dry run, its units priced on this device (a short timed run of each console script, its
    cohort's file list written to a scratch folder): nothing is written to --out."""
    study, every = setup.study, [u for _, staged in stage_units for u in staged.units]
    with tempfile.TemporaryDirectory(prefix="asa-study-plan-") as scratch:
        moved = {}  # each cohort's folder -> where its file list is written to time a unit reading it
        for cohort in cohorts.values():
            if cohort is not None:  # None: the store's cases, read where they are
                there = dataclasses.replace(cohort, folder=Path(scratch) / cohort.folder.name)
                there.write()
                moved[str(cohort.folder)] = str(there.folder)
        costs = measure(every, study.device, moved)
    warning = ["[study] plan: --scale gpu on a machine without a GPU: the plan below is priced on this machine's CPU, "
               "not on the GPU the scale is for"] if study.scale_name == "gpu" and "cuda" not in costs.device else []
    # a --fused plan priced a process per run too, from the same timed steps, to say which mode is the faster here
    apart = draft(dataclasses.replace(setup, study=dataclasses.replace(study, fused=False))) if study.fused else None
    return warning + schedule_lines(setup, stage_units, costs, apart)


def _encoders(specs: Sequence[str]) -> dict[str, str]:
    """The --encoder arms: name -> the file's absolute path (a name of its own and an existing file, else refused)."""
    encoders = {}
    for spec in specs:
        key, _, path = spec.partition("=")
        if not key or not path or key in (*ARMS, PILOT) or not Path(path).is_file():
            refuse(f"--encoder {spec}: expected NAME=FILE with a name of its own and an existing file")
        encoders[key] = str(Path(path).expanduser().absolute())
    return encoders


def _check_overrides(study: Study) -> None:
    """Refuse, in one line before anything is read or written, an --override that names a file or folder that is not
    there (`READ_PATHS`) or that does not compose with the labeled set's fine-tuning config: every run it reaches
    would fail, the first of them only after the pilot trained."""
    for spec in study.overrides:
        key, _, value = spec.partition("=")
        if key.lstrip("+~") in READ_PATHS and value not in ("null", "~", "") and not Path(value).expanduser().exists():
            refuse(f"--override {spec}: {value} does not exist (expected the file or folder {key} reads)")
    if not study.overrides:
        return
    try:
        composed("finetune", (f"data={study.data}", f"data.root={study.root}", *study.network.finetune,
                              *recipe_overrides(study.recipe, study.encoder_lr_scale), *study.overrides))
    except ValueError as err:
        refuse(f"--override {' '.join(study.overrides)}: the fine-tuning config does not compose: {err}"
               .replace("\n", " "))


def _refuse_options(study: Study) -> None:
    """Refuse (exit 2) arms the network cannot pretrain or that lack their cohort, and values out of range."""
    network, arms = study.network, study.arms
    if network.by_preset and (odd := [a for a in arms if a not in (*paper_arms(), CONTROL, *labeled_arms())]):
        refuse(f"--arms {' '.join(odd)}: with --network {network.family} the arms are "
               f"{', '.join((*paper_arms(), CONTROL, *labeled_arms()))}")
    if lacking := {arm: need for arm in arms if (need := network.missing(arm))}:
        refuse("--arms: " + "; ".join(f"{arm} needs {', '.join(need)}, which the {network.family} family's masked twin "
                                      f"({network.declared.masked}) does not take" for arm, need in lacking.items()))
    if study.probe_first and not set(arms) & set(pretraining_arms()):
        refuse(f"--probe-first: no pretraining arm among --arms {' '.join(arms)} to probe (name "
               f"{', '.join(pretraining_arms())})")
    if study.pretraining and study.pretrain_data is None:
        refuse(f"--arms {' '.join(arms)}: pretraining arms need --pretrain-data (or name only --encoder arms "
               "and supervised)")
    if study.scale.pretrain_runs < 2 and study.scale_name != "quick" and set(arms) & set(primary_order()):
        refuse(f"--pretrain-runs {study.scale.pretrain_runs}: the primary question reads a pretrained arm "
               f"({', '.join(a for a in primary_order() if a in arms)}), and one run per arm leaves the spread "
               "between pretraining runs unmeasured, and the interval then claims more than it holds: at least 2 runs "
               "(the default is 3)")
    if not 0.0 <= study.min_effect < 1.0:
        refuse(f"--min-effect {study.min_effect}: expected a difference in Dice in [0, 1)")
    if study.budget_cap is not None and study.budget_cap < 10:
        refuse(f"--budget-cap {study.budget_cap}: expected at least 10 steps")
    longest = min(study.scale.pilot_steps, study.budget_cap or study.scale.pilot_steps)  # the end point's at most
    if study.head_start is not None and not 1 <= study.head_start < longest:
        refuse(f"--head-start {study.head_start}: expected a step from 1 to {longest - 1}, before the longest end "
               f"point the pilot may set ({'--budget-cap' if study.budget_cap else '--pilot-steps'} {longest})")
    if not study.root.is_dir():
        refuse(f"--root {study.root}: no such folder (the labeled set, in the layout of --data {study.data})")


def _labeled_set(study: Study) -> tuple[list, FixedSplit | CrossValidated, Task]:
    """(the labeled cases, the study's fixed split of them, their task); --lesion-classes not among its classes are
    refused."""
    probe = compose_config("finetune", [f"data={study.data}", f"data.root={study.root}", *study.network.finetune,
                                        *(o for o in study.overrides if o.startswith("data.on_bad_case="))])
    bad: list = []  # the unreadable cases, named in one line (the runs read the set with the same data.on_bad_case)
    try:
        labeled = discover(str(probe.data.layout) if "layout" in probe.data else study.data, study.root,
                           on_bad_case="skip", skipped=bad)
    except (FileNotFoundError, ValueError) as err:  # no case, or none usable: one line, as every refusal
        refuse(f"--root {study.root}: " + (f"{_unreadable(bad)}, and no other case is there: fix or replace them"
                                            if bad else str(err)))
    if bad and probe.data.on_bad_case == "error":
        refuse(f"--root {study.root}: {_unreadable(bad)}: fix or remove them, or pass --override "
               "data.on_bad_case=skip to leave them out of every run")
    if bad:
        print(f"[study] --root {study.root}: {_unreadable(bad)}: left out of every run (data.on_bad_case=skip)",
              flush=True)
    split = labeled_split(labeled, study.scale, study.seed, control=study.positive_control)
    if study.probe_first and isinstance(split, CrossValidated):
        refuse(f"--probe-first: the {len(labeled)} labeled cases are cross-validated (every one is scored), so no case "
               "is left to choose the arm on without scoring it; probe-first needs a labeled set that holds a fixed "
               "split (its validation and training-pool cases are probed)")
    task = get_task(str(probe.data.task), root=study.root)
    if odd := [c for c in study.lesion_classes if c not in task.output_names]:
        refuse(f"--lesion-classes {' '.join(odd)}: not classes of {study.root} (its classes: "
               f"{', '.join(task.output_names)})")
    return labeled, split, task


def _unreadable(problems: Sequence) -> str:
    """"3 labeled case(s) cannot be read (case_1: <reason>; and 2 more)"."""
    return (f"{len(problems)} labeled case(s) cannot be read ({problems[0].id}: {problems[0].reason}"
            + (f"; and {len(problems) - 1} more" if len(problems) > 1 else "") + ")")


def _pretraining_cohort(study: Study, task: Task) -> tuple[list, list[str], list[str] | None, StoreCohort | None]:
    """(the cohort's cases, the channels every one has, the channels the pretraining runs read, the store it is
    held in): none without --pretrain-data. Refused: a cohort of fewer than 2 readable scans, a store holding other
    channels than the runs read, --pretrain-channels without a cohort."""
    if study.pretrain_data is None:
        if study.pretrain_channels is not None:
            refuse(f"--pretrain-channels {study.pretrain_channels}: no --pretrain-data to read them from")
        return [], [], None, None
    layout, root = pretrain_layout(study.pretrain_data)
    store, cohort_cases = read_store(root) if layout == "store" else (None, discover(layout, root, on_bad_case="skip"))
    if len(cohort_cases) < 2:
        refuse(f"--pretrain-data {study.pretrain_data}: {len(cohort_cases)} readable scan(s) ({layout}); the "
               "pretraining runs need at least 2 (train and held-out)")
    held = list(store.channels) if store is not None else cohort_channels(cohort_cases)
    channels = pretraining_channels(held, task.channels, study.pretrain_channels)
    if store is not None and channels != held:  # a run reads a store with the channels it was written with
        refuse(f"--pretrain-data {study.pretrain_data}: the store holds {', '.join(held)} (asa-preprocess "
               f"data.channels), and a run reads a store with the channels it was written with; the pretraining "
               f"runs read {', '.join(channels)} here (for the fine-tuning channels {', '.join(task.channels)}"
               + (f", --pretrain-channels {study.pretrain_channels}" if study.pretrain_channels else "")
               + f"): write a store with data.channels=[{','.join(channels)}]")
    return cohort_cases, held, channels, store


def _record(study: Study, task: Task, channels: list[str] | None, control_channel: str | None,
            store: StoreCohort | None, *, keep: bool = True) -> None:
    """Keep the study's settings in ``<out>/study.json`` (`record_settings`: a folder holding another study is
    refused; a rerun may add arms, encoders, cohorts, N, seeds and repeats; ``keep`` False: only that refusal)."""
    scale = study.scale
    supervised = ([control_channel] if control_channel else list(task.channels)) if study.positive_control else None
    settings = {"scale": dataclasses.asdict(scale) | {"time_budget": None, "jobs": None}, "network": study.network.name,
                "arms": sorted(study.arms), "encoders": sorted(f"{k}={v}" for k, v in study.encoders),
                "data": study.data, "root": str(study.root),
                "pretrain_data": str(study.pretrain_data) if study.pretrain_data else None, "recipe": study.recipe,
                "encoder_lr_scale": study.encoder_lr_scale, "seed": study.seed, "budget_cap": study.budget_cap,
                "head_start": study.head_start,
                "override": list(study.overrides), "probe_first": study.probe_first,
                "lesion_classes": list(study.lesion_classes), "largest_cohort": max(scale.cohorts, default=None),
                "pilot_cases": max(scale.cases), "pretrain_channels": channels, "supervised_channels": supervised,
                **({"pretrain_store": {"root": str(store.root), "layout": store.layout}} if store else {})}
    # a study recorded before the options pretrained on the T1 alone, trained the positive control on every
    # fine-tuning channel and ran each pretraining in one process
    record_settings(study.out, settings, grows=GROWS, recorded_as=lambda old: {
        "probe_first": False, "head_start": None, "pretrain_channels": ["t1"] if old.get("pretrain_data") else None,
        "supervised_channels": list(task.channels) if set(labeled_arms()) & set(old.get("arms", [])) else None,
        **old,
        # one process, one pretraining run per arm; a fixed split (folds, repeats, min_scored as the scale's)
        **({"scale": {"nproc": 1, "folds": scale.folds, "repeats": scale.repeats, "min_scored": scale.min_scored,
                      "pretrain_runs": 1, **old["scale"]}} if isinstance(old.get("scale"), dict) else {})}, keep=keep)


def _checks(study: Study, labeled: Sequence, split: FixedSplit | CrossValidated, task: Task, cohort_cases: Sequence,
            record: Mapping[str, Any] | None, held: Sequence[str], channels: list[str] | None,
            store: StoreCohort | None, control_channel: str | None
            ) -> tuple[Checks, dict[int, CohortList | None], NoiseVolumes | None]:
    """The checks before anything trains (overlap against the cohort's ``record``, channels, skull stripping, the
    positive control's cases), nothing written or said. Returns (the checks, cohort size -> its file list (None: the
    store's cases), the noise volumes): the file lists and the volumes are the pretraining units' inputs, written as
    the first unit reading them starts."""
    out, scale, cohorts, noise, cohort = study.out, study.scale, {}, None, None
    overlap = check_overlap(cohort_cases, record, labeled, split, dict(study.encoders), accept=study.accept_overlap)
    if study.pretrain_data is not None:
        if odd := [n for n in scale.cohorts if n > len(cohort_cases)]:
            refuse(f"--cohorts {' '.join(map(str, odd))}: the cohort holds {len(cohort_cases)} scans")
        sizes = list(scale.cohorts) or [len(cohort_cases)]
        if store is None:
            cohorts = cohort_lists(out, cohort_cases, sizes, study.seed, channels)
        else:
            cohorts = dict.fromkeys(sizes)
            resampled = ""
            if store.resample_mm:
                resampled = f", resampled to {store.resample_mm} mm"
            cohort = (f"The pretraining cohort is a store of asa-preprocess ({store.path}): {len(cohort_cases)} cases "
                      f"of {store.root} ({store.layout}), channels {', '.join(store.channels)}{resampled}; each "
                      "pretraining run reads its cohort's cases from it (their split in the run's splits.json, the "
                      "store's other cases as its unread test part).")
        if CONTROL in study.arms:
            noise = noise_volumes(out, cohort_cases, max(sizes), study.seed, channels)
    if channels is not None:
        channel_said = channel_lines(task.channels, channels, held, store=store is not None)
    else:
        channel_said = [f"No pretraining cohort: an --encoder file's 1-channel stem is adapted to the "
                        f"{len(task.channels)} fine-tuning channels ({', '.join(task.channels)}; copied to each and "
                        "divided by their number), a file of that many channels is loaded as it is."]
    control = None  # the split holds its cases out either way
    if study.positive_control:
        control = split.control_line(control_channel, len(task.channels))
    skull = skull_lines({"--pretrain-data": cohort_cases, "--root": labeled})
    endpoint = Endpoint(*readings.endpoint(task.output_names, study.lesion_classes))
    checks = Checks(overlap, tuple(channel_said), tuple(skull), endpoint, cohort=cohort,
                    design=split.design_line(len(labeled), scale, study.positive_control), supervised=control)
    return checks, cohorts, noise
