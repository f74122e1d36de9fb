"""Does pretraining help? Fine-tune several arms over N labeled cases × seeds, test on one fixed split.

`run_study` runs one :class:`Transfer` in the calling process (asa-study's pilot and transfer stage): arms are named
lists of ``asa-finetune`` overrides beside ``scratch`` (no pretrained encoder). Every run gets the same budget of
optimiser steps (``steps``, rounded to whole epochs so that the lr schedule ends with the run) and no validation
cases; each is one unit of asa-study's scheduler (an ``asa-finetune`` process, ``jobs`` at once, continued from its
last.pt after a stop), and its last checkpoint is scored here on the fixed test cases: Dice and HD95 (mm, as
asa-evaluate scores it) per class, and Dice with the encoder's hidden states zeroed (encoder reliance).

Outputs in ``out``: ``runs/<arm>-n<N>-s<seed>/`` (asa-finetune run folders; their output in ``logs``),
``scores.csv`` (one row per arm, N, seed, test case), ``transfer.md`` / ``transfer.csv`` (Table-4-shaped: one row
per arm and N with Dice and HD95 per class ± sd over seeds, the encoder-zeroed Dice, and the paired difference to the
reference arm with its 95 % crossed random-effects CI over seeds (labeled draws) and test cases, next to the seed ×
case bootstrap CI, the per-seed mean differences and the case-only CI; the labeled draws each N's seeds made) and
``dice_vs_cases.svg`` (`asa.study.tables`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import multiprocessing
import shutil
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np
import torch

from asa.api.config import compose_config
from asa.api.machinery.dataset import dataset_root
from asa.data import discover, get_task
from asa.eval.predict import Predictor
from asa.eval.reliance import encoder_reliance
from asa.io import atomic_write_json, load_checkpoint
from asa.models import capabilities
from asa.study.common import Clock, finished, module_argv, refuse
from asa.study.scheduler import Unit, run_units
from asa.study.statistics import LESION
from asa.study.tables import logged_budget, write_outputs

SCRATCH = "scratch"


@dataclasses.dataclass(frozen=True)
class Transfer:
    """One transfer study (`run_study`): arms × N labeled cases × seeds, scored on fixed test cases (with ``folds``,
    on cross-validated ones). ``arms``: name -> its asa-finetune overrides, beside the built-in ``scratch``
    (``model.pretrained=null``; ``scratch=False`` leaves it out, and ``reference`` then names another arm)."""

    out: Path
    data: str = "ibsr"  # fine-tuning data preset: brats | ibsr | wmh | msd
    root: Path | None = None  # the dataset folder (None: the preset's demo phantoms)
    model: str = "tiny"  # model preset (must match the pretrained encoders)
    crop: int = 64  # data.crop
    cases: tuple[int, ...] = (2, 4)  # numbers of labeled training cases
    seeds: tuple[int, ...] = (0, 1)  # with folds: the cross-validation draws they number
    test: int = 6  # size of the fixed test split
    val_cases: int = 0  # validation cases, the same for every run: each validates about 20 times (its plateau check)
    split_seed: int = 0
    folds: int = 0  # K: repeated K-fold cross-validation, each seed a draw (repeat · K + fold) whose fold is its test
    repeats: int = 1
    hold_out: tuple[str, ...] = ()  # cases of the training pool no run draws (a study's positive control's)
    steps: int = 40  # optimiser steps per run (rounded to whole epochs)
    arms: Mapping[str, Sequence[str]] = dataclasses.field(default_factory=dict)
    scratch: bool = True
    reference: str = SCRATCH  # the arm the paired differences are taken against
    overrides: tuple[str, ...] = ()  # asa-finetune overrides of every run
    recipes: tuple[str, ...] = ()  # configs/finetune/optim presets: every arm once per recipe, named ARM@RECIPE
    budget_arms: tuple[str, ...] = ()  # arms also trained at each budget fraction of the epochs, named ARM_xFRACTION
    budget_fractions: tuple[float, ...] = (0.125, 0.25, 0.5)
    budget_cases: tuple[int, ...] | None = None  # the budget arms at these N only (None: every N)
    lesion_classes: tuple[str, ...] = ()  # classes whose mean Dice is a column of its own (lesion mean)
    device: str = "auto"
    workers: int = 0  # data.num_workers
    threads: int | None = None  # torch threads per run (trainer.threads)
    jobs: int = 1  # runs trained at once
    n_boot: int = 10000  # bootstrap resamples of the confidence intervals
    drop_checkpoints: bool = False  # delete a run's checkpoints once scored (its scores.json is what a rerun reads)
    logs: Path | None = None  # the folder of the runs' logs (None: <out>/logs)

    def __post_init__(self) -> None:
        if self.jobs < 1:
            refuse(f"--jobs {self.jobs}: expected >= 1")
        if self.val_cases < 0:
            refuse(f"--val-cases {self.val_cases}: expected >= 0")
        if not self.scratch and self.reference == SCRATCH and SCRATCH not in self.arms:
            refuse("--no-scratch leaves out the 'scratch' arm: name another arm with --reference")


def parse_arms(s: Transfer) -> dict[str, list[str]]:
    """Arm name -> asa-finetune overrides: ``scratch`` (unless left out), ``s.arms``, each budget arm at every budget
    fraction; with ``recipes`` every arm once per recipe, named ``<arm>@<recipe>`` with ``optim=<recipe>`` added."""
    arms: dict[str, list[str]] = {SCRATCH: ["model.pretrained=null"]} if s.scratch else {}
    for name, overrides in s.arms.items():
        if "@" in name:
            refuse(f"--arm {name}: '@' is reserved for the recipe (--recipes); pick another name")
        arms[name] = list(overrides)
    for arm in s.budget_arms:
        if arm not in arms:
            refuse(f"--budget-arms {arm}: no such arm among {list(arms)}")
        for fraction in s.budget_fractions:
            if not 0.0 < fraction < 1.0:
                refuse(f"--budget-fractions {fraction}: a fraction of the budget in (0, 1)")
            if round(s.steps * fraction) < 4:
                refuse(f"--budget-fractions {fraction}: {fraction} × --steps {s.steps} leaves "
                       f"{round(s.steps * fraction)} step(s), fewer than the 4 loss windows a run's budget "
                       "check needs; raise --steps or leave this fraction out")
            arms[f"{arm}{BUDGET_MARK}{fraction:g}"] = list(arms[arm])
    if not s.recipes:
        return arms
    return {f"{arm}@{recipe}": [*overrides, f"optim={recipe}"] for recipe in s.recipes for arm, overrides in arms.items()}


def references(arms: Sequence[str] | Mapping[str, Sequence[str]], reference: str) -> dict[str, str]:
    """Arm -> the arm its paired differences are taken against: ``reference`` under the arm's own recipe
    (``scratch@adamw`` for ``pretrained@adamw``) and budget fraction, or ``reference`` itself without them.

    Given the arms' overrides (name -> asa-finetune overrides), an arm that loads an encoder and differs from
    ``reference`` by more than its encoder is compared with its twin instead: the arm that loads none and whose other
    overrides are exactly the arm's (an encoder pretrained with the coordinate channel against scratch with the
    channel), so that every Δ measures the encoder alone. The twin must hold every override of ``reference``: an
    arm is never moved off a reference it was meant to be read against."""
    names = list(arms)
    settings = {a: _settings(arms[a]) for a in names} if isinstance(arms, Mapping) else {}
    out = {}
    for arm in names:
        base, _, recipe = arm.partition("@")
        fraction = base.partition(BUDGET_MARK)[2]  # a budget arm compares with the reference at the same budget
        ref = f"{reference}{BUDGET_MARK}{fraction}" if fraction and BUDGET_MARK not in reference else reference
        ref = f"{ref}@{recipe}" if recipe and "@" not in reference else ref
        if ref not in names:
            refuse(f"--reference {reference}: no arm {ref!r} among {list(names)}")
        if arm in settings and settings[arm][1] and settings[ref][0] != settings[arm][0]:
            twins = [t for t in names if settings[t] == (settings[arm][0], False) and t.partition("@")[2] == recipe
                     and t.partition("@")[0].partition(BUDGET_MARK)[2] == fraction]
            ref = twins[0] if twins and settings[ref][0] <= settings[arm][0] else ref
        out[arm] = ref
    return out


def _settings(overrides: Sequence[str]) -> tuple[frozenset[str], bool]:
    """(an arm's overrides other than its encoder's file, whether it loads an encoder: model.pretrained not null)."""
    encoder = [o for o in overrides if o.startswith("model.pretrained=")]
    return (frozenset(o for o in overrides if o not in encoder),
            any(o.split("=", 1)[1] not in ("null", "None", "") for o in encoder))


def cv_draws(ids: Sequence[str], *, folds: int, repeats: int, val: int, seed: int) -> list[dict[str, Any]]:
    """The labeled draws of repeated K-fold cross-validation, draw g = repeat · ``folds`` + fold: each repeat permutes
    the cases (``numpy.random.default_rng((seed, repeat))``) and cuts them into ``folds`` folds (sizes differing by at
    most one); a draw's test cases are its fold, its ``val`` validation cases the first of the rest in the permuted
    order, its pool (the cases N is drawn from) the others. Every case is a test case once per repeat."""
    ids = sorted(ids)
    if folds < 2 or folds > len(ids):
        refuse(f"--folds {folds}: expected 2 .. {len(ids)} for a dataset of {len(ids)} cases")
    if repeats < 1:
        refuse(f"--repeats {repeats}: expected >= 1")
    draws = []
    for r in range(repeats):
        order = [ids[i] for i in np.random.default_rng((seed, r)).permutation(len(ids))]
        for k, fold in enumerate(np.array_split(np.array(order, dtype=object), folds)):
            rest = [i for i in order if i not in set(fold.tolist())]
            draws.append({"repeat": r, "fold": k, "test": sorted(fold.tolist()), "val": sorted(rest[:val]),
                          "pool": rest[val:]})
    return draws


def split_cases(ids: Sequence[str], *, test: int, seed: int) -> tuple[list[str], list[str]]:
    """(fixed test ids, pool of training ids in a seeded order)."""
    ids = sorted(ids)
    if test < 1 or test >= len(ids):
        refuse(f"--test {test}: expected 1 .. {len(ids) - 1} for a dataset of {len(ids)} cases")
    order = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]
    return sorted(order[:test]), order[test:]


@dataclasses.dataclass(frozen=True)
class Run:
    """One fine-tuning run of the study: an arm at N labeled cases and a seed."""

    arm: str
    n: int
    seed: int
    train: tuple[str, ...]
    overrides: tuple[str, ...]  # every asa-finetune override of the run
    run_dir: Path
    val: tuple[str, ...] = ()  # validation cases (--val-cases): the plateau check of validation Dice
    test: tuple[str, ...] = ()  # its own test cases (cross-validation: its fold); empty: the study's fixed test cases
    repeat: int | None = None  # cross-validation: the repeat and fold of its draw (the seed numbers the draws)
    fold: int | None = None

    @property
    def scores_file(self) -> Path:
        return self.run_dir / "scores.json"


DRAW = "{draw}"  # in an arm's overrides: the run's seed (its draw), e.g. the positive control's encoder per fold
BUDGET_MARK = "_x"  # <arm>_x<fraction>: the arm at a fraction of the budget (a name Hydra takes in output_dir=)


def budget_fraction(arm: str) -> float:
    """The budget fraction of an arm named ``<arm>_x<fraction>`` (`parse_arms`), else 1."""
    fraction = arm.partition("@")[0].partition(BUDGET_MARK)[2]
    return float(fraction) if fraction else 1.0


def plan_runs(s: Transfer) -> tuple[list[Run], list[str], dict[str, list[str]], Any]:
    """Every run of the study (not trained yet) -> (runs, test ids, arms, the probe config)."""
    out = Path(s.out).expanduser().absolute()
    base = [f"data={s.data}", f"model={s.model}", "trainer.progress=false", "trainer.panel_every=0",
            f"data.num_workers={s.workers}", f"device={s.device}",
            f"trainer.log_every={max(1, s.steps // 40)}", *s.overrides]  # >= 40 loss windows per run
    if s.threads:
        base.append(f"trainer.threads={s.threads}")
    if s.root:
        base.append(f"data.root={s.root}")
    if s.crop:
        base.append(f"data.crop={s.crop}")
    probe_cfg = compose_config("finetune", base)
    root, layout = dataset_root(probe_cfg.data)
    cases = discover(layout, root, on_bad_case=str(probe_cfg.data.on_bad_case))
    n_val = s.val_cases
    held = set(s.hold_out)  # never drawn by a run (another study's control trains on them)
    folds = s.folds
    if folds:  # cross-validation: each seed is a draw (its fold the test cases, N drawn inside its training part)
        if held:
            refuse("--hold-out: not with --folds (cross-validation draws from every fold's training part)")
        draws = cv_draws([c.id for c in cases], folds=folds, repeats=s.repeats, val=n_val, seed=s.split_seed)
        if odd := [x for x in s.seeds if not 0 <= x < len(draws)]:
            refuse(f"--seeds {' '.join(map(str, odd))}: with --folds {folds} --repeats {s.repeats} the seeds "
                   f"number the {len(draws)} draws (0 .. {len(draws) - 1})")
        if max(s.cases) > (least := min(len(d["pool"]) for d in draws)):
            refuse(f"--cases {max(s.cases)}: a fold's training part leaves {least} cases after the {n_val} "
                   "validation case(s) (--val-cases)")
        test_ids = sorted(c.id for c in cases)
    else:
        test_ids, pool = split_cases([c.id for c in cases], test=s.test, seed=s.split_seed)
        val, pool = tuple(sorted(pool[:n_val])), pool[n_val:]  # the same validation cases for every run
        if odd := sorted(held & (set(test_ids) | set(val)) | (held - {c.id for c in cases})):
            refuse(f"--hold-out {' '.join(odd)}: not cases of the training pool (test, validation or unknown cases)")
        pool = [i for i in pool if i not in held]
        if max(s.cases) > len(pool):
            refuse(f"--cases {max(s.cases)}: only {len(pool)} cases are left after the {s.test} test "
                   f"cases, {n_val} validation case(s) (--val-cases) and {len(held)} held out (--hold-out)")
        draws = [{"repeat": None, "fold": None, "test": [], "val": list(val), "pool": pool}] * (max(s.seeds) + 1)
    arms = parse_arms(s)
    budget_cases = s.budget_cases
    if budget_cases and (odd := sorted(set(budget_cases) - set(s.cases))):
        refuse(f"--budget-cases {' '.join(map(str, odd))}: not among --cases {' '.join(map(str, s.cases))}")
    batch = int(probe_cfg.trainer.batch_size)
    runs = []
    for n in s.cases:
        for seed in s.seeds:
            draw = draws[seed]
            pool, val = draw["pool"], tuple(draw["val"])
            train = tuple(sorted([pool[i] for i in np.random.default_rng(1000 + seed).permutation(len(pool))][:n]))
            epochs = max(1, round(s.steps / max(n // batch, 1)))
            # with validation cases: about 20 rounds per run, so that its last 20 % holds 4 of them
            for arm, overrides in arms.items():
                if budget_fraction(arm) < 1.0 and budget_cases is not None and n not in budget_cases:
                    continue
                run_dir = out / "runs" / f"{arm}-n{n}-s{seed}"
                own = max(1, round(epochs * budget_fraction(arm)))  # the budget axis: a fraction of the epochs
                own_checks = [f"trainer.val_every={max(1, own // 20)}"] if val else []
                if budget_fraction(arm) < 1.0:  # >= 40 loss windows at its own budget too
                    own_checks.append(f"trainer.log_every={max(1, round(s.steps * budget_fraction(arm)) // 40)}")
                own_overrides = [o.replace(DRAW, str(seed)) for o in overrides]  # a per-draw encoder (the control)
                runs.append(Run(arm, n, seed, train, (*base, f"output_dir={run_dir}", f"seed={seed}",
                                                      f"trainer.epochs={own}", *own_checks, *own_overrides), run_dir,
                                val, tuple(draw["test"]), draw["repeat"], draw["fold"]))
    return runs, test_ids, arms, probe_cfg


def unit(run: Run, out: Path, ids: Sequence[str], dataset: str, threads: int | None, logs: Path) -> Unit:
    """The scheduler's unit of ``run``: an ``asa-finetune`` process that continues the run from its last.pt when one
    is there (a run stopped by a signal saved it), else starts it on its splits, written here (the test and unused
    cases as its test part: never seen by the run). Done when the run is scored or went through its schedule."""
    ckpt = run.run_dir / "checkpoints" / "last.pt"
    if not ckpt.is_file() and not run.scores_file.is_file():
        rest = sorted(set(ids) - set(run.train) - set(run.val))
        atomic_write_json(run.run_dir / "splits.json", {"train": list(run.train), "val": list(run.val), "test": rest,
                                                        "dataset": dataset, "seed": run.seed})
    return Unit(f"{out.name}/{run.run_dir.name}", module_argv("asa.cli.finetune", *run.overrides, "resume=auto"),
                lambda: run.scores_file.is_file() or finished(ckpt), logs / f"{run.run_dir.name}.log",
                threads=threads)


def score(run: Run, by_id: Mapping[str, Any], test_ids: Sequence[str], device: str,
          drop_checkpoints: bool = False) -> dict[str, Any]:
    """Score the finished ``run`` on its test cases (cross-validation: its fold; else ``test_ids``) and read its
    budget check; kept in ``<run>/scores.json``, so a rerun neither trains nor predicts again (``drop_checkpoints``
    then deletes the run's checkpoints: a study folder small enough to carry between machines). Returns
    {"scores": [one row per test case], "budget": {...}, "names": the classes}."""
    if run.scores_file.is_file():
        done = json.loads(run.scores_file.read_text())
        done["budget"].setdefault("train", " ".join(run.train))  # a run scored before its cases were recorded
        return done
    ckpt = run.run_dir / "checkpoints" / "last.pt"
    predictor = Predictor.from_checkpoint(ckpt, device=torch.device(
        "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)))
    task = predictor.task
    # a network without an encoder to zero (the DynUNet baseline) is scored without the reliance columns
    reliance = encoder_reliance(predictor, [by_id[i] for i in (list(run.test) or list(test_ids))], hd95=True,
                                zeroed=capabilities(predictor.model).zero_encoder)
    scores = []
    for row in reliance["per_case"]:
        entry = {"arm": run.arm, "n": run.n, "seed": run.seed, "case": row["id"],
                 **({"repeat": run.repeat, "fold": run.fold} if run.repeat is not None else {})}
        for metric in ("Dice", "Dice_zeroed", "HD95", "NSD"):
            column = (lambda c: f"Dice_{c}_zeroed") if metric == "Dice_zeroed" else (lambda c: f"{metric}_{c}")
            for name in task.output_names:
                entry[column(name)] = row[column(name)]
            entry[column("mean")] = float(np.mean([row[column(c)] for c in task.output_names]))
        scores.append(entry)
    timed = run.run_dir / "wall_time.json"
    seconds = json.loads(timed.read_text())["train_seconds"] if timed.is_file() else math.nan
    budget = {"arm": run.arm, "n": run.n, "seed": run.seed, "steps": int(load_checkpoint(ckpt)["step"]),
              "train_seconds": seconds, "train": " ".join(run.train), **logged_budget(run.run_dir)}
    done = {"scores": scores, "budget": budget, "names": list(task.output_names)}
    atomic_write_json(run.scores_file, done)
    if drop_checkpoints:
        shutil.rmtree(run.run_dir / "checkpoints")
    return done


def score_all(runs: Sequence[Run], by_id: Mapping[str, Any], test_ids: Sequence[str], s: Transfer) -> list[dict]:
    """`score` every run of ``runs``, in their order, each on the threads it trained on (``s.threads``): ``s.jobs``
    at once in processes of their own when more than one is left to score (side by side, as they trained, not one
    after another on one core); a run scored before is read back."""
    threads = torch.get_num_threads()
    own = s.threads or max(1, threads // s.jobs)
    left = [run for run in runs if not run.scores_file.is_file()]
    if s.jobs > 1 and len(left) > 1:
        with ProcessPoolExecutor(min(s.jobs, len(left)), mp_context=multiprocessing.get_context("spawn"),
                                 initializer=torch.set_num_threads, initargs=(own,)) as pool:
            list(pool.map(score, left, repeat(by_id), repeat(test_ids), repeat(s.device), repeat(s.drop_checkpoints)))
    torch.set_num_threads(s.threads or threads)
    try:
        return [score(run, by_id, test_ids, s.device, s.drop_checkpoints) for run in runs]
    finally:
        torch.set_num_threads(threads)


def run_study(s: Transfer, *, clock: Clock | None = None, times: dict[str, float] | None = None,
              beside: Sequence[Unit] = ()) -> bool:
    """Train every run of ``s`` not finished yet, ``s.jobs`` at once within ``clock``'s budget (units of
    `asa.study.scheduler`, ``beside`` among them: another stage's units), score each finished run on the fixed test
    cases and write the outputs (`asa.study.tables.write_outputs`, a partial table while runs are left) -> whether
    every run (and every unit beside them) finished. ``times``: seconds per unit name, added to (each run's own,
    over the calls that trained it, in its ``wall_time.json``)."""
    out = Path(s.out).expanduser().absolute()
    runs, test_ids, arms, probe_cfg = plan_runs(s)
    root, layout = dataset_root(probe_cfg.data)
    by_id = {c.id: c for c in discover(layout, root, on_bad_case=str(probe_cfg.data.on_bad_case))}
    atomic_write_json(out / "study.json", {"data": s.data, "root": str(root), "test": test_ids, "arms": arms,
                                          "cases": list(s.cases), "seeds": list(s.seeds), "steps": s.steps})
    units = [unit(run, out, list(by_id), str(probe_cfg.data.name), s.threads, s.logs or out / "logs") for run in runs]
    times = {} if times is None else times
    before = {u.name: times.get(u.name, 0.0) for u in units}
    try:
        complete = run_units([*units, *beside], s.jobs, clock or Clock(None), times)
    finally:  # each run's wall time adds the parts of every call that trained it
        for run, u in zip(runs, units):
            if (spent := times.get(u.name, 0.0) - before[u.name]) > 0:
                timed = run.run_dir / "wall_time.json"
                atomic_write_json(timed, {"train_seconds": spent + (json.loads(timed.read_text())["train_seconds"]
                                                                    if timed.is_file() else 0.0)})
    results = score_all([run for run, u in zip(runs, units) if u.done()], by_id, test_ids, s)
    scores = [row for r in results for row in r["scores"]]
    names = results[0]["names"] if results else list(get_task(str(probe_cfg.data.task), root=root).output_names)
    if lesion := [c for c in s.lesion_classes if c not in names]:
        refuse(f"--lesion-classes {' '.join(lesion)}: not among the classes {names}")
    for row in scores if s.lesion_classes else ():
        row[LESION] = float(np.mean([row[f"Dice_{c}"] for c in s.lesion_classes]))
    if scores:
        write_outputs(scores, names, references(arms, s.reference), out, n_boot=s.n_boot,
                      budgets=[r["budget"] for r in results], undone=len(runs) - len(results))
        print(f"[transfer] outputs in {out}: transfer.md, transfer.csv, scores.csv, runs.csv, dice_vs_cases.svg",
              flush=True)
    return complete and len(results) == len(runs)
