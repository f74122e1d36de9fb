"""asa-study's plan before anything is written: every option's range refused in one line with --out untouched,
unreadable labeled cases named with asa-study's own way on, the units at once × threads within the cores, the GPU
scale without a GPU, a bad override refused before anything trains, a dry run that writes nothing and prices its
units from a run timed on this machine (`asa.study.cost`)."""
from __future__ import annotations

import dataclasses
import math
import os
import re
from pathlib import Path

import pytest
import torch

from asa.data.synthetic.demo import write_demo_dataset
from asa.study import study
from asa.study.cost import Costs, StepCost, validation_rounds, window_costs
from asa.study.scheduler import JsonFile, Unit
from asa.study.stages import _makespan, _modes_line


@pytest.fixture(scope="module")
def labeled(tmp_path_factory):
    # 16³: no plan here depends on the cases' size, and the dry run times its fine-tuning units on 16³ crops of them
    return write_demo_dataset("msd", tmp_path_factory.mktemp("plan") / "labeled", cases=9, size=16, seed=1)


def _refused(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as refused:
        study.main(argv)
    said = capsys.readouterr().err.strip()
    assert refused.value.code == 2 and len(said.splitlines()) == 1 and "Traceback" not in said, said
    return said


@pytest.mark.parametrize("option, expected", [
    (["--folds", "0"], "--folds 0: expected at least 2"),
    (["--pretrain-runs", "0"], "--pretrain-runs 0: expected at least 1"),
    (["--time-budget", "-5"], "--time-budget -5.0: expected seconds above 0"),
    (["--jobs", "-1"], "--jobs -1: expected at least 0 (0: as many units at once as the machine holds)"),
    (["--cases", "0", "4"], "--cases 0: expected at least 1"),
    (["--repeats", "0"], "--repeats 0: expected at least 1"),
    (["--threads", "0"], "--threads 0: expected at least 1"),
    (["--n-boot", "0"], "--n-boot 0: expected at least 1"),
])
def test_an_option_out_of_range_is_refused_in_one_line_before_anything_is_written(tmp_path, capsys, labeled, option,
                                                                                  expected):
    out = tmp_path / "out"
    said = _refused(capsys, ["--data", "msd", "--root", str(labeled), "--arms", "supervised", "--out", str(out),
                             *option])
    assert said == expected and not out.exists()


def test_unreadable_labeled_cases_are_named_with_asa_study_s_own_way_on(tmp_path, capsys):
    root = write_demo_dataset("msd", tmp_path / "bad", cases=3, size=16, seed=1)
    for image in sorted((root / "imagesTr").iterdir()):
        image.write_text("not an image")
    said = _refused(capsys, ["--data", "msd", "--root", str(root), "--arms", "supervised", "--out",
                             str(tmp_path / "out")])
    assert said.startswith(f"--root {root}: 3 labeled case(s) cannot be read (") and "; and 2 more)" in said
    assert "no other case is there" in said and not (tmp_path / "out").exists()
    one = write_demo_dataset("msd", tmp_path / "one", cases=3, size=16, seed=1)
    first = sorted((one / "imagesTr").iterdir())[0]
    first.write_text("not an image")
    said = _refused(capsys, ["--data", "msd", "--root", str(one), "--arms", "supervised", "--out",
                             str(tmp_path / "out")])
    assert said.endswith("fix or remove them, or pass --override data.on_bad_case=skip to leave them out of every run")
    assert "1 labeled case(s) cannot be read (" in said and not (tmp_path / "out").exists()


def test_the_units_at_once_share_the_cores_and_more_threads_than_cores_are_refused(tmp_path, capsys, labeled,
                                                                                    monkeypatch):
    cores = len(os.sched_getaffinity(0))
    argv = ["--data", "msd", "--root", str(labeled), "--arms", "supervised", "--out", str(tmp_path / "out")]
    args = study.build_parser().parse_args([*argv, "--jobs", "2"])
    assert study.Study.from_args(args, {}).threads == max(1, cores // 2)  # not torch's default of every core each
    said = _refused(capsys, [*argv, "--jobs", "2", "--threads", str(cores)])
    assert said.startswith(f"--jobs 2 × --threads {cores}: {2 * cores} torch threads on {cores} usable core(s)")


def test_the_gpu_scale_without_a_gpu_is_refused_and_its_dry_run_says_where_it_is_priced(tmp_path, capsys, labeled,
                                                                                         monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    said = _refused(capsys, ["--data", "msd", "--root", str(labeled), "--arms", "supervised", "--out",
                             str(tmp_path / "out"), "--scale", "gpu"])
    assert said.startswith("--scale gpu: no CUDA device here") and "--dry-run" in said
    assert not (tmp_path / "out").exists()


def test_a_bad_override_is_refused_before_anything_trains_or_is_written(tmp_path, capsys, labeled):
    out = tmp_path / "out"
    for dry in ([], ["--dry-run"]):
        said = _refused(capsys, ["--data", "msd", "--root", str(labeled), "--arms", "supervised", "--quick", "--out",
                                 str(out), "--test", "3", "--override", "model.mask_ratio=0.6", *dry])
        assert said.startswith("--override model.mask_ratio=0.6: the fine-tuning config does not compose: ") and \
            "mask_ratio" in said
    assert not out.exists()  # refused before anything was written


@pytest.mark.slow  # asa-study's whole plan twice (its timed runs replaced): seconds of config composing
def test_a_dry_run_prices_the_transfer_stage_at_the_budget_cap(tmp_path, capsys, labeled, monkeypatch):
    cost = StepCost(fixed=1.0, step=0.5, round=0.0, val_cases=1, score=1.0)
    monkeypatch.setattr(study, "measure", lambda units, device, moved: Costs("cpu (test)", {"finetune": cost}))
    argv = ["--data", "msd", "--root", str(labeled), "--arms", "supervised", "--quick", "--test", "3",
            "--pilot-steps", "40", "--seeds", "0", "--out", str(tmp_path / "out"), "--dry-run"]
    # without a cap the transfer stage plans the pilot's whole length: the gpu scale's plan in test_study.py says so
    for cap, steps in ((["--budget-cap", "12"], 12), (["--budget-cap", "400"], 40)):
        assert study.main([*argv, *cap]) == 0
        (line,) = [x for x in capsys.readouterr().out.splitlines() if x.startswith("[study] plan: transfer:")]
        # the pilot's length, or the cap where that is shorter; the positive control trains the pilot's 40 beside them
        assert f" unit(s) of {'/'.join(map(str, sorted({steps, 40})))} steps, " in line
    assert not (tmp_path / "out").exists()


def test_a_timed_run_is_read_in_logged_windows_the_warm_up_with_the_start_the_slowest_the_round():
    # 22 steps logged 4 at a time (the last window: 2): warm-up in the first, the middle round in the fourth
    per_step = [0.5, 0.2, 0.2, 0.45, 0.2, 0.25]
    wall = 3.0 + 22 * 0.2 + 4 * 0.3 + 4 * 0.25 + 2 * 0.05  # start and end 3 s, the steps, the windows' extra
    fixed, step, round_ = window_costs(per_step, 4, 22, wall)
    assert step == 0.2 and fixed == pytest.approx(3.0 + 4 * 0.3) and round_ == pytest.approx(1.0)
    # a window a step (the dry run's unit of 2-11 steps): the first step with the start, the slowest the round
    assert window_costs([1.0, 0.2, 0.7, 0.2], 1, 4, 5.0) == pytest.approx((3.7, 0.2, 0.5))


def test_a_unit_s_planned_seconds_are_its_start_steps_and_validation_rounds():
    cost = StepCost(fixed=10.0, step=0.5, round=8.0, val_cases=4, score=3.0)
    costs = Costs("cpu (test)", {"finetune": cost})
    overrides = ("data=msd", "model=resenc", "trainer.epochs=100", "trainer.val_every=10", "trainer.val_min_steps=0")
    # 100 epochs of 4 steps, a round every 10 epochs: 9 before the last (the last is in the start-and-end cost)
    assert validation_rounds("finetune", overrides, 400) == 9
    assert validation_rounds("finetune", (*overrides[:-1], "trainer.val_min_steps=100"), 400) == 3  # 100, 200, 300
    split = JsonFile(Path("splits.json"), {"train": ["a", "b"], "val": ["c", "d"], "test": []})
    unit = Unit("u", (), lambda: False, Path("log"), inputs=(split,), config=("finetune", overrides), steps=400)
    assert costs.seconds(unit) == 10.0 + 400 * 0.5 + 9 * 2 * 2.0  # its own 2 validation cases at 2 s each
    silent = dataclasses.replace(unit, inputs=(JsonFile(Path("splits.json"), {"train": ["a"], "val": [], "test": []}),))
    assert costs.seconds(silent) == 10.0 + 400 * 0.5  # no validation case: no round
    scoring = Unit("s", (), lambda: False, Path("log"), cases=6)
    assert costs.seconds(scoring) == 10.0 + 6 * 3.0  # its start and each case scored
    pretraining = Unit("p", (), lambda: False, Path("log"), config=("pretrain", ("trainer.epochs=1",)), steps=10)
    assert math.isnan(costs.seconds(pretraining))  # not timed: never a figure from elsewhere
    assert _makespan([(3.0, 1.0, ()), (1.0, 1.0, ()), (1.0, 1.0, ()), (1.0, 1.0, ())], 2) == 3.0
    assert _makespan([(2.0, 1.0, ())] * 3, 2) == 4.0
    assert _makespan([], 2) == 0.0
    # three runs trained as one (--fused): priced by the fused group's own timed step and round, not a run's
    fused = dataclasses.replace(unit, group=(overrides,) * 3)
    assert math.isnan(costs.seconds(fused))  # no group of three timed
    group = StepCost(fixed=12.0, step=0.9, round=20.0, val_cases=4, runs=3)  # a round: the three runs' in turn
    both = Costs("cpu (test)", {"finetune": cost, "fused-3": group})
    assert both.seconds(fused) == 12.0 + 400 * 0.9 + 9 * 2 * 5.0
    assert both.seconds(unit) == costs.seconds(unit)  # a run alone keeps its own price


@pytest.mark.slow  # two short timed runs (fine-tuning, pretraining) of the quick scale's units, for both dry runs
def test_a_dry_run_writes_nothing_and_prices_every_stage_on_this_machine(tmp_path, capsys, labeled, monkeypatch):
    cohort = write_demo_dataset("bids", tmp_path / "cohort", cases=4, size=32, seed=5)
    out = tmp_path / "study"
    # the fine-tuning units on 16³ crops of the 16³ labeled cases, the pretraining on 32³ (its 16³ mask blocks are at
    # most half the crop): the smallest units of each kind, timed all the same
    argv = ["--pretrain-data", str(cohort), "--data", "msd", "--root", str(labeled), "--out", str(out), "--quick",
            "--test", "3", "--pilot-steps", "6", "--pretrain-steps", "2", "--arms", "mae", "noise", "supervised",
            "--device", "cpu", "--seeds", "0", "--pretrain-runs", "1", "--crop", "16",
            "--pretrain-crop", "32"]  # a unit of each kind: each is priced
    real_measure, timed = study.measure, []

    def measure_once(units, device, moved):  # the timing is the first dry run's: the second one's plan reads it again
        if not timed:
            timed.append(real_measure(units, device, moved))
        return timed[0]

    monkeypatch.setattr(study, "measure", measure_once)
    for seed in ("0", "1"):  # nothing recorded: another --seed is no other study's folder
        assert study.main([*argv, "--seed", seed, "--dry-run"]) == 0
        assert not out.exists()
        said = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[study] plan:")]
        assert said[0].startswith("[study] plan: priced on cpu (") and "finetune: " in said[0] and "pretrain: " in said[0]
        assert "s to score a case" in said[0]
        stages = {line.split(":")[1].strip(): float(line.rsplit(": ", 1)[1].removesuffix(" min"))
                  for line in said[1:-1]}
        assert set(stages) == {"pilot", "pretraining", "transfer"}
        assert all(minutes >= 0 for minutes in stages.values()) and sum(stages.values()) > 0  # every unit priced
        assert said[-1].endswith("nothing was run (--dry-run)")
        # the stages add up, each line rounded to 0.1 min: within half of that per stage
        assert abs(float(said[-1].split()[2]) - sum(stages.values())) <= 0.05 * len(stages) + 1e-9


@pytest.mark.slow  # a short timed fused run of two runs and one of a run alone (the pilot's)
def test_a_fused_dry_run_prices_the_draws_from_a_fused_run_timed_here(tmp_path, capsys, labeled):
    argv = ["--data", "msd", "--root", str(labeled), "--out", str(tmp_path / "out"), "--quick", "--test", "3",
            "--pilot-steps", "6", "--arms", "supervised", "--device", "cpu", "--seeds", "0", "--crop", "16",
            "--fused", "--dry-run"]
    assert study.main(argv) == 0 and not (tmp_path / "out").exists()
    out = capsys.readouterr().out.splitlines()
    said = [line for line in out if line.startswith("[study] plan:")]
    assert "finetune: " in said[0] and "finetune, 2 runs as one: " in said[0]  # scratch and supervised, one draw
    fused_step = float(said[0].split("finetune, 2 runs as one: ")[1].split(" s a step")[0].rsplit(", ", 1)[1])
    assert fused_step > 0  # the group's step, timed here
    (stage,) = [line for line in out if line.startswith("[study] transfer: ")]  # on the CPU, with a word on it
    assert "trained as one unit (--fused) (on a CPU, where --fused was measured no faster" in stage
    transfer = next(line for line in said if line.startswith("[study] plan: transfer:"))
    # priced from that step (an unpriced unit reads nan); a few seconds here, so it may round to 0.0 min
    assert not transfer.endswith("nan min") and float(transfer.rsplit(": ", 1)[1].removesuffix(" min")) >= 0
    # the plan with --fused is the study's; the modes line sets it beside the plan a process per run
    (modes,) = [line for line in said if line.startswith("[study] plan: modes: ")]
    assert modes.split("modes: ")[1].split(" min with --fused")[0] == said[-1].split()[2]
    assert "min a process per run: " in modes


@pytest.mark.slow  # asa-study's whole plan twice (its timed runs replaced): seconds of config composing
def test_a_fused_dry_run_says_which_mode_is_the_faster_from_the_same_timed_steps(tmp_path, capsys, labeled,
                                                                                 monkeypatch):
    alone = StepCost(fixed=1.0, step=0.5, round=0.0, val_cases=1, score=1.0)
    argv = ["--data", "msd", "--root", str(labeled), "--arms", "supervised", "--quick", "--test", "3",
            "--pilot-steps", "40", "--seeds", "0", "--out", str(tmp_path / "out"), "--fused", "--dry-run"]
    minutes = {}
    for group_step, verdict in ((1.2, "--fused is the slower here: run without it"), (0.6, "--fused is the faster")):
        group = StepCost(fixed=1.0, step=group_step, round=0.0, val_cases=1, runs=2)  # scratch and supervised
        monkeypatch.setattr(study, "measure",
                            lambda units, device, moved: Costs("cpu (test)", {"finetune": alone, "fused-2": group}))
        assert study.main(argv) == 0
        (modes,) = [x for x in capsys.readouterr().out.splitlines() if x.startswith("[study] plan: modes: ")]
        assert verdict in modes
        read = re.search(r"modes: ([\d.]+) min with --fused against ([\d.]+) min a process per run", modes)
        minutes[group_step] = float(read[1]), float(read[2])
    # a process per run is priced alike both times; the fused plan moves with the group's step: the one draw's (a
    # fixed split, seed 0) 40 steps, 0.6 s a step apart
    assert minutes[1.2][1] == minutes[0.6][1]
    assert minutes[1.2][0] - minutes[0.6][0] == pytest.approx(40 * 0.6 / 60, abs=0.1)
    assert not (tmp_path / "out").exists()


def test_the_modes_line_reads_nan_as_no_verdict():
    assert "neither is priced the faster" in _modes_line(math.nan, 60.0)
    assert "the two are priced the same" in _modes_line(60.0, 60.0)
