"""asa/study/transfer.py and tables.py: the arms and their references, paired differences, their CIs (`asa.eval`), the
table and the plot on synthetic scores, and a stopped run continued by the next call."""
from __future__ import annotations

import dataclasses
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from asa.eval import bootstrap_ci, seed_case_bootstrap
from asa.study import statistics, tables, transfer

SCRATCH_ONLY = {"scratch": transfer.Tuned(("model.pretrained=null",))}


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
    md = tables.write_outputs(scores, ["A", "B"], "scratch", tmp_path, n_boot=500).markdown
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
    md = tables.write_outputs(scores, ["A"], "scratch", tmp_path, n_boot=500).markdown
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
                                       "rel_update_decoder": 0.02, "rel_update_ratio": 0.5}]).markdown
    assert "nan" not in md
    assert "| pretrained | 2 |" in md and "— (no encoder)" in md
    assert "| pretrained | 2 | 10 | 0.500 | 1/1 | — | — | — |" in md
    assert "| scratch | 2 | 10 | 0.500 | 1/1 | 0.01 | 0.02 | 0.5 |" in md


def test_each_arm_is_read_against_its_declared_twin():
    """The reference of every arm is the twin its declaration names (asa-coord's is scratch with the coordinate
    channel), whatever its run is called; an arm whose twin did not run is read against nothing."""
    arms = {"scratch": transfer.Tuned(("model.pretrained=null",)),
            "scratch-coord": transfer.Tuned(("model.coord_channel=true",), "scratch-coord"),
            "mae-c4-p1": transfer.Tuned(("model.pretrained=/x/mae.pt",), "mae", 4, 1),
            "run7": transfer.Tuned(("model.pretrained=/x/asa.pt", "model.coord_channel=true"), "asa-coord", 4),
            "mine": transfer.Tuned(("model.pretrained=/x/mine.pt",), "mine")}
    assert transfer.references(arms) == {"scratch": "scratch", "scratch-coord": "scratch", "mae-c4-p1": "scratch",
                                         "run7": "scratch-coord", "mine": "scratch"}
    assert transfer.references({"run7": arms["run7"]}) == {"run7": "run7"}
    assert arms["run7"].identity == {"encoder_arm": "asa-coord", "cohort": 4, "replicate": 0, "group": "asa-coord-c4"}


def run_study(s: transfer.Transfer, clock=None, jobs: int = 1) -> bool:
    """A transfer study in this process, as a stage of asa-study runs it: its units ``jobs`` at once, then its
    tables."""
    from asa.study.common import Clock
    from asa.study.scheduler import run_units

    runs, test, cfg, ids = transfer.plan_runs(s)
    units, times = transfer.units(s, runs, test, ids, str(cfg.data.name)), {}
    complete = run_units(units, jobs, clock or Clock(None), times)
    transfer.results(s, runs, cfg, transfer.run_seconds(s, runs, times))
    return complete and all(run.scores_file.is_file() for run in runs)


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
        return transfer.Transfer(tmp_path / name, SCRATCH_ONLY, data="msd", root=labeled, model="dynunet", crop=16, cases=(2,),
                                 seeds=(0,), test=1, steps=8, device="cpu", n_boot=20,
                                 overrides=("trainer.batch_size=1", "trainer.threads=1"))

    # a call whose budget starts nothing writes nothing; the unit's splits are written as the scheduler starts it, and
    # the run is then trained in-process up to its stop
    assert not run_study(settings("stopped"), clock=Clock(STOP_MARGIN - 1))
    runs, test_ids, cfg, ids = transfer.plan_runs(settings("stopped"))
    [run] = runs
    assert not (run.run_dir / "splits.json").exists()
    for needed in transfer.units(settings("stopped"), runs, test_ids, ids, str(cfg.data.name))[0].inputs:
        needed.write()
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
    # the same run never stopped, trained in this process as the stopped one was (its unit's overrides and splits;
    # a child process would add only its start-up): the next call of run_study finds it trained and scores it
    [whole], whole_test, _, whole_ids = transfer.plan_runs(settings("whole"))
    [unit] = transfer.units(settings("whole"), [whole], whole_test, whole_ids, str(cfg.data.name))[:1]
    for needed in unit.inputs:
        needed.write()
    assert not finetune(compose_config("finetune", list(unit.config[1]))).preempted
    assert run_study(settings("stopped")) and run_study(settings("whole"))
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
def test_runs_scored_each_as_it_is_trained_score_as_in_one_share(tmp_path):
    """Each run is scored by a unit of its own as soon as it is trained: its scores.json is the same, byte for byte,
    as one share scoring every run writes, and a unit scoring one run waits for that run alone."""
    import json
    import shutil

    from asa.data.synthetic.demo import write_demo_dataset

    labeled = write_demo_dataset("msd", tmp_path / "labeled", cases=4, size=16, seed=1)
    s = transfer.Transfer(tmp_path / "own", SCRATCH_ONLY, data="msd", root=labeled, model="dynunet", crop=16,
                          cases=(2,), seeds=(0, 1), test=1, steps=4, device="cpu", n_boot=20, threads=1,
                          overrides=("trainer.batch_size=1",))
    runs, test, cfg, ids = transfer.plan_runs(s)
    units = transfer.units(s, runs, test, ids, str(cfg.data.name))
    assert [u.argv[2] for u in units] == ["asa.cli.finetune", "asa.study.transfer"] * 2
    assert [u.after for u in units[1::2]] == [(u.name,) for u in units[0::2]]
    assert len(runs) == 2 and run_study(s, jobs=2)  # scratch, seeds 0 and 1: each trained, then scored
    assert sorted(p.name for p in (tmp_path / "own" / "logs").glob("scoring-*.log")) == [
        "scoring-scratch-n2-s0.log", "scoring-scratch-n2-s1.log"]
    shutil.copytree(tmp_path / "own" / "runs", tmp_path / "one" / "runs")
    for f in (tmp_path / "one" / "runs").rglob("scores.json"):
        f.unlink()
    share = tmp_path / "one" / "share.json"
    share.write_text(json.dumps({"groups": [[{**dataclasses.asdict(r), "run_dir": str(tmp_path / "one" / "runs" /
                                                                                  r.run_dir.name)}] for r in runs],
                                 "test": list(test), "device": "cpu"}))
    transfer.score_main([str(share)])
    for run in runs:
        assert run.scores_file.read_text() == (tmp_path / "one" / "runs" / run.run_dir.name / "scores.json").read_text()


def test_fused_units_train_each_draw_as_one_and_share_its_seconds_out(tmp_path):
    """With ``fused`` each draw's runs (N, seed) are one asa.cli.fused unit whose group file lists every run's
    overrides; without, a unit per run runs its asa-finetune command; a fused unit's seconds are shared out evenly."""
    arms = {"scratch": transfer.Tuned(("model.pretrained=null",)), "mae": transfer.Tuned(("model.pretrained=x.pt",))}
    runs = [transfer.Run(arm, 2, seed, ("c0", "c1"), (f"seed={seed}", *arms[arm].overrides),
                         tmp_path / "runs" / f"{arm}-n2-s{seed}") for seed in (0, 1) for arm in arms]
    ids = ["c0", "c1", "c2", "c3"]
    alone = transfer.units(transfer.Transfer(tmp_path, arms), runs, ["c2", "c3"], ids, "msd")
    fused = transfer.units(transfer.Transfer(tmp_path, arms, fused=True), runs, ["c2", "c3"], ids, "msd")
    assert [u.argv[2] for u in alone] == ["asa.cli.finetune", "asa.study.transfer"] * 4
    assert [u.argv[2] for u in fused] == ["asa.cli.fused", "asa.study.transfer"] * 2
    assert [u.after for u in fused[1::2]] == [(fused[0].name,), (fused[2].name,)]
    # scored as they trained: each draw's runs a group (predicted as one), each run alone its own
    shares = [[[r["run_dir"] for r in group] for group in unit.inputs[0].content["groups"]]
              for unit in (*alone[1::2], *fused[1::2])]
    folders = [str(r.run_dir) for r in runs]
    assert shares == [*([[f]] for f in folders), [folders[:2]], [folders[2:]]]
    group = {i.path: i.content for i in fused[0].inputs}[tmp_path / "fused" / "fused-n2-s0.json"]
    assert group["runs"] == [[*r.overrides, "resume=auto"] for r in runs[:2]]
    assert {i.path for i in fused[0].inputs} >= {r.run_dir / "splits.json" for r in runs[:2]}
    # each run's overrides, to check and price (asa.study.cost), and the steps each of its runs trains
    assert fused[0].group == tuple(tuple(o) for o in group["runs"]) and fused[0].steps == alone[0].steps
    assert alone[0].group == ()
    assert not fused[0].done()
    seconds = transfer.run_seconds(transfer.Transfer(tmp_path, arms, fused=True), runs,
                                   {fused[0].name: 10.0, fused[2].name: 4.0})
    assert seconds == [5.0, 5.0, 2.0, 2.0]
    # a process per run: each its own unit's; one not recorded (a sitting killed before it kept them), NaN
    alone_seconds = transfer.run_seconds(transfer.Transfer(tmp_path, arms), runs, {alone[2].name: 3.0})
    assert alone_seconds[1] == 3.0 and all(math.isnan(alone_seconds[k]) for k in (0, 2, 3))


def test_a_fused_draw_groups_its_runs_by_network():
    """The coordinate channel's arms change the network (an input channel more): with ``fused`` they are a group of
    their own in each draw, named apart, while arms differing in their encoder and optimiser alone share one."""
    arms = {"scratch": ("model.pretrained=null",), "mae": ("model.pretrained=x.pt", "optim.encoder_lr_scale=0.5"),
            "scratch-coord": ("model.pretrained=null", "model.coord_channel=true"),
            "asa-coord": ("model.pretrained=y.pt", "model.coord_channel=true")}
    out = Path("/study/transfer")
    runs = [transfer.Run(arm, 2, seed, ("c0", "c1"), (f"seed={seed}", f"output_dir={out}/runs/{arm}-n2-s{seed}", *own),
                         out / "runs" / f"{arm}-n2-s{seed}") for seed in (0, 1) for arm, own in arms.items()]
    s = transfer.Transfer(out, {arm: transfer.Tuned(own) for arm, own in arms.items()}, fused=True)
    assert {name: [r.arm for r in group] for name, group in transfer.groups(s, runs).items()} == {
        "transfer/fused-n2-s0": ["scratch", "mae"], "transfer/fused-scratch-coord-n2-s0": ["scratch-coord", "asa-coord"],
        "transfer/fused-n2-s1": ["scratch", "mae"], "transfer/fused-scratch-coord-n2-s1": ["scratch-coord", "asa-coord"]}



def test_the_budget_table_names_every_step_count_its_runs_trained():
    """Runs of one arm and N that trained different counts (a budget read again between them) show both, not the
    first run's alone."""
    def run(steps: int) -> dict:
        return {"arm": "scratch", "n": 8, "steps": steps, "final_loss": 0.5, "plateau": True}

    assert "| scratch | 8 | 2400 | 0.500 ± 0.000 | 2/2 |" in tables.budget_table([run(2400), run(2400)])
    assert "| scratch | 8 | 1200/2400 | 0.500 ± 0.000 | 2/2 |" in tables.budget_table([run(2400), run(1200)])
