"""scripts/transfer_study.py: bootstrap CIs, paired differences, the table and the plot on synthetic scores."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "transfer_study.py"
_spec = importlib.util.spec_from_file_location("asa_transfer_study", SCRIPT)
study = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = study
_spec.loader.exec_module(study)


def _scores(delta: float, noise: float = 0.02, cases: int = 20, seeds: int = 3) -> list[dict]:
    """Per-case scores where 'pretrained' beats 'scratch' by exactly `delta` on average per case."""
    rng = np.random.default_rng(0)
    base = rng.uniform(0.5, 0.8, size=cases)
    bump = rng.normal(0, noise, size=cases)
    bump += delta - bump.mean()  # the true mean difference over these cases is delta
    rows = []
    for n in (2, 4):
        for seed in range(seeds):
            for c in range(cases):
                for arm, v in (("scratch", base[c]), ("pretrained", base[c] + bump[c])):
                    rows.append({"arm": arm, "n": n, "seed": seed, "case": f"c{c:02d}", "Dice_A": v, "Dice_B": v,
                                 "Dice_mean": v, "Dice_mean_zeroed": v - (0.3 if arm == "pretrained" else 0.0)})
    return rows


def test_bootstrap_ci_covers_a_known_difference():
    rng = np.random.default_rng(1)
    diffs = 0.05 + rng.normal(0, 0.03, size=30)
    mean, lo, hi = study.bootstrap_ci(diffs, n_boot=4000)
    assert lo < 0.05 < hi and lo < mean < hi
    assert hi - lo < 0.05  # ~ ±1.96 · 0.03/√30
    assert study.bootstrap_ci([0.1] * 5) == pytest.approx((0.1, 0.1, 0.1))


def test_paired_table_recovers_the_planted_difference(tmp_path):
    scores = _scores(0.04)
    diff = study.paired_differences(scores, "pretrained", "scratch", 2, "Dice_mean")
    assert len(diff) == 20 and np.mean(diff) == pytest.approx(0.04)
    rows = study.summarize(scores, ["A", "B"], "scratch", n_boot=2000)
    pre = next(r for r in rows if r["arm"] == "pretrained" and r["n"] == 4)
    assert pre["delta"] == pytest.approx(0.04) and pre["delta_lo"] < 0.04 < pre["delta_hi"]
    assert pre["encoder_drop"] == pytest.approx(0.3)
    assert "delta" not in next(r for r in rows if r["arm"] == "scratch")
    md = study.write_outputs(scores, ["A", "B"], "scratch", tmp_path, n_boot=500)
    assert md.count("\n") == 2 + 4 and "| pretrained | 4 |" in md and "+0.040 [" in md
    svg = (tmp_path / "dice_vs_cases.svg").read_text()
    assert svg.startswith("<svg") and svg.count("<polyline") == 2
    assert (tmp_path / "scores.csv").read_text().count("\n") == len(scores) + 1


def test_one_seed_has_no_spread_to_show():
    scores = [s for s in _scores(0.02) if s["seed"] == 0]
    rows = study.summarize(scores, ["A", "B"], "scratch", n_boot=200)
    assert all(np.isnan(r["Dice_mean_sd"]) for r in rows)
    md = study.markdown_table(rows, ["A", "B"], "scratch")
    assert "±" not in md and "+0.020 [" in md
    assert "nan" not in study.svg_plot(rows)
