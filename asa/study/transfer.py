"""A `Transfer` (the pilot or transfer stage): arms × N × seeds, every run the same steps, each a scheduler unit."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.errors import HydraException

from asa.api.config import compose_config, describe_compose_error
from asa.api.machinery.dataset import dataset_root
from asa.data import discover, get_task
from asa.data.splits import UNUSED
from asa.eval.predict import Predictor
from asa.eval.reliance import units_reliance
from asa.io import atomic_write_json, load_checkpoint
from asa.models import capabilities
from asa.study.arms import SCRATCH, label, twin_of
from asa.study.cohort import cohort_order
from asa.study.common import finished, module_argv, refuse
from asa.study.scheduler import JsonFile, Unit
from asa.study.statistics import LESION
from asa.study.tables import Outputs, logged_budget, write_outputs


@dataclasses.dataclass(frozen=True)
class Tuned:
    """An arm's asa-finetune ``overrides`` and what it is: its declared ``arm``, ``cohort`` and ``replicate``;
    ``labeled``: (the encoder, the cases it trained on with labels) per draw, or one for every draw (the positive
    control)."""

    overrides: tuple[str, ...]
    arm: str = SCRATCH
    cohort: int | None = None
    replicate: int = 0
    labeled: tuple[tuple[Path, tuple[str, ...]], ...] = ()

    def drawn(self, seed: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(its overrides, the cases its encoder trained on with labels) in draw (seed) ``seed``."""
        if not self.labeled:
            return self.overrides, ()
        encoder, cases = self.labeled[seed if len(self.labeled) > 1 else 0]
        return (*self.overrides, f"model.pretrained={encoder}"), cases

    @property
    def identity(self) -> dict[str, Any]:
        """The score columns that say what the arm is (read by the statistics, never parsed from its name)."""
        return {"encoder_arm": self.arm, "cohort": "" if self.cohort is None else self.cohort,
                "replicate": self.replicate, "group": label(self.arm, self.cohort)}


@dataclasses.dataclass(frozen=True)
class Transfer:
    """``arms`` × N labeled cases × seeds, scored on fixed test cases (with ``folds``, on cross-validated ones)."""

    out: Path
    arms: Mapping[str, Tuned]
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
    head_start: int | None = None  # a shorter budget every run is also scored at, from its state kept at that step
    overrides: tuple[str, ...] = ()  # asa-finetune overrides of every run
    lesion_classes: tuple[str, ...] = ()  # classes whose mean Dice is a column of its own (lesion mean)
    device: str = "auto"
    workers: int = 0  # data.num_workers
    threads: int | None = None  # torch threads per run (trainer.threads)
    fused: bool = False  # each draw's runs (N, seed) trained as one unit (asa.cli.fused), not a process per run
    n_boot: int = 10000  # bootstrap resamples of the confidence intervals
    logs: Path | None = None  # the folder of the runs' logs (None: <out>/logs)


def references(arms: Mapping[str, Tuned]) -> dict[str, str]:
    """Arm -> the arm its paired differences are taken against: its twin, or itself when the twin did not run."""
    return {name: twin if (twin := twin_of(t.arm)) in arms and twin != name else name for name, t in arms.items()}


@dataclasses.dataclass(frozen=True)
class Draw:
    """The cases one seed's runs read: N drawn from ``pool``, validated on ``val``, scored on ``test`` (empty: the
    fixed test cases); cross-validated, the ``repeat`` and ``fold`` whose fold is its test (None: a fixed split)."""

    repeat: int | None
    fold: int | None
    test: tuple[str, ...]
    val: tuple[str, ...]
    pool: tuple[str, ...]


def cv_draws(ids: Sequence[str], *, folds: int, repeats: int, val: int, seed: int) -> list[Draw]:
    """Repeated K-fold draws, g = repeat · ``folds`` + fold: each tests on its fold, validates on ``val`` others."""
    if folds < 2 or folds > len(ids):
        refuse(f"--folds {folds}: expected 2 .. {len(ids)} for a dataset of {len(ids)} cases")
    draws = []
    for r in range(repeats):
        order = cohort_order(ids, (seed, r))
        for k, fold in enumerate(np.array_split(np.array(order, dtype=object), folds)):
            rest = [i for i in order if i not in set(fold)]
            draws.append(Draw(r, k, tuple(sorted(fold)), tuple(sorted(rest[:val])), tuple(rest[val:])))
    return draws


def split_cases(ids: Sequence[str], *, test: int, seed: int) -> tuple[list[str], list[str]]:
    """(fixed test ids, pool of training ids in a seeded order)."""
    if test < 1 or test >= len(ids):
        refuse(f"--test {test}: expected 1 .. {len(ids) - 1} for a dataset of {len(ids)} cases")
    order = cohort_order(ids, seed)
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
    val: tuple[str, ...] = ()  # validation cases (asa-study --val): the plateau check of validation Dice
    test: tuple[str, ...] = ()  # its own test cases (cross-validation: its fold); empty: the study's fixed test cases
    repeat: int | None = None  # cross-validation: the repeat and fold of its draw (the seed numbers the draws)
    fold: int | None = None
    identity: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # `Tuned.identity` of its arm
    supervised_trained: tuple[str, ...] = ()  # cases it scores that its encoder trained on with labels
    head_start: int | None = None  # also scored at this step (its kept state: trainer.keep_steps)

    @property
    def scores_file(self) -> Path:
        return self.run_dir / "scores.json"

    @property
    def encoder_arm(self) -> str:
        """Its declared arm (`Tuned.arm`; its name ``arm`` is the arm's label: mae-c40-p1 is mae's)."""
        return str(self.identity.get("encoder_arm", self.arm))

    @property
    def kept(self) -> Path:
        """The checkpoint of its head start (asa-finetune's trainer.keep_steps)."""
        return self.run_dir / "checkpoints" / f"kept_{self.head_start:08d}.pt"


def cadence(steps: int, n: int, batch: int) -> tuple[int, int]:
    """(epochs, epochs between validation rounds) of a run of about ``steps`` optimiser steps over ``n`` cases in
    batches of ``batch``: about 20 rounds per run with validation cases, so that its last 20 % holds 4 of them."""
    epochs = max(1, round(steps / max(n // batch, 1)))
    return epochs, max(1, epochs // 20)


def run_folder(out: Path, arm: str, n: int, seed: int) -> Path:
    """The folder of ``arm``'s run at N ``n`` and seed (draw) ``seed`` in the stage folder ``out``."""
    return out / "runs" / f"{arm}-n{n}-s{seed}"


def plan_runs(s: Transfer) -> tuple[list[Run], list[str], Any, list[str]]:
    """Every run of the study -> (runs, test ids, the probe config, every case's id)."""
    out = Path(s.out).expanduser().absolute()
    # validation windows side by side (task.overlap=0): the rounds only set the budget (their curve's plateau), at
    # under half the cost of overlap 0.5; the scored test cases are predicted at the predictor's overlap
    base = [f"data={s.data}", f"model={s.model}", "trainer.progress=false", "trainer.panel_every=0",
            "task.overlap=0", f"data.num_workers={s.workers}", f"device={s.device}",
            f"trainer.log_every={max(1, s.steps // 40)}", *s.overrides]  # >= 40 loss windows per run
    base += [f"{k}={v}" for k, v in (("trainer.threads", s.threads), ("data.root", s.root), ("data.crop", s.crop)) if v]
    try:
        probe_cfg = compose_config("finetune", base)
    except HydraException as err:  # a bad --override: one line, before anything trains
        refuse(f"[study] {out.name}: its asa-finetune config does not compose: "
               + describe_compose_error(f"{err}\n{err.__cause__ or ''}").replace("\n", " "))
    root, layout = dataset_root(probe_cfg.data)
    ids = [c.id for c in discover(layout, root, on_bad_case=str(probe_cfg.data.on_bad_case))]
    held = set(s.hold_out)  # never drawn by a run (another study's control trains on them)
    if s.folds:  # cross-validation: each seed is a draw (its fold the test cases, N drawn inside its training part)
        draws = cv_draws(ids, folds=s.folds, repeats=s.repeats, val=s.val_cases, seed=s.split_seed)
        if odd := [x for x in s.seeds if not 0 <= x < len(draws)]:
            refuse(f"--seeds {' '.join(map(str, odd))}: with --folds {s.folds} --repeats {s.repeats} the seeds "
                   f"number the {len(draws)} draws (0 .. {len(draws) - 1})")
        if max(s.cases) > (least := min(len(d.pool) for d in draws)):
            refuse(f"--cases {max(s.cases)}: a fold's training part leaves {least} cases after the {s.val_cases} "
                   "validation case(s) (--val)")
        test_ids = sorted(ids)
    else:
        test_ids, pool = split_cases(ids, test=s.test, seed=s.split_seed)
        val, pool = sorted(pool[:s.val_cases]), pool[s.val_cases:]  # the same validation cases for every run
        if odd := sorted(held - set(pool)):  # in test or validation, or no longer in the set
            refuse(f"--root: the positive control's cases {' '.join(odd)} are not in the study's training pool (its "
                   "split put them in test or validation, or the set no longer holds them)")
        pool = [i for i in pool if i not in held]
        if max(s.cases) > len(pool):
            refuse(f"--cases {max(s.cases)}: only {len(pool)} cases are left after the {s.test} test "
                   f"cases (--test), {s.val_cases} validation case(s) (--val) and the positive control's {len(held)}")
        draws = [Draw(None, None, (), tuple(val), tuple(pool))] * (max(s.seeds) + 1)
    runs = []
    for n in s.cases:
        for seed in s.seeds:
            draw = draws[seed]
            pool, val = draw.pool, draw.val
            train = tuple(sorted([pool[i] for i in np.random.default_rng(1000 + seed).permutation(len(pool))][:n]))
            epochs, every = cadence(s.steps, n, int(probe_cfg.trainer.batch_size))
            checks = [f"trainer.val_every={every}"] if val else []
            checks += [f"trainer.keep_steps=[{s.head_start}]"] if s.head_start is not None else []
            for arm, tuned in s.arms.items():
                run_dir = run_folder(out, arm, n, seed)
                own, labeled = tuned.drawn(seed)
                runs.append(Run(arm, n, seed, train, (*base, f"output_dir={run_dir}", f"seed={seed}",
                                                      f"trainer.epochs={epochs}", *checks, *own), run_dir,
                                val, draw.test, draw.repeat, draw.fold, tuned.identity,
                                tuple(sorted(set(draw.test or test_ids) & set(labeled))), s.head_start))
    return runs, test_ids, probe_cfg, ids


# what the runs of one fused group may differ in: their folder, starting encoder and optimiser (each unit its own)
UNIT_OWN = ("output_dir=", "model.pretrained=", "optim.")


def groups(s: Transfer, runs: Sequence[Run]) -> dict[str, list[Run]]:
    """The name of each unit that trains runs -> its runs: a unit per run, or with ``s.fused`` one per draw (N and
    seed: the runs that share their seed, cases and batches) and network (every override but `UNIT_OWN`'s: the
    coordinate channel's arms are a group of their own) of more than one run."""
    out = Path(s.out).expanduser().absolute()
    draws: dict[tuple, list[Run]] = {}
    for run in runs:
        shared = tuple(sorted(o for o in run.overrides if not o.startswith(UNIT_OWN)))
        draws.setdefault((run.n, run.seed, shared) if s.fused else (run.n, run.seed, run.arm), []).append(run)
    names = {}
    for group in draws.values():
        name = group[0].run_dir.name if len(group) == 1 else f"fused-n{group[0].n}-s{group[0].seed}"
        if f"{out.name}/{name}" in names:  # another network's group of the draw: named by its first run's arm
            name = f"fused-{group[0].arm}-n{group[0].n}-s{group[0].seed}"
        names[f"{out.name}/{name}"] = group
    return names


def run_seconds(s: Transfer, runs: Sequence[Run], seconds: Mapping[str, float]) -> list[float]:
    """Each run's seconds of ``seconds`` (by unit name; NaN where its unit's are not recorded): a fused unit's
    shared out evenly among its runs."""
    share = {run.run_dir: seconds.get(name, math.nan) / len(group) for name, group in groups(s, runs).items()
             for run in group}
    return [share[run.run_dir] for run in runs]


def units(s: Transfer, runs: Sequence[Run], test_ids: Sequence[str], ids: Sequence[str], dataset: str) -> list[Unit]:
    """One ``asa-finetune`` unit per run (with ``s.fused``, one ``asa.cli.fused`` unit per draw), each followed by
    the scoring unit of its runs: a run is scored as soon as it is trained, so that what a study has done is held in
    its runs' small scores.json, not in their checkpoints (scripts/record_study.py --progress)."""
    out = Path(s.out).expanduser().absolute()
    logs, planned = s.logs or out / "logs", []
    for name, group in groups(s, runs).items():
        inputs, overrides = [], []
        for run in group:
            ckpt = run.run_dir / "checkpoints" / "last.pt"
            test = sorted(run.test or test_ids)  # what it scores; the cases it neither reads nor scores: unused
            split = {"train": list(run.train), "val": list(run.val), "test": test,
                     UNUSED: sorted(set(ids) - {*run.train, *run.val, *test}), "dataset": dataset, "seed": run.seed,
                     "supervised_trained": list(run.supervised_trained)}
            inputs += [] if ckpt.is_file() else [JsonFile(run.run_dir / "splits.json", split)]
            overrides.append((*run.overrides, "resume=auto"))
        argv = module_argv("asa.cli.finetune", *overrides[0])
        if len(group) > 1:  # the draw's runs as one (`groups`)
            spec = out / "fused" / f"{name.rsplit('/', 1)[-1]}.json"
            argv = module_argv("asa.cli.fused", str(spec))
            inputs.append(JsonFile(spec, {"runs": [list(o) for o in overrides]}))
        planned.append(Unit(name, argv, lambda group=group: all(_trained(run) for run in group),
                            logs / f"{name.rsplit('/', 1)[-1]}.log", threads=s.threads, inputs=tuple(inputs),
                            config=("finetune", overrides[0]), group=tuple(overrides) if len(group) > 1 else (),
                            steps=s.steps, arms=tuple(dict.fromkeys(run.encoder_arm for run in group))))
        planned.append(_scoring_unit(s, name, group, test_ids, out, logs))
    return planned


def _scoring_unit(s: Transfer, trainer: str, group: Sequence[Run], test_ids: Sequence[str], out: Path,
                  logs: Path) -> Unit:
    """The unit that scores ``group`` (the runs the unit ``trainer`` trains, predicted as one) once it is done."""
    tail = trainer.rsplit("/", 1)[-1]
    spec = out / "scoring" / f"{tail}.json"
    cases = sum(len(r.test) or len(test_ids) for r in group)  # priced in cases scored as `score` scores them
    if s.head_start is not None:  # each case scored again at the head start, without the zeroed encoder: half
        cases += cases // 2
    return Unit(f"{out.name}/scoring-{tail}", module_argv("asa.study.transfer", str(spec)),
                lambda: all(r.scores_file.is_file() for r in group), logs / f"scoring-{tail}.log", resumable=False,
                threads=s.threads, after=(trainer,), cases=cases,
                arms=tuple(dict.fromkeys(r.encoder_arm for r in group)),
                inputs=(JsonFile(spec, {"groups": [[{**dataclasses.asdict(r), "run_dir": str(r.run_dir)}
                                                    for r in group]],
                                        "test": list(test_ids), "device": s.device}),))


def _trained(run: Run) -> bool:
    """Scored, or its training finished."""
    return run.scores_file.is_file() or finished(run.run_dir / "checkpoints" / "last.pt")


def score(runs: Sequence[Run], by_id: Mapping[str, Any], test_ids: Sequence[str], device: str) -> None:
    """Score ``runs`` (one, or a fused draw's: one network, the same test cases) on their test cases with their
    budget check, each into its scores.json (a rerun neither trains nor predicts); with a head start, their states
    kept at that step too (the Dice with the encoder zeroed at the end point only). Runs of one draw are predicted
    as one (`asa.eval.predict.Predictor.of_units`)."""
    ckpts = [run.run_dir / "checkpoints" / "last.pt" for run in runs]
    tests = {tuple(run.test or test_ids) for run in runs}
    if len(tests) != 1:
        raise ValueError(f"runs {[r.run_dir.name for r in runs]} are scored on different test cases: score them apart")
    cases = [by_id[i] for i in tests.pop()]
    records = []
    for run, ckpt, (scores, names) in zip(runs, ckpts, _scored(runs, ckpts, cases, device, zeroed=True)):
        # its training seconds are the study's to add (`results`): a scorer in a process of its own runs before they are
        budget = {"arm": run.arm, "n": run.n, "seed": run.seed, "steps": int(load_checkpoint(ckpt)["step"]),
                  "train": " ".join(run.train), **logged_budget(run.run_dir)}
        records.append({"scores": scores, "budget": budget, "names": names})
        if run.head_start is not None and not run.kept.is_file():  # trained before the head start was asked for
            raise FileNotFoundError(f"{run.kept}: the head start's checkpoint (trainer.keep_steps=[{run.head_start}]) "
                                    f"is missing; the run ended at step {budget['steps']}")
    if runs[0].head_start is not None:
        kept = _scored(runs, [run.kept for run in runs], cases, device, zeroed=False)
        for run, record, (scores, _) in zip(runs, records, kept):
            record["head_start"] = {"step": run.head_start, "scores": scores}
    for run, record in zip(runs, records):
        atomic_write_json(run.scores_file, record)


def _scored(runs: Sequence[Run], ckpts: Sequence[Path], cases: Sequence[Any], device: str, *,
            zeroed: bool) -> list[tuple[list[dict], list[str]]]:
    """(a score row per test case, the classes) of each run's checkpoint in ``ckpts``, predicted as one; ``zeroed``:
    with the Dice of the encoder zeroed where the network has one to zero (else NaN)."""
    where = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                         ("cpu" if device == "auto" else device))
    predictor = Predictor.of_units([Predictor.from_checkpoint(ckpt, device=where) for ckpt in ckpts])
    task = predictor.task
    # a network without an encoder to zero (the DynUNet baseline) is scored without the reliance columns
    reliance = units_reliance(predictor, cases, hd95=True, zeroed=zeroed and capabilities(predictor.model).zero_encoder)
    scored = []
    for run, own in zip(runs, reliance):
        scores = []
        for row in own["per_case"]:
            entry = {"arm": run.arm, "n": run.n, "seed": run.seed, "case": row["id"],
                     **({"repeat": run.repeat, "fold": run.fold} if run.repeat is not None else {})}
            for column in ("Dice_{}", "Dice_{}_zeroed", "HD95_{}", "NSD_{}"):
                entry.update({column.format(c): row[column.format(c)] for c in task.output_names})
                entry[column.format("mean")] = float(np.mean([row[column.format(c)] for c in task.output_names]))
            scores.append(entry)
        scored.append((scores, list(task.output_names)))
    return scored


def _train_seconds(run: Run, default: float) -> float:
    timed = run.run_dir / "wall_time.json"
    return json.loads(timed.read_text())["train_seconds"] if timed.is_file() else default


def read_share(path: Path) -> tuple[list[list[Run]], list[str], str]:
    """A scoring share's groups of runs, the study's test cases and its device; refused (one line naming the file,
    exit 2) where it cannot be read or is not a share."""
    expected = ('expected {"groups": [[RUN, ...], ...], "test": [CASE, ...], "device": DEVICE}, as asa-study '
                "writes it")
    tuples = ("train", "overrides", "val", "test", "supervised_trained")
    try:
        spec = json.loads(path.read_text())
        groups = [[Run(**{**r, "run_dir": Path(r["run_dir"]), **{k: tuple(r[k]) for k in tuples}}) for r in group]
                  for group in spec["groups"]]
        return groups, [str(c) for c in spec["test"]], str(spec["device"])
    except OSError as err:
        refuse(f"[transfer] {path}: cannot be read ({err.strerror or err})")
    except (ValueError, TypeError, KeyError) as err:
        refuse(f"[transfer] {path}: not a scoring share ({type(err).__name__}: {err}); {expected}")


def score_main(argv: Sequence[str] | None = None) -> None:
    """``python -m asa.study.transfer SHARE.json``: score every run of the share (`units`: its groups, each a run or
    a fused draw's runs) not scored yet, a group's as one."""
    parser = argparse.ArgumentParser(
        prog="python -m asa.study.transfer",
        description="Score a study's trained fine-tuning runs on their test cases (what asa-study runs for each "
                    "training unit as soon as its runs are trained); a run already scored is left as it is.")
    parser.add_argument("share", type=Path, help=(
        "a scoring share, <out>/<stage>/scoring/<unit>.json as asa-study writes it: its runs by group, the "
        "study's test cases and the device"))
    path = parser.parse_args(argv).share
    groups, test, device = read_share(path)
    left = [unscored for group in groups if (unscored := [run for run in group if not run.scores_file.is_file()])]
    if not left:
        return
    first = left[0][0]
    data = compose_config("finetune", [o for o in first.overrides if o.startswith(("data=", "data.root="))]).data
    root, layout = dataset_root(data)
    by_id = {c.id: c for c in discover(layout, root, on_bad_case=str(data.on_bad_case))}
    for group in left:
        score(group, by_id, test, device)
        for run in group:
            print(f"[transfer] scored {run.run_dir}", flush=True)


def results(s: Transfer, runs: Sequence[Run], probe_cfg: Any, seconds: Sequence[float]) -> Outputs | None:
    """Write each run's seconds (``seconds``, one per run: every call's that trained it, `run_seconds`; NaN: not
    recorded, its wall_time.json left as it is) to its wall_time.json, write the scored runs' outputs and return
    their rows (None: no run scored yet). Every call reads them afresh from the runs' scores.json."""
    out = Path(s.out).expanduser().absolute()
    for run, total in zip(runs, seconds):
        if total > 0:  # (False for NaN)
            atomic_write_json(run.run_dir / "wall_time.json", {"train_seconds": total})
    done = _scored_runs(runs)
    # a run scored before its cases were recorded; its wall time as the study has added it up
    budgets = [{**d["budget"], "train": d["budget"].get("train", " ".join(run.train)),
                "train_seconds": _train_seconds(run, math.nan)} for run, d in done]
    written = _outputs(s, [(run, d["scores"]) for run, d in done], _names(done, probe_cfg), out, budgets=budgets,
                       undone=len(runs) - len(done))
    if written is not None:
        print(f"[transfer] outputs in {out}: transfer.md, transfer.csv, scores.csv, runs.csv, dice_vs_cases.svg",
              flush=True)
    return written


def head_start_results(s: Transfer, runs: Sequence[Run], probe_cfg: Any) -> Outputs | None:
    """The scored runs' rows at the head start (``s.head_start``), their outputs in ``<out>/head-start`` (None: no
    head start, or no run scored yet)."""
    if s.head_start is None:
        return None
    scored = _scored_runs(runs)
    return _outputs(s, [(run, d["head_start"]["scores"]) for run, d in scored], _names(scored, probe_cfg),
                    Path(s.out).expanduser().absolute() / "head-start", undone=len(runs) - len(scored))


def _scored_runs(runs: Sequence[Run]) -> list[tuple[Run, dict[str, Any]]]:
    """(run, its scores.json) of every run scored so far."""
    return [(run, json.loads(run.scores_file.read_text())) for run in runs if run.scores_file.is_file()]


def _names(done: Sequence[tuple[Run, Mapping[str, Any]]], probe_cfg: Any) -> list[str]:
    """The classes the runs were scored on (their scores.json's), else the task's."""
    if done:
        return list(done[0][1]["names"])
    root, _ = dataset_root(probe_cfg.data)
    return list(get_task(str(probe_cfg.data.task), root=root).output_names)


def _outputs(s: Transfer, done: Sequence[tuple[Run, list[dict[str, Any]]]], names: list[str], out: Path, *,
             budgets: Sequence[Mapping[str, Any]] = (), undone: int) -> Outputs | None:
    """`write_outputs` of the runs' score rows ``done`` under ``out``, each row with its arm's identity and, with
    --lesion-classes, their mean Dice (None: no row)."""
    scores = [{**row, **run.identity} for run, rows in done for row in rows]
    if lesion := [c for c in s.lesion_classes if c not in names]:
        refuse(f"--lesion-classes {' '.join(lesion)}: not among the classes {names}")
    for row in scores if s.lesion_classes else ():
        row[LESION] = float(np.mean([row[f"Dice_{c}"] for c in s.lesion_classes]))
    if not scores:
        return None
    return write_outputs(scores, names, references(s.arms), out, n_boot=s.n_boot, budgets=budgets, undone=undone)


if __name__ == "__main__":
    score_main()
