"""Which of ASA's ideas help a residual-encoder U-Net? One resumable command: cohorts -> masked-convolution
pretraining of nnU-Net's ResEnc (mae, asa and its variants, per unlabeled-cohort size, plus a
pure-noise negative control and a supervised positive control) -> fine-tuning beside scratch ResEnc and the SW-ViT rows -> one report.

Stages (rerun the same command to continue; every finished unit is kept; a rerun may also add arms, seeds, budget
points, and cohorts and N below the largest (`GROWS`): the new units run, the finished ones are read as they are):

1. cohort: labeled lesion cases (template anatomy, ``msd``: heterotopia and one-sided deep-grey
   enlargement), unlabeled healthy T1 subjects written in chunks (``asa.data.write_anatomy_dataset``,
   layout filelist; chunk k has its own seed, so the smaller cohort is the first subjects of the larger
   one), each cohort a ``files.csv`` over its chunks, and pure-noise volumes on the same grid
   (``studies.noise.write_noise_dataset``) for the negative control.
2. pretraining: ``asa-pretrain model=resenc`` per arm (`ARMS`) and cohort size, the negative control
   (``method=mae`` on the noise volumes, as many as the largest cohort), and the SW-ViT ``asa`` preset
   per cohort size; every arm states all of its method options, so a changed default changes no arm.
   Each run has the same number of optimiser steps whatever the cohort size. A run cut by the time
   budget saves ``last.pt`` (the trainer's SIGUSR1 path) and continues on the next call.
3. transfer: ``python -m studies.transfer``: scratch ResEnc (the reference), every pretrained ResEnc,
   the control, scratch SW-ViT (``scratch``) and the pretrained SW-ViT, N labeled cases × seeds, one
   fixed test split and fixed validation cases (each run's validation-Dice plateau is checked), Dice,
   lesion Dice, NSD and HD95, paired differences to scratch ResEnc with seed × case bootstrap CIs.
4. report: ``<out>/report/README.md``: the settings, the wall time of every stage and pretraining
   run, each pretraining run's validation loss first -> last (did the encoder learn?), the transfer
   tables beside the effect sizes the literature reports, and ``report.json``.

Scales: ``--scale cpu`` (default: 48³ volumes, 32³ crops, ResEnc ``S``: nnU-Net's widths, the CPU size that
learns the task, SW-ViT ``tiny``; roughly a day of a
2-core CPU for the whole grid: narrow it with --cohorts/--seeds/--cases/--arms/--budget-cases and, where the
pilot asks for more steps than the machine has time for, --budget-cap; docs/studies.md times a 2-hour grid), ``--scale gpu``
(128³ volumes, 96³ crops, ResEnc M, SW-ViT small; every call stops within --time-budget, 510 s by
default, and the next call continues), ``--quick`` (a smoke test: minutes). ``--dry-run`` prints the
plan and composes every run's configuration without writing or training anything.

Example::

    python -m studies.resenc --dry-run --out runs/resenc
    python -m studies.resenc --cohorts 40 --seeds 0 1 --cases 2 8 --out runs/resenc   # CPU, a part
    while ! python -m studies.resenc --scale gpu --out runs/resenc-gpu; do :; done     # GPU, 9-min calls
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import json
import math
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from asa.api.config import compose_config
from asa.data import LESION_NAMES, load_volume
from asa.eval import seed_case_bootstrap
from asa.io import atomic_write_json, atomic_write_text, load_checkpoint
from studies import pretraining, transfer
from studies.common import (Clock, add_scale_options, child_env, command, finished, machine, machine_line,
                            markdown_table, module_argv, parser, record_settings, run_tasks, scale_from_args,
                            table_row)
from studies.noise import write_noise_dataset

# pretraining arms of the ResEnc: method and every ASA option stated (loss weighting and its exponent γ, mirror-aware
# masking, coordinate channel; the masking itself is `MASKING` for every arm); "mirror" means
# method.mirror_visible=<--mirror-visible>, its absence null (uniform random masking)
ARMS: dict[str, dict[str, Any]] = {
    "mae": {"method": "mae", "loss_weighting": "uniform", "power": 1.0, "mirror": False, "coord": False},
    "asa": {"method": "asa", "loss_weighting": "attentive", "power": 1.0, "mirror": False, "coord": False},
    # γ = 4: the attentive weight sharpened (CPU scale, pipeline crops: CV 0.88 -> 1.38 at the whole-head crop,
    # 0.14 -> 0.45 inside the brain; `python scripts/weight_spread.py`, docs/resenc.md)
    "asa-sharp": {"method": "asa", "loss_weighting": "attentive", "power": 4.0, "mirror": False, "coord": False},
    "asa-coord": {"method": "asa", "loss_weighting": "attentive", "power": 1.0, "mirror": False, "coord": True},
    "asa-mirror": {"method": "asa", "loss_weighting": "attentive", "power": 1.0, "mirror": True, "coord": False},
}
# nnssl's masking and the paper's weight unit, stated so that a changed default changes no arm
MASK_BLOCK = 16
MASKING = (f"method.mask_block={MASK_BLOCK}", "method.densify=spark", "method.weight_patch=8")
PILOT = "pilot"  # the constant-lr scratch run whose validation curve sets the fine-tuning budget
SUPERVISED = "supervised"  # the positive control: the encoder of a ResEnc trained with labels on other subjects
CONTROL = "noise"  # the negative control: ARMS["mae"] pretrained on pure-noise volumes
REFERENCE = "resenc-scratch"
COORD_SCRATCH = "resenc-scratch-coord"  # scratch ResEnc with the coordinate channel: what the channel gives unpretrained
CHUNK = 20  # subjects per cohort chunk (the unit the cohort stage resumes by)
LITERATURE = (
    "Expected effect sizes (literature): masked pretraining of the ResEnc U-Net (SparK-style MAE) on 39k brain "
    "MRIs beats nnU-Net from scratch by about +3 Dice averaged over 11 test sets (Wald et al., \"Revisiting MAE "
    "pre-training for 3D medical image segmentation\", CVPR 2025); on 114k volumes (OpenMind, ICCV 2025) "
    "pretrained networks beat from-scratch CNNs only on select sets. ASA's attentive loss and symmetry have no "
    "published CNN result; on the SW-ViT the ASA paper reports +1 to +2 Dice over MAE at 11,993 pretraining volumes. "
    "This study's cohorts are tiny against those (tens to hundreds of subjects, small grids): an effect of a few "
    "Dice points, or none, is what the literature leads one to expect.")


@dataclasses.dataclass
class Scale:
    """How big the study is. ``cohorts``: unlabeled subjects per pretraining cohort (each arm is pretrained on
    each); ``pretrain_steps``: optimiser steps of every pretraining run (epochs follow from the cohort size);
    ``steps``: fine-tuning steps per run; ``val``: fixed validation cases for the plateau check."""

    cohorts: tuple[int, ...]
    labeled: int
    test: int
    val: int
    volume: int
    crop: int
    pretrain_steps: int
    steps: int | None  # fine-tuning steps per run; None: the converged budget the pilot finds
    cases: tuple[int, ...]
    seeds: tuple[int, ...]
    size: str  # ResEnc size: tiny | M | L
    swvit: str  # SW-ViT preset of the SW-ViT rows
    supervised: int = 16  # labeled subjects outside the study's labeled cohort for the positive control
    jobs: int = 1
    time_budget: float | None = None  # seconds per call (None: no limit)
    # the ResEnc pretraining crop (None: ``crop``). The attentive weight varies only where a crop holds background:
    # the brain-centred crop of the whole head (crop = volume, as the paper's 128³ crop holds the head) gives it
    # the paper's spread, a crop inside the brain makes it uniform (docs/resenc.md). A convolutional encoder takes
    # any crop, so it is fine-tuned at ``crop``; the encoders tied to their crop (the coordinate channel's, the
    # SW-ViT's position code) are pretrained at ``crop``.
    pretrain_crop: int | None = None
    workers: int = 0  # data loader workers of the pretraining runs
    # the pilot (with ``steps`` None): scratch ResEnc at the largest N, seed 0, the recipe's warm-up then a
    # constant lr for this many steps, validated about 20 times; the study's budget is the step at which its
    # validation Dice stopped rising (`transfer.converged_budget`). The positive control trains this long.
    pilot_steps: int | None = None


SCALES = {
    "cpu": Scale(cohorts=(40, 400), labeled=32, test=16, val=4, volume=48, crop=32, pretrain_steps=1600, steps=None,
                 cases=(2, 8), seeds=(0, 1, 2, 3, 4), size="S", swvit="tiny", pretrain_crop=48, pilot_steps=2400),
    "gpu": Scale(cohorts=(40, 400), labeled=48, test=16, val=4, volume=128, crop=96, pretrain_steps=4000, steps=None,
                 cases=(2, 8), seeds=(0, 1, 2, 3, 4), size="M", swvit="small", jobs=3, time_budget=510.0, workers=8,
                 pretrain_crop=128, pilot_steps=4000),
    "quick": Scale(cohorts=(4, 8), labeled=9, test=3, val=2, volume=40, crop=32, pretrain_steps=4, steps=None,
                   cases=(2,), seeds=(0, 1), size="tiny", swvit="tiny", supervised=4, pilot_steps=12),
}


# ------------------------------------------------------------------------------------------------ plan
@dataclasses.dataclass(frozen=True)
class Pretraining:
    """One pretraining run: its name (``<arm>-c<subjects>``), the cohort it reads and its overrides."""

    name: str
    arm: str
    cohort: int
    data: Path
    overrides: tuple[str, ...]
    coord: bool = False  # the encoder takes the coordinate channel (its fine-tuning must too)
    network: str = "resenc"

    @property
    def run_dir(self) -> Path:
        return Path(next(o.split("=", 1)[1] for o in self.overrides if o.startswith("output_dir=")))

    @property
    def encoder(self) -> Path:
        return self.run_dir / "checkpoints" / "encoder.pt"


def cohort_dir(out: Path, kind: str, n: int) -> Path:
    return out / "data" / f"{kind}-{n}"


def method_overrides(spec: Mapping[str, Any], mirror_visible: float) -> list[str]:
    return [f"method={spec['method']}", f"method.loss_weighting={spec['loss_weighting']}",
            f"method.weight_power={spec['power']}", *MASKING,
            f"method.mirror_visible={mirror_visible if spec['mirror'] else 'null'}",
            f"method.coord_channel={str(bool(spec['coord'])).lower()}"]


def pretraining_epochs(scale: Scale, subjects: int, batch: int, steps: int | None = None) -> int:
    """Epochs giving about ``steps`` (default ``scale.pretrain_steps``) optimiser steps on ``subjects`` (80 %
    train split)."""
    per_epoch = max(1, int(0.8 * subjects) // batch)
    return max(1, round((scale.pretrain_steps if steps is None else steps) / per_epoch))


def plan_pretraining(out: Path, scale: Scale, arms: Sequence[str], *, seed: int, mirror_visible: float,
                     swvit_arm: bool = True, ablation_cohorts: Sequence[int] | None = None) -> list[Pretraining]:
    """Every pretraining run: each ResEnc arm per cohort, the noise control, the SW-ViT ``asa`` per cohort.
    ``ablation_cohorts``: the cohorts the variant arms (``asa-sharp``, ``asa-coord``, ``asa-mirror``) are pretrained on (None: every cohort);
    ``mae`` and ``asa`` are pretrained on every cohort."""
    if ablation_cohorts is not None and (odd := sorted(set(ablation_cohorts) - set(scale.cohorts))):
        raise SystemExit(f"--ablation-cohorts {' '.join(map(str, odd))}: not a cohort of this study "
                         f"(cohorts: {' '.join(map(str, scale.cohorts))})")
    runs = []
    common = ["data=bids", "data.layout=filelist", f"data.num_workers={scale.workers}", "data.split.ratios=[0.8,0.2,0.0]",
              "optim=adamw_demo", "trainer.progress=false", "trainer.panel_every=0", "probe.every=0", f"seed={seed}",
              "resume=auto"]
    batch = int(compose_config("pretrain", ["model=resenc", *common[:2], f"data.crop={scale.crop}"]).trainer.batch_size)
    cohorts = [(arm, n, cohort_dir(out, "unlabeled", n)) for n in scale.cohorts for arm in arms
               if ablation_cohorts is None or arm in ("mae", "asa") or n in ablation_cohorts]
    cohorts.append((CONTROL, max(scale.cohorts), cohort_dir(out, "noise", max(scale.cohorts))))
    for arm, n, data in cohorts:
        spec = ARMS["mae" if arm == CONTROL else arm]
        name = f"{arm}-c{n}"
        # the coordinate channel ties an encoder to its crop; mirror-aware masking pairs each block with its mirror,
        # so it needs an even block grid along the left-right axis (16³ blocks: 32³ crops, not 48³)
        crop = scale.pretrain_crop or scale.crop
        if spec["coord"] or (spec["mirror"] and (crop // MASK_BLOCK) % 2):
            crop = scale.crop
        overrides = ("model=resenc", f"model.size={scale.size}", *method_overrides(spec, mirror_visible), *common,
                     f"data.crop={crop}", f"data.root={data}", f"trainer.epochs={pretraining_epochs(scale, n, batch)}",
                     f"output_dir={out / 'pretrain' / name}")
        runs.append(Pretraining(name, arm, n, data, overrides, coord=bool(spec["coord"])))
    if swvit_arm:  # the paper's network, pretrained by the paper's method on the same cohorts
        for n in scale.cohorts:
            name = f"swvit-asa-c{n}"
            overrides = ("experiment=asa", f"model={scale.swvit}", *common, f"data.crop={scale.crop}",
                         f"data.root={cohort_dir(out, 'unlabeled', n)}",
                         f"trainer.epochs={pretraining_epochs(scale, n, batch)}", f"output_dir={out / 'pretrain' / name}")
            runs.append(Pretraining(name, "asa", n, cohort_dir(out, "unlabeled", n), overrides, network="swvit"))
    return runs


def supervised_dir(runs: Sequence[Pretraining]) -> Path:
    """The positive control's run folder: beside the pretraining runs."""
    return runs[0].run_dir.parent / SUPERVISED


def supervised_overrides(out: Path, scale: Scale, seed: int, runs: Sequence[Pretraining]) -> list[str]:
    """asa-finetune of scratch ResEnc on the positive control's labeled subjects, for the pilot's steps (the
    longest budget of the study; ``scale.steps`` without a pilot)."""
    batch = int(compose_config("finetune", ["data=msd", "model=resenc"]).trainer.batch_size)
    epochs = pretraining_epochs(scale, scale.supervised, batch, scale.pilot_steps or scale.steps)
    return ["data=msd", f"data.root={out / 'data' / SUPERVISED}", "model=resenc", f"model.size={scale.size}",
            f"data.crop={scale.crop}", f"trainer.epochs={epochs}", f"trainer.val_every={max(1, epochs // 20)}",
            "trainer.progress=false", "trainer.panel_every=0", f"seed={seed}", "resume=auto",
            f"output_dir={supervised_dir(runs)}"]  # about 20 validation rounds, as every fine-tuning run of the study


def finetune_arms(runs: Sequence[Pretraining], scale: Scale) -> dict[str, str]:
    """`studies.transfer` --arm specs: scratch ResEnc, each pretrained encoder (name -> key=value,...) and, when an
    encoder was pretrained with the coordinate channel, scratch ResEnc with that channel too: the control
    that tells what the pretraining gives from what the extra input channel gives by itself."""
    resenc = f"model=resenc,model.size={scale.size}"
    arms = {REFERENCE: resenc}
    if any(run.network == "resenc" and run.coord for run in runs):
        arms[COORD_SCRATCH] = f"{resenc},model.coord_channel=true"
    arms[f"resenc-{SUPERVISED}"] = f"{resenc},model.pretrained={supervised_dir(runs) / 'checkpoints' / 'last.pt'}"
    for run in runs:
        if run.network == "resenc":
            arms[f"resenc-{run.name}"] = (f"{resenc},model.pretrained={run.encoder}"
                                          + (",model.coord_channel=true" if run.coord else ""))
        else:
            arms[run.name] = f"model.pretrained={run.encoder}"
    return arms


def pilot_dir(out: Path) -> Path:
    return out / PILOT


def pilot_argv(args: argparse.Namespace, scale: Scale, out: Path) -> list[str]:
    """`studies.transfer` arguments of the pilot: scratch ResEnc (its ``scratch`` arm) at the largest N, seed 0, the
    recipe's warm-up then a constant lr for ``scale.pilot_steps`` steps, on the study's labeled cases and split."""
    return transfer.command_line(
        data="msd", root=out / "data" / "labeled", model="resenc", crop=scale.crop, cases=[max(scale.cases)], seeds=[0],
        test=scale.test, val_cases=scale.val, split_seed=args.seed, steps=scale.pilot_steps, device=args.device,
        n_boot=1000, out=pilot_dir(out), lesion_classes=list(LESION_NAMES.values()), threads=args.threads,
        overrides=[f"model.size={scale.size}", "optim.schedule=constant", *args.override])


def pilot_scores(out: Path, scale: Scale) -> Path:
    return pilot_dir(out) / "runs" / f"{transfer.SCRATCH}-n{max(scale.cases)}-s0" / "scores.json"


def pilot_budget(out: Path, scale: Scale, cap: int | None = None) -> dict[str, Any]:
    """The pilot's validation curve and the converged budget found on it (`transfer.converged_budget`);
    ``steps``: the study's fine-tuning steps, the budget rounded up to ten steps, or the pilot's length when
    the curve was still rising at its end; at most ``cap`` (``--budget-cap``: what a machine's time allows),
    and then ``capped`` says the study fine-tunes less than the pilot asks for."""
    record = json.loads(pilot_scores(out, scale).read_text())
    curve = record["budget"].get("val_curve") or []
    found = transfer.converged_budget(curve)
    steps = max(int(10 * math.ceil(found["budget"] / 10)) if found["converged"] else int(scale.pilot_steps), 10)
    capped = cap is not None and cap < steps
    rows = record.get("scores") or []
    test = {name: float(np.mean([float(r[f"Dice_{name}"]) for r in rows]))
            for name in record.get("names", []) if rows and f"Dice_{name}" in rows[0]}
    return {**found, "steps": cap if capped else steps, "capped": capped, "asked": steps,
            "pilot_steps": scale.pilot_steps, "curve": curve, "test": test, "test_cases": len(rows)}


FOUND = 0.1  # mean test Dice under which the pilot is said not to find a class (its arms can say nothing there)


def pilot_markdown(pilot: Mapping[str, Any]) -> str:
    asked = pilot.get("asked", pilot["steps"])
    verdict = (f"its validation Dice stopped rising at step {pilot['budget']} (trailing mean over {pilot['window']} "
               f"rounds within {pilot['tol']} of its best, {pilot['best']:.3f}, and flat for at least the last quarter "
               f"of the pilot), a budget of {asked} steps" if pilot["converged"] else
               f"its validation Dice was still rising in the last quarter of the pilot (best {pilot['best']:.3f}): no "
               f"converged budget was found, so the budget is the pilot's {asked} steps")
    verdict += (f"; `--budget-cap` holds the study to {pilot['steps']} steps, so every run stops before the scratch "
                "twin's curve has levelled off and the arms compare at that budget, not at their end points"
                if pilot.get("capped") else f"; the study fine-tunes {pilot['steps']} steps")
    test = pilot.get("test") or {}
    lesions = [name for name in LESION_NAMES.values() if name in test]
    missed = [name for name in lesions if test[name] < FOUND]
    scored = (f"\n\nOn the {pilot['test_cases']} test cases after its {pilot['pilot_steps']} steps (mean Dice per class; "
              + ("the host finds every lesion kind" if not missed else
                 f"the host does not find {', '.join(missed)} (Dice under {FOUND}): no arm can show a difference there")
              + "):\n\n" + markdown_table(list(test), [[f"{v:.3f}" for v in test.values()]], left=0)) if test else ""
    return (f"Scratch ResEnc, warm-up then a constant lr for {pilot['pilot_steps']} steps: {verdict}.\n\n"
            + markdown_table(["step", *(str(s) for s, _ in pilot["curve"])],
                             [["val Dice", *(f"{d:.3f}" for _, d in pilot["curve"])]], left=1) + scored)


def transfer_argv(args: argparse.Namespace, scale: Scale, runs: Sequence[Pretraining], out: Path,
                  time_left: float | None) -> list[str]:
    budget = [a.format(c=max(scale.cohorts)) for a in args.budget_arms]  # the budget axis: does pretraining buy
    if budget and scale.steps * min(args.budget_fractions) < 4:           # faster convergence?
        print(f"[resenc-study] no budget axis: {min(args.budget_fractions)} × {scale.steps} steps is under the 4 "
              "steps a run's budget check needs", flush=True)
        budget = []
    return transfer.command_line(
        data="msd", root=out / "data" / "labeled", model=scale.swvit, crop=scale.crop, cases=scale.cases,
        seeds=scale.seeds, test=scale.test, val_cases=scale.val, split_seed=args.seed, steps=scale.steps,
        device=args.device, n_boot=args.n_boot, out=out / "transfer", jobs=scale.jobs, reference=REFERENCE,
        lesion_classes=list(LESION_NAMES.values()), threads=args.threads, time_budget=time_left,
        drop_checkpoints=args.drop_checkpoints, arms=finetune_arms(runs, scale), overrides=args.override,
        budget_arms=budget, budget_fractions=args.budget_fractions, budget_cases=args.budget_cases,
        scratch=not args.no_swvit)


# ----------------------------------------------------------------------------------------------- cohort
def write_unit(kind: str, folder: str, cases: int, size: int, seed: int, labeled: str) -> None:
    """Write one cohort unit (a module-level function, so that a process pool can run it)."""
    if kind == "noise":
        write_noise_dataset(folder, cases=cases, size=size, seed=seed, affine=cohort_affine(Path(labeled)), overwrite=True)
    else:
        layout, lesions = ("filelist", False) if kind == "unlabeled" else ("msd", True)
        pretraining.dataset_writer(True)(layout, Path(folder), cases=cases, size=size, seed=seed, lesions=lesions)
    atomic_write_text(Path(folder) / ".complete", "done\n")


def write_chunks(out: Path, scale: Scale, *, seed: int, clock: Clock, times: dict[str, float]) -> bool:
    """Labeled cases, unlabeled and noise chunks, each once (a ``.complete`` marker), then every cohort's
    files.csv; with ``scale.jobs`` > 1 the chunks are written that many at once (the labeled cases first: the
    noise volumes take their grid). Returns whether everything is written (False: the budget ran out; the next
    call continues)."""
    data = out / "data"
    n_chunks = math.ceil(max(scale.cohorts) / CHUNK)
    units = [("labeled", data / "labeled", scale.labeled, seed + 2),
             # other subjects (their own seed), labeled as the cohort is
             (SUPERVISED, data / SUPERVISED, scale.supervised, seed + 3),
             *(("unlabeled", data / "chunks" / f"unlabeled-{k:03d}", CHUNK, seed * 1000 + k) for k in range(n_chunks)),
             *(("noise", data / "chunks" / f"noise-{k:03d}", CHUNK, seed * 1000 + 500 + k) for k in range(n_chunks))]
    todo = [(kind, str(folder), cases, scale.volume, unit_seed, str(data / "labeled"))
            for kind, folder, cases, unit_seed in units if not (folder / ".complete").is_file()]

    def took(unit: tuple, _: Any, seconds: float) -> None:
        times[unit[0]] = max(times.get(unit[0], 0.0), seconds)

    # the labeled cases first, here: the noise volumes take their grid
    first, rest = (todo[:1], todo[1:]) if todo and todo[0][0] == "labeled" else ([], todo)
    for part, jobs in ((first, 1), (rest, scale.jobs)):
        if part:
            print(f"[resenc-study] cohort: writing {len(part)} unit(s), {jobs} at once", flush=True)
        _, complete = run_tasks(write_unit, part, jobs=jobs, fits=lambda unit: clock.fits(times.get(unit[0], 0.0)),
                                env={k: "1" for k in THREAD_VARS}, done=took)  # the writers' processes: one core each
        if not complete:
            return False
    for kind in ("unlabeled", "noise"):
        for n in scale.cohorts if kind == "unlabeled" else (max(scale.cohorts),):
            rows = []
            for k in range(math.ceil(n / CHUNK)):
                chunk = data / "chunks" / f"{kind}-{k:03d}"
                with open(chunk / "files.csv", newline="") as f:
                    rows += [(f"{kind}{k:03d}_{r['id']}", str(chunk / r["path"])) for r in csv.DictReader(f)]
            folder = cohort_dir(out, kind, n)
            atomic_write_text(folder / "files.csv", "id,path\n" + "".join(f"{i},{p}\n" for i, p in rows[:n]))
    return True


def cohort_affine(labeled: Path):
    """The grid of the labeled cases (voxel -> mm), for the noise volumes."""
    first = sorted((labeled / "imagesTr").glob("*_0000.nii.gz"))[0]
    return load_volume(first).affine


# ------------------------------------------------------------------------------------- the run stage
STOP_MARGIN = 25.0  # seconds before the budget ends at which running units are told to save and stop
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclasses.dataclass(frozen=True)
class Unit:
    """One process of the run stage: the pilot, the positive control or a pretraining run. ``done``: whether a
    finished result is on disk; ``resumable``: whether a unit stopped by SIGUSR1 (the trainers' preemption
    path: last.pt saved) continues where it stopped on the next call (a pilot does not: it is started only
    when its expected time fits)."""

    name: str
    argv: tuple[str, ...]
    done: Callable[[], bool]
    log: Path
    resumable: bool = True
    threads: int | None = None  # CPU threads of the process (None: the libraries' defaults)


def launch(unit: Unit) -> subprocess.Popen:
    """Start ``unit`` with its output in its log (the one place a unit's process is made); with ``threads`` the
    numerical libraries' own thread pools (OpenMP, BLAS) are held to that many too, so that several units
    at once do not oversubscribe the cores."""
    unit.log.parent.mkdir(parents=True, exist_ok=True)
    env = child_env(**({k: str(unit.threads) for k in THREAD_VARS} if unit.threads else {}))
    with open(unit.log, "a") as log:
        return subprocess.Popen(list(unit.argv), stdout=log, stderr=subprocess.STDOUT, env=env)


def stop(running: Mapping[Any, tuple[Unit, float]], times: dict[str, float]) -> None:
    """Tell every running unit to save and stop (SIGUSR1), and wait for each."""
    for proc in running:
        if proc.poll() is None:
            proc.send_signal(signal.SIGUSR1)
    for proc, (unit, started) in running.items():
        proc.wait()
        times[unit.name] = times.get(unit.name, 0.0) + time.perf_counter() - started


def run_units(units: Sequence[Unit], jobs: int, clock: Clock, times: dict[str, float]) -> bool:
    """Run the units not done yet, ``jobs`` at once, in order. When the budget is about to end every running
    unit gets SIGUSR1 and the call stops (False: the next call continues); a unit that fails ends the study
    naming its log. Returns whether every unit is done."""
    pending = [u for u in units if not u.done()]
    running: dict[Any, tuple[Unit, float]] = {}
    while pending or running:
        while pending and len(running) < max(1, jobs):
            unit = pending[0]
            if not clock.fits(STOP_MARGIN + (0.0 if unit.resumable else times.get(unit.name, 0.0) * 1.2)):
                break
            pending.pop(0)
            print(f"[resenc-study] {unit.name}: {shlex.join(unit.argv)} (log {unit.log})", flush=True)
            running[launch(unit)] = (unit, time.perf_counter())
        if not running:
            return False
        time.sleep(0.5)
        for proc in [p for p in running if p.poll() is not None]:
            unit, started = running.pop(proc)
            times[unit.name] = times.get(unit.name, 0.0) + time.perf_counter() - started
            if proc.returncode != 0 or not unit.done():
                stop(running, times)
                raise SystemExit(f"[resenc-study] {unit.name} failed (exit {proc.returncode}): see {unit.log}")
        left = clock.left()
        if left is not None and left < STOP_MARGIN and running:
            stop(running, times)
            return False
    return True


def pretraining_summary(run: Pretraining, seconds: float) -> dict[str, Any]:
    """Steps, wall time, validation loss first -> last of a finished pretraining run, and the spread of its
    loss weights over the run (mean of the logged ``train/weights/cv`` and ``effective_share``: a uniform
    weight, CV 0 and share 1, cannot show what weighting does)."""
    state = load_checkpoint(run.run_dir / "checkpoints" / "last.pt")
    losses = [h["val/loss"] for h in state.get("history", []) if "val/loss" in h]
    spread = transfer.logged_series(run.run_dir, ("train/weights/cv", "train/weights/effective_share"))
    mean = lambda tag: float(np.mean([v for _, v in spread[tag]])) if spread[tag] else math.nan  # noqa: E731
    return {"run": run.name, "network": run.network, "arm": run.arm, "cohort": run.cohort, "steps": int(state["step"]),
            "seconds": seconds, "val_loss_first": losses[0] if losses else math.nan,
            "val_loss_last": losses[-1] if losses else math.nan, "weights_cv": mean("train/weights/cv"),
            "weights_share": mean("train/weights/effective_share")}


# ------------------------------------------------------------------------------------------------ report
def pretraining_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Markdown: one row per pretraining run (`pretraining_summary`)."""
    cells = []
    for r in rows:
        cv, share = (r.get(k, math.nan) for k in ("weights_cv", "weights_share"))
        cells.append([r["run"], r["network"], str(r["cohort"]), str(r["steps"]), f"{r['seconds']:.0f}",
                      f"{r['val_loss_first']:.4f} → {r['val_loss_last']:.4f}", "—" if math.isnan(cv) else f"{cv:.2f}",
                      "—" if math.isnan(share) else f"{share:.2f}"])
    return markdown_table(["run", "network", "cohort", "steps", "wall time (s)", "val loss first → last",
                           "loss weights CV", "effective share"], cells)


# the study's questions as paired contrasts between arms (arm, reference, what the difference measures); a
# contrast is reported when both of its arms ran, with the largest cohort standing for <c>
CONTRASTS = (
    (f"resenc-{SUPERVISED}", REFERENCE, "the positive control (an encoder trained with labels − scratch): must help"),
    ("resenc-noise-c{c}", REFERENCE, "the negative control (mae on noise − scratch): must not help"),
    ("resenc-mae-c{c}", REFERENCE, "masked pretraining (mae − scratch)"),
    ("resenc-mae-c{c}", "resenc-noise-c{c}", "what mae learned from brains (mae − the same recipe on noise)"),
    ("resenc-asa-c{c}", "resenc-mae-c{c}", "the attentive loss at the paper's granularity (asa − mae)"),
    ("resenc-asa-sharp-c{c}", "resenc-mae-c{c}", "the sharpened attentive loss, γ = 4 (asa-sharp − mae)"),
    ("resenc-asa-coord-c{c}", "resenc-asa-c{c}", "the coordinate channel (asa-coord − asa; with a --pretrain-crop "
     "other than --crop also the pretraining crop, which the channel's encoder cannot change)"),
    ("resenc-asa-coord-c{c}", COORD_SCRATCH, "asa's pretraining beyond its coordinate channel (asa-coord − scratch with it)"),
    (COORD_SCRATCH, REFERENCE, "the coordinate channel without pretraining (scratch with it − scratch)"),
    ("resenc-asa-mirror-c{c}", "resenc-asa-c{c}", "mirror-aware masking (asa-mirror − asa; where the pretraining "
     "crop gives an odd block grid, as 48³ does with 16³ blocks, the mirror arm pretrains at --crop, and the "
     "difference also carries the crop)"),
    ("resenc-mae-c{c}", "resenc-mae-c{s}", "a 10× larger cohort, mae (largest − smallest)"),
    ("resenc-asa-c{c}", "resenc-asa-c{s}", "a 10× larger cohort, asa (largest − smallest)"),
)
CONTRAST_KEYS = (("Dice_mean", "mean Dice"), ("lesion", "lesion Dice"), ("NSD_mean", "NSD"))


def contrast_rows(scores: Sequence[Mapping[str, Any]], cohorts: Sequence[int], *, n_boot: int) -> list[dict[str, Any]]:
    """Each contrast of `CONTRASTS` whose two arms were scored, per N: the paired difference (same N, seed and
    test case) of mean Dice, lesion Dice (mean of the lesion classes) and NSD, with the seed × case bootstrap
    CI, and the per-seed means of the Dice difference."""
    scores = [{**r, "lesion": sum(float(r[f"Dice_{k}"]) for k in LESION_NAMES.values()) / len(LESION_NAMES)}
              for r in scores]
    arms = {r["arm"] for r in scores}
    rows = []
    for arm, ref, what in CONTRASTS:
        arm, ref = (x.format(c=max(cohorts), s=min(cohorts)) for x in (arm, ref))
        if arm == ref or not {arm, ref} <= arms:
            continue
        for n in sorted({int(r["n"]) for r in scores}):
            row: dict[str, Any] = {"contrast": what, "arm": arm, "reference": ref, "n": n}
            for key, _ in CONTRAST_KEYS:
                d = transfer.paired_matrix(scores, arm, ref, n, key)
                est = seed_case_bootstrap(d, n_resamples=n_boot)
                row[key] = (est.value, est.low, est.high)
                if key == "Dice_mean":
                    row["per_seed"] = [float(x) for x in (d.mean(axis=1) if d.size else [])]
            rows.append(row)
    return rows


def contrast_table(rows: Sequence[Mapping[str, Any]]) -> str:
    head = " | ".join(f"Δ {label} [95 % CI]" for _, label in CONTRAST_KEYS)
    lines = [f"| what the difference measures | arm − reference | labeled | {head} | Δ mean Dice per seed |",
             "| --- | --- | ---: | " + " | ".join("---:" for _ in CONTRAST_KEYS) + " | --- |"]
    for r in rows:
        cells = " | ".join(f"{v:+.3f} [{lo:+.3f}, {hi:+.3f}]" for v, lo, hi in (r[k] for k, _ in CONTRAST_KEYS))
        lines.append(table_row([r["contrast"], f"{r['arm']} − {r['reference']}", str(r["n"]), cells,
                          " ".join(f"{x:+.3f}" for x in r["per_seed"])]))
    return "\n".join(lines) + "\n"


def report_markdown(info: Mapping[str, Any], pretraining_md: str, transfer_md: str, contrasts_md: str = "",
                    pilot_md: str = "") -> str:
    m, sc = info["machine"], info["scale"]
    return "\n".join([
        f"# Which of ASA's ideas help a ResEnc U-Net? ({info['scale_name']} scale)", "",
        machine_line(m, info["finished"]), "",
        f"Template anatomy, {sc['volume']}³ volumes, {sc['crop']}³ crops; ResEnc {sc['size']}"
        + (f", SW-ViT {sc['swvit']}. " if info.get("swvit", True) else " (no SW-ViT rows). ") +
        f"Unlabeled cohorts {', '.join(map(str, sc['cohorts']))} subjects ({sc['pretrain_steps']} pretraining steps each), "
        f"noise control on {max(sc['cohorts'])} noise volumes; mirror_visible {info['mirror_visible']}. "
        f"Fine-tuning: {sc['steps']} steps, labeled cases {', '.join(map(str, sc['cases']))}, seeds "
        f"{', '.join(map(str, sc['seeds']))}, {sc['test']} fixed test cases, {sc['val']} fixed validation cases.", "",
        markdown_table(["stage", "wall time (s)"], [[k, f"{v:.0f}"] for k, v in info["stages"].items()], left=1),
        *(["## The budget (the pilot)", "", pilot_md] if pilot_md else []),
        "## Pretraining", "", pretraining_md, "## Transfer (Δ = arm − resenc-scratch)", "", transfer_md, "",
        *(["## Contrasts (each idea, the cohort, the controls)", "",
           "Paired by N, seed and test case; 95 % CI: the seed × case bootstrap.", "", contrasts_md] if contrasts_md
          else []),
        "## Literature", "", LITERATURE, "", "Commands:", "", "```", *info["commands"], "```", ""])


# --------------------------------------------------------------------------------------------------- main
def parse_scale(args: argparse.Namespace) -> tuple[str, Scale]:
    """(name, scale) of the command line, refused where the grid or the cohort cannot hold the plan."""
    name, scale = scale_from_args(args, SCALES)
    if scale.crop >= scale.volume:
        raise SystemExit(f"--crop {scale.crop}: must be smaller than --volume {scale.volume}")
    if scale.pretrain_crop is not None and not scale.crop <= scale.pretrain_crop <= scale.volume:
        raise SystemExit(f"--pretrain-crop {scale.pretrain_crop}: between --crop {scale.crop} and --volume "
                         f"{scale.volume} (the whole head)")
    if scale.labeled - scale.test - scale.val < max(scale.cases):
        raise SystemExit(f"--labeled {scale.labeled} - --test {scale.test} - --val {scale.val} leaves too few training "
                         f"cases for --cases {max(scale.cases)}")
    if min(scale.cohorts) < 2:
        raise SystemExit(f"--cohorts {list(scale.cohorts)}: each cohort needs at least 2 subjects (train and validation)")
    return name, scale


# what a rerun into the same --out may add to (more arms, cohorts, cases, seeds, budget points: more units, the
# finished ones kept); everything else, and the largest cohort and N (`extremes`), stays as recorded
GROWS = ("arms", "scale.cohorts", "scale.cases", "scale.seeds", "ablation_cohorts", "budget_arms", "budget_fractions")


def extremes(cohorts: Sequence[int], cases: Sequence[int]) -> dict[str, int]:
    """What finished units depend on beyond their own options: the largest cohort (the noise control's size, the
    cohort the contrasts and the budget axis read) and the largest N (the pilot's, which sets the budget)."""
    return {"largest_cohort": max(cohorts), "pilot_cases": max(cases)}


def dry_run(args: argparse.Namespace, name: str, scale: Scale, out: Path, runs: Sequence[Pretraining]) -> int:
    """Print the plan and compose every configuration (pretraining and fine-tuning): nothing is written. The
    fine-tuning runs are shown at the pilot's length when the pilot sets their budget."""
    if scale.steps is None:
        print(f"[resenc-study] the pilot (scratch ResEnc, constant lr, {scale.pilot_steps} steps) sets the fine-tuning "
              f"budget; shown below at its length", flush=True)
        scale = dataclasses.replace(scale, steps=scale.pilot_steps)
    for run in runs if not args.no_compose else ():
        compose_config("pretrain", list(run.overrides))
    print(f"[resenc-study] dry run ({name} scale): cohorts {list(scale.cohorts)} unlabeled + {max(scale.cohorts)} noise "
          f"+ {scale.labeled} labeled subjects of {scale.volume}^3; {len(runs)} pretraining runs of "
          f"{scale.pretrain_steps} steps:", flush=True)
    for run in runs:
        print(f"  asa-pretrain {shlex.join(run.overrides)}")
    targv = transfer_argv(args, scale, runs, out, scale.time_budget)
    arms = finetune_arms(runs, scale)
    names = [*([] if args.no_swvit else ["scratch SW-ViT"]), *arms]
    print(f"[resenc-study] transfer: {len(names)} arms ({', '.join(names)}) × cases "
          f"{list(scale.cases)} × seeds {list(scale.seeds)} = {len(names) * len(scale.cases) * len(scale.seeds)} "
          f"runs of {scale.steps} steps, reference {REFERENCE}", flush=True)
    print(f"  {command('studies.transfer', targv)}", flush=True)
    if not args.no_compose:  # every fine-tuning arm's configuration composes
        for spec in arms.values():
            compose_config("finetune", ["data=msd", f"model={scale.swvit}", f"data.crop={scale.crop}",
                                        f"trainer.max_steps={scale.steps}", *spec.split(","), *args.override])
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = parser("studies.resenc", __doc__)
    p.add_argument("--out", default="runs/resenc-study")
    add_scale_options(p, Scale, SCALES, "cpu")
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS), help="ResEnc pretraining arms")
    p.add_argument("--ablation-cohorts", type=int, nargs="+",
                   help="pretrain the variant arms (asa-sharp, asa-coord, asa-mirror) on these cohorts only (default: every cohort)")
    p.add_argument("--mirror-visible", type=float, default=0.25,
                   help="method.mirror_visible of the arms with mirror-aware masking (fraction of masked blocks whose "
                        "mirror block stays visible; at mask ratio 0.75 at most 1/3)")
    p.add_argument("--budget-arms", nargs="*", default=[REFERENCE, "resenc-mae-c{c}", "resenc-asa-c{c}"],
                   metavar="ARM", help="arms also fine-tuned at each --budget-fractions of the steps ({c}: the largest "
                                       "cohort; default: scratch, mae and asa; none: no budget axis)")
    p.add_argument("--budget-fractions", type=float, nargs="+", default=[0.125, 0.25, 0.5])
    p.add_argument("--budget-cases", type=int, nargs="+", metavar="N",
                   help="the budget axis at these numbers of labeled cases only (default: every --cases)")
    p.add_argument("--budget-cap", type=int, metavar="STEPS",
                   help="fine-tune at most STEPS steps whatever the pilot asks for (a machine's time limit; the "
                        "report says so)")
    p.add_argument("--no-swvit-pretraining", action="store_true", help="leave out the pretrained SW-ViT rows")
    p.add_argument("--no-swvit", action="store_true",
                   help="leave out both SW-ViT rows (scratch and pretrained): ResEnc arms only")
    p.add_argument("--seed", type=int, default=0, help="cohort, split and pretraining seed")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, help="torch threads per run (pretraining and fine-tuning)")
    p.add_argument("--n-boot", type=int, default=10000)
    p.add_argument("--drop-checkpoints", action="store_true", help="delete fine-tuning checkpoints once scored")
    p.add_argument("--override", nargs="+", default=[], metavar="KEY=VALUE", help="asa-finetune overrides for every run")
    p.add_argument("--dry-run", action="store_true", help="print the plan and compose every configuration; write nothing")
    p.add_argument("--no-compose", action="store_true", help="with --dry-run: print the plan only")
    args = p.parse_args(argv)
    name, scale = parse_scale(args)
    out = Path(args.out).expanduser().absolute()
    if not 0.0 <= args.mirror_visible <= 1.0:
        raise SystemExit(f"--mirror-visible {args.mirror_visible}: a fraction in [0, 1]")
    if args.budget_cap is not None and (args.budget_cap < 10 or scale.steps is not None):
        raise SystemExit(f"--budget-cap {args.budget_cap}: " + ("--steps sets the budget itself; the cap holds the "
                                                                 "pilot's budget" if scale.steps is not None else
                                                                 "expected at least 10 steps"))
    runs = plan_pretraining(out, scale, args.arms, seed=args.seed, mirror_visible=args.mirror_visible,
                            swvit_arm=not (args.no_swvit_pretraining or args.no_swvit), ablation_cohorts=args.ablation_cohorts)
    if args.dry_run:
        return dry_run(args, name, scale, out, runs)
    settings = {"scale": dataclasses.asdict(scale) | {"time_budget": None}, "arms": args.arms, "seed": args.seed,
                "mirror_visible": args.mirror_visible, "swvit_pretraining": not (args.no_swvit_pretraining or args.no_swvit), "swvit": not args.no_swvit,
                "ablation_cohorts": sorted(args.ablation_cohorts or scale.cohorts), "budget_arms": args.budget_arms,
                "budget_fractions": args.budget_fractions, "budget_cap": args.budget_cap,
                "budget_cases": args.budget_cases, "override": args.override,
                **extremes(scale.cohorts, scale.cases)}
    record_settings(out, settings, grows=GROWS, recorded_as=lambda old: old | {
        "ablation_cohorts": sorted(old["ablation_cohorts"] or old["scale"]["cohorts"]),
        **extremes(old["scale"]["cohorts"], old["scale"]["cases"])})
    clock = Clock(scale.time_budget)
    times_file = out / "times.json"  # wall time per stage and per pretraining run, summed over calls
    times = json.loads(times_file.read_text()) if times_file.is_file() else {"stages": {}, "units": {}, "runs": {}}

    def stage(key: str, started: float) -> None:
        times["stages"][key] = times["stages"].get(key, 0.0) + time.perf_counter() - started
        atomic_write_json(times_file, times)

    def unfinished(what: str) -> int:
        atomic_write_json(times_file, times)
        print(f"[resenc-study] the time budget ({scale.time_budget:.0f} s) ended during {what}: rerun the same command "
              "to continue", flush=True)
        return 3

    started = time.perf_counter()
    complete = write_chunks(out, scale, seed=args.seed, clock=clock, times=times["units"])
    stage("cohort", started)
    if not complete:
        return unfinished("the cohort")
    started = time.perf_counter()
    units = []
    if scale.steps is None:  # the pilot first: the other units do not wait for it, the transfer stage does
        units.append(Unit(PILOT, module_argv("studies.transfer", *pilot_argv(args, scale, out)),
                          lambda: pilot_scores(out, scale).is_file(), out / "logs" / f"{PILOT}.log", resumable=False,
                          threads=args.threads))
    threads = [f"trainer.threads={args.threads}"] if args.threads else []
    supervised = supervised_overrides(out, scale, args.seed, runs)
    units.append(Unit(SUPERVISED, module_argv("asa.cli.finetune", *supervised, *threads),
                      lambda: finished(supervised_dir(runs) / "checkpoints" / "last.pt"),
                      out / "logs" / f"{SUPERVISED}.log", threads=args.threads))
    for run in runs:
        units.append(Unit(run.name, module_argv("asa.cli.pretrain", *run.overrides, *threads),
                          lambda run=run: finished(run.run_dir / "checkpoints" / "last.pt")
                          and run.encoder.is_file(), out / "logs" / f"{run.name}.log", threads=args.threads))
    complete = run_units(units, scale.jobs, clock, times["runs"])
    stage("pilot, positive control and pretraining", started)
    if not complete:
        return unfinished("the pilot, the positive control and the pretraining runs")
    pilot = None
    if scale.steps is None:
        pilot = pilot_budget(out, scale, args.budget_cap)
        atomic_write_json(out / "pilot.json", pilot)
        scale = dataclasses.replace(scale, steps=pilot["steps"])
        print(f"[resenc-study] pilot: {pilot_markdown(pilot).splitlines()[0]}", flush=True)
    left = clock.left()
    # start no fine-tuning run that would outlast the budget (a run cannot be cut and resumed): the longest so far
    # with a margin for scoring; before any has run, the pilot's training time scaled to the budget, or half of
    # what is left
    pilot_time = pilot_scores(out, scale).with_name("wall_time.json")
    first = ([json.loads(pilot_time.read_text())["train_seconds"] * scale.steps / scale.pilot_steps * 1.5 + 60]
             if pilot is not None and pilot_time.is_file() else [0.5 * left if left is not None else 0.0])
    expected = max([json.loads(f.read_text())["train_seconds"] * 1.5 + 30
                    for f in (out / "transfer" / "runs").glob("*/wall_time.json")] or first)
    if left is not None and left - expected <= 0:
        return unfinished("the transfer stage")
    targv = transfer_argv(args, scale, runs, out, None if left is None else left - expected)
    started = time.perf_counter()
    fine_tune = Unit("transfer", module_argv("studies.transfer", *targv), lambda: True, out / "logs" / "transfer.log",
                     threads=args.threads)
    code = launch(fine_tune).wait()
    stage("transfer", started)
    if code != 0:
        raise SystemExit(f"[resenc-study] the transfer stage failed (exit {code}): see {fine_tune.log}")
    table = out / "transfer" / "transfer.md"
    if not table.is_file() or table.read_text().startswith("**Partial"):
        return unfinished("the transfer stage")
    rows = [pretraining_summary(run, times["runs"].get(run.name, math.nan)) for run in runs]
    commands = [command("studies.resenc", argv), *(f"asa-pretrain {shlex.join(r.overrides)}" for r in runs),
                command("studies.transfer", targv)]
    info = {"scale_name": name, "scale": dataclasses.asdict(scale), "mirror_visible": args.mirror_visible,
            "swvit": not args.no_swvit,
            "machine": machine(), "stages": times["stages"], "commands": commands,
            "pretraining": rows, "pilot": pilot, "finished": datetime.datetime.now().isoformat(timespec="seconds")}
    report = out / "report"
    atomic_write_json(report / "report.json", info)
    atomic_write_text(report / "pretraining.md", pretraining_table(rows))
    scores_csv = out / "transfer" / "scores.csv"
    contrasts = []
    if scores_csv.is_file():
        with open(scores_csv, newline="") as f:
            contrasts = contrast_rows(list(csv.DictReader(f)), scale.cohorts, n_boot=args.n_boot)
    atomic_write_json(report / "contrasts.json", contrasts)
    atomic_write_text(report / "README.md", report_markdown(info, pretraining_table(rows), table.read_text(),
                                                            contrast_table(contrasts) if contrasts else "",
                                                            pilot_markdown(pilot) if pilot else ""))
    print(f"[resenc-study] done: report in {report}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
