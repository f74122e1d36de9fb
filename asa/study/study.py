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
   pretraining: ``asa-pretrain`` per arm (``mae``, ``asa``, ``mae-coord``, ``asa-coord``) and cohort size, each
   arm's options all stated; the negative control (``noise``: mae's recipe on pure-noise volumes on the cohort's grid); the positive
   control (``supervised``: the same network trained with labels on labeled cases no study run sees).
   With --probe-first, every pretrained encoder is then probed frozen on the test cases (`asa.study.probes`: the
   factorial {uniform, attentive weight} × {no position code, the coordinate channel} read with the pretraining seed
   as the replicate), and only the arm with the highest primary probe goes on to the transfer stage.
2. transfer: every arm fine-tuned for the budget at each N and seed with the same recipe and encoder lr, scored on
   the fixed test cases (Dice, NSD, HD95), paired differences to the scratch twin with crossed random-effects CIs
   (seeds × test cases) and the seed × case bootstrap beside them.
3. report: ``<out>/report/README.md`` (with SVG plots) and ``report.json``: the checks, the pilot's curve, each
   pretraining run's held-out masked loss with a plateau check, Dice against N per arm, per-class differences, the
   attentive weights' spread, each control's verdict, each contrast's CI, the cost per arm, one line per question
   with its bound, read on the primary endpoint (the lesion Dice with --lesion-classes or one foreground class,
   else mean Dice), named before anything trains.

Scales: ``--scale cpu`` (ResEnc S, 32³ crops, N = 8 × 3 seeds: one sitting on two CPU cores), ``--scale gpu``
(ResEnc M, 96³ crops; each call stops within ``--time-budget``, 510 s by default, and the next call continues),
``--scale quick`` (a plumbing check: a few steps per run, minutes; its report reads no answer). Every scale pretrains
each arm twice (``--pretrain-runs``, the pretraining seed a level of the intervals) and cross-validates a labeled
set too small for its fixed split (``--folds`` × ``--repeats``; fewer than ``--min-scored`` 16 scored cases: refused).
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
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from asa.api.config import compose_config
from asa.data import discover, get_task
from asa.io import atomic_write_json
from asa.study import probes, report, transfer
from asa.study.checks import check_overlap, channel_lines, skull_lines
from asa.study.cohort import (StoreCohort, cohort_channels, cohort_order, pretrain_layout, pretraining_channels,
                              read_store, write_cohorts, write_noise)
from asa.study.common import (REFUSED, Clock, add_scale_options, finished, machine, module_argv, record_settings,
                              refuse, scale_from_args)
from asa.study.plan import (ARMS, CHOICES, CONTROL, COORD_SCRATCH, GROWS, PILOT, RECIPES, SCALES, SCRATCH, SUPERVISED,
                            SWVIT_ARMS, Network, Pretraining, Scale, Supervised, cv_supervised, finetune_arms,
                            labeled_split, overlap_overrides, parse_network, plan_pretraining, pretraining_argv,
                            recipe_overrides,
                            studied_networks, supervised_channel, supervised_overrides, supervised_splits,
                            write_store_splits)
from asa.study.readout import (PILOT_FLOOR, loss_plateau, optimiser_progress, pilot_budget, pilot_reading, pilot_scores,
                               pretraining_summary)
from asa.study.scheduler import Unit, run_units, stop_on_signals

# the command; its parts (asa.study's plan, cohort, checks, scheduler, readout) importable from here as before they
# had modules of their own
__all__ = ["ARMS", "CHOICES", "CONTROL", "GROWS", "PILOT", "SCALES", "SCRATCH", "SUPERVISED", "Network", "Pretraining",
           "Scale", "Supervised", "build_parser", "channel_lines", "check_overlap", "cohort_channels", "cohort_order",
           "finetune_arms", "labeled_split", "loss_plateau", "main", "optimiser_progress", "overlap_overrides",
           "parse_network", "pilot_scores", "plan_pretraining", "pretraining_argv", "pretraining_channels",
           "recipe_overrides", "run_units", "skull_lines", "supervised_channel", "supervised_overrides",
           "supervised_splits", "write_cohorts", "write_noise"]


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
                   help="a network family with a masked twin, optionally with one of its sizes: "
                        + ", ".join(f"{f}[-{'|-'.join(s)}]" if s else f for f, s in studied_networks().items())
                        + " or a plug-in's family (asa.models.Family); default: resenc at the scale's size")
    p.add_argument("--pretrain-channels", choices=("t1", "all"),
                   help="the channels the pretraining runs (and the negative control) read: all (the fine-tuning "
                        "channels, in their order, matched by meaning: T1gd is t1ce) or t1 (its stem adapted to the "
                        "fine-tuning channels); default: all when every cohort case has them, else t1")
    p.add_argument("--arms", nargs="*", default=["mae", "asa", CONTROL, SUPERVISED], choices=CHOICES,
                   help="pretraining arms and controls beside the scratch twin (default: mae asa noise supervised)")
    p.add_argument("--probe-first", action="store_true",
                   help="probe every pretrained encoder frozen (asa-probe on the study's test cases) before any "
                        "fine-tuning, and fine-tune only the pretraining arm whose encoders the probes read best on "
                        "the primary endpoint's classes (with the scratch twins and the controls); with the arms "
                        "mae asa mae-coord asa-coord the report reads the factorial's main effects")
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
                   help="classes whose mean Dice (lesion Dice) is the primary endpoint every verdict reads, e.g. the "
                        "lesions of a task that also labels tissue; without it, the one foreground class of a "
                        "one-class set, else mean Dice over every class")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="an asa-finetune override for every fine-tuning run")
    return p



def main(argv: Sequence[str] | None = None) -> int:
    """``asa-study``: refuse what cannot run, record the study's settings, check, plan, then run what is left."""
    args = build_parser().parse_args(argv)
    name, scale = scale_from_args(args, SCALES)
    network = parse_network(args.network, scale)
    out = args.out.expanduser().absolute()
    encoders = _encoders(args.encoder)
    _refuse_options(args, network)
    labeled, split, task = _labeled_set(args, scale, network)
    cohort_cases, held, channels, store = _pretraining_cohort(args, task)
    # the positive control takes the pretrained arms' T1-and-adapted-stem path when they read the T1 alone
    control_channel = supervised_channel(task.channels, channels)
    _record(out, args, scale, network, encoders, task, channels, control_channel, store)
    checks, cohorts, noise, supervised = _checks(out, args, scale, encoders, labeled, split, task, cohort_cases, held,
                                                 channels, store, control_channel)
    runs = plan_pretraining(out, scale, network, [a for a in args.arms if a in ARMS], cohorts, noise, seed=args.seed,
                            channels=channels or ("t1",), store=store)
    if store is not None:
        write_store_splits(runs, [c.id for c in cohort_cases], args.seed)
    overrides = [*recipe_overrides(args.recipe, args.encoder_lr_scale), *overlap_overrides(checks["overlap"]),
                 *args.override]
    clock = Clock(scale.time_budget)
    times_file = out / "times.json"
    times = json.loads(times_file.read_text()) if times_file.is_file() else {"stages": {}, "runs": {}}

    def stopped(stop: Exception, names: list[str]) -> None:
        atomic_write_json(times_file, times)
        # every stopped run saved its last.pt on the signal and continues from it (resume=auto)
        print(f"[study] {stop}: stopped {', '.join(names) or 'no run'}; finished runs are kept in {out} and each "
              "stopped run continues from the checkpoint it saved: rerun the same command to continue",
              file=sys.stderr, flush=True)

    # the channels a frozen encoder is probed with: those it pretrained on, by their fine-tuning names
    probe_channels = [control_channel] if control_channel else list(task.channels)
    return stop_on_signals(lambda: _run(args, out, scale, network, runs, split, checks, encoders, supervised, overrides,
                                        clock, times, times_file, name, task, probe_channels), stopped)


def _read_probes(out: Path, runs: Sequence[Pretraining], task: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The probe stage's reading (`asa.study.probes`), kept in ``<out>/probes/probes.json`` and said: the rows, the
    factorial's effects and the arm the transfer stage fine-tunes."""
    record = json.loads((out / "probes" / "table" / "probe.json").read_text())
    keys, label = probes.primary_probe(task.output_names, args.lesion_classes)
    rows = probes.read_probes(record, runs, keys)
    probed = {"label": label, "keys": keys, "cases": record["data"]["n"], "folds": record["settings"]["folds"],
              "rows": rows, "effects": probes.factorial_effects(rows), "chosen": probes.choose_arm(rows)}
    atomic_write_json(out / "probes" / "probes.json", probed)
    for line in probes.probe_lines(probed, min_effect=args.min_effect):
        if line and not line.startswith("|"):
            print(f"[study] {line}", flush=True)
    return probed


def _encoders(specs: Sequence[str]) -> dict[str, str]:
    """The --encoder arms: name -> the file's absolute path (a name of its own and an existing file, else refused)."""
    encoders = {}
    for spec in specs:
        key, _, path = spec.partition("=")
        if not key or not path or key in (*CHOICES, SCRATCH, COORD_SCRATCH, PILOT) or not Path(path).is_file():
            refuse(f"--encoder {spec}: expected NAME=FILE with a name of its own and an existing file")
        encoders[key] = str(Path(path).expanduser().absolute())
    return encoders


def _refuse_options(args: argparse.Namespace, network: Network) -> None:
    """Refuse (exit 2) arms the network cannot pretrain or that lack their cohort, and values out of range."""
    pretraining_arms = [a for a in args.arms if a in ARMS]
    if network.by_preset and (odd := [a for a in args.arms if a not in (*SWVIT_ARMS, CONTROL, SUPERVISED)]):
        refuse(f"--arms {' '.join(odd)}: with --network {network.family} the arms are "
               f"{', '.join((*SWVIT_ARMS, CONTROL, SUPERVISED))}")
    if lacking := {arm: need for arm in args.arms if (need := network.missing(arm))}:
        refuse("--arms: " + "; ".join(f"{arm} needs {', '.join(need)}, which the {network.family} family's masked twin "
                                      f"({network.declared.masked}) does not take" for arm, need in lacking.items()))
    if args.probe_first and not [a for a in pretraining_arms if a != CONTROL]:
        refuse(f"--probe-first: no pretraining arm among --arms {' '.join(args.arms)} to probe (name mae, asa, "
               "mae-coord or asa-coord)")
    if (pretraining_arms or CONTROL in args.arms) and args.pretrain_data is None:
        refuse(f"--arms {' '.join(args.arms)}: pretraining arms need --pretrain-data (or name only --encoder arms "
               "and supervised)")
    if not 0.0 <= args.min_effect < 1.0:
        refuse(f"--min-effect {args.min_effect}: expected a difference in Dice in [0, 1)")
    if args.budget_cap is not None and args.budget_cap < 10:
        refuse(f"--budget-cap {args.budget_cap}: expected at least 10 steps")
    if not args.root.is_dir():
        refuse(f"--root {args.root}: no such folder (the labeled set, in the layout of --data {args.data})")


def _labeled_set(args: argparse.Namespace, scale: Scale, network: Network) -> tuple[list, dict[str, list[str]], Any]:
    """(the labeled cases, the study's fixed split of them, their task); --lesion-classes not among its classes are
    refused."""
    probe = compose_config("finetune", [f"data={args.data}", f"data.root={args.root.expanduser().absolute()}",
                                        *network.finetune])
    labeled = discover(str(probe.data.layout) if "layout" in probe.data else args.data, args.root.expanduser().absolute())
    split = labeled_split(labeled, scale, args.seed, control=SUPERVISED in args.arms)
    task = get_task(str(probe.data.task), root=args.root.expanduser().absolute())
    if odd := [c for c in args.lesion_classes if c not in task.output_names]:
        refuse(f"--lesion-classes {' '.join(odd)}: not classes of {args.root} (its classes: "
               f"{', '.join(task.output_names)})")
    return labeled, split, task


def _pretraining_cohort(args: argparse.Namespace, task: Any) -> tuple[list, list[str], list[str] | None,
                                                                      StoreCohort | None]:
    """(the cohort's cases, the channels every one has, the channels the pretraining runs read, the store it is
    held in): none without --pretrain-data. Refused: a cohort of fewer than 2 readable scans, a store holding other
    channels than the runs read, --pretrain-channels without a cohort."""
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
    return cohort_cases, held, channels, store


def _record(out: Path, args: argparse.Namespace, scale: Scale, network: Network, encoders: Mapping[str, str], task: Any,
            channels: list[str] | None, control_channel: str | None, store: StoreCohort | None) -> None:
    """Keep the study's settings in ``<out>/study.json`` (`record_settings`: a folder holding another study is
    refused; a rerun may add arms, encoders, cohorts, N and seeds)."""
    settings = {"scale": dataclasses.asdict(scale) | {"time_budget": None, "jobs": None}, "network": network.name,
                "arms": sorted(args.arms), "encoders": sorted(f"{k}={v}" for k, v in encoders.items()),
                "data": args.data, "root": str(args.root.expanduser().absolute()),
                "pretrain_data": str(args.pretrain_data.expanduser().absolute()) if args.pretrain_data else None,
                "recipe": args.recipe, "encoder_lr_scale": args.encoder_lr_scale, "seed": args.seed,
                "budget_cap": args.budget_cap, "override": args.override, "probe_first": args.probe_first,
                "lesion_classes": args.lesion_classes,
                "largest_cohort": max(scale.cohorts) if scale.cohorts else None, "pilot_cases": max(scale.cases),
                "pretrain_channels": channels,
                "supervised_channels": ([control_channel] if control_channel else list(task.channels))
                if SUPERVISED in args.arms else None,
                **({"pretrain_store": {"root": str(store.root), "layout": store.layout}} if store else {})}
    out.mkdir(parents=True, exist_ok=True)
    # a study recorded before the options pretrained on the T1 alone, trained the positive control on every
    # fine-tuning channel and ran each pretraining in one process
    record_settings(out, settings, grows=GROWS, recorded_as=lambda old: {
        "probe_first": False,
        "pretrain_channels": ["t1"] if old.get("pretrain_data") else None,
        "supervised_channels": list(task.channels) if SUPERVISED in old.get("arms", []) else None, **old,
        # one process, one pretraining run per arm; a fixed split (folds, repeats, min_scored as the scale's)
        **({"scale": {"nproc": 1, "folds": scale.folds, "repeats": scale.repeats, "min_scored": scale.min_scored,
                      "pretrain_runs": 1, **old["scale"]}}
           if isinstance(old.get("scale"), dict) else {})})


def _checks(out: Path, args: argparse.Namespace, scale: Scale, encoders: Mapping[str, str], labeled: Sequence,
            split: Mapping[str, list[str]], task: Any, cohort_cases: Sequence, held: Sequence[str],
            channels: list[str] | None, store: StoreCohort | None, control_channel: str | None
            ) -> tuple[dict[str, Any], dict[int, Path], Path | None, Supervised | None]:
    """The checks before anything trains (overlap, channels, skull stripping, the positive control's cases), kept in
    ``<out>/checks/checks.json`` and said; the cohort file lists and the noise volumes written on the way. Returns
    (the checks, cohort size -> its data, the noise volumes' folder, the positive control)."""
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
    supervised: list[Supervised] = []  # the split holds its cases out either way
    if "draws" in split:
        checks["design"] = (f"Cross-validation: the {len(labeled)} labeled cases are fewer than a fixed split needs "
                            f"({scale.test} test + {scale.val} validation + N {max(scale.cases)}"
                            + (f" + the positive control's {scale.supervised}" if SUPERVISED in args.arms else "")
                            + f"), so each case is scored by models that did not see it: {split['folds']} folds × "
                            f"{split['repeats']} repeat(s), {len(split['draws'])} distinct labeled draws per arm (each "
                            f"fold's test cases scored by a run whose N cases and {scale.val} validation cases were "
                            "drawn from the other folds), every case scored once per repeat.")
    if SUPERVISED in args.arms and "draws" in split:
        supervised = cv_supervised(out, split, args.data, args.root.expanduser().absolute(), control_channel)
        checks["supervised"] = (f"The positive control is nested in each of the {len(supervised)} draws: an encoder "
                                "trained with labels on that draw's training part (its pool, "
                                + "–".join(map(str, sorted({min(len(c.cases) for c in supervised),
                                                            max(len(c.cases) for c in supervised)})))
                                + " cases), never on the fold it is scored on, so it consumes none of the scored cases"
                                + (f", on their {control_channel} alone (data.channels=[{control_channel}])"
                                   if control_channel else "") + ".")
    elif SUPERVISED in args.arms and not split["supervised"]:
        checks["supervised"] = (f"The positive control is left out: the labeled pool holds {len(labeled)} cases, and "
                                f"after {scale.test} test, {scale.val} validation and the {max(scale.cases)} a run "
                                f"draws from, fewer than the {scale.supervised} it needs (--supervised) are left.")
    elif SUPERVISED in args.arms:
        run_dir, ids = out / "pretrain" / SUPERVISED, tuple(split["supervised"])
        checks["supervised"] = (f"The positive control trains on {len(ids)} labeled cases no other run sees (held "
                                "out of the training pool)")
        supervised = [Supervised(run_dir, args.data, args.root.expanduser().absolute(), ids, control_channel)]
        if control_channel is None:
            checks["supervised"] += "."
        else:
            k = len(task.channels)
            checks["supervised"] += (f", on their {control_channel} alone (data.channels=[{control_channel}]), as the "
                                     f"pretraining runs read the T1: its 1-channel encoder enters the {k}-channel "
                                     "fine-tuning through the pretrained arms' adapted stem (its kernel copied to each "
                                     f"channel and divided by {k}), so that it controls their path.")
    key, label = report.endpoint(task.output_names, args.lesion_classes)
    checks["endpoint"] = {"key": key, "label": label,
                          "line": f"Primary endpoint: {label}, named before any training (every verdict reads it)."}
    atomic_write_json(out / "checks" / "checks.json", {**checks, "split": split})
    for line in [checks["endpoint"]["line"], *([checks["design"]] if "design" in checks else []),
                 *([checks["cohort"]] if "cohort" in checks else []),
                 *checks["overlap"]["lines"],
                 *checks["channels"], *checks["skull"], *([checks["supervised"]] if "supervised" in checks else [])]:
        print(f"[study] {line}", flush=True)
    return checks, cohorts, noise, supervised


def _run(args, out: Path, scale: Scale, network: Network, runs: list[Pretraining], split: Mapping[str, list[str]],
         checks: Mapping[str, Any], encoders: Mapping[str, str], supervised: list[Supervised], overrides: list[str],
         clock: Clock, times: dict[str, Any], times_file: Path, name: str, task, probe_channels: list[str]) -> int:
    def stage(key: str, started: float) -> None:
        times["stages"][key] = times["stages"].get(key, 0.0) + time.perf_counter() - started
        atomic_write_json(times_file, times)

    def unfinished(what: str) -> int:
        atomic_write_json(times_file, times)
        why = (f"{what} did not finish" if scale.time_budget is None else
               f"the time budget ({scale.time_budget:.0f} s) ended during {what}")
        print(f"[study] {why}: rerun the same command to continue", flush=True)
        return 3

    data = dict(data=args.data, root=args.root.expanduser().absolute(), model=network.finetune[0].split("=", 1)[1],
                crop=scale.crop, test=scale.test, val_cases=scale.val, split_seed=args.seed, device=args.device,
                threads=args.threads, hold_out=tuple(split["supervised"]), workers=scale.workers, jobs=scale.jobs,
                lesion_classes=tuple(args.lesion_classes),
                **({"folds": split["folds"], "repeats": split["repeats"]} if "draws" in split else {}))
    seeds = tuple(range(len(split["draws"]))) if "draws" in split else tuple(scale.seeds)  # cross-validation: draws
    resenc = network.finetune[1:]  # model.size beside the model preset, for a family sized by option
    started = time.perf_counter()
    threads = [f"trainer.threads={args.threads}"] if args.threads else []
    controls = []
    for control in supervised:
        atomic_write_json(control.run_dir / "splits.json", supervised_splits(control, split, args.seed))
        sup = supervised_overrides(control, network, scale, args.seed, overrides)
        controls.append(Unit(control.run_dir.name, module_argv("asa.cli.finetune", *sup, *threads),
                             lambda control=control: finished(control.run_dir / "checkpoints" / "last.pt"),
                             out / "logs" / f"{control.run_dir.name}.log", threads=args.threads))
    # the pilot (and the positive control, a labeled run) before any pretraining: a scratch twin that does not learn
    # the task makes every contrast noise, and the study stops before it spends the pretraining
    complete = transfer.run_study(transfer.Transfer(
        out / PILOT, **data, cases=(max(scale.cases),), seeds=(0,), steps=scale.pilot_steps, n_boot=1000,
        overrides=(*resenc, *overrides, "optim.schedule=constant"), logs=out / "logs" / PILOT), clock=clock,
        times=times["runs"], beside=controls)
    times["runs"][PILOT] = times["runs"].get(f"{PILOT}/{SCRATCH}-n{max(scale.cases)}-s0", math.nan)  # the cost table's
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
    probed = None
    if args.probe_first:
        started = time.perf_counter()
        probing = probes.probe_unit(out, runs, data=args.data, root=args.root.expanduser().absolute(),
                                    channels=probe_channels, cases=split["test"], seed=args.seed, device=args.device,
                                    threads=args.threads, overrides=overlap_overrides(checks["overlap"]))
        complete = run_units([probing], 1, clock, times["runs"])
        stage("probes", started)
        if not complete:
            return unfinished("the probe stage")
        probed = _read_probes(out, runs, task, args)
    steps = pilot["steps"]
    control_dir = (None if not supervised else supervised[0].run_dir if "draws" not in split
                   else out / "pretrain" / f"{SUPERVISED}-s{transfer.DRAW}")  # one control per draw
    tuned = runs if probed is None else [r for r in runs if r.arm in (probed["chosen"], CONTROL)]
    arms = finetune_arms(tuned, network, control_dir, encoders)
    started = time.perf_counter()
    print(f"[study] transfer: {len(arms)} arms × N {list(scale.cases)} × "
          + (f"{len(seeds)} cross-validation draws" if "draws" in split else f"seeds {list(seeds)}") + f", {steps} "
          f"steps each (logs in {out / 'logs' / 'transfer'})", flush=True)
    complete = transfer.run_study(transfer.Transfer(
        out / "transfer", **data, cases=tuple(scale.cases), seeds=seeds, steps=steps, n_boot=args.n_boot, arms=arms,
        overrides=tuple(overrides), scratch=False, logs=out / "logs" / "transfer"), clock=clock, times=times["runs"])
    stage("transfer", started)
    if not complete:
        return unfinished("the transfer stage")
    pretrained = [pretraining_summary(run, times["runs"].get(run.name, math.nan)) for run in runs]
    info = {"scale_name": name, "scale": dataclasses.asdict(scale), "network": network.name, "steps": steps,
            "recipe": args.recipe, "encoder_lr_scale": args.encoder_lr_scale, "min_effect": args.min_effect,
            "endpoint": [checks["endpoint"]["key"], checks["endpoint"]["label"]],
            "design": ({"folds": split["folds"], "repeats": split["repeats"], "draws": len(split["draws"]),
                        "cases": len(split["test"])} if "draws" in split else None),
            "lesion_classes": list(args.lesion_classes),
            "machine": machine(),
            "stages": times["stages"], "runs": times["runs"], "checks": checks, "pilot": pilot,
            "pretraining": pretrained, "classes": list(task.output_names), "probes": probed,
            "encoders": [f"{k}={v}" for k, v in encoders.items()],
            "commands": ["asa-study " + shlex.join(sys.argv[1:]),
                         *(f"asa-pretrain {shlex.join(r.overrides)}" for r in runs)],
            "finished": datetime.datetime.now().isoformat(timespec="seconds")}
    folder = report.write_report(out, info, n_boot=args.n_boot)
    print(f"[study] done: report in {folder / 'README.md'}", flush=True)
    return 0
