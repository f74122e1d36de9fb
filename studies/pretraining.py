"""Does pretraining help? One command: cohort -> Table 4 pretraining arms -> transfer study -> one report.

Stages (each resumable; rerun the same command to continue after an interruption):

1. cohort: healthy T1 subjects in BIDS (pretraining) and labeled lesion cases in ``--layout``
   (fine-tuning), written once under ``<out>/data`` (phantoms of ``asa.data.write_demo_dataset``;
   ``--anatomy``: the MNI152-based generator ``asa.data.synthetic.anatomy``, one switch in
   :func:`dataset_writer`).
2. pretraining: one ``asa-pretrain`` run per arm (``--arms``, Table 4 presets of
   ``configs/pretrain/experiment/``: mae, a_ssl, asa by default) at the ``tiny`` size, with the
   frozen-encoder probes at every validation round (``probe.every=1``); each exports
   ``checkpoints/encoder.pt``. An unfinished run continues from its ``last.pt`` (``resume=auto``).
3. transfer: ``python -m asa.study.transfer`` with scratch and each pretrained arm, every seed its own
   draw of labeled cases, a fixed test split, fine-tuning crops smaller than the volume (so the
   foreground-oversampled crops act), Dice and HD95 per class, encoder-zeroed Dice and the paired
   differences to scratch with seed × case bootstrap CIs; ``--reuse`` scores finished runs.
4. report: ``<out>/report/``: ``README.md`` (machine, scale, seeds, wall time per stage, the exact
   commands, the tables), ``transfer.md`` / ``transfer.csv`` / ``scores.csv`` /
   ``dice_vs_cases.svg``, ``probes.md`` / ``probes.csv`` / ``probe_curves.svg`` (the probe values
   each pretraining run logged), ``report.json``.

Scales: ``--scale full`` (default) is sized for about an hour on a 2-core CPU. Measured there with
``--anatomy --arms asa --jobs 2 --threads 1`` (AMD EPYC, 2 cores, bf16 autocast; the report states each
stage's time): cohort 8 s; pretraining 51 s (100 epochs of 16 steps of batch 2 at 32³ plus the probe
rounds); transfer 40 fine-tuning runs of 300 steps, each then predicting its 16 test cases twice,
about 85 s per run on one idle thread (6441 s on a machine shared with other jobs throughout).
``--quick`` is a smoke version: minutes. Any
field of the scale can be overridden (``--seeds``, ``--cases``, ``--steps``, ...). The settings are
recorded in ``<out>/study.json``; a rerun with other settings into the same ``--out`` is refused.

Example::

    python -m studies.pretraining --out runs/study            # full scale
    python -m studies.pretraining --quick --out runs/study-quick
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from asa.api import pretrain
from asa.api.config import compose_config
from asa.data import LESION_NAMES, write_anatomy_dataset, write_demo_dataset
from asa.io import atomic_write_json, atomic_write_text, load_checkpoint
from asa.models.heads.puzzles import RPL_GRID
from asa.study import transfer
from asa.study.common import (Clock, add_scale_options, command, finished, machine, machine_line, markdown_table,
                            parser, record_settings, rows_csv, scale_from_args)

ARMS = ("mae", "a_ssl", "asa")  # Table 4 pretraining rows (configs/pretrain/experiment/) compared with scratch
# networks trained from scratch under the same plan beside the SW-ViT arms (--baselines): the field's yardstick
BASELINES = {"dynunet": "model=dynunet"}
PROBE_CASES = 4  # --anatomy: template subjects with tissue labels for the pretraining probes (fit on half)
PROBE_METRICS = ("val/loss", "probe/r2_mean", "probe/knn_acc")  # the columns of probes.md


@dataclasses.dataclass
class Scale:
    """How big the study is. ``volume``: cohort edge (voxels at 1 mm); ``crop``: the pretraining crop
    and the fine-tuning crop (the same grid, smaller than the volume); ``steps``: the fine-tuning budget
    of every run, chosen so that the training loss plateaus (each run's report checks it)."""

    subjects: int  # healthy pretraining subjects
    labeled: int  # labeled lesion cases (test + pool of training cases)
    test: int  # fixed test split
    volume: int
    crop: int
    pretrain_epochs: int
    steps: int  # optimiser steps per fine-tuning run
    cases: tuple[int, ...]  # labeled training cases per run
    seeds: tuple[int, ...]  # each its own draw of labeled cases and its own initialisation
    model: str = "tiny"  # model preset of pretraining and fine-tuning
    recipes: tuple[str, ...] = ("sgd", "adamw")  # fine-tuning recipes (configs/finetune/optim), each an arm
    jobs: int = 1  # fine-tuning runs at once, each in its own process


SCALES = {
    "full": Scale(subjects=40, labeled=28, test=16, volume=48, crop=32, pretrain_epochs=100, steps=300,
                  cases=(2, 8), seeds=(0, 1, 2, 3, 4)),
    # one GPU (16 host cores): several fine-tuning runs at once, resumable across calls (--time-budget)
    # (the cohort is written on one core: about 5 min at 96^3; every stage resumes, so a call that stops at
    # --time-budget is continued by the same command on the same machine)
    "gpu": Scale(subjects=60, labeled=48, test=16, volume=96, crop=64, pretrain_epochs=40, steps=1500,
                 cases=(2, 4, 8, 16), seeds=(0, 1, 2, 3, 4), model="small", jobs=6),
    "quick": Scale(subjects=6, labeled=10, test=4, volume=32, crop=24, pretrain_epochs=2, steps=8,
                   cases=(2, 4), seeds=(0, 1)),
}


# ---------------------------------------------------------------------------------------------- cohort
Writer = Callable[..., Path]


def dataset_writer(anatomy: bool) -> Writer:
    """writer(layout, out, *, cases, size, seed, lesions) -> out: the one place the generator is chosen.

    Phantoms (``asa.data.write_demo_dataset``; a lesion layout gets tumours by its own rule), or with
    ``anatomy`` the MNI152-based subjects of the optional ``asa[anatomy]`` extra
    (``asa.data.write_anatomy_dataset``: heterotopia and one-sided deep-grey enlargement in ``msd``)."""
    if not anatomy:
        return lambda layout, out, *, cases, size, seed, lesions: write_demo_dataset(
            layout, out, cases=cases, size=size, seed=seed, overwrite=True)

    def write(layout: str, out: Path, *, cases: int, size: int, seed: int, lesions: bool) -> Path:
        try:
            return write_anatomy_dataset(layout, out, cases=cases, size=size, seed=seed, lesions=lesions,
                                         overwrite=True)
        except ImportError as err:  # nilearn, the optional extra, is missing
            raise SystemExit(f"--anatomy: {err}") from err

    return write


def write_cohort(out: Path, scale: Scale, *, layout: str, seed: int, writer: Writer,
                 probe: bool = False) -> tuple[Path, Path, bool]:
    """(pretraining BIDS folder, labeled folder, reused): written once (a ``.complete`` marker each);
    ``probe`` also writes ``probe/``, IBSR-layout subjects with tissue labels for the pretraining probes."""
    parts = {"pretrain": ("bids", scale.subjects, seed, False), "labeled": (layout, scale.labeled, seed + 2, True)}
    if probe:
        parts["probe"] = ("ibsr", PROBE_CASES, seed + 4, False)
    reused = True
    for name, (lay, cases, part_seed, lesions) in parts.items():
        folder = out / name
        if (folder / ".complete").is_file():
            continue
        reused = False
        print(f"[study] cohort: writing {cases} {'labeled lesion' if lesions else 'healthy'} case(s) of "
              f"{scale.volume}^3 in layout {lay} to {folder}", flush=True)
        writer(lay, folder, cases=cases, size=scale.volume, seed=part_seed, lesions=lesions)
        atomic_write_text(folder / ".complete", json.dumps({"layout": lay, "cases": cases, "seed": part_seed}) + "\n")
    return out / "pretrain", out / "labeled", reused


# ------------------------------------------------------------------------------------------ pretraining
def pretrain_overrides(arm: str, data: Path, run_dir: Path, scale: Scale, *, seed: int, probe_data: str | None) -> list[str]:
    """asa-pretrain overrides of one Table 4 arm (the scale's model; the demo optimiser, whose lr learns at batch 2)."""
    out = [f"experiment={arm}", f"model={scale.model}", "data=bids", f"data.root={data}", f"data.crop={scale.crop}",
           "data.num_workers=0", "data.split.ratios=[0.8,0.2,0.0]", "optim=adamw_demo",
           f"trainer.epochs={scale.pretrain_epochs}", "trainer.progress=false", "trainer.panel_every=0",
           "probe.every=1", f"seed={seed}", f"output_dir={run_dir}", "resume=auto"]
    return out + puzzle_fit(out, scale.crop) + ([f"probe.data={probe_data}"] if probe_data else [])


def puzzle_fit(overrides: list[str], crop: int) -> list[str]:
    """A block puzzle (rpl, jigsaw) in a crop too small for its default play: ``method.jitter`` lowered to
    what a cell holds beside one whole-patch block (crop 32, 3 cells, 8-voxel patches: 10 − 8 = 2 voxels);
    [] for other methods or when the default fits. Stated in the report's commands."""
    cfg = compose_config("pretrain", overrides)
    if "jitter" not in cfg.method:
        return []
    grid = cfg.method.get("grid", RPL_GRID)
    room = crop // grid - int(cfg.model.patch_size)
    return [f"method.jitter={max(room, 0)}"] if cfg.method.jitter > room else []


def run_pretraining(arm: str, overrides: list[str], run_dir: Path) -> bool:
    """Pretrain one arm unless it finished before (then True: reused); returns whether it was reused."""
    ckpts = run_dir / "checkpoints"
    if finished(ckpts / "last.pt") and (ckpts / "encoder.pt").is_file():
        return True
    print(f"[study] pretraining {arm}: asa-pretrain {shlex.join(overrides)}", flush=True)
    result = pretrain(compose_config("pretrain", overrides))
    if result.preempted or not (ckpts / "encoder.pt").is_file():
        raise SystemExit(f"[study] pretraining {arm} stopped at step {result.step} without exporting "
                         f"{ckpts / 'encoder.pt'}; rerun the same command to continue it")
    return False


def probe_history(run_dir: Path) -> list[dict]:
    """The validation rounds a pretraining run logged (val/loss, probe/*), from its last.pt."""
    return list(load_checkpoint(run_dir / "checkpoints" / "last.pt").get("history", []))


def probes_outputs(histories: Mapping[str, Sequence[Mapping[str, Any]]]) -> tuple[str, str, str]:
    """(probes.md, probes.csv, probe_curves.svg) of the arms' logged validation rounds."""
    rows = [{"arm": arm, **h} for arm, hist in histories.items() for h in hist]
    metrics = [m for m in PROBE_METRICS if any(m in r for r in rows)]
    lines = []
    for arm, hist in histories.items():
        cells = [[str(h["epoch"]), str(h["step"]), *(f"{h[m]:.4f}" if m in h else "—" for m in metrics)] for h in hist]
        lines += [f"**{arm}**", "", markdown_table(["epoch", "step", *metrics], cells, left=0)]
    others = sorted({k for r in rows for k in r if k.startswith("probe/") and k not in metrics})
    if others:
        lines.append(f"Also logged (probes.csv): {', '.join(others)}.")
    series = {arm: [(h["epoch"], h["probe/r2_mean"], 0.0) for h in hist if "probe/r2_mean" in h]
              for arm, hist in histories.items()}
    svg = transfer.line_plot(series, xlabel="pretraining epoch", ylabel="probe R² (mean over classes)",
                             categorical=False, clip=None)
    return "\n".join(lines) + "\n", rows_csv(rows), svg


# ------------------------------------------------------------------------------------------------ report
def report_markdown(info: Mapping[str, Any], transfer_md: str, probes_md: str) -> str:
    """report/README.md: what was run, where, how long each stage took, and the tables."""
    m, sc = info["machine"], info["scale"]
    lines = [f"# Does pretraining help? ({info['scale_name']} scale, {info['generator']})", "",
             machine_line(m, info["finished"]), "",
             f"Cohort: {sc['subjects']} healthy subjects (pretraining), {sc['labeled']} labeled cases in layout "
             f"{info['layout']} ({sc['test']} fixed test cases), {sc['volume']}³ voxels; crops {sc['crop']}³ "
             f"(pretraining and fine-tuning). Pretraining: {', '.join(info['arms'])} at {sc['model']}, "
             f"{sc['pretrain_epochs']} epochs. Fine-tuning: scratch and each pretrained arm under each recipe "
             f"({', '.join(sc['recipes'])}; ARM@RECIPE, compared with scratch under the same recipe), labeled cases "
             f"{', '.join(map(str, sc['cases']))}, seeds {', '.join(map(str, sc['seeds']))} (each its own draw of "
             f"labeled cases), {sc['steps']} optimiser steps per run (the budget check below says whether each "
             "run's training loss plateaued).", "",
             "| stage | wall time (s) | this invocation |", "| --- | ---: | --- |"]
    for stage, t in info["stages"].items():
        lines.append(f"| {stage} | {t['seconds']:.0f} | {'reused' if t['reused'] else 'ran'} |")
    lines += ["", "Wall times are summed over the invocations that ran the stage.", "", "Commands:", "", "```",
              *info["commands"], "```", "", "## Transfer", "", transfer_md, "![Dice vs labeled cases](dice_vs_cases.svg)",
              "", "## Probes during pretraining", "",
              "Frozen-encoder probes at every validation round of each pretraining run (ridge R² of the patch "
              "class fractions, k-NN patch accuracy; docs/watching-training.md).", "", probes_md,
              "![probe R² during pretraining](probe_curves.svg)", ""]
    return "\n".join(lines)


class Stages:
    """Wall time per stage, summed over invocations, kept in ``<out>/stages.json``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.times = json.loads(path.read_text()) if path.is_file() else {}
        self.now: dict[str, bool] = {}

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        print(f"[study] stage {name} ...", flush=True)
        value = fn()
        elapsed = time.perf_counter() - start
        reused = value is True  # a stage returns True when it found its outputs done
        self.times[name] = self.times.get(name, 0.0) + (0.0 if reused else elapsed)
        self.now[name] = reused
        atomic_write_json(self.path, self.times)
        print(f"[study] stage {name}: {'reused' if reused else f'{elapsed:.0f} s'}", flush=True)
        return value

    def table(self) -> dict[str, dict[str, Any]]:
        return {k: {"seconds": self.times[k], "reused": self.now.get(k, True)} for k in self.times}


# ------------------------------------------------------------------------------------------------- main
def lesion_classes(anatomy: bool) -> list[str]:
    """The classes reported as the lesion mean: the template subjects' lesion kinds (the phantoms' MSD
    classes are all tumour classes, whose mean is the table's mean already)."""
    return list(LESION_NAMES.values()) if anatomy else []


def transfer_argv(args: argparse.Namespace, scale: Scale, labeled: Path, encoders: Mapping[str, Path], out: Path,
                  time_left: float | None = None) -> list[str]:
    """The transfer study's command line: scratch and every pretrained arm under every recipe; ``time_left``:
    what is left of this invocation's budget after the cohort and pretraining."""
    threads = args.threads or (max(1, (os.cpu_count() or 1) // scale.jobs) if scale.jobs > 1 else None)
    arms = {**{arm: f"model.pretrained={path}" for arm, path in encoders.items()},
            **{baseline: BASELINES[baseline] for baseline in args.baselines}}
    return transfer.command_line(
        data=args.layout, root=labeled, model=scale.model, crop=scale.crop, cases=scale.cases, seeds=scale.seeds,
        test=scale.test, split_seed=args.seed, steps=scale.steps, device=args.device, n_boot=args.n_boot, out=out,
        recipes=scale.recipes, jobs=scale.jobs, threads=threads, time_budget=time_left,
        drop_checkpoints=args.drop_checkpoints, lesion_classes=lesion_classes(args.anatomy), arms=arms,
        overrides=args.override)


def dry_run(args: argparse.Namespace, name: str, scale: Scale, out: Path) -> int:
    """Check every stage's configuration without writing or training anything: the pretraining
    overrides of each arm and the fine-tuning overrides of every run (composed against the schemas)."""
    for arm in args.arms:
        compose_config("pretrain", pretrain_overrides(arm, out / "data" / "pretrain", out / "pretrain" / arm, scale,
                                                      seed=args.seed, probe_data=None))
    runs = len(scale.cases) * len(scale.seeds) * (1 + len(args.arms) + len(args.baselines)) * len(scale.recipes)
    base = ["data=" + args.layout, f"model={scale.model}", f"data.crop={scale.crop}", *args.override]
    for recipe in scale.recipes:
        compose_config("finetune", [*base, f"optim={recipe}", f"trainer.max_steps={scale.steps}"])
        for baseline in args.baselines:
            compose_config("finetune", [*base, BASELINES[baseline], f"optim={recipe}", f"trainer.max_steps={scale.steps}"])
    print(f"[study] dry run ({name} scale): cohort {scale.subjects} + {scale.labeled} subjects of {scale.volume}^3; "
          f"pretraining {', '.join(args.arms)} at {scale.model}, crop {scale.crop}^3, {scale.pretrain_epochs} epochs; "
          f"transfer {runs} runs (scratch + {len(args.arms)} arm(s)"
          + (f" + {', '.join(args.baselines)} from scratch" if args.baselines else "") + f" × recipes {', '.join(scale.recipes)} × cases "
          f"{list(scale.cases)} × seeds {list(scale.seeds)}), {scale.steps} steps each, {scale.jobs} at once"
          + (f"; lesion classes {', '.join(lesion_classes(args.anatomy))}" if args.anatomy else ""), flush=True)
    return 0


def parse_scale(args: argparse.Namespace) -> tuple[str, Scale]:
    """(name, scale) of the command line, refused where the cohort cannot hold the plan."""
    name, scale = scale_from_args(args, SCALES)
    if scale.crop >= scale.volume:
        raise SystemExit(f"--crop {scale.crop}: must be smaller than --volume {scale.volume} so that the "
                         "fine-tuning crops sample the volume (foreground oversampling)")
    if scale.labeled - scale.test < max(scale.cases):
        raise SystemExit(f"--labeled {scale.labeled} - --test {scale.test} leaves {scale.labeled - scale.test} "
                         f"training case(s); --cases asks for {max(scale.cases)}")
    return name, scale


def main(argv: Sequence[str] | None = None) -> int:
    p = parser("studies.pretraining", __doc__)
    p.add_argument("--out", default="runs/study", help="study folder: data/, pretrain/, transfer/, report/")
    add_scale_options(p, Scale, SCALES, "full")
    p.add_argument("--arms", nargs="+", default=list(ARMS), help="pretraining presets (configs/pretrain/experiment)")
    p.add_argument("--baselines", nargs="*", default=[], choices=sorted(BASELINES),
                   help="networks trained from scratch under the same recipes beside the SW-ViT arms "
                        "(dynunet: MONAI's DynUNet planned as nnU-Net plans its 3D full-resolution U-Net)")
    p.add_argument("--layout", default="msd", choices=("msd", "brats", "wmh"), help="layout of the labeled lesion cases")
    p.add_argument("--anatomy", action="store_true", help="MNI152-based subjects (asa[anatomy]) instead of phantoms")
    p.add_argument("--probe-data", help="labeled folder for the pretraining probes (default: demo IBSR phantoms; with --anatomy, template subjects with tissue labels written beside the cohort)")
    p.add_argument("--seed", type=int, default=0, help="cohort and pretraining seed")
    p.add_argument("--device", default="auto")
    p.add_argument("--n-boot", type=int, default=10000, help="bootstrap resamples of the CIs")
    p.add_argument("--time-budget", type=float, metavar="SECONDS",
                   help="start no new fine-tuning run after this many seconds from the start of this invocation; "
                        "rerun the same command to continue (every finished stage and run is kept)")
    p.add_argument("--threads", type=int, help="torch threads per fine-tuning run (default: torch's; with --jobs, "
                                                "the cores shared out)")
    p.add_argument("--drop-checkpoints", action="store_true",
                   help="delete each fine-tuning run's checkpoints once it is scored: a study folder small enough "
                        "to carry to another machine and continue there")
    p.add_argument("--dry-run", action="store_true",
                   help="check the settings and every run's configuration, list the stages; write and train nothing")
    p.add_argument("--override", nargs="+", default=[], metavar="KEY=VALUE",
                   help="asa-finetune overrides for every fine-tuning run, scratch included "
                        "(a recipe choice, e.g. model.input_skip=none)")
    args = p.parse_args(argv)
    clock = Clock(args.time_budget)
    name, scale = parse_scale(args)
    out = Path(args.out).expanduser().absolute()
    if args.dry_run:
        return dry_run(args, name, scale, out)
    settings = {"scale": dataclasses.asdict(scale), "arms": args.arms, "layout": args.layout, "anatomy": args.anatomy,
                "probe_data": args.probe_data, "seed": args.seed, "override": args.override}
    if args.baselines:  # recorded only when asked, so that a study begun before --baselines existed continues
        settings["baselines"] = args.baselines
    record_settings(out, settings)
    stages = Stages(out / "stages.json")
    commands = [command("studies.pretraining", argv)]
    writer = dataset_writer(args.anatomy)
    probe_own = args.anatomy and not args.probe_data  # the probes read tissue labels of the same anatomy
    probe_data = str(out / "data" / "probe") if probe_own else args.probe_data

    cohort: dict[str, Path] = {}

    def make_cohort() -> bool:
        cohort["pretrain"], cohort["labeled"], reused = write_cohort(out / "data", scale, layout=args.layout,
                                                                     seed=args.seed, writer=writer, probe=probe_own)
        return reused

    stages.run("cohort", make_cohort)
    encoders: dict[str, Path] = {}
    for arm in args.arms:
        run_dir = out / "pretrain" / arm
        overrides = pretrain_overrides(arm, cohort["pretrain"], run_dir, scale, seed=args.seed, probe_data=probe_data)
        commands.append(f"asa-pretrain {shlex.join(overrides)}")
        stages.run(f"pretrain {arm}", lambda: run_pretraining(arm, overrides, run_dir))
        encoders[arm] = run_dir / "checkpoints" / "encoder.pt"

    transfer_out = out / "transfer"
    targv = transfer_argv(args, scale, cohort["labeled"], encoders, transfer_out, clock.left())
    commands.append(command("asa.study.transfer", targv))

    def fine_tune() -> bool:
        transfer.main(targv)  # finished runs are read back (--reuse), unfinished ones trained
        return False

    stages.run("transfer", fine_tune)
    table = transfer_out / "transfer.md"
    if not table.is_file() or table.read_text().startswith("**Partial"):
        print(f"[study] the transfer stage is not finished (--time-budget {args.time_budget}); rerun the same "
              "command to continue it", flush=True)
        if not table.is_file():
            return 0

    report = out / "report"
    report.mkdir(parents=True, exist_ok=True)
    for fname in ("transfer.md", "transfer.csv", "scores.csv", "runs.csv", "dice_vs_cases.svg"):
        shutil.copy2(transfer_out / fname, report / fname)
    probes_md, probes_csv, probes_svg = probes_outputs({arm: probe_history(out / "pretrain" / arm) for arm in args.arms})
    atomic_write_text(report / "probes.md", probes_md)
    atomic_write_text(report / "probes.csv", probes_csv)
    atomic_write_text(report / "probe_curves.svg", probes_svg)
    info = {"scale_name": name, "scale": dataclasses.asdict(scale), "arms": args.arms, "layout": args.layout,
            "generator": "MNI152 anatomy" if args.anatomy else "phantoms", "machine": machine(),
            "stages": stages.table(), "commands": commands,
            "finished": datetime.datetime.now().isoformat(timespec="seconds")}
    atomic_write_json(report / "report.json", info)
    atomic_write_text(report / "README.md", report_markdown(info, (transfer_out / "transfer.md").read_text(), probes_md))
    print(f"[study] report in {report}: README.md, transfer.md/.csv, scores.csv, runs.csv, dice_vs_cases.svg, probes.md/.csv, "
          "probe_curves.svg, report.json", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
