#!/usr/bin/env python
"""Aggregate several evaluation runs' ``summary.json`` into the paper's table layout.

One row per run (method); columns ``Dice <name>`` for every region/class found in the summaries,
``Dice mean``, then the same for HD95 and NSD (normalised surface Dice; its columns appear when a
summary holds it, ``-`` for one written before asa-evaluate scored it). The columns follow the output names in the summaries, so
the same script gives Table 2 (BraTS: WT TC ET), Table 3 (IBSR: CSF GM WM, plus WMH when a
method's IBSR and WMH summaries share a run name) and Table 4 (ablation rows). Cells are the
per-name means over cases; ``mean`` is the mean over the row's names. Writes ``PREFIX.md`` and
``PREFIX.csv`` and prints the Markdown.

Examples::

    python scripts/results_table.py --run ASA=runs/asa/eval --run MAE=runs/mae/eval/summary.json --out table2
    python scripts/results_table.py --glob 'runs/*/eval/summary.json' --order ablation --out table4
    python scripts/results_table.py --run ASA=ibsr/asa --run ASA=wmh/asa --out table3   # one row
"""

from __future__ import annotations

import argparse
import csv
import glob
import io
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from asa.io import atomic_write_text

METRICS = ("Dice", "HD95", "NSD")
REQUIRED = ("Dice", "HD95")  # NSD may be absent from older summaries
HIGHER_IS_BETTER = ("Dice", "NSD")
ABLATION_ORDER = ("baseline", "MAE", "A-SSL", "SPE only", "SPE+SSL", "ASA")
ORDER_PRESETS = {"ablation": ABLATION_ORDER}
MISSING = "-"


def read_summary(path: str | os.PathLike[str]) -> dict[str, dict[str, float]]:
    """``{name: {"Dice": mean, "HD95": mean, "NSD": mean}}`` (NSD when the summary holds it) from a ``summary.json`` (or a folder holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / "summary.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise SystemExit(f"error: summary file {path} does not exist") from None
    except json.JSONDecodeError as e:
        raise SystemExit(f"error: {path} is not valid JSON ({e})") from None
    names = data.get("names") or [k for k, v in data.items() if isinstance(v, dict) and "Dice" in v]
    if not names:
        raise SystemExit(f"error: {path} holds no per-name Dice/HD95 statistics (expected asa-evaluate's summary.json)")
    out = {}
    for n in names:
        try:
            out[n] = {m: float(data[n][m]["mean"]) for m in METRICS if m in REQUIRED or m in data[n]}
        except (KeyError, TypeError):
            raise SystemExit(f"error: {path}: entry {n!r} lacks Dice/HD95 means") from None
    return out


def run_name_from_glob(paths: Sequence[Path]) -> list[str]:
    """Names for globbed summaries: their folders minus the path parts all of them share."""
    parts = [p.parent.resolve().parts for p in paths]
    if len(parts) == 1:
        return [parts[0][-1]]
    lead = 0
    while all(len(p) > lead + 1 and p[lead] == parts[0][lead] for p in parts):
        lead += 1
    trail = 0
    while all(len(p) > lead + trail + 1 and p[-1 - trail] == parts[0][-1 - trail] for p in parts):
        trail += 1
    return ["/".join(p[lead : len(p) - trail]) for p in parts]


def collect_runs(run_args: Sequence[str], globs: Sequence[str]) -> dict[str, dict[str, dict[str, float]]]:
    """Rows in input order: ``{run: {name: {"Dice": x, "HD95": y}}}``; a repeated run name merges."""
    sources: list[tuple[str, Path]] = []
    for arg in run_args:
        name, sep, path = arg.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"error: --run expects NAME=PATH, got {arg!r}")
        sources.append((name, Path(path)))
    for pattern in globs:
        matches = sorted(Path(p) for p in glob.glob(pattern, recursive=True))
        if not matches:
            raise SystemExit(f"error: --glob {pattern!r} matched no file")
        sources.extend(zip(run_name_from_glob(matches), matches))
    if not sources:
        raise SystemExit("error: give at least one --run NAME=PATH or --glob PATTERN")
    runs: dict[str, dict[str, dict[str, float]]] = {}
    for name, path in sources:
        row = runs.setdefault(name, {})
        for key, value in read_summary(path).items():
            if key in row:
                raise SystemExit(f"error: run {name!r} has {key!r} in more than one summary (last: {path})")
            row[key] = value
    return runs


def order_runs(names: Sequence[str], order: str | None) -> list[str]:
    """Runs named in ``order`` (comma-separated or a preset) first, in that order; the rest after."""
    if not order:
        return list(names)
    wanted = list(ORDER_PRESETS.get(order, [s.strip() for s in order.split(",") if s.strip()]))
    unknown = [w for w in wanted if w not in names]
    if unknown and order not in ORDER_PRESETS:
        raise SystemExit(f"error: --order names runs that were not given: {unknown} (runs: {list(names)})")
    first = [w for w in wanted if w in names]
    return first + [n for n in names if n not in first]


def build_table(runs: dict[str, dict[str, dict[str, float]]], order: Sequence[str]) -> tuple[list[str], list[list[Any]]]:
    """Header ``[Method, Dice <n>..., Dice mean, HD95 <n>..., HD95 mean, NSD <n>..., NSD mean]`` and rows
    (None = missing); the NSD columns only when some summary holds NSD."""
    names: list[str] = []
    for row in runs.values():
        names += [n for n in row if n not in names]
    metrics = [m for m in METRICS if m in REQUIRED or any(m in v for row in runs.values() for v in row.values())]
    header = ["Method"] + [f"{m} {n}" for m in metrics for n in names + ["mean"]]
    rows = []
    for run in order:
        cells: list[Any] = [run]
        for m in metrics:
            values = [runs[run][n].get(m) if n in runs[run] else None for n in names]
            present = [v for v in values if v is not None]
            cells += values + [sum(present) / len(present) if present else None]
        rows.append(cells)
    return header, rows


def _fmt(value: float | None, metric: str, percent: bool) -> str:
    if value is None:
        return MISSING
    if metric in HIGHER_IS_BETTER:  # fractions in [0, 1]
        return f"{100 * value:.2f}" if percent else f"{value:.4f}"
    return f"{value:.2f}"


def to_markdown(header: list[str], rows: list[list[Any]], *, percent: bool = False, bold_best: bool = False) -> str:
    """GitHub Markdown table; Dice and NSD as fraction (4 decimals) or percent (2), HD95 in mm (2)."""
    metrics = [h.split(" ", 1)[0] for h in header]
    best = {}
    if bold_best and len(rows) > 1:
        for j in range(1, len(header)):
            vals = [r[j] for r in rows if r[j] is not None]
            if vals:
                best[j] = max(vals) if metrics[j] in HIGHER_IS_BETTER else min(vals)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([" --- "] + [" ---: "] * (len(header) - 1)) + "|"]
    for r in rows:
        cells = [str(r[0])]
        for j in range(1, len(header)):
            text = _fmt(r[j], metrics[j], percent)
            cells.append(f"**{text}**" if j in best and r[j] == best[j] else text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_csv(header: list[str], rows: list[list[Any]]) -> str:
    """CSV with full-precision values (Dice and NSD as fractions, HD95 in mm); missing cells empty."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([h.replace(" ", "_") for h in header])
    for r in rows:
        writer.writerow(["" if v is None else v for v in r])
    return buf.getvalue()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="results_table.py",
        description="Aggregate asa-evaluate summary.json files into a Markdown + CSV results table "
        "(one row per run; Dice, HD95 and NSD per region/class and their mean).",
    )
    p.add_argument("--run", action="append", default=[], metavar="NAME=PATH",
                   help="a run: its row name and summary.json (or its folder); repeat the name to merge "
                   "summaries of several tasks into one row")
    p.add_argument("--glob", action="append", default=[], metavar="PATTERN",
                   help="summary.json files to include; row names are their folders minus the shared parts")
    p.add_argument("--order", default=None,
                   help="row order: comma-separated run names (others follow), or 'ablation' "
                   f"({', '.join(ABLATION_ORDER)})")
    p.add_argument("--out", required=True, metavar="PREFIX", help="write PREFIX.md and PREFIX.csv")
    p.add_argument("--percent", action="store_true", help="show Dice and NSD in percent in the Markdown table")
    p.add_argument("--bold-best", action="store_true",
                   help="bold the best value per column (max Dice and NSD, min HD95)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    runs = collect_runs(args.run, args.glob)
    header, rows = build_table(runs, order_runs(list(runs), args.order))
    markdown = to_markdown(header, rows, percent=args.percent, bold_best=args.bold_best)
    out = Path(args.out)
    atomic_write_text(out.with_name(out.name + ".md"), markdown)
    atomic_write_text(out.with_name(out.name + ".csv"), to_csv(header, rows))
    sys.stdout.write(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
