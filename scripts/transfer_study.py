#!/usr/bin/env python
"""Does pretraining help? Fine-tune several arms over N labeled cases × seeds, test on one fixed split.

Arms are named sets of ``asa-finetune`` overrides: ``scratch`` (no pretrained encoder) and
``pretrained`` (``model.pretrained=--pretrained``) by default, Table 4 fine-tuning presets with
``--preset baseline spe_only``, any other with ``--arm NAME=key=value,key=value``. Every run gets
the same budget of optimiser steps (``--steps``, rounded to whole epochs so that the lr schedule
ends with the run), no validation cases, and its last checkpoint is scored on the fixed test
cases: Dice per class, and Dice with the encoder's hidden states zeroed (encoder reliance).

Outputs in ``--out``: ``runs/<arm>-n<N>-s<seed>/`` (asa-finetune run folders), ``scores.csv``
(one row per arm, N, seed, test case), ``transfer.md`` / ``transfer.csv`` (Table-4-shaped: one row
per arm and N with Dice per class ± sd over seeds, the encoder-zeroed Dice, and the paired
difference to the reference arm — per test case, averaged over seeds — with a bootstrap 95 %
confidence interval over test cases) and ``dice_vs_cases.svg``.

Example (demo IBSR phantoms, CPU, minutes)::

    asa-pretrain output_dir=runs/pretrain trainer.epochs=50
    python scripts/transfer_study.py --pretrained runs/pretrain/checkpoints/encoder.pt --data ibsr \\
        --cases 2 4 --seeds 0 1 --steps 40 --out runs/transfer
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

SCRATCH, PRETRAINED = "scratch", "pretrained"
PRESETS = ("baseline", "spe_only")  # Table 4 fine-tuning rows from scratch (configs/experiment)


# ----------------------------------------------------------------------------------------- statistics
def bootstrap_ci(values: Sequence[float], *, n_boot: int = 10000, level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high): percentile bootstrap confidence interval of the mean of ``values``."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(1)
    alpha = (1 - level) / 2
    return float(v.mean()), float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def paired_differences(scores: Sequence[Mapping[str, Any]], arm: str, reference: str, n: int, key: str) -> list[float]:
    """Per test case: mean over seeds of (arm − reference) ``key``, pairing runs of the same N, seed and case."""
    table = {(s["arm"], s["seed"], s["case"]): float(s[key]) for s in scores if int(s["n"]) == n}
    per_case: dict[str, list[float]] = {}
    for (a, seed, case), value in table.items():
        if a == arm and (reference, seed, case) in table:
            per_case.setdefault(case, []).append(value - table[(reference, seed, case)])
    return [float(np.mean(d)) for _, d in sorted(per_case.items())]


def summarize(scores: Sequence[Mapping[str, Any]], names: Sequence[str], reference: str, *, n_boot: int = 10000) -> list[dict]:
    """One row per (arm, N): Dice per class mean ± sd over seeds (of the per-seed test means), the
    encoder-zeroed mean Dice, and the paired difference to ``reference`` with its bootstrap CI."""
    rows = []
    arms = list(dict.fromkeys(s["arm"] for s in scores))
    for n in sorted({int(s["n"]) for s in scores}):
        for arm in arms:
            mine = [s for s in scores if s["arm"] == arm and int(s["n"]) == n]
            if not mine:
                continue
            row: dict[str, Any] = {"arm": arm, "n": n, "seeds": len({s["seed"] for s in mine}), "test_cases": len({s["case"] for s in mine})}
            for key in [*(f"Dice_{c}" for c in names), "Dice_mean", "Dice_mean_zeroed"]:
                per_seed = [np.mean([float(s[key]) for s in mine if s["seed"] == seed]) for seed in sorted({s["seed"] for s in mine})]
                row[key] = float(np.mean(per_seed))
                row[key + "_sd"] = float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else math.nan
            row["encoder_drop"] = row["Dice_mean"] - row["Dice_mean_zeroed"]
            if arm != reference:
                diff = paired_differences(scores, arm, reference, n, "Dice_mean")
                row["delta"], row["delta_lo"], row["delta_hi"] = bootstrap_ci(diff, n_boot=n_boot)
            rows.append(row)
    return rows


# -------------------------------------------------------------------------------------------- outputs
def markdown_table(rows: Sequence[Mapping[str, Any]], names: Sequence[str], reference: str) -> str:
    """Table-4-shaped Markdown: arm × labeled cases, Dice per class ± sd, mean, zeroed, Δ vs reference [95 % CI]."""
    head = ["arm", "labeled", *names, "mean", "encoder zeroed", f"Δ mean vs {reference} [95 % CI]"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join([" --- "] * 2 + [" ---: "] * (len(head) - 2)) + "|"]
    for r in rows:
        def cell(key: str) -> str:  # ± sd over seeds, when there are several
            sd = r[key + "_sd"]
            return f"{r[key]:.3f}" if math.isnan(sd) else f"{r[key]:.3f} ± {sd:.3f}"

        cells = [r["arm"], str(r["n"])] + [cell(f"Dice_{c}") for c in names]
        cells += [cell("Dice_mean"), f"{r['Dice_mean_zeroed']:.3f} (drop {r['encoder_drop']:+.3f})"]
        cells.append("—" if "delta" not in r else f"{r['delta']:+.3f} [{r['delta_lo']:+.3f}, {r['delta_hi']:+.3f}]")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def rows_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue()


def svg_plot(rows: Sequence[Mapping[str, Any]], *, width: int = 480, height: int = 320) -> str:
    """Mean Dice (± sd over seeds) against the number of labeled cases, one line per arm (plain SVG)."""
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    ns = sorted({int(r["n"]) for r in rows})
    sd = {id(r): 0.0 if math.isnan(r["Dice_mean_sd"]) else r["Dice_mean_sd"] for r in rows}
    lo = min(r["Dice_mean"] - sd[id(r)] for r in rows)
    hi = max(r["Dice_mean"] + sd[id(r)] for r in rows)
    lo, hi = max(0.0, math.floor(lo * 10) / 10), min(1.0, math.ceil(hi * 10) / 10 + 1e-9)
    hi = hi if hi > lo else lo + 0.1
    left, right, top, bottom = 60, 110, 20, 45
    px = lambda n: left + (ns.index(n) + 0.5) * (width - left - right) / len(ns)  # noqa: E731
    py = lambda d: top + (hi - d) / (hi - lo) * (height - top - bottom)  # noqa: E731
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" stroke="black"/>',
           f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="black"/>',
           f'<text x="{(left + width - right) / 2}" y="{height - 8}" text-anchor="middle">labeled cases</text>',
           f'<text x="14" y="{(top + height - bottom) / 2}" text-anchor="middle" transform="rotate(-90 14 {(top + height - bottom) / 2})">mean Dice</text>']
    for k in range(6):
        d = lo + (hi - lo) * k / 5
        out.append(f'<text x="{left - 6}" y="{py(d) + 4:.1f}" text-anchor="end">{d:.2f}</text>')
        out.append(f'<line x1="{left}" y1="{py(d):.1f}" x2="{width - right}" y2="{py(d):.1f}" stroke="#ddd"/>')
    for n in ns:
        out.append(f'<text x="{px(n):.1f}" y="{height - bottom + 16}" text-anchor="middle">{n}</text>')
    for i, arm in enumerate(dict.fromkeys(r["arm"] for r in rows)):
        color = colors[i % len(colors)]
        mine = sorted((r for r in rows if r["arm"] == arm), key=lambda r: r["n"])
        points = " ".join(f"{px(r['n']):.1f},{py(r['Dice_mean']):.1f}" for r in mine)
        out.append(f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="2"/>')
        for r in mine:
            x, y0, y1 = px(r["n"]), py(r["Dice_mean"] - sd[id(r)]), py(r["Dice_mean"] + sd[id(r)])
            out.append(f'<line x1="{x:.1f}" y1="{y0:.1f}" x2="{x:.1f}" y2="{y1:.1f}" stroke="{color}"/>')
            out.append(f'<circle cx="{x:.1f}" cy="{py(r["Dice_mean"]):.1f}" r="3" fill="{color}"/>')
        out.append(f'<text x="{width - right + 8}" y="{top + 16 * (i + 1)}" fill="{color}">{arm}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------------ runs
def parse_arms(args: argparse.Namespace) -> dict[str, list[str]]:
    """Arm name -> asa-finetune overrides."""
    arms: dict[str, list[str]] = {SCRATCH: ["model.pretrained=null"]}
    if args.pretrained:
        arms[PRETRAINED] = [f"model.pretrained={Path(args.pretrained).expanduser().absolute()}"]
    for preset in args.preset:
        arms[preset] = [f"experiment={preset}"]
    for spec in args.arm:
        if "=" not in spec:
            raise SystemExit(f"--arm {spec!r}: expected NAME=key=value[,key=value...]")
        name, overrides = spec.split("=", 1)
        arms[name] = [o for o in overrides.split(",") if o]
    return arms


def split_cases(ids: Sequence[str], *, test: int, seed: int) -> tuple[list[str], list[str]]:
    """(fixed test ids, pool of training ids in a seeded order)."""
    ids = sorted(ids)
    if test < 1 or test >= len(ids):
        raise SystemExit(f"--test {test}: expected 1 .. {len(ids) - 1} for a dataset of {len(ids)} cases")
    order = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]
    return sorted(order[:test]), order[test:]


def run_study(args: argparse.Namespace) -> tuple[list[dict], list[str], dict[str, list[str]]]:
    """Train (or with --reuse, find) every run and score it on the fixed test cases -> (scores, class names, arms)."""
    from asa.api.common import dataset_root
    from asa.api import finetune
    from asa.api.rundir import move_aside
    from asa.data import discover, get_task
    from asa.io import atomic_write_json
    from asa.eval.predict import Predictor
    from asa.eval.reliance import encoder_reliance
    from asa.api.config import compose_config

    out = Path(args.out).expanduser().absolute()
    base = [f"data={args.data}", f"model={args.model}", "trainer.progress=false", "trainer.panel_every=0",
            f"data.num_workers={args.workers}", f"device={args.device}", *args.override]
    if args.root:
        base.append(f"data.root={args.root}")
    if args.patch_size:
        base.append(f"data.patch_size={args.patch_size}")
    probe_cfg = compose_config("finetune", base)
    root, layout = dataset_root(probe_cfg.data)
    task = get_task(str(probe_cfg.data.task), root=root)
    cases = discover(layout, root, on_bad_case=str(probe_cfg.data.on_bad_case))
    by_id = {c.id: c for c in cases}
    test_ids, pool = split_cases(list(by_id), test=args.test, seed=args.split_seed)
    if max(args.cases) > len(pool):
        raise SystemExit(f"--cases {max(args.cases)}: only {len(pool)} cases are left after the {args.test} test cases")
    arms = parse_arms(args)
    if args.reference not in arms:
        raise SystemExit(f"--reference {args.reference}: not one of the arms {list(arms)}")
    atomic_write_json(out / "study.json", {"data": args.data, "root": str(root), "test": test_ids, "pool": pool,
                                          "arms": arms, "cases": args.cases, "seeds": args.seeds, "steps": args.steps})
    batch = int(probe_cfg.trainer.batch_size)
    scores: list[dict] = []
    for n in args.cases:
        for seed in args.seeds:
            train = sorted([pool[i] for i in np.random.default_rng(1000 + seed).permutation(len(pool))][:n])
            epochs = max(1, round(args.steps / max(n // batch, 1)))
            for arm, overrides in arms.items():
                run_dir = out / "runs" / f"{arm}-n{n}-s{seed}"
                ckpt = run_dir / "checkpoints" / "last.pt"
                if not (args.reuse and _finished(ckpt)):
                    if (run_dir / "checkpoints").is_dir():  # train anew; keep the old run under another name
                        print(f"[transfer] moved the previous run to {move_aside(run_dir)}", flush=True)
                    rest = sorted(set(by_id) - set(train))  # test and unused cases: never seen by the run
                    atomic_write_json(run_dir / "splits.json", {"train": train, "val": [], "test": rest,
                                                                "dataset": str(probe_cfg.data.name), "seed": seed})
                    print(f"[transfer] {arm}: {n} labeled case(s), seed {seed}, {epochs} epoch(s)", flush=True)
                    result = finetune(compose_config("finetune", [*base, f"output_dir={run_dir}", f"seed={seed}",
                                                                  f"trainer.epochs={epochs}", *overrides]))
                    if result.preempted:  # SIGTERM/SIGUSR1: the run saved last.pt mid-schedule
                        raise SystemExit(f"[transfer] {run_dir} was stopped by a signal at step {result.step}; "
                                         "rerun with --reuse to train it (and the rest) again")
                predictor = Predictor.from_checkpoint(ckpt, device=_device(args.device))
                result = encoder_reliance(predictor, [by_id[i] for i in test_ids])
                for row in result["per_case"]:
                    entry = {"arm": arm, "n": n, "seed": seed, "case": row["id"]}
                    for name in task.output_names:
                        entry[f"Dice_{name}"], entry[f"Dice_{name}_zeroed"] = row[f"Dice_{name}"], row[f"Dice_{name}_zeroed"]
                    entry["Dice_mean"] = float(np.mean([row[f"Dice_{c}"] for c in task.output_names]))
                    entry["Dice_mean_zeroed"] = float(np.mean([row[f"Dice_{c}_zeroed"] for c in task.output_names]))
                    scores.append(entry)
    return scores, list(task.output_names), arms


def _finished(ckpt: Path) -> bool:
    """Whether ``ckpt`` is the last.pt of a run that went through its whole schedule."""
    from asa.io import load_checkpoint

    if not ckpt.is_file():
        return False
    state = load_checkpoint(ckpt)
    return int(state["step"]) >= int(state["scheduler"]["total_steps"])


def _device(name: str):
    import torch

    return torch.device("cuda" if name == "auto" and torch.cuda.is_available() else ("cpu" if name == "auto" else name))


def write_outputs(scores: list[dict], names: Sequence[str], reference: str, out: Path, *, n_boot: int = 10000) -> str:
    """scores.csv, transfer.md / .csv and dice_vs_cases.svg under ``out``; returns the Markdown."""
    from asa.io import atomic_write_text

    rows = summarize(scores, names, reference, n_boot=n_boot)
    md = markdown_table(rows, names, reference)
    atomic_write_text(out / "scores.csv", rows_csv(scores))
    atomic_write_text(out / "transfer.csv", rows_csv(rows))
    atomic_write_text(out / "transfer.md", md)
    atomic_write_text(out / "dice_vs_cases.svg", svg_plot(rows))
    return md


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--pretrained", help="encoder export or pretraining checkpoint for the 'pretrained' arm")
    p.add_argument("--data", default="ibsr", help="fine-tuning data preset: brats | ibsr | wmh | msd (default ibsr)")
    p.add_argument("--root", help="dataset folder (default: the preset's demo phantoms)")
    p.add_argument("--model", default="tiny", help="model preset (must match the pretrained encoder)")
    p.add_argument("--patch-size", type=int, default=64, help="fine-tuning crop edge (data.patch_size)")
    p.add_argument("--cases", type=int, nargs="+", default=[2, 4], help="numbers of labeled training cases")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--test", type=int, default=6, help="size of the fixed test split")
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=40, help="optimiser steps per run (rounded to whole epochs)")
    p.add_argument("--preset", nargs="*", default=[], choices=PRESETS, help="Table 4 fine-tuning rows as extra arms")
    p.add_argument("--arm", action="append", default=[], help="extra arm NAME=key=value,key=value (asa-finetune overrides)")
    p.add_argument("--reference", default=SCRATCH, help="arm the paired differences are taken against")
    p.add_argument("--override", action="append", default=[], help="asa-finetune override for every arm")
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=0, help="data.num_workers")
    p.add_argument("--reuse", action="store_true", help="score finished runs instead of training them again")
    p.add_argument("--out", default="runs/transfer")
    args = p.parse_args(argv)
    scores, names, _ = run_study(args)
    md = write_outputs(scores, names, args.reference, Path(args.out).expanduser().absolute())
    print(md)
    print(f"[transfer] outputs in {Path(args.out).absolute()}: transfer.md, transfer.csv, scores.csv, dice_vs_cases.svg")
    return 0


if __name__ == "__main__":
    sys.exit(main())
