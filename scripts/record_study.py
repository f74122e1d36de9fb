#!/usr/bin/env python
"""Copy what an outside reader needs to re-check a finished asa-study into its committed record: the page (report/),
every per-case score (transfer/scores.csv: every arm, run and draw at the end point; transfer/head-start/scores.csv:
the same at the head start, where the design registered one), the runs (transfer/runs.csv), the design
registered before any score with its looks (design.json), every sitting's seconds (times.json), the pilot's reading
(pilot.json), the checks with the split (checks/checks.json) and the settings (study.json), at the paths the study
folder holds them, so that scripts/compare_studies.py reads a record as it reads a study folder.

    python scripts/record_study.py STUDY_DIR benchmarks/results/study-<what>-<date>
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

RECORD = ("report", "transfer/scores.csv", "transfer/runs.csv", "design.json", "times.json", "pilot.json",
          "checks/checks.json", "study.json")
HEAD_START = "transfer/head-start/scores.csv"  # the per-case scores at --head-start's step, when the design has one


def recorded(study: Path) -> tuple[str, ...]:
    """What a record of ``study`` holds: `RECORD`, and `HEAD_START` where its design.json registered a head start
    before the end point its pilot.json found (a head start at or after the end point scores no run there)."""
    try:
        head_start = json.loads((study / "design.json").read_text())["design"].get("head_start")
        end_point = json.loads((study / "pilot.json").read_text())["steps"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return RECORD  # no readable design or pilot: refused below, as lacking or not asa-study's
    return (*RECORD, HEAD_START) if head_start is not None and head_start < end_point else RECORD


def record(study: Path, dest: Path) -> list[Path]:
    """Copy `recorded` from ``study`` into ``dest`` (absent or empty: a record is written once); the files written.
    A study folder that lacks one of them is refused, naming what it lacks, before anything is copied."""
    names = recorded(study)
    if missing := [name for name in names if not (study / name).exists()]:
        raise SystemExit(f"{study}: lacks {', '.join(missing)}: a record copies a finished study's folder (its "
                         "report written, its design registered by asa-study)")
    if dest.exists() and any(dest.iterdir()):
        raise SystemExit(f"{dest}: not empty: a record is written once (choose another folder)")
    for name in names:
        source, target = study / name, dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copy2(source, target)
    return sorted(p for p in dest.rglob("*") if p.is_file())


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("study", type=Path, help="the study folder (asa-study --out)")
    p.add_argument("dest", type=Path, help="the record's folder, e.g. benchmarks/results/study-<what>-<date>")
    args = p.parse_args(argv)
    written = record(args.study, args.dest)
    print(f"record_study: {len(written)} files in {args.dest}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
