"""Draws are listed in numeric order: score rows read back from scores.csv carry their seeds as text, and "10" comes
after "9" wherever the statistics, the tables or scripts/compare_studies.py list them."""
from __future__ import annotations

import csv
from pathlib import Path

from asa.study import statistics
from scripts.compare_studies import compare

SEEDS = range(12)


def _rows() -> list[dict]:
    """Scores of scratch and mae over 12 draws and 2 cases, as csv.DictReader gives them (every value text): mae
    above scratch by the draw's number / 100."""
    return [{"arm": arm, "n": "8", "seed": str(seed), "case": case,
             "Dice_mean": str(0.5 + seed / 100 if arm == "mae" else 0.5), "Dice_mean_zeroed": "0.1"}
            for arm in ("scratch", "mae") for seed in SEEDS for case in ("a", "b")]


def test_the_per_draw_differences_of_scores_read_from_csv_are_in_numeric_order():
    d = statistics.paired_matrix(_rows(), "mae", "scratch", 8, "Dice_mean")
    assert [round(float(row[0]), 4) for row in d] == [seed / 100 for seed in SEEDS]
    [row] = [r for r in statistics.summarize(_rows(), [], {"mae": "scratch"}, n_boot=10) if r["arm"] == "mae"]
    assert row["delta_per_seed"] == " ".join(f"{seed / 100:+.4f}" for seed in SEEDS)


def _folder(root: Path, rows: list[dict]) -> Path:
    (root / "transfer").mkdir(parents=True)
    (root / "report").mkdir()
    with open(root / "transfer" / "scores.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (root / "report" / "contrasts.json").write_text("[]")
    (root / "pilot.json").write_text("{}")
    return root


def test_compare_studies_lists_the_cells_that_differ_in_draw_order(tmp_path):
    before = _folder(tmp_path / "before", _rows())
    after = _folder(tmp_path / "after", [{**r, "Dice_mean": "0.9"} if r["seed"] in ("2", "10") and r["arm"] == "mae"
                                         else r for r in _rows()])
    cells = compare(before, after)["cells"]
    assert [c.split(" Dice_mean")[0] for c in cells] == [
        "('mae', '8', '2', 'a')", "('mae', '8', '2', 'b')", "('mae', '8', '10', 'a')", "('mae', '8', '10', 'b')"]
