"""Does pretraining help? Fine-tune several arms over N labeled cases × seeds, test on one fixed split.

Arms are named sets of ``asa-finetune`` overrides: ``scratch`` (no pretrained encoder) and
``pretrained`` (``model.pretrained=--pretrained``) by default, Table 4 fine-tuning presets with
``--preset baseline spe_only``, any other with ``--arm NAME=key=value,key=value``. Every run gets
the same budget of optimiser steps (``--steps``, rounded to whole epochs so that the lr schedule
ends with the run), no validation cases, and its last checkpoint is scored on the fixed test
cases: Dice and HD95 (mm, as asa-evaluate scores it) per class, and Dice with the encoder's
hidden states zeroed (encoder reliance).

Outputs in ``--out``: ``runs/<arm>-n<N>-s<seed>/`` (asa-finetune run folders), ``scores.csv``
(one row per arm, N, seed, test case), ``transfer.md`` / ``transfer.csv`` (Table-4-shaped: one row
per arm and N with Dice and HD95 per class ± sd over seeds, the encoder-zeroed Dice, and the
paired difference to the reference arm with its 95 % crossed random-effects CI over seeds (labeled
draws) and test cases, next to the seed × case bootstrap CI, the per-seed mean differences and the
case-only CI; the labeled draws each N's seeds made) and ``dice_vs_cases.svg``.

Example (demo IBSR phantoms, CPU, minutes)::

    asa-pretrain output_dir=runs/pretrain trainer.epochs=50
    python -m asa.study.transfer --pretrained runs/pretrain/checkpoints/encoder.pt --data ibsr \\
        --cases 2 4 --seeds 0 1 --steps 40 --out runs/transfer
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from asa.api import finetune
from asa.api.config import compose_config
from asa.api.machinery.dataset import dataset_root
from asa.api.machinery.rundir import move_aside
from asa.data import discover, get_task
from asa.eval.metrics import EMPTY_HD95
from asa.eval.predict import Predictor
from asa.eval.reliance import encoder_reliance
from asa.models import capabilities
from asa.eval.plots import line_plot
from asa.io import atomic_write_json, atomic_write_text, load_checkpoint
from asa.study.common import Clock, finished, markdown_table as table, parser, refuse, rows_csv, run_tasks
# the statistics beside the report (asa.study.statistics), importable from here as before
from asa.study.statistics import (LESION, OLD_LESION, case_interval, delta_prefix, metric_keys,  # noqa: F401
                                  paired_differences, paired_matrix, per_seed_differences, summarize)

SCRATCH, PRETRAINED = "scratch", "pretrained"
PRESETS = ("baseline", "spe_only")  # Table 4 fine-tuning rows from scratch (configs/experiment)


# -------------------------------------------------------------------------------------------- outputs
def _ci(r: Mapping[str, Any], p: str, digits: int = 3) -> str:
    """'+0.040 [+0.010, +0.070]': a paired difference with its seed × case CI."""
    f = f"{{:+.{digits}f}}"
    return f"{f.format(r[p])} [{f.format(r[p + '_lo'])}, {f.format(r[p + '_hi'])}]"


def _arm(r: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> str:
    """An arm's cell: its name, and the arm its Δ is taken against where the rows' references differ (a twin)."""
    several = len({x["reference"] for x in rows if "reference" in x}) > 1
    return f"{r['arm']} (Δ vs {r['reference']})" if several and "reference" in r else str(r["arm"])


def markdown_table(rows: Sequence[Mapping[str, Any]], names: Sequence[str], reference: str) -> str:
    """Table-4-shaped Markdown: arm × labeled cases, Dice per class ± sd, mean, HD95 mean (when scored),
    zeroed, Δ mean Dice vs reference [95 % crossed random-effects CI], the seed × case bootstrap CI, the per-seed Δ
    and the case-only CI."""
    hd = any("HD95_mean" in r for r in rows)
    nsd = all("NSD_mean" in r for r in rows)
    lesion = all(LESION in r for r in rows)
    head = ["arm", "labeled", *names, "mean", *(["lesion mean"] if lesion else []), *(["HD95 mean (mm)"] if hd else []),
            *(["NSD mean"] if nsd else []),
            "encoder zeroed",
            f"Δ mean vs {reference} [95 % CI, random effects]", "bootstrap CI (seeds × cases)", "Δ per seed",
            "case-only CI",
            *([f"Δ HD95 vs {reference} [95 % CI]"] if hd else [])]
    lines = []
    for r in rows:
        def cell(key: str, digits: int = 3) -> str:  # ± sd over seeds, when there are several
            sd = r[key + "_sd"]
            return f"{r[key]:.{digits}f}" if math.isnan(sd) else f"{r[key]:.{digits}f} ± {sd:.{digits}f}"

        cells = [_arm(r, rows), str(r["n"])] + [cell(f"Dice_{c}") for c in names] + [cell("Dice_mean")]
        cells += [cell(LESION)] if lesion else []
        cells += [cell("HD95_mean", 1)] if hd else []
        cells += [cell("NSD_mean")] if nsd else []
        cells.append("— (no encoder)" if math.isnan(r["Dice_mean_zeroed"])
                     else f"{r['Dice_mean_zeroed']:.3f} (drop {r['encoder_drop']:+.3f})")
        if "delta" not in r:
            cells += ["—"] * (4 + hd)
        else:
            cells += [f"{r['delta']:+.3f} [{r['delta_re_lo']:+.3f}, {r['delta_re_hi']:+.3f}]",
                      f"[{r['delta_lo']:+.3f}, {r['delta_hi']:+.3f}]",
                      " ".join(f"{float(v):+.3f}" for v in r["delta_per_seed"].split()),
                      f"[{r['delta_case_lo']:+.3f}, {r['delta_case_hi']:+.3f}]"]
            cells += [_ci(r, "delta_HD95_mean", 1)] if hd else []
        lines.append(cells)
    return table(head, lines)


def class_differences_table(rows: Sequence[Mapping[str, Any]], names: Sequence[str], reference: str) -> str:
    """Markdown: per arm and N, the paired difference to ``reference`` of every class's Dice (and HD95,
    when scored) with its seed × case 95 % CI."""
    keys = ([f"Dice_{c}" for c in names] + ([LESION] if all(LESION in r for r in rows) else [])
            + ([f"HD95_{c}" for c in names] if any("HD95_mean" in r for r in rows) else [])
            + ([f"NSD_{c}" for c in names] + ["NSD_mean"] if all("NSD_mean" in r for r in rows) else []))
    head = ["arm", "labeled", *(f"Δ {k.replace('_', ' ')}" + (" (mm)" if k.startswith("HD95") else "") for k in keys)]
    return table(head, [[_arm(r, rows), str(r["n"])] + [_ci(r, delta_prefix(k), 1 if k.startswith("HD95") else 3) for k in keys]
                        for r in rows if "delta" in r])


def draw_lines(budgets: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per N on the labeled draws the seeds made (from each run's ``train`` cases): how many distinct sets
    of labeled cases, and how many cases two seeds' sets share on average; none where the runs do not say."""
    lines = []
    for n in sorted({int(b["n"]) for b in budgets}):
        sets = {int(b["seed"]): frozenset(str(b["train"]).split()) for b in budgets
                if int(b["n"]) == n and isinstance(b.get("train"), str) and b["train"]}
        if not sets:
            continue
        pairs = [len(sets[a] & sets[b]) for i, a in enumerate(sorted(sets)) for b in sorted(sets)[i + 1:]]
        lines.append(f"At N = {n}: {len(sets)} seed(s) drew {len(set(sets.values()))} distinct set(s) of labeled cases"
                     + (f"; two seeds' sets share {np.mean(pairs):.1f} of {n} cases on average" if pairs else "")
                     + (" (every seed trains on the same cases: the seeds differ in their training's randomness "
                        "alone, not in the labeled draw)" if len(set(sets.values())) == 1 and len(sets) > 1 else "")
                     + ".")
    return lines


def report_markdown(rows: Sequence[Mapping[str, Any]], names: Sequence[str], reference: str, *, n_boot: int,
                    draws: Sequence[str] = ()) -> str:
    """transfer.md: the Table-4-shaped table, how to read it (``draws``: `draw_lines`), and the per-class
    differences."""
    hd = any("HD95_mean" in r for r in rows)
    notes = [
        f"Labeled = training cases of each run; ± = sd over seeds of the per-seed test means (a seed is a draw of "
        f"labeled cases from the training pool and a fine-tuning seed; draws of a small pool share cases: "
        f"{' '.join(draws) if draws else 'see the runs splits.json'}). Δ = arm − {reference}, paired by N, seed and "
        "test case. Its 95 % CI is the crossed random-effects interval of seeds × test cases (ANOVA mean squares, "
        "each part at its own t quantile: asa.eval.random_effects; with --folds, the cross-validated draws' "
        "folded_interval), the one the study's verdicts read; beside it "
        f"the two-level percentile bootstrap ({n_boot} resamples: test cases, then seeds, with replacement), too "
        "narrow with 2–3 seeds. 'Δ per seed' lists the mean Δ of every seed; 'case-only CI' resamples test cases "
        "only (per case, Δ averaged over seeds), which ignores the spread between labeled draws. Encoder zeroed: "
        "mean Dice with every encoder state the decoder receives set to zero (drop = what the encoder contributes).",
    ]
    if hd:
        notes.append("HD95 per class in mm (voxel spacing of the label), scored as asa-evaluate scores it: the larger of "
                     "the two directed 95th percentiles of surface distances (MONAI); both masks empty: 0 mm, exactly "
                     f"one empty: {EMPTY_HD95} mm (BraTS). HD95 mean averages the classes, empties included; lower is "
                     "better, so a negative Δ HD95 favours the arm.")
    if all("NSD_mean" in r for r in rows):
        notes.append("NSD: normalised surface Dice (the share of both surfaces within the tolerance of the other), scored "
                     "as asa-evaluate scores it at its default tolerance; higher is better.")
    return (markdown_table(rows, names, reference) + "\n" + "\n\n".join(notes) + "\n\n"
            + "Paired differences per class [95 % CI, seeds × cases]:\n\n" + class_differences_table(rows, names, reference))


def svg_plot(rows: Sequence[Mapping[str, Any]], *, width: int = 480, height: int = 320) -> str:
    """Mean Dice (± sd over seeds) against the number of labeled cases, one line per arm (SVG, `asa.eval.plots`)."""
    series = {arm: [(r["n"], r["Dice_mean"], r["Dice_mean_sd"]) for r in rows if r["arm"] == arm]
              for arm in dict.fromkeys(r["arm"] for r in rows)}
    return line_plot(series, xlabel="labeled cases", ylabel="mean Dice", width=width, height=height)


# ------------------------------------------------------------------------------------------------ runs
def parse_arms(args: argparse.Namespace) -> dict[str, list[str]]:
    """Arm name -> asa-finetune overrides; with ``--recipes`` every arm once per recipe, named
    ``<arm>@<recipe>`` with ``optim=<recipe>`` added."""
    arms: dict[str, list[str]] = {} if getattr(args, "no_scratch", False) else {SCRATCH: ["model.pretrained=null"]}
    if args.pretrained:
        arms[PRETRAINED] = [f"model.pretrained={Path(args.pretrained).expanduser().absolute()}"]
    for preset in args.preset:
        arms[preset] = [f"experiment={preset}"]
    for spec in args.arm:
        if "=" not in spec:
            refuse(f"--arm {spec!r}: expected NAME=key=value[,key=value...]")
        name, overrides = spec.split("=", 1)
        if "@" in name:
            refuse(f"--arm {spec!r}: '@' is reserved for the recipe (--recipes); pick another name")
        arms[name] = [o for o in overrides.split(",") if o]
    for arm in getattr(args, "budget_arms", None) or ():
        if arm not in arms:
            refuse(f"--budget-arms {arm}: no such arm among {list(arms)}")
        for fraction in args.budget_fractions:
            if not 0.0 < fraction < 1.0:
                refuse(f"--budget-fractions {fraction}: a fraction of the budget in (0, 1)")
            steps = getattr(args, "steps", None)
            if steps is not None and round(steps * fraction) < 4:
                refuse(f"--budget-fractions {fraction}: {fraction} × --steps {steps} leaves "
                       f"{round(steps * fraction)} step(s), fewer than the 4 loss windows a run's budget "
                       "check needs; raise --steps or leave this fraction out")
            arms[f"{arm}{BUDGET_MARK}{fraction:g}"] = list(arms[arm])
    if not args.recipes:
        return arms
    return {f"{arm}@{recipe}": [*overrides, f"optim={recipe}"] for recipe in args.recipes for arm, overrides in arms.items()}


def command_line(*, data: str, root: Path, model: str, crop: int, cases: Sequence[int], seeds: Sequence[int], test: int,
                 split_seed: int, steps: int, device: str, n_boot: int, out: Path, val_cases: int = 0, jobs: int = 1,
                 recipes: Sequence[str] = (), reference: str | None = None, lesion_classes: Sequence[str] = (),
                 threads: int | None = None, time_budget: float | None = None, drop_checkpoints: bool = False,
                 arms: Mapping[str, str] | None = None, overrides: Sequence[str] = (), budget_arms: Sequence[str] = (),
                 budget_fractions: Sequence[float] = (), budget_cases: Sequence[int] | None = None,
                 scratch: bool = True, hold_out: Sequence[str] = (), workers: int = 0, folds: int = 0,
                 repeats: int = 1) -> list[str]:
    """The arguments of :func:`main` for a study that hands its fine-tuning to this one, ``--reuse`` always
    (finished runs are read back). ``arms``: name -> asa-finetune overrides ``key=value,...`` (``--arm``)."""
    argv = ["--data", data, "--root", str(root), "--model", model, "--crop", str(crop), "--cases", *map(str, cases),
            "--seeds", *map(str, seeds), "--test", str(test), "--val-cases", str(val_cases), "--split-seed",
            str(split_seed), "--steps", str(steps), "--device", device, "--reuse", "--n-boot", str(n_boot),
            "--out", str(out), "--jobs", str(jobs)]
    argv += ["--recipes", *recipes] if recipes else []
    argv += ["--reference", reference] if reference else []
    argv += ["--lesion-classes", *lesion_classes] if lesion_classes else []
    argv += ["--threads", str(threads)] if threads else []
    argv += ["--workers", str(workers)] if workers else []
    argv += ["--time-budget", f"{max(0.0, time_budget):.0f}"] if time_budget is not None else []
    argv += ["--drop-checkpoints"] if drop_checkpoints else []
    argv += [] if scratch else ["--no-scratch"]
    argv += ["--hold-out", *hold_out] if hold_out else []
    argv += ["--folds", str(folds), "--repeats", str(repeats)] if folds else []
    for name, spec in (arms or {}).items():
        argv += ["--arm", f"{name}={spec}"]
    for override in overrides:
        argv += ["--override", override]
    if budget_arms:
        argv += ["--budget-arms", *budget_arms, "--budget-fractions", *map(str, budget_fractions)]
        argv += ["--budget-cases", *map(str, budget_cases)] if budget_cases else []
    return argv


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


PLATEAU_TOL = 0.05  # relative loss drop between the last two quarters of a run below which it has plateaued
VAL_PLATEAU_TOL = 0.02  # spread (max − min) of validation Dice over a run's last 20 % within which it has plateaued


def val_plateau(dice: Sequence[float], *, tol: float = VAL_PLATEAU_TOL, tail: float = 0.2) -> dict[str, Any]:
    """Whether a run's validation Dice (rounds in step order) plateaued: ``val_dice`` (the last round),
    ``val_spread`` (max − min over the last ``tail`` of the rounds, at least 2 rounds) and
    ``val_plateau`` (that spread ≤ ``tol``); NaN / None without at least 3 rounds."""
    v = np.asarray(dice, dtype=float)
    if v.size < 3:
        return {"val_dice": float(v[-1]) if v.size else math.nan, "val_spread": math.nan, "val_plateau": None}
    last = v[-max(2, int(math.ceil(tail * v.size))):]
    spread = float(last.max() - last.min())
    return {"val_dice": float(v[-1]), "val_spread": spread, "val_plateau": spread <= tol}



def budget_check(losses: Sequence[float], rel_encoder: Sequence[float], rel_decoder: Sequence[float]) -> dict[str, Any]:
    """Whether a run learned what its budget allows, from its logged training-loss windows (in step order)
    and relative updates: ``final_loss`` (mean of the last quarter of the windows), ``loss_drop`` (relative
    drop from the third to the last quarter), ``plateau`` (that drop < ``PLATEAU_TOL``) and the mean
    relative update of encoder and decoder (``rel_update_encoder`` / ``_decoder``, their ratio)."""
    v = np.asarray(losses, dtype=float)
    if v.size < 4:
        raise ValueError(f"budget check needs at least 4 logged loss windows, got {v.size}: lower trainer.log_every")
    q = v.size // 4
    third, last = v[-2 * q:-q].mean(), v[-q:].mean()
    drop = float((third - last) / max(abs(third), 1e-12))
    enc = float(np.mean(rel_encoder)) if len(rel_encoder) else math.nan
    dec = float(np.mean(rel_decoder)) if len(rel_decoder) else math.nan
    return {"final_loss": float(last), "loss_drop": drop, "plateau": drop < PLATEAU_TOL, "rel_update_encoder": enc,
            "rel_update_decoder": dec, "rel_update_ratio": enc / dec if dec and not math.isnan(dec) else math.nan}


def logged_series(run_dir: Path, tags: Sequence[str]) -> dict[str, list[tuple[int, float]]]:
    """The (step, value) pairs of each scalar ``tags`` in a run's TensorBoard folder, in step order (empty
    when the run did not log it, or wrote no TensorBoard folder)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if not (run_dir / "tb").is_dir():
        return {t: [] for t in tags}
    events = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    have = set(events.Tags()["scalars"])
    return {t: [(int(e.step), float(e.value)) for e in sorted(events.Scalars(t), key=lambda e: e.step)]
            if t in have else [] for t in tags}


def logged_budget(run_dir: Path) -> dict[str, Any]:
    """:func:`budget_check` of a finished run, from the scalars in its TensorBoard folder, with
    :func:`val_plateau` and the validation curve (``val_curve``: [step, Dice] per round) when it validated
    (``--val-cases``)."""
    tags = ("train/loss", "train/rel_update/encoder", "train/rel_update/decoder", "val/dice")
    series = logged_series(run_dir, tags)
    values = {t: [v for _, v in series[t]] for t in tags}
    out = budget_check(values["train/loss"], values["train/rel_update/encoder"], values["train/rel_update/decoder"])
    if not series["val/dice"]:
        return out
    return {**out, **val_plateau(values["val/dice"]), "val_curve": [list(x) for x in series["val/dice"]]}


def converged_budget(curve: Sequence[Sequence[float]], *, tol: float = 0.01, window: int = 3) -> dict[str, Any]:
    """The step at which a validation-Dice curve ([step, Dice] per round, in step order) stopped rising: the
    first round whose trailing mean over ``window`` rounds comes within ``tol`` of the curve's best trailing
    mean. ``converged``: that round lies in the first three quarters of the rounds, so the curve stayed flat
    for at least the last quarter (False: it was still rising, and the budget is only a lower bound)."""
    if len(curve) < 2 * window:
        raise ValueError(f"converged_budget needs at least {2 * window} validation rounds, got {len(curve)}")
    steps = np.asarray([c[0] for c in curve], dtype=int)
    dice = np.asarray([c[1] for c in curve], dtype=float)
    smooth = np.array([dice[max(0, i - window + 1):i + 1].mean() for i in range(dice.size)])
    best = float(smooth.max())
    first = int(np.flatnonzero(smooth >= best - tol)[0])
    return {"budget": int(steps[first]), "converged": bool(first < 0.75 * dice.size), "best": best, "tol": tol,
            "window": window}


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


def plan_runs(args: argparse.Namespace) -> tuple[list[Run], list[str], dict[str, list[str]], Any]:
    """Every run of the study (not trained yet) -> (runs, test ids, arms, the probe config)."""
    out = Path(args.out).expanduser().absolute()
    base = [f"data={args.data}", f"model={args.model}", "trainer.progress=false", "trainer.panel_every=0",
            f"data.num_workers={args.workers}", f"device={args.device}",
            f"trainer.log_every={max(1, args.steps // 40)}", *args.override]  # >= 40 loss windows per run
    if args.threads:
        base.append(f"trainer.threads={args.threads}")
    if args.root:
        base.append(f"data.root={args.root}")
    if args.crop:
        base.append(f"data.crop={args.crop}")
    probe_cfg = compose_config("finetune", base)
    root, layout = dataset_root(probe_cfg.data)
    cases = discover(layout, root, on_bad_case=str(probe_cfg.data.on_bad_case))
    n_val = getattr(args, "val_cases", 0)
    held = set(getattr(args, "hold_out", None) or ())  # never drawn by a run (another study's control trains on them)
    folds = getattr(args, "folds", 0) or 0
    if folds:  # cross-validation: each seed is a draw (its fold the test cases, N drawn inside its training part)
        if held:
            refuse("--hold-out: not with --folds (cross-validation draws from every fold's training part)")
        draws = cv_draws([c.id for c in cases], folds=folds, repeats=args.repeats, val=n_val, seed=args.split_seed)
        if odd := [s for s in args.seeds if not 0 <= s < len(draws)]:
            refuse(f"--seeds {' '.join(map(str, odd))}: with --folds {folds} --repeats {args.repeats} the seeds "
                   f"number the {len(draws)} draws (0 .. {len(draws) - 1})")
        if max(args.cases) > (least := min(len(d["pool"]) for d in draws)):
            refuse(f"--cases {max(args.cases)}: a fold's training part leaves {least} cases after the {n_val} "
                   "validation case(s) (--val-cases)")
        test_ids = sorted(c.id for c in cases)
    else:
        test_ids, pool = split_cases([c.id for c in cases], test=args.test, seed=args.split_seed)
        val, pool = tuple(sorted(pool[:n_val])), pool[n_val:]  # the same validation cases for every run
        if odd := sorted(held & (set(test_ids) | set(val)) | (held - {c.id for c in cases})):
            refuse(f"--hold-out {' '.join(odd)}: not cases of the training pool (test, validation or unknown cases)")
        pool = [i for i in pool if i not in held]
        if max(args.cases) > len(pool):
            refuse(f"--cases {max(args.cases)}: only {len(pool)} cases are left after the {args.test} test "
                   f"cases, {n_val} validation case(s) (--val-cases) and {len(held)} held out (--hold-out)")
        draws = [{"repeat": None, "fold": None, "test": [], "val": list(val), "pool": pool}] * (max(args.seeds) + 1)
    arms = parse_arms(args)
    budget_cases = getattr(args, "budget_cases", None)
    if budget_cases and (odd := sorted(set(budget_cases) - set(args.cases))):
        refuse(f"--budget-cases {' '.join(map(str, odd))}: not among --cases {' '.join(map(str, args.cases))}")
    batch = int(probe_cfg.trainer.batch_size)
    runs = []
    for n in args.cases:
        for seed in args.seeds:
            draw = draws[seed]
            pool, val = draw["pool"], tuple(draw["val"])
            train = tuple(sorted([pool[i] for i in np.random.default_rng(1000 + seed).permutation(len(pool))][:n]))
            epochs = max(1, round(args.steps / max(n // batch, 1)))
            # with validation cases: about 20 rounds per run, so that its last 20 % holds 4 of them
            for arm, overrides in arms.items():
                if budget_fraction(arm) < 1.0 and budget_cases is not None and n not in budget_cases:
                    continue
                run_dir = out / "runs" / f"{arm}-n{n}-s{seed}"
                own = max(1, round(epochs * budget_fraction(arm)))  # the budget axis: a fraction of the epochs
                own_checks = [f"trainer.val_every={max(1, own // 20)}"] if val else []
                if budget_fraction(arm) < 1.0:  # >= 40 loss windows at its own budget too
                    own_checks.append(f"trainer.log_every={max(1, round(args.steps * budget_fraction(arm)) // 40)}")
                own_overrides = [o.replace(DRAW, str(seed)) for o in overrides]  # a per-draw encoder (the control)
                runs.append(Run(arm, n, seed, train, (*base, f"output_dir={run_dir}", f"seed={seed}",
                                                      f"trainer.epochs={own}", *own_checks, *own_overrides), run_dir,
                                val, tuple(draw["test"]), draw["repeat"], draw["fold"]))
    return runs, test_ids, arms, probe_cfg


def train_and_score(run: Run, test_ids: Sequence[str], reuse: bool, device: str,
                    drop_checkpoints: bool = False) -> dict[str, Any]:
    """Train ``run`` (unless ``reuse`` finds it finished) and score it on the test cases; the scores and
    the budget check are kept in ``<run>/scores.json``, so a rerun neither trains nor predicts again
    (``drop_checkpoints`` then deletes the run's checkpoints: a study folder small enough to carry
    between machines). Returns {"scores": [one row per test case], "budget": {...}}."""
    if reuse and run.scores_file.is_file():
        done = json.loads(run.scores_file.read_text())
        done["budget"].setdefault("train", " ".join(run.train))  # a run scored before its cases were recorded
        return done
    ckpt = run.run_dir / "checkpoints" / "last.pt"
    test_ids = list(run.test) or list(test_ids)
    cfg = compose_config("finetune", list(run.overrides))
    root, layout = dataset_root(cfg.data)
    by_id = {c.id: c for c in discover(layout, root, on_bad_case=str(cfg.data.on_bad_case))}
    timed = run.run_dir / "wall_time.json"
    if not (reuse and finished(ckpt)):
        # a run stopped mid-schedule (its last.pt saved on the signal) continues from it under --reuse, on its own
        # splits.json; without --reuse, or with no checkpoint to continue, it trains anew, the old run kept aside
        resumed = reuse and ckpt.is_file()
        if resumed:
            print(f"[transfer] {run.arm}: continuing {run.run_dir} from step {int(load_checkpoint(ckpt)['step'])}",
                  flush=True)
            cfg = compose_config("finetune", [*run.overrides, "resume=true"])
        else:
            if (run.run_dir / "checkpoints").is_dir():
                print(f"[transfer] moved the previous run to {move_aside(run.run_dir)}", flush=True)
            rest = sorted(set(by_id) - set(run.train))  # test and unused cases: never seen by the run
            rest = sorted(set(rest) - set(run.val))
            atomic_write_json(run.run_dir / "splits.json", {"train": list(run.train), "val": list(run.val),
                                                            "test": rest, "dataset": str(cfg.data.name),
                                                            "seed": run.seed})
            print(f"[transfer] {run.arm}: {run.n} labeled case(s), seed {run.seed}", flush=True)
        before = json.loads(timed.read_text())["train_seconds"] if resumed and timed.is_file() else 0.0
        started = time.perf_counter()
        result = finetune(cfg)
        atomic_write_json(timed, {"train_seconds": before + time.perf_counter() - started})
        if result.preempted:  # SIGTERM/SIGUSR1: the run saved last.pt mid-schedule
            raise SystemExit(f"[transfer] {run.run_dir} was stopped by a signal at step {result.step}; "
                             "rerun with --reuse to continue it (and train the rest)")
    predictor = Predictor.from_checkpoint(ckpt, device=_device(device))
    task = predictor.task
    # a network without an encoder to zero (the DynUNet baseline) is scored without the reliance columns
    reliance = encoder_reliance(predictor, [by_id[i] for i in test_ids], hd95=True,
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
    seconds = json.loads(timed.read_text())["train_seconds"] if timed.is_file() else math.nan
    budget = {"arm": run.arm, "n": run.n, "seed": run.seed, "steps": int(load_checkpoint(ckpt)["step"]),
              "train_seconds": seconds, "train": " ".join(run.train), **logged_budget(run.run_dir)}
    done = {"scores": scores, "budget": budget, "names": list(task.output_names)}
    atomic_write_json(run.scores_file, done)
    if drop_checkpoints:
        shutil.rmtree(run.run_dir / "checkpoints")
    return done


def _device(name: str):
    return torch.device("cuda" if name == "auto" and torch.cuda.is_available() else ("cpu" if name == "auto" else name))


def run_study(args: argparse.Namespace) -> tuple[list[dict], list[str], dict[str, list[str]], list[dict], int]:
    """Train (or with --reuse, find) every run and score it on the fixed test cases -> (scores, class
    names, arms, budget rows, runs left undone). ``--jobs`` > 1 trains that many runs at once in
    separate processes (one GPU can hold several tiny runs); ``--time-budget`` starts no new run after
    that many seconds (the rest wait for the next invocation with --reuse)."""
    out = Path(args.out).expanduser().absolute()
    runs, test_ids, arms, probe_cfg = plan_runs(args)
    root, _ = dataset_root(probe_cfg.data)
    atomic_write_json(out / "study.json", {"data": args.data, "root": str(root), "test": test_ids,
                                          "arms": arms, "cases": args.cases, "seeds": args.seeds, "steps": args.steps})
    clock = Clock(args.time_budget)
    jobs = [(run, test_ids, args.reuse, args.device, args.drop_checkpoints) for run in runs]
    results, _ = run_tasks(train_and_score, jobs, jobs=args.jobs, fits=lambda job: clock.fits())
    scores = [row for r in results for row in r["scores"]]
    budgets = [r["budget"] for r in results]
    names = results[0]["names"] if results else list(get_task(str(probe_cfg.data.task), root=root).output_names)
    return scores, names, arms, budgets, len(runs) - len(results)


def unlearned_classes(rows: Sequence[Mapping[str, Any]], names: Sequence[str]) -> list[str]:
    """One line per N and class that every arm scores Dice 0 on (mean over seeds and cases): there the
    table shows no difference because nothing was learned, not because the arms are alike."""
    notes = []
    for n in sorted({int(r["n"]) for r in rows}):
        mine = [r for r in rows if int(r["n"]) == n]
        zero = [c for c in names if all(r[f"Dice_{c}"] <= 1e-6 for r in mine)]
        if zero:
            notes.append(f"At {n} labeled case(s) every arm scores Dice 0 on {', '.join(zero)}: nothing was learned "
                         "there, so the table can say nothing about a difference between the arms on "
                         f"{'it' if len(zero) == 1 else 'them'}.")
    return notes


CURVE_FRACTIONS = (0.2, 0.4, 0.6, 0.8, 1.0)
CURVE_HEAD = "val Dice at " + " / ".join(f"{f:.0%}" for f in CURVE_FRACTIONS) + " of the run"


def curve_cell(runs: Sequence[Mapping[str, Any]]) -> str:
    """The validation curve of runs of one arm and N: mean Dice over the runs at the round nearest each of
    `CURVE_FRACTIONS` of the run ("—" without validation rounds)."""
    curves = [r["val_curve"] for r in runs if r.get("val_curve")]
    if not curves:
        return "—"
    points = [np.mean([c[min(len(c) - 1, max(0, round(f * len(c)) - 1))][1] for c in curves]) for f in CURVE_FRACTIONS]
    return " / ".join(f"{x:.3f}" for x in points)


def budget_table(budgets: Sequence[Mapping[str, Any]]) -> str:
    """Markdown: per arm and N, the steps, final training loss (± sd over seeds), how many runs
    plateaued, and the mean relative update of encoder and decoder (and their ratio)."""
    val = any(b.get("val_plateau") is not None for b in budgets)
    head = ["arm", "labeled", "steps", "final loss", "plateaued", *(["val Dice plateaued", CURVE_HEAD] if val else []),
            "rel. update encoder", "rel. update decoder", "encoder / decoder", "train s / run"]
    lines = []
    groups: dict[tuple[str, int], list[Mapping[str, Any]]] = {}
    for b in budgets:
        groups.setdefault((b["arm"], int(b["n"])), []).append(b)
    for (arm, n), runs in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        loss = [r["final_loss"] for r in runs]
        sd = f" ± {np.std(loss, ddof=1):.3f}" if len(loss) > 1 else ""

        def mean(key: str) -> str:  # "—" for a network without a registered encoder (nothing logged)
            values = [float(r[key]) for r in runs if not math.isnan(float(r[key]))]
            return f"{np.mean(values):.2g}" if values else "—"

        checked = [r for r in runs if r.get("val_plateau") is not None]
        plateau_val = [f"{sum(bool(r['val_plateau']) for r in checked)}/{len(checked)}", curve_cell(checked)] if val else []
        secs = [float(r.get("train_seconds", math.nan)) for r in runs]
        secs = [t for t in secs if not math.isnan(t)]
        lines.append([arm, str(n), str(runs[0]["steps"]), f"{np.mean(loss):.3f}{sd}",
                      f"{sum(bool(r['plateau']) for r in runs)}/{len(runs)}", *plateau_val,
                      mean("rel_update_encoder"), mean("rel_update_decoder"), mean("rel_update_ratio"),
                      f"{np.mean(secs):.0f}" if secs else "—"])
    return table(head, lines)


def write_outputs(scores: list[dict], names: Sequence[str], reference: str | Mapping[str, str], out: Path, *,
                  n_boot: int = 10000, budgets: Sequence[Mapping[str, Any]] = (), undone: int = 0) -> str:
    """scores.csv, transfer.md / .csv, runs.csv (the budget check) and dice_vs_cases.svg under ``out``;
    returns the Markdown. ``reference``: one arm, or arm -> its reference arm."""
    rows = summarize(scores, names, reference, n_boot=n_boot)
    label = (reference if isinstance(reference, str)
             else " / ".join(dict.fromkeys(v for k, v in reference.items() if k != v)) or "reference")
    md = report_markdown(rows, names, label, n_boot=n_boot, draws=draw_lines(budgets))
    notes = unlearned_classes(rows, names)
    if notes:
        md += "\n" + "\n".join(f"- {line}" for line in notes) + "\n"
    if budgets:
        md += ("\nBudget check (one row per arm and N; final loss = mean training loss over the last quarter of "
               f"the run; plateaued = its drop from the third quarter is below {PLATEAU_TOL:.0%}; val Dice plateaued "
               f"(with --val-cases) = the spread of validation Dice over the run's last 20 % of rounds is at most "
               f"{VAL_PLATEAU_TOL}; relative update = ‖Δw‖/‖w‖ per optimiser step, mean over the run; train s / run = "
               "wall time of the training, mean over the runs trained in this folder):\n\n" + budget_table(budgets))
        atomic_write_text(out / "runs.csv", rows_csv(budgets))
    if undone:
        md = (f"**Partial: {undone} run(s) not trained yet** (rerun the same command with --reuse to continue).\n\n"
              + md)
    atomic_write_text(out / "scores.csv", rows_csv(scores))
    atomic_write_text(out / "transfer.csv", rows_csv(rows))
    atomic_write_text(out / "transfer.md", md)
    atomic_write_text(out / "dice_vs_cases.svg", svg_plot(rows))
    return md


def main(argv: Sequence[str] | None = None) -> int:
    p = parser("asa.study.transfer", __doc__)
    p.add_argument("--pretrained", help="encoder export or pretraining checkpoint for the 'pretrained' arm")
    p.add_argument("--data", default="ibsr", help="fine-tuning data preset: brats | ibsr | wmh | msd (default ibsr)")
    p.add_argument("--root", help="dataset folder (default: the preset's demo phantoms)")
    p.add_argument("--model", default="tiny", help="model preset (must match the pretrained encoder)")
    p.add_argument("--crop", type=int, default=64, help="fine-tuning crop edge (data.crop)")
    p.add_argument("--cases", type=int, nargs="+", default=[2, 4], help="numbers of labeled training cases")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--test", type=int, default=6, help="size of the fixed test split")
    p.add_argument("--val-cases", type=int, default=0,
                   help="validation cases (the same for every run, never trained on or tested): each run validates "
                        "about 20 times and the budget check says whether its validation Dice plateaued")
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--folds", type=int, default=0, metavar="K",
                   help="repeated K-fold cross-validation instead of one fixed test split: each --seeds value is a "
                        "draw (repeat · K + fold) whose fold is its test cases, N drawn inside its training part "
                        "(after --val-cases); every case scored once per repeat (default 0: the fixed split, --test)")
    p.add_argument("--repeats", type=int, default=1, help="with --folds: the repeats (default 1)")
    p.add_argument("--hold-out", nargs="+", default=[], metavar="ID",
                   help="cases of the training pool no run draws (a study's positive control trains on them)")
    p.add_argument("--steps", type=int, default=40, help="optimiser steps per run (rounded to whole epochs)")
    p.add_argument("--budget-arms", nargs="+", default=[], metavar="ARM",
                   help="arms also trained at each --budget-fractions of the epochs, named ARM_xFRACTION and compared "
                        "with the reference at the same fraction (include the reference)")
    p.add_argument("--budget-fractions", type=float, nargs="+", default=[0.125, 0.25, 0.5], metavar="F",
                   help="fractions of the budget for --budget-arms (default 0.125 0.25 0.5)")
    p.add_argument("--budget-cases", type=int, nargs="+", metavar="N",
                   help="train the budget arms at these numbers of labeled cases only (default: every --cases)")
    p.add_argument("--preset", nargs="*", default=[], choices=PRESETS, help="Table 4 fine-tuning rows as extra arms")
    p.add_argument("--arm", action="append", default=[], help="extra arm NAME=key=value,key=value (asa-finetune overrides)")
    p.add_argument("--no-scratch", action="store_true",
                   help="leave out the built-in 'scratch' arm (--model from scratch); --reference then names another arm")
    p.add_argument("--reference", default=SCRATCH, help="arm the paired differences are taken against")
    p.add_argument("--override", action="append", default=[], help="asa-finetune override for every arm")
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=0, help="data.num_workers")
    p.add_argument("--reuse", action="store_true", help="score finished runs instead of training them again")
    p.add_argument("--n-boot", type=int, default=10000, help="bootstrap resamples of the confidence intervals")
    p.add_argument("--recipes", nargs="*", default=[], metavar="OPTIM",
                   help="fine-tuning recipes (configs/finetune/optim: adamw sgd): every arm once per recipe, "
                        "named ARM@RECIPE, each compared with the reference arm under its own recipe")
    p.add_argument("--lesion-classes", nargs="*", default=[], metavar="CLASS",
                   help="classes whose mean Dice is reported as its own column (lesion mean)")
    p.add_argument("--threads", type=int, help="torch threads per run (trainer.threads)")
    p.add_argument("--jobs", type=int, default=1, help="runs trained at once, each in its own process")
    p.add_argument("--time-budget", type=float, metavar="SECONDS",
                   help="start no new run after this many seconds; rerun with --reuse to continue")
    p.add_argument("--dry-run", action="store_true", help="check every run's configuration and list the runs; train nothing")
    p.add_argument("--drop-checkpoints", action="store_true",
                   help="delete each run's checkpoints once it is scored (its scores.json is what a rerun reads)")
    p.add_argument("--out", default="runs/transfer")
    args = p.parse_args(argv)
    if args.jobs < 1:
        refuse(f"--jobs {args.jobs}: expected >= 1")
    if args.val_cases < 0:
        refuse(f"--val-cases {args.val_cases}: expected >= 0")
    if args.no_scratch and args.reference == SCRATCH and SCRATCH not in (a.split("=", 1)[0] for a in args.arm):
        refuse("--no-scratch leaves out the 'scratch' arm: name another arm with --reference")
    out = Path(args.out).expanduser().absolute()
    if args.dry_run:
        runs, test_ids, arms, _ = plan_runs(args)
        for run in runs:  # every run's overrides compose against the schema
            compose_config("finetune", list(run.overrides))
        print(f"[transfer] dry run: {len(runs)} runs ({len(arms)} arms × cases {args.cases} × seeds {args.seeds}), "
              f"{len(test_ids)} test cases, {args.steps} steps each; arms: {', '.join(arms)}")
        return 0
    scores, names, arms, budgets, undone = run_study(args)
    lesion = [c for c in args.lesion_classes if c not in names]
    if lesion:
        refuse(f"--lesion-classes {' '.join(lesion)}: not among the classes {names}")
    if args.lesion_classes:
        for row in scores:
            row[LESION] = float(np.mean([row[f"Dice_{c}"] for c in args.lesion_classes]))
    refs = references(arms, args.reference)
    md = write_outputs(scores, names, refs, out, n_boot=args.n_boot, budgets=budgets, undone=undone) if scores else ""
    print(md)
    print(f"[transfer] outputs in {out}: transfer.md, transfer.csv, scores.csv, runs.csv, dice_vs_cases.svg")
    return 0


if __name__ == "__main__":
    sys.exit(main())
