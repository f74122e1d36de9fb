"""benchmarks/interval_power.py, which chose the crossed interval over pretraining runs × draws × test cases and the
cross-validated one: its quick table reads every interval, the oracle's detectable effect is the z formula's, the
cross-validated run component is 0 in expectation without run spread, and the table in docs/studies.md is the one its
saved run prints."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from asa.eval.random_effects import folded_parts, mean_squares
from benchmarks import interval_power

ROOT = Path(__file__).resolve().parents[2]


def test_the_quick_table_reads_every_interval_and_the_study_s_interval_holds_its_level(tmp_path):
    out = tmp_path / "power.json"
    assert interval_power.main(["--quick", "--datasets", "1500", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["model"], r["design"], r["pretraining"], r["seeds"], r["cases"]) for r in rows] == [
        *((m, "crossed", 3, 3, 16) for m in ("seed", "case", "run")), ("seed", "3 folds × 2", 2, 6, 18)]
    z = stats.norm.ppf(0.975) + stats.norm.ppf(0.8)
    for r in rows:
        assert r["oracle"]["mde"] == pytest.approx(z * r["se"], rel=0.06)  # 1.96 se + 0.84 se: the oracle's power
        assert r["asa"]["coverage"] >= 0.93  # ± 0.006 at 0.95
        low, median, high = r["asa"]["printed_mde"]  # the studies' own estimates: the larger, the likelier detected
        assert low < median < high and r["asa"]["printed_power"] == sorted(r["asa"]["printed_power"])
    run = rows[2]  # where the runs dominate the run part no longer carries the residual at t_{P−1}
    assert run["model"] == "run" and run["asa"]["mde"] < 0.95 * run["before"]["mde"]


def test_the_cross_validated_run_component_has_no_run_spread_in_expectation():
    # runs that differ only by run × draw and run × case effects: the crossed run component over runs × repeats ×
    # cases is 0 in expectation whatever the folds, the runs' means' spread is not
    rng = np.random.default_rng(0)
    fold = np.stack([rng.permutation(18) % 3 for _ in range(2)])
    d = interval_power.simulate_folded(rng, 4000, 3, fold, "run×case")
    ms, _ = mean_squares(d, factors=3)
    run = (ms[(0,)] - ms[(0, 1)] - ms[(0, 2)] + ms[(0, 1, 2)]) / d[0].size
    spread = d.mean(axis=(2, 3)).var(axis=1, ddof=1) / 3
    assert abs(run.mean()) < 3 * run.std() / math.sqrt(len(run)) and spread.mean() > 20 * abs(run.mean())
    v = interval_power.folded_variance(3, fold, interval_power.MODELS["run×case"])
    assert d.mean(axis=(1, 2, 3)).var() == pytest.approx(v, rel=0.06)  # the simulation's V is the formula's
    assert folded_parts(d[:1], fold)[0][1][0] == pytest.approx(max(run[0], 0.0))


def test_the_docs_table_is_the_one_the_saved_run_prints():
    saved = json.loads((ROOT / "benchmarks" / "results" / "interval_power.json").read_text())
    assert saved["datasets"] >= 10000
    assert len(saved["rows"]) == 3 * 12 + len(interval_power.EXTRA) + len(interval_power.FOLDED)
    assert interval_power.markdown(saved["rows"]) in (ROOT / "docs" / "studies.md").read_text()
    for r in saved["rows"]:  # the study's interval holds its level on every design and variance model
        assert r["asa"]["coverage"] >= 0.95 - 2 * math.sqrt(0.95 * 0.05 / saved["datasets"])


def test_too_few_datasets_are_refused(capsys):
    assert interval_power.main(["--quick", "--datasets", "10"]) == 2
    assert "--datasets must be >= 100" in capsys.readouterr().err


def test_the_page_s_mde_line_states_the_simulated_power_of_the_printed_mde():
    """The study page prints its MDE as an estimate, with the power range the committed simulation measured for a true
    effect of the median printed size."""
    from asa.study.report import PRINTED_MDE_POWER

    saved = json.loads((ROOT / "benchmarks" / "results" / "interval_power.json").read_text())
    power = [row["asa"]["printed_power"][1] for row in saved["rows"]]  # [10th, median, 90th] percentile's power
    assert PRINTED_MDE_POWER == (round(min(power), 2), round(max(power), 2))
