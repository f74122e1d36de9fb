"""benchmarks.side_by_side's arithmetic: the steps a unit starts inside the common window, the rows against one unit
alone, and the units at once a study plans from (the measurement itself needs a device: scripts/gpu_window.sh)."""
from __future__ import annotations

from benchmarks.side_by_side import best_units, summarise, window_rates


def test_only_the_steps_started_inside_the_window_count():
    starts = [0.5, 1.0, 1.5, 2.0, 2.5, 3.0]  # a step every 0.5 s
    assert window_rates(starts, 1.0, 3.0) == 4 / 2.0  # 1.0, 1.5, 2.0, 2.5: the end is open


def test_a_row_reads_each_unit_and_the_total_against_one_alone():
    alone = summarise([{"starts": [i / 10 for i in range(100)]}], 1.0, 9.0, batch=2, alone=None)
    assert alone["samples_per_s_total"] == 20.0 and "speedup" not in alone  # 10 steps/s × 2
    # two units taking turns: 5 and 4 steps/s; the second started after the window opened
    units = [{"starts": [i / 5 for i in range(50)]}, {"starts": [2.0 + i / 4 for i in range(40)]}]
    row = summarise(units, 1.0, 9.0, batch=2, alone=alone["samples_per_s_total"])
    assert row["steps_per_s"] == [5.0, 3.5]  # 28 of the second's steps fall in [2, 9)
    assert row["samples_per_s_total"] == 17.0 and row["speedup"] == 0.85
    assert row["unit_slowdown"] == round(20.0 / 8.5, 3) and row["late_units"] == [1]
    assert row["samples_per_s_unit"] == {"mean": 8.5, "least": 7.0, "most": 10.0}


def test_the_plan_takes_the_fewest_units_within_five_percent_of_the_greatest_total():
    rows = [{"units": 1, "samples_per_s_total": 19.2}, {"units": 4, "samples_per_s_total": 76.4},
            {"units": 8, "samples_per_s_total": 246.0}, {"units": 16, "samples_per_s_total": 256.3}]
    assert best_units(rows) == 8  # 246.0 ≥ 0.95 × 256.3
    rows[2]["samples_per_s_total"] = 146.9
    assert best_units(rows) == 16


def test_fused_takes_k_units_a_process_and_p_processes():
    import argparse

    import pytest

    from benchmarks.side_by_side import fused_spec

    assert fused_spec("14") == (14, 1) and fused_spec("14x4") == (14, 4)
    for bad in ("14x", "x4", "0x2", "14x0", "fourteen"):
        with pytest.raises(argparse.ArgumentTypeError, match=bad):
            fused_spec(bad)


def test_the_json_holds_each_row_once_it_is_measured(tmp_path, monkeypatch):
    """A part stopped by its time limit in its second row keeps its first (the JSON is written after each row)."""
    import json

    import benchmarks.side_by_side as sbs

    (tmp_path / "dataset.json").write_text("{}")
    out = tmp_path / "rows.json"
    seen = []

    def run_k(k, args, root, fused=0):
        seen.append(json.loads(out.read_text())["rows"] if out.exists() else None)
        return [{"starts": [i / 10 for i in range(100)], "batch": 2}] * k, 1.0, 9.0, {}

    monkeypatch.setattr(sbs, "run_k", run_k)
    sbs.main(["--data", str(tmp_path), "--units", "1", "2", "--device", "cpu", "--json", str(out)])
    assert seen[0] is None and [row["units"] for row in seen[1]] == [1]
    doc = json.loads(out.read_text())
    assert [row["units"] for row in doc["rows"]] == [1, 2] and doc["best_units"] == 2
    assert not out.with_name("rows.json.tmp").exists()
