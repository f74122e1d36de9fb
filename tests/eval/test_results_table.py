"""scripts/results_table.py: summaries -> Markdown/CSV table with exact cells."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "results_table.py"
_spec = importlib.util.spec_from_file_location("asa_results_table", SCRIPT)
results_table = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(results_table)


def fake_summary(folder: Path, means: dict[str, tuple[float, float]]) -> Path:
    """Write a summary.json like evaluate_cases does, with the given (Dice, HD95) means."""
    folder.mkdir(parents=True, exist_ok=True)
    data = {"task": "t", "n_cases": 2, "names": list(means)}
    for name, (d, h) in means.items():
        data[name] = {"Dice": {"mean": d, "median": d, "std": 0.0}, "HD95": {"mean": h, "median": h, "std": 0.0}}
    path = folder / "summary.json"
    path.write_text(json.dumps(data))
    return path


def test_brats_table_exact_cells(tmp_path, capsys):
    a = fake_summary(tmp_path / "runs" / "asa" / "eval", {"WT": (0.9, 4.0), "TC": (0.8, 6.0), "ET": (0.7, 8.0)})
    fake_summary(tmp_path / "runs" / "mae" / "eval", {"WT": (0.85, 5.0), "TC": (0.75, 7.5), "ET": (0.65, 9.25)})
    out = tmp_path / "tables" / "table2"
    rc = results_table.main(["--run", f"ASA={a}", "--run", f"MAE={tmp_path / 'runs' / 'mae' / 'eval'}", "--out", str(out)])
    assert rc == 0
    md = (tmp_path / "tables" / "table2.md").read_text().splitlines()
    # Dice mean ASA: (0.9 + 0.8 + 0.7) / 3 = 0.8; HD95 mean: (4 + 6 + 8) / 3 = 6
    # MAE: Dice (0.85 + 0.75 + 0.65) / 3 = 0.75; HD95 (5 + 7.5 + 9.25) / 3 = 7.25
    assert md == [
        "| Method | Dice WT | Dice TC | Dice ET | Dice mean | HD95 WT | HD95 TC | HD95 ET | HD95 mean |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        "| ASA | 0.9000 | 0.8000 | 0.7000 | 0.8000 | 4.00 | 6.00 | 8.00 | 6.00 |",
        "| MAE | 0.8500 | 0.7500 | 0.6500 | 0.7500 | 5.00 | 7.50 | 9.25 | 7.25 |",
    ]
    assert capsys.readouterr().out.splitlines() == md
    rows = list(csv.reader((tmp_path / "tables" / "table2.csv").open()))
    assert rows[0] == ["Method", "Dice_WT", "Dice_TC", "Dice_ET", "Dice_mean", "HD95_WT", "HD95_TC", "HD95_ET", "HD95_mean"]
    assert rows[2][0] == "MAE" and [float(x) for x in rows[2][1:]] == pytest.approx([0.85, 0.75, 0.65, 0.75, 5, 7.5, 9.25, 7.25])


def test_merge_tasks_into_one_row_order_percent_and_bold(tmp_path):
    # Table 3: IBSR (CSF GM WM) and WMH summaries of the same method share a row;
    # a method without a WMH run gets "-" there, and its mean covers the names it has.
    ibsr_asa = fake_summary(tmp_path / "ibsr_asa", {"CSF": (0.8, 2.0), "GM": (0.9, 1.0), "WM": (0.91, 1.5)})
    wmh_asa = fake_summary(tmp_path / "wmh_asa", {"WMH": (0.75, 5.5)})
    ibsr_base = fake_summary(tmp_path / "ibsr_base", {"CSF": (0.7, 3.0), "GM": (0.85, 1.25), "WM": (0.88, 2.0)})
    out = tmp_path / "t3"
    results_table.main([
        "--run", f"ASA={ibsr_asa}", "--run", f"ASA={wmh_asa}", "--run", f"baseline={ibsr_base}",
        "--order", "baseline", "--percent", "--bold-best", "--out", str(out),
    ])
    md = (tmp_path / "t3.md").read_text().splitlines()
    assert md[0] == "| Method | Dice CSF | Dice GM | Dice WM | Dice WMH | Dice mean | HD95 CSF | HD95 GM | HD95 WM | HD95 WMH | HD95 mean |"
    # baseline Dice mean (70 + 85 + 88) / 3 = 81; HD95 mean (3 + 1.25 + 2) / 3 = 2.0833
    # (bold: best per column, max Dice / min HD95 — here only baseline's HD95 mean, 2.08 < 2.5)
    assert md[2] == "| baseline | 70.00 | 85.00 | 88.00 | - | 81.00 | 3.00 | 1.25 | 2.00 | - | **2.08** |"
    # ASA Dice mean (80 + 90 + 91 + 75) / 4 = 84; HD95 mean (2 + 1 + 1.5 + 5.5) / 4 = 2.5
    assert md[3] == (
        "| ASA | **80.00** | **90.00** | **91.00** | **75.00** | **84.00** "
        "| **2.00** | **1.00** | **1.50** | **5.50** | 2.50 |"
    )


def test_glob_names_and_ablation_order(tmp_path):
    for name, d in [("ASA", 0.9), ("MAE", 0.8), ("baseline", 0.7)]:
        fake_summary(tmp_path / "runs" / name / "eval", {"WT": (d, 1.0)})
    out = tmp_path / "t4"
    results_table.main(["--glob", str(tmp_path / "runs" / "*" / "eval" / "summary.json"), "--order", "ablation", "--out", str(out)])
    methods = [line.split("|")[1].strip() for line in (tmp_path / "t4.md").read_text().splitlines()[2:]]
    assert methods == ["baseline", "MAE", "ASA"]


def test_errors_and_help(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        results_table.main(["--help"])
    assert e.value.code == 0 and "--run NAME=PATH" in capsys.readouterr().out
    s = fake_summary(tmp_path / "a", {"WT": (0.9, 1.0)})
    with pytest.raises(SystemExit, match="NAME=PATH"):
        results_table.main(["--run", str(s), "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="does not exist"):
        results_table.main(["--run", f"A={tmp_path / 'nope.json'}", "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="not given"):
        results_table.main(["--run", f"A={s}", "--order", "B", "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="more than one summary"):
        results_table.main(["--run", f"A={s}", "--run", f"A={s}", "--out", str(tmp_path / "x")])


def test_nsd_columns_when_a_summary_holds_nsd(tmp_path):
    a = fake_summary(tmp_path / "a", {"WT": (0.9, 4.0), "ET": (0.7, 8.0)})
    data = json.loads(a.read_text())
    data["WT"]["NSD"] = {"mean": 0.95, "median": 0.95, "std": 0.0}
    data["ET"]["NSD"] = {"mean": 0.75, "median": 0.75, "std": 0.0}
    a.write_text(json.dumps(data))
    old = fake_summary(tmp_path / "old", {"WT": (0.8, 5.0), "ET": (0.6, 9.0)})  # written before NSD
    out = tmp_path / "t"
    assert results_table.main(["--run", f"new={a}", "--run", f"old={old}", "--out", str(out), "--bold-best"]) == 0
    md = (tmp_path / "t.md").read_text().splitlines()
    assert md[0].endswith("| HD95 mean | NSD WT | NSD ET | NSD mean |")
    assert md[2].endswith("| **0.9500** | **0.7500** | **0.8500** |")  # NSD: higher is better
    assert md[3].endswith("| - | - | - |")
