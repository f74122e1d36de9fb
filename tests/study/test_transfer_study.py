"""asa/study/transfer.py and tables.py: the arms and their references, paired differences, their CIs (`asa.eval`), the
table and the plot on synthetic scores, and a stopped run continued by the next call."""
from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from asa.eval import bootstrap_ci, seed_case_bootstrap
from asa.study import statistics, tables, transfer


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


def test_paired_table_recovers_the_planted_difference(tmp_path):
    scores = _scores(0.04)
    diff = statistics.paired_differences(scores, "pretrained", "scratch", 2, "Dice_mean")
    assert len(diff) == 20 and np.mean(diff) == pytest.approx(0.04)
    rows = statistics.summarize(scores, ["A", "B"], "scratch", n_boot=2000)
    pre = next(r for r in rows if r["arm"] == "pretrained" and r["n"] == 4)
    assert pre["delta"] == pytest.approx(0.04) and pre["delta_lo"] < 0.04 < pre["delta_hi"]
    assert pre["encoder_drop"] == pytest.approx(0.3)
    assert "delta" not in next(r for r in rows if r["arm"] == "scratch")
    md = tables.write_outputs(scores, ["A", "B"], "scratch", tmp_path, n_boot=500)
    table = md.split("\n\n")[0]
    assert table.count("\n") + 1 == 2 + 4 and "| pretrained | 4 |" in table and "+0.040 [" in table
    assert "| pretrained | 4 | +0.040 [" in md  # the per-class differences
    assert "HD95" not in md  # not scored in these rows
    svg = ET.parse(tmp_path / "dice_vs_cases.svg").getroot()
    texts = {"".join(t.itertext()) for t in svg.iter("{http://www.w3.org/2000/svg}text")}
    assert {"scratch", "pretrained", "labeled cases", "mean Dice", "2", "4"} <= texts  # a line per arm, a tick per N
    assert (tmp_path / "scores.csv").read_text().count("\n") == len(scores) + 1


def test_one_seed_has_no_spread_to_show():
    scores = [s for s in _scores(0.02) if s["seed"] == 0]
    rows = statistics.summarize(scores, ["A", "B"], "scratch", n_boot=200)
    assert all(np.isnan(r["Dice_mean_sd"]) for r in rows)
    md = tables.markdown_table(rows, ["A", "B"], "scratch")
    assert "±" not in md and "+0.020 [" in md
    assert "nan" not in tables.svg_plot(rows)


def _seeded_scores(per_seed: list[float], *, noise: float, cases: int = 16, seed: int = 0) -> list[dict]:
    """'pretrained' − 'scratch' Dice = per_seed[s] + a small case effect, the case effect the same for every seed
    (it belongs to the test case) and of exact mean 0; with HD95 columns."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.5, 0.8, size=cases)
    bump = rng.normal(0, noise, size=cases)
    bump -= bump.mean()
    rows = []
    for s, shift in enumerate(per_seed):
        for c in range(cases):
            for arm, v in (("scratch", base[c]), ("pretrained", base[c] + shift + bump[c])):
                rows.append({"arm": arm, "n": 2, "seed": s, "case": f"c{c:02d}", "Dice_A": v, "Dice_mean": v,
                             "Dice_mean_zeroed": v, "HD95_A": 10 * (1 - v), "HD95_mean": 10 * (1 - v)})
    return rows


def test_seed_case_bootstrap_equals_the_case_only_interval_when_seeds_agree():
    """(a) every seed has the same paired differences: resampling seeds changes nothing, the interval is the
    case-only bootstrap's (same case draws), narrow."""
    scores = _seeded_scores([0.05, 0.05, 0.05], noise=0.02)
    d = statistics.paired_matrix(scores, "pretrained", "scratch", 2, "Dice_mean")
    assert d.shape == (3, 16)
    two_level = seed_case_bootstrap(d, n_resamples=3000, seed=4)
    diffs = statistics.paired_differences(scores, "pretrained", "scratch", 2, "Dice_mean")
    case_only = bootstrap_ci(np.mean, np.asarray(diffs), n_resamples=3000, seed=4)
    assert (two_level.value, two_level.low, two_level.high) == pytest.approx(
        (case_only.value, case_only.low, case_only.high), abs=1e-12)
    assert statistics.case_interval(diffs, n_boot=3000, seed=4) == (case_only.low, case_only.high)
    assert two_level.high - two_level.low < 0.03 and two_level.low < 0.05 < two_level.high


def test_seed_case_bootstrap_carries_the_spread_between_labeled_draws(tmp_path):
    """(b) per-seed differences +0.274, -0.019, -0.148 with little case noise (issue #26): the case-only interval
    excludes 0 and is narrow; the seed × case interval contains 0 and is many times wider."""
    per_seed = [0.274, -0.019, -0.148]
    scores = _seeded_scores(per_seed, noise=0.01)
    rows = statistics.summarize(scores, ["A"], "scratch", n_boot=4000)
    pre = next(r for r in rows if r["arm"] == "pretrained")
    assert pre["delta"] == pytest.approx(np.mean(per_seed))  # (0.274 - 0.019 - 0.148) / 3 = 0.035667
    assert pre["delta"] == pytest.approx(0.0356667, abs=1e-6)
    assert [float(v) for v in pre["delta_per_seed"].split()] == pytest.approx(per_seed, abs=1e-4)
    assert pre["delta_case_lo"] > 0 and pre["delta_case_hi"] - pre["delta_case_lo"] < 0.02
    assert pre["delta_lo"] < 0 < pre["delta_hi"]
    assert pre["delta_hi"] - pre["delta_lo"] > 10 * (pre["delta_case_hi"] - pre["delta_case_lo"])
    assert pre["delta_lo"] < -0.1 and pre["delta_hi"] > 0.2  # spans most of the per-seed range
    # HD95 = 10 (1 - Dice): its difference is -10 x the Dice difference, with the same resamples
    assert pre["delta_HD95_mean"] == pytest.approx(-10 * pre["delta"])
    assert (pre["delta_HD95_mean_lo"], pre["delta_HD95_mean_hi"]) == pytest.approx((-10 * pre["delta_hi"], -10 * pre["delta_lo"]))
    again = statistics.summarize(scores, ["A"], "scratch", n_boot=4000)
    assert again == rows  # deterministic by seed
    assert statistics.summarize(scores, ["A"], "scratch", n_boot=4000, seed=1)[1]["delta_lo"] != pre["delta_lo"]
    md = tables.write_outputs(scores, ["A"], "scratch", tmp_path, n_boot=500)
    assert "+0.274 -0.019 -0.148" in md and "HD95 mean (mm)" in md and "Δ HD95 A (mm)" in md
    header = (tmp_path / "transfer.csv").read_text().splitlines()[0].split(",")
    assert {"delta", "delta_lo", "delta_hi", "delta_case_lo", "delta_case_hi", "delta_per_seed",
            "HD95_A", "delta_HD95_A_lo"} <= set(header)


def test_per_seed_differences_leave_missing_pairs_out():
    d = np.array([[0.1, 0.3], [0.2, np.nan]])
    assert statistics.per_seed_differences(d) == pytest.approx([0.2, 0.2])
    assert statistics.case_interval([], n_boot=10, seed=0) == pytest.approx((np.nan, np.nan), nan_ok=True)


def test_a_network_without_an_encoder_shows_no_encoder_columns(tmp_path):
    """DynUNet has no encoder: its zeroed Dice and relative updates are not numbers, and the tables say so
    instead of printing nan."""
    scores = [{**r, "Dice_mean_zeroed": float("nan")} if r["arm"] == "pretrained" else r for r in _scores(0.0)]
    md = tables.write_outputs(scores, ["A", "B"], "scratch", tmp_path, n_boot=200,
                             budgets=[{"arm": "pretrained", "n": 2, "seed": 0, "steps": 10, "final_loss": 0.5,
                                       "loss_drop": 0.01, "plateau": True, "rel_update_encoder": float("nan"),
                                       "rel_update_decoder": float("nan"), "rel_update_ratio": float("nan")},
                                      {"arm": "scratch", "n": 2, "seed": 0, "steps": 10, "final_loss": 0.5,
                                       "loss_drop": 0.01, "plateau": True, "rel_update_encoder": 0.01,
                                       "rel_update_decoder": 0.02, "rel_update_ratio": 0.5}])
    assert "nan" not in md
    assert "| pretrained | 2 |" in md and "— (no encoder)" in md
    assert "| pretrained | 2 | 10 | 0.500 | 1/1 | — | — | — |" in md
    assert "| scratch | 2 | 10 | 0.500 | 1/1 | 0.01 | 0.02 | 0.5 |" in md


def test_budget_arms_train_a_fraction_of_the_epochs_against_the_reference_at_that_fraction(tmp_path):
    settings = transfer.Transfer(tmp_path, arms={"mae": ["model.pretrained=/x/encoder.pt"]}, budget_arms=("scratch", "mae"),
                                 budget_fractions=(0.25, 0.5))
    arms = transfer.parse_arms(settings)
    assert list(arms) == ["scratch", "mae", "scratch_x0.25", "scratch_x0.5", "mae_x0.25", "mae_x0.5"]
    assert arms["mae_x0.25"] == arms["mae"] == ["model.pretrained=/x/encoder.pt"]
    assert [transfer.budget_fraction(a) for a in arms] == [1.0, 1.0, 0.25, 0.5, 0.25, 0.5]
    refs = transfer.references(list(arms), "scratch")
    assert refs["mae_x0.25"] == "scratch_x0.25" and refs["mae"] == "scratch" and refs["scratch_x0.5"] == "scratch_x0.5"
    with pytest.raises(SystemExit, match="--budget-arms other: no such arm"):
        transfer.parse_arms(dataclasses.replace(settings, budget_arms=("other",)))
    with pytest.raises(SystemExit, match="--budget-fractions 1.5"):
        transfer.parse_arms(dataclasses.replace(settings, budget_fractions=(1.5,)))


def test_a_budget_fraction_too_short_for_the_budget_check_is_refused(tmp_path):
    settings = transfer.Transfer(tmp_path, budget_arms=("scratch",), budget_fractions=(0.125,), steps=24)
    with pytest.raises(SystemExit, match=r"--budget-fractions 0.125: 0.125 × --steps 24 leaves 3 step\(s\)"):
        transfer.parse_arms(settings)
    assert "scratch_x0.125" in transfer.parse_arms(dataclasses.replace(settings, steps=32))


def test_no_scratch_leaves_out_the_built_in_arm_and_needs_another_reference(tmp_path):
    settings = transfer.Transfer(tmp_path, arms={"resenc": ["model=resenc"]}, scratch=False, reference="resenc")
    assert list(transfer.parse_arms(settings)) == ["resenc"]
    assert list(transfer.parse_arms(dataclasses.replace(settings, scratch=True))) == ["scratch", "resenc"]
    with pytest.raises(SystemExit, match="--no-scratch leaves out the 'scratch' arm"):
        dataclasses.replace(settings, reference="scratch")
    with pytest.raises(SystemExit, match="'@' is reserved for the recipe"):
        transfer.parse_arms(transfer.Transfer(tmp_path, arms={"a@b": []}))


def test_an_arm_with_more_than_its_encoder_is_compared_with_its_twin():
    base = ["model=resenc", "model.pretrained=null"]
    arms = {"scratch": base, "scratch-coord": [*base, "model.coord_channel=true"],
            "mae": ["model=resenc", "model.pretrained=/x/mae.pt"],
            "asa-coord": ["model=resenc", "model.pretrained=/x/asa.pt", "model.coord_channel=true"],
            "lr": [*base, "optim.lr=1e-3"]}
    refs = transfer.references(arms, "scratch")
    assert refs == {"scratch": "scratch", "scratch-coord": "scratch", "mae": "scratch", "asa-coord": "scratch-coord",
                    "lr": "scratch"}
    assert transfer.references(list(arms), "scratch")["asa-coord"] == "scratch"  # names alone: no twin to find
    # an arm is never moved off a reference it was meant against: with --reference lr, asa-coord (which lacks
    # optim.lr) stays on it, and with recipes each twin is the one under the arm's recipe
    assert transfer.references(arms, "lr")["asa-coord"] == "lr"
    recipes = {f"{a}@{r}": [*o, f"optim={r}"] for r in ("adamw", "sgd") for a, o in arms.items()}
    assert transfer.references(recipes, "scratch")["asa-coord@sgd"] == "scratch-coord@sgd"


@pytest.mark.slow  # trains a run, stops it with a signal and continues it (15 s on one core)
def test_a_run_stopped_by_a_signal_continues_from_its_checkpoint_and_ends_as_an_unstopped_one(tmp_path, monkeypatch):
    """A fine-tuning run of a transfer study stopped mid-schedule (SIGTERM at its 3rd step: last.pt saved) is
    continued by the next call of run_study (its asa-finetune unit resumes from that checkpoint): it ends with the
    weights and the scores of the same run never stopped, on the splits it started with."""
    import json
    import os
    import signal

    import torch

    from asa.api import compose_config, finetune
    from asa.data.synthetic.demo import write_demo_dataset
    from asa.io import load_checkpoint
    from asa.study.common import Clock
    from asa.study.scheduler import STOP_MARGIN
    from asa.train import engine

    labeled = write_demo_dataset("msd", tmp_path / "labeled", cases=4, size=16, seed=1)

    def settings(name: str) -> transfer.Transfer:  # 2 cases, batch 1, 8 steps: 4 epochs
        return transfer.Transfer(tmp_path / name, data="msd", root=labeled, model="dynunet", crop=16, cases=(2,),
                                 seeds=(0,), test=1, steps=8, device="cpu", n_boot=20,
                                 overrides=("trainer.batch_size=1", "trainer.threads=1"))

    # a call whose budget starts nothing writes the run's splits; the run is then trained in-process up to its stop
    assert not transfer.run_study(settings("stopped"), clock=Clock(STOP_MARGIN - 1))
    [run], _, _, _ = transfer.plan_runs(settings("stopped"))
    splits = (run.run_dir / "splits.json").read_text()
    original, fired = engine.Engine._train_step, []

    def stopped_at_3(self, *args):
        original(self, *args)
        if self.step == 3 and not fired:
            fired.append(self.step)
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(engine.Engine, "_train_step", stopped_at_3)
    assert finetune(compose_config("finetune", [*run.overrides, "resume=auto"])).preempted
    assert load_checkpoint(run.run_dir / "checkpoints" / "last.pt")["step"] == 3
    assert transfer.run_study(settings("stopped")) and transfer.run_study(settings("whole"))
    assert "at step 3" in (tmp_path / "stopped" / "logs" / f"{run.run_dir.name}.log").read_text()  # resumed there
    a, b = (load_checkpoint(tmp_path / name / "runs" / run.run_dir.name / "checkpoints" / "last.pt")
            for name in ("stopped", "whole"))
    assert a["step"] == b["step"] == a["scheduler"]["total_steps"] == 8
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert (tmp_path / "stopped" / "scores.csv").read_text() == (tmp_path / "whole" / "scores.csv").read_text()
    assert (run.run_dir / "splits.json").read_text() == splits
    assert json.loads((run.run_dir / "wall_time.json").read_text())["train_seconds"] > 0


@pytest.mark.slow
def test_runs_scored_side_by_side_score_as_one_after_another(tmp_path):
    """With jobs > 1 the finished runs are scored in processes of their own, two at once: the same scores.json
    per run, byte for byte, as scored one after another in the study's process."""
    import shutil

    from asa.data import discover
    from asa.data.synthetic.demo import write_demo_dataset

    labeled = write_demo_dataset("msd", tmp_path / "labeled", cases=4, size=16, seed=1)
    s = transfer.Transfer(tmp_path / "one", data="msd", root=labeled, model="dynunet", crop=16, cases=(2,),
                          seeds=(0, 1), test=1, steps=4, device="cpu", n_boot=20, threads=1,
                          overrides=("trainer.batch_size=1",))
    assert transfer.run_study(s)  # jobs=1: scored one after another
    shutil.copytree(tmp_path / "one" / "runs", tmp_path / "two" / "runs")
    for f in (tmp_path / "two" / "runs").rglob("scores.json"):
        f.unlink()
    two = dataclasses.replace(s, out=tmp_path / "two", jobs=2)
    runs, test_ids, _, cfg = transfer.plan_runs(two)
    by_id = {c.id: c for c in discover("msd", labeled)}
    assert len(runs) == 2 and len(transfer.score_all(runs, by_id, test_ids, two)) == 2  # scratch, seeds 0 and 1
    for run in runs:
        assert run.scores_file.read_text() == (tmp_path / "one" / "runs" / run.run_dir.name / "scores.json").read_text()
