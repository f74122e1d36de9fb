"""Whether two asa-study folders hold the same numbers: every score of every run and test case (the columns both
scores.csv files have), the pilot's reading, and every contrast's estimate, intervals, p, bound, MDE and verdict.
A change that should move no number (a restructuring) is checked by running the same study command before and
after it and comparing the two folders; exit 1 names what differs.

    python scripts/compare_studies.py BEFORE_DIR AFTER_DIR [--json OUT.json]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
from pathlib import Path

NUMBERS = ("Dice_mean", "NSD_mean", "lesion_Dice", "bootstrap", "p", "bound90", "mde", "verdict")


def _scores(folder: Path) -> dict[tuple[str, ...], dict[str, str]]:
    with open(folder / "transfer" / "scores.csv", newline="") as f:
        return {(r["arm"], r["n"], r["seed"], r["case"]): r for r in csv.DictReader(f)}


def _order(key: tuple[str, ...]) -> tuple:
    """A score's (arm, N, seed, case) in the order a reader expects: N and seed (draw) by number, not as text."""
    arm, n, seed, case = key
    return arm, int(n), int(seed), case


def compare(before: Path, after: Path) -> dict:
    """What differs between the two folders (empty lists: nothing), and a digest of the scores compared."""
    b, a = _scores(before), _scores(after)
    columns = sorted(set(next(iter(b.values()))) & set(next(iter(a.values()))))
    cells = [f"{k} {c}: {b[k][c]} -> {a[k][c]}" for k in sorted(set(b) & set(a), key=_order) for c in columns
             if b[k][c] != a[k][c]]
    cb, ca = ({(r["arm"], r["reference"], r["n"]): r for r in json.loads((f / "report" / "contrasts.json").read_text())}
              for f in (before, after))
    contrasts = [f"{k} {field}: {cb[k].get(field)} -> {ca[k].get(field)}" for k in sorted(set(cb) & set(ca))
                 for field in NUMBERS if cb[k].get(field) != ca[k].get(field)]
    digest = hashlib.sha256("".join(f"{k}{[b[k][c] for c in columns]}" for k in sorted(b)).encode()).hexdigest()
    return {"runs_and_cases": len(b), "columns": columns, "scores_sha256": digest,
            "only_before": [str(k) for k in sorted(set(b) - set(a), key=_order)],
            "only_after": [str(k) for k in sorted(set(a) - set(b), key=_order)],
            "cells": cells, "contrasts": sorted(set(map(str, cb)) ^ set(map(str, ca))) + contrasts,
            "pilot": [] if (before / "pilot.json").read_text() == (after / "pilot.json").read_text()
            else ["pilot.json differs"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("before", type=Path)
    p.add_argument("after", type=Path)
    p.add_argument("--json", type=Path, help="write the comparison here")
    args = p.parse_args()
    found = compare(args.before, args.after)
    if args.json:
        args.json.write_text(json.dumps(found, indent=1) + "\n")
    differ = [line for key in ("only_before", "only_after", "cells", "contrasts", "pilot") for line in found[key]]
    print("\n".join(differ) if differ else f"same numbers: {found['runs_and_cases']} scored run × case rows "
                                            f"(sha256 {found['scores_sha256'][:16]}), every contrast, the pilot")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
