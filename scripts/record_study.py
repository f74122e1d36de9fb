#!/usr/bin/env python
"""Copy what an outside reader needs to re-check a finished asa-study into its committed record: the page (report/),
every per-case score (transfer/scores.csv: every arm, run and draw at the end point; transfer/head-start/scores.csv:
the same at the head start, where the design registered one), the runs (transfer/runs.csv), the design
registered before any score with its looks (design.json), every sitting's seconds (times.json), the pilot's reading
(pilot.json), the checks with the split (checks/checks.json) and the settings (study.json), at the paths the study
folder holds them, so that scripts/compare_studies.py reads a record as it reads a study folder.

While a study trains across sittings, ``--progress`` copies what its folder needs to resume on another machine (the
folder is git-ignored and lost with its machine; the checkpoints are too large to commit): its design, seconds,
settings and pilot's reading, and each scored run's scores.json with its split and seconds. ``--restore`` writes such
a progress record into a new study folder, and the same asa-study command then resumes there: a scored run is not
trained again, nor a positive control whose runs are all scored; the pretraining runs are trained again (the page
reads their curves and exports), and so is every run that was not scored. A run trained again on another machine is
another instance of it (its floating point differs, and with it a pretraining run's lowest held-out round), so the
progress record keeps the export step asa-study fixed for each pretraining run (pretrain/exports.json: a run trained
again exports there) and says which encoder each scored run started from, by its file's sha256 (``started_from``; a
run keeps the entry of the record it was first written to).

    python scripts/record_study.py STUDY_DIR benchmarks/results/study-<what>-<date>
    python scripts/record_study.py --progress STUDY_DIR benchmarks/results/study-<what>-progress
    python scripts/record_study.py --restore benchmarks/results/study-<what>-progress STUDY_DIR
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

RECORD = ("report", "transfer/scores.csv", "transfer/runs.csv", "design.json", "times.json", "pilot.json",
          "checks/checks.json", "study.json")
HEAD_START = "transfer/head-start/scores.csv"  # the per-case scores at --head-start's step, when the design has one
PROGRESS = ("design.json", "times.json", "study.json")  # what every progress record holds, then `READ` once read
READ = ("pilot.json", "pretrain/exports.json")  # the pilot's reading; each pretraining run's export step, fixed
RUN_FILES = ("scores.json", "splits.json", "wall_time.json")  # of each scored run, <stage>/runs/<run>/
MARK = "progress.json"  # what a progress record holds beside the study's files: when it was written, the runs scored


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


def progress(study: Path, dest: Path) -> list[Path]:
    """Copy what ``study`` (a study folder while it trains) needs to resume into ``dest``, replacing the progress
    record there (written whole beside it, then swapped in); the files written. A ``dest`` that holds anything but a
    progress record is refused, as is a study folder without asa-study's design, seconds and settings."""
    if missing := [name for name in PROGRESS if not (study / name).is_file()]:
        raise SystemExit(f"{study}: lacks {', '.join(missing)}: --progress copies a folder asa-study writes")
    if dest.exists() and any(dest.iterdir()) and not (dest / MARK).is_file():
        raise SystemExit(f"{dest}: not a progress record (no {MARK}): --progress replaces only its own record")
    names = [*PROGRESS, *(name for name in READ if (study / name).is_file())]
    scored = sorted(f.parent.relative_to(study) for f in study.glob("*/runs/*/scores.json"))
    names += [str(run / name) for run in scored for name in RUN_FILES if (study / run / name).is_file()]
    kept = json.loads((dest / MARK).read_text()).get("started_from", {}) if (dest / MARK).is_file() else {}
    fresh = dest.with_name(f".{dest.name}.writing")
    shutil.rmtree(fresh, ignore_errors=True)
    for name in names:
        (fresh / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(study / name, fresh / name)
    (fresh / MARK).write_text(json.dumps({"written": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                          "runs_scored": [str(run) for run in scored],
                                          "started_from": started_from(study, scored, kept)}, indent=1) + "\n")
    old = dest.with_name(f".{dest.name}.old")
    if dest.exists():
        dest.rename(old)
    fresh.rename(dest)
    shutil.rmtree(old, ignore_errors=True)
    return sorted(p for p in dest.rglob("*") if p.is_file())


def started_from(study: Path, scored: Sequence[Path], kept: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    """Each scored run (``scored``, relative to ``study``) that started from an encoder -> that encoder's path (relative
    to ``study`` where it lies inside) and its file's sha256, read from the ``model.pretrained=`` of the run's
    command.txt; a run in ``kept`` (the record written before) keeps its entry there: it was scored on the machine
    that wrote it, from that machine's instance of the encoder."""
    found = {}
    for run in map(str, scored):
        if run in kept:
            found[run] = kept[run]
            continue
        command = study / run / "command.txt"
        words = shlex.split(command.read_text()) if command.is_file() else []
        starts = [w.split("=", 1)[1] for w in words if w.startswith("model.pretrained=")]
        if not starts or starts[-1] in ("null", "None", ""):  # scratch
            continue
        encoder = Path(starts[-1]).resolve()
        if not encoder.is_file():
            raise SystemExit(f"{command}: model.pretrained={encoder}: no such file, so which encoder {run} started "
                             "from cannot be recorded; --progress reads the study folder on the machine that scored it")
        inside = encoder.is_relative_to(study.resolve())
        found[run] = {"encoder": str(encoder.relative_to(study.resolve()) if inside else encoder),
                      "sha256": hashlib.sha256(encoder.read_bytes()).hexdigest()}
    return found


def restore(record_dir: Path, study: Path) -> list[Path]:
    """Write the progress record ``record_dir`` into the new study folder ``study`` (absent or empty: a folder that
    holds a study is never written over); the files written. The same asa-study command then resumes there."""
    if not (record_dir / MARK).is_file():
        raise SystemExit(f"{record_dir}: not a progress record (no {MARK}): --restore reads what --progress wrote")
    if study.exists() and any(study.iterdir()):
        raise SystemExit(f"{study}: not empty: --restore writes a new study folder (choose another, or resume "
                         "the study in it with its asa-study command)")
    shutil.copytree(record_dir, study, ignore=shutil.ignore_patterns(MARK), dirs_exist_ok=True)
    return sorted(p for p in study.rglob("*") if p.is_file())


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--progress", action="store_true",
                      help="copy what a study folder that is still training needs to resume, replacing the progress "
                           "record in DEST")
    mode.add_argument("--restore", action="store_true",
                      help="write the progress record FROM into the new study folder TO, to resume it there")
    p.add_argument("study", type=Path, metavar="FROM",
                   help="the study folder (asa-study --out); with --restore, the progress record")
    p.add_argument("dest", type=Path, metavar="TO",
                   help="the record's folder, e.g. benchmarks/results/study-<what>-<date>; with --restore, the new "
                        "study folder")
    args = p.parse_args(argv)
    copy = progress if args.progress else restore if args.restore else record
    written = copy(args.study, args.dest)
    print(f"record_study: {len(written)} files in {args.dest}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
