"""benchmarks/interval_power.py, which chose the crossed interval over pretraining runs × draws × test cases: its quick
table reads every interval on every variance model, the oracle's detectable effect is the z formula's, and the table in
docs/studies.md is the one its saved run prints."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from scipy import stats

from benchmarks import interval_power

ROOT = Path(__file__).resolve().parents[2]


def test_the_quick_table_reads_every_interval_and_the_study_s_interval_holds_its_level(tmp_path):
    out = tmp_path / "power.json"
    assert interval_power.main(["--quick", "--datasets", "1500", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["model"], r["pretraining"], r["seeds"], r["cases"]) for r in rows] == [
        (m, 3, 3, 16) for m in interval_power.MODELS]
    z = stats.norm.ppf(0.975) + stats.norm.ppf(0.8)
    for r in rows:
        assert r["oracle"]["mde"] == pytest.approx(z * r["se"], rel=0.06)  # 1.96 se + 0.84 se: the oracle's power
        assert r["asa"]["coverage"] >= 0.93  # ± 0.006 at 0.95
        assert r["asa"]["mde"] < r["before"]["mde"]  # the run part no longer carries the residual at t_{P−1}
        assert r["asa"]["printed_mde"] == pytest.approx(r["asa"]["mde"], rel=0.2)


def test_the_docs_table_is_the_one_the_saved_run_prints():
    saved = json.loads((ROOT / "benchmarks" / "results" / "interval_power.json").read_text())
    assert saved["datasets"] >= 10000 and len(saved["rows"]) == 3 * 12
    assert interval_power.markdown(saved["rows"]) in (ROOT / "docs" / "studies.md").read_text()
    for r in saved["rows"]:  # the study's interval holds its level on every design and variance model
        assert r["asa"]["coverage"] >= 0.95 - 2 * math.sqrt(0.95 * 0.05 / saved["datasets"])


def test_too_few_datasets_are_refused(capsys):
    assert interval_power.main(["--quick", "--datasets", "10"]) == 2
    assert "--datasets must be >= 100" in capsys.readouterr().err
