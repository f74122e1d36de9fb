"""asa-study (asa.study.study): the split and its held-out positive control, the overlap check that refuses a test
case planted in the pretraining cohort (exit 2, before anything trains), refusals of a changed study folder (exit 2,
old -> new), the plateau check, the report's verdicts and instrument checks, and the installed script end to end
from a folder outside the checkout, stopped by SIGTERM with no child left, on a labeled set it cross-validates, then
resumed in a new folder from its progress record; a
store of asa-preprocess as the cohort, and the positive control on the T1 alone, through the adapted stem, when the
pretraining reads the T1 alone."""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from asa.cli.study import main as study_script
from asa.data import discover, get_task
from asa.data.synthetic.demo import write_demo_dataset
from asa.study import readings, report, stages, study
from asa.study.common import record_settings
from asa.study.arms import PILOT
from asa.study.checks import channel_lines, check_overlap, cohort_check_record, skull_lines
from asa.study.cohort import CohortList, cohort_channels, cohort_lists, cohort_order, noise_volumes, pretraining_channels
from asa.study.cost import Costs, StepCost
from asa.study.runs import FixedSplit, Network, SCALES, finetune_arms, labeled_split, overlap_overrides, parse_network, plan_labeled, plan_pretraining, pretraining_argv, recipe_overrides, supervised_channel, cases_text, units_at_once
from asa.study.readout import PLATEAU_TOL, loss_plateau, optimiser_progress
from scripts import record_study

QUICK = ["--scale", "quick", "--n-boot", "50", "--test", "3"]  # the fixed split of 9 cases (3 test, 2 val, 2, 2)
FIXED = dataclasses.replace(SCALES["quick"], test=3)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    base = tmp_path_factory.mktemp("study-data")
    cohort = write_demo_dataset("bids", base / "cohort", cases=4, size=32, seed=5)
    labeled = write_demo_dataset("msd", base / "labeled", cases=9, size=32, seed=1)
    return cohort, labeled


def test_the_split_holds_the_positive_control_apart_or_cross_validates_a_smaller_set(data):
    cases = discover("msd", data[1])
    scale = FIXED  # 3 test + 2 val + N 2 + 2 for the control = 9
    split = labeled_split(cases, scale, seed=0)
    parts = [set(split.test), set(split.val), set(split.pool), set(split.supervised)]
    assert [len(p) for p in parts] == [3, 2, 2, 2] and set().union(*parts) == {c.id for c in cases}
    assert sum(len(p) for p in parts) == len(cases)  # disjoint
    assert isinstance(labeled_split(cases[:8], scale, seed=0, control=False), FixedSplit)
    # too few for the fixed split and the control: cross-validated (2 folds at the quick scale), never thinned
    small = labeled_split(cases[:8], scale, seed=0)
    assert small.test == tuple(sorted(c.id for c in cases[:8])) and len(small.draws) == 2
    assert tuple(sorted(i for d in small.draws for i in d.test)) == small.test  # every case scored once
    for d in small.draws:
        assert not set(d.test) & (set(d.val) | set(d.pool)) and len(d.val) == 2 and len(d.pool) == 2
    with pytest.raises(SystemExit) as err:  # a 3-case training part holds no 2 validation + 2 training cases
        labeled_split(cases[:6], scale, seed=0)
    assert err.value.code == 2
    # a real scale reads no answer from fewer than 16 scored cases: refused in one line, not thinned
    cpu = SCALES["cpu"]
    with pytest.raises(SystemExit, match="cross-validation would score 9 per arm, fewer than the 16"):
        labeled_split(cases, cpu, seed=0)
    with pytest.raises(SystemExit, match="--test 6: fewer than the 16 test cases"):
        labeled_split(cases * 8, dataclasses.replace(cpu, test=6), seed=0)


def test_a_changed_study_folder_is_refused_with_old_and_new_values(tmp_path, capsys):
    record_settings(tmp_path, {"seed": 0, "scale": {"cases": [2]}}, grows=("scale.cases",))
    record_settings(tmp_path, {"seed": 0, "scale": {"cases": [2, 8]}}, grows=("scale.cases",))  # may grow
    with pytest.raises(SystemExit) as err:
        record_settings(tmp_path, {"seed": 1, "scale": {"cases": [2, 8]}}, grows=("scale.cases",))
    assert err.value.code == 2 and "seed: 0 -> 1" in capsys.readouterr().err


@pytest.mark.slow  # the console script's main, in this process (a child process only added its start-up: 8.3 -> 1 s)
def test_a_test_case_planted_in_the_pretraining_cohort_is_refused_before_anything_trains(data, tmp_path, capsys,
                                                                                         monkeypatch):
    cohort, labeled = data
    split = labeled_split(discover("msd", labeled), FIXED, seed=0)
    planted = tmp_path / "cohort.csv"  # the cohort's scans and the T1 channel of one test case, renamed
    cases = discover("bids", cohort)
    test_case = next(c for c in discover("msd", labeled) if c.id == split.test[0])
    t1 = next(p for ch, p in test_case.images.items() if ch.lower().startswith("t1") and "gd" not in ch.lower())
    planted.write_text("id,path\n" + "".join(f"{c.id},{c.images['t1']}\n" for c in cases) + f"someone,{t1}\n")
    out = tmp_path / "out"
    monkeypatch.chdir(tmp_path)
    threads, handlers = torch.get_num_threads(), {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    with pytest.raises(SystemExit) as exited:
        study_script(["--pretrain-data", str(planted), "--data", "msd", "--root", str(labeled), "--out", str(out),
                      *QUICK])
    stderr = capsys.readouterr().err
    assert exited.value.code == 2, stderr[-2000:]
    assert f"{test_case.id} = someone" in stderr and "--accept-overlap" in stderr
    # refused before the study takes the process over: its threads and signal handlers as they were
    assert torch.get_num_threads() == threads and {s: signal.getsignal(s) for s in handlers} == handlers
    assert not (out / "pretrain").exists() and not (out / "pilot").exists()  # nothing trained


def test_the_plateau_check_can_fail():
    assert loss_plateau([1.0, 0.6, 0.5, 0.49, 0.488, 0.487, 0.4869, 0.4868])["plateau"] is True
    falling = loss_plateau([1.0, 0.8, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1])
    # the 6th of 8 points (3/4 of the run) is 0.3, the last quarter reaches 0.1: a drop of 2/3
    assert falling["plateau"] is False and falling["loss_drop"] == pytest.approx((0.3 - 0.1) / 0.3)
    assert loss_plateau([1.0, 0.5])["plateau"] is None
    # the negative control's curve on the H100 rerun: it fell, then climbed back (memorised noise). Its export is the
    # lowest round's (best.pt), which no longer fell: levelled, its rise measured
    climbed = loss_plateau([0.97, 0.90, 1.10, 1.25, 1.33, 1.36, 1.37, 1.38])
    assert climbed["plateau"] is True and climbed["loss_drop"] < 0.05
    assert climbed["loss_rise"] == pytest.approx((1.38 - 0.90) / 0.90)


def test_the_plateau_check_reads_the_curve_up_to_the_export_and_fails_an_early_one():
    # exported at its lowest round, the 6th of 10, while the loss still fell into it: flagged, though the whole
    # curve (climbing back after it) would pass
    curve = [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.55, 0.6, 0.65, 0.7]
    progress = [(i + 1) / 10 for i in range(10)]
    assert loss_plateau(curve, progress=progress)["plateau"] is True  # the whole curve: levelled, its rise measured
    read = loss_plateau(curve[:6], progress=progress[:6], exported_at=0.6)
    assert read["plateau"] is False and not read["early"]
    # eighths of the progress up to the export: rounds 1-6 fall in eighths 2, 3, 4, 6, 7, 8; the sixth holds 0.7
    assert read["loss_drop"] == pytest.approx((0.7 - 0.5) / 0.7)
    # a run exported in the first eighth of its summed lr (the noise control's lowest round, at step 144 of 2,400) is
    # flagged however flat its few rounds were, also with fewer than 4 of them
    early = loss_plateau([0.9, 0.9, 0.9, 0.9], progress=[0.02, 0.04, 0.06, 0.08], exported_at=0.08)
    assert early["plateau"] is False and early["early"] and early["loss_drop"] == 0.0
    assert loss_plateau([0.9, 0.8], progress=[0.03, 0.06], exported_at=0.06)["plateau"] is False
    assert loss_plateau([0.9, 0.8], progress=[0.2, 0.4], exported_at=0.4)["plateau"] is None  # unchecked


def test_the_plateau_check_reads_a_flat_noisy_held_out_loss_as_levelled_and_a_falling_one_as_falling():
    """At a high lr the held-out masked loss moves a few percent between evaluations (a resenc-tiny mae run of 2,400
    steps: 0.570 to 0.578 between neighbours while its median held at 0.571). One point against the lowest of the
    last quarter's many then read a flat curve as still falling; medians over eighths of the progress do not, and a
    curve still falling 4.6 % over its last quarter is flagged whatever its noise."""
    from asa.train.schedule import lr_at

    cosine = {"name": "cosine", "total_steps": 2400, "warmup_steps": 150, "base_lr": 3e-3}
    steps = list(range(16, 2401, 16))
    progress = np.asarray(optimiser_progress(steps, cosine))
    lr = np.asarray([lr_at(t, total_steps=2400, warmup_steps=150, base_lr=3e-3, schedule="cosine") for t in steps])
    flat = 0.57 + 0.2 * np.exp(-progress / 0.1)  # levelled long before the last quarter
    falling = 0.57 * (1 + 0.2 * (1 - progress))  # 4.6 % lower at the end than at 3/4 of the progress
    levelled = {"flat": 0, "falling": 0}
    one_point = 0
    for seed in range(200):
        rng = np.random.default_rng(seed)
        noise = 1 + rng.normal(0, 0.02, len(steps)) * lr / 3e-3 + rng.normal(0, 0.002, len(steps))
        for name, mean in (("flat", flat), ("falling", falling)):
            levelled[name] += loss_plateau(list(mean * noise), progress=list(progress))["plateau"]
        curve = flat * noise  # the reading before: one point against the lowest after it, the last against the lowest
        first = int(np.searchsorted(progress, 0.75, side="right"))
        drop = (curve[first - 1] - curve[first:].min()) / curve[first - 1]
        one_point += drop < PLATEAU_TOL and (curve[-1] - curve.min()) / curve.min() < PLATEAU_TOL
    assert levelled == {"flat": 200, "falling": 0}
    assert one_point < 20  # the single-point reading flagged the flat curve in over 90 % of the draws


def _scores(delta: float, arm: str, spread: float = 0.0) -> list[dict]:
    rows = []
    for seed in (0, 1):
        for k, case in enumerate("abcdef"):
            base = 0.5 + 0.01 * k
            rows.append({"arm": "scratch", "n": 2, "seed": seed, "case": case, "Dice_mean": base, "NSD_mean": base})
            d = delta + spread * (k - 2.5)
            rows.append({"arm": arm, "n": 2, "seed": seed, "case": case, "Dice_mean": base + d, "NSD_mean": base + d})
    return rows


def test_verdicts_follow_the_ci_and_failed_instruments_are_named():
    assert readings.verdict(0.01, 0.05) == "helped" and readings.verdict(-0.05, -0.01) == "hurt"
    assert readings.verdict(-0.01, 0.02) == "no difference"
    rows = readings.contrast_rows(_scores(0.1, "supervised") + [r for r in _scores(0.02, "noise-c4") if r["arm"] != "scratch"],
                                [4], n_boot=200)
    by_arm = {r.arm: r for r in rows}
    assert by_arm["supervised"].settled.verdict == "helped"
    assert by_arm["supervised"].estimates["Dice_mean"][0] == pytest.approx(0.1)
    assert readings.instrument_faults({"test": {"lesion": 0.7}}) == []  # the controls fail one kind of reading
    assert readings.control_faults(rows, min_effect=0.01) == readings.Controls(
        nulls={}, gains={2: "the negative control is not shown small: a gain over scratch may be the recipe's"})
    flat = readings.contrast_rows(_scores(0.0, "supervised", spread=0.02), [], n_boot=200)
    assert flat[0].settled.verdict == "inconclusive"  # its CI holds 0 and its bound allows a gain of the minimum effect
    faults = readings.instrument_faults({"test": {"lesion": 0.05}})
    assert len(faults) == 1 and "does not learn the task" in faults[0]
    assert readings.control_faults(flat, min_effect=0.01).nulls == {2: "the positive control did not move"}


def _stat(pid: int | str) -> tuple[str, int] | None:
    """A process's state letter and parent from /proc; None once it is gone."""
    try:
        state, parent = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[:2]
    except (OSError, ValueError):
        return None
    return state, int(parent)


def _alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"


def _descendants(pid: int) -> list[int]:
    """The live processes below ``pid``: its children (a unit, the fork server the units start from), theirs, ..."""
    stats = {int(p.name): _stat(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()}
    parents = {child: stat[1] for child, stat in stats.items() if stat is not None and stat[0] != "Z"}
    found, frontier = [], {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        found += frontier
    return found


def _units_of(pid: int, out: Path) -> list[int]:
    """The processes below ``pid`` that write to a log in the study folder ``out``: its running units."""
    found = []
    for child in _descendants(pid):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{child}/fd/1").startswith(str(out)):
                found.append(child)
    return found


@pytest.mark.slow
@pytest.mark.timeout(1800)  # twelve tiny units one after another: minutes on an idle machine, more on a shared one
def test_the_installed_script_runs_a_quick_study_from_outside_the_checkout_and_sigterm_stops_every_child(data, tmp_path):
    """The installed asa-study, started in a folder outside the checkout, is stopped by SIGTERM while its first units
    run (exit 143, every child waited for, nothing written after its exit); the same command then runs the study to
    its report. Its 18 labeled cases are fewer than the quick scale's fixed split needs (16 test + 2 validation + N 2
    + the positive control's 2 = 22), so the study is cross-validated (2 folds × 1 repeat), the positive control
    nested in each draw: every case scored once by each arm, the draws stated on the page. One study shows both: a
    cross-validated study of its own would run the pilot, the positive control and the transfer stage again (9 units
    more)."""
    cohort = data[0]
    # 16³ labeled cases fine-tuned on 16³ crops (the pretraining at 32³ on the cohort), a torch thread a unit: the
    # stop, the resume and the design are under test, not the segmentation; the pilot and the positive control at 6
    # steps (the pilot's six validation rounds: the least its budget reads), the fine-tuning runs at the 10 they take
    # at least
    labeled = write_demo_dataset("msd", tmp_path / "labeled", cases=18, size=16, seed=3)
    out = tmp_path / "study"
    argv = ["asa-study", "--pretrain-data", str(cohort), "--data", "msd", "--root", str(labeled), "--out", str(out),
            "--scale", "quick", "--test", "16", "--n-boot", "50", "--arms", "mae", "supervised",
            "--pretrain-steps", "2", "--pilot-steps", "6", "--crop", "16", "--pretrain-crop", "32", "--threads", "1",
            "--pretrain-runs", "1",  # one pretraining run of the arm: the stop and the resume are under test
            "--head-start", "5"]  # every fine-tuning run also scored at step 5 of its 10
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    stopped = subprocess.Popen(argv, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    deadline, units = time.monotonic() + 240, []
    while time.monotonic() < deadline and not units:  # the first unit is running
        time.sleep(0.2)
        units = _units_of(stopped.pid, out)
    assert units, "no unit started"
    time.sleep(1)
    units, below = _units_of(stopped.pid, out), _descendants(stopped.pid)
    stopped.send_signal(signal.SIGTERM)
    assert stopped.wait(300) == 143
    assert not [u for u in units if _alive(u)]  # every unit waited for
    assert "SIGTERM: stopped" in stopped.stderr.read()
    assert not [p for p in below if _alive(p)]  # nor the fork server or the resource tracker outlive it
    written = {f: f.stat().st_mtime_ns for f in out.rglob("*") if f.is_file()}
    time.sleep(3)
    assert {f: f.stat().st_mtime_ns for f in out.rglob("*") if f.is_file()} == written  # nothing written after the exit
    done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Cross-validation: the 18 labeled cases are fewer than a fixed split needs" in done.stdout
    assert "nested in each of the 2 draws" in done.stdout
    page = (out / "report" / "README.md").read_text()
    assert "## Answers" in page and "Overlap of the pretraining cohort" in page and "positive control" in page.lower()
    assert "by 2-fold cross-validation × 1 repeat(s): every one of the 18 labeled cases scored 1 time(s)" in page
    assert "Distinct labeled draws per arm: 2" in page
    assert (out / "report" / "dice_vs_n.svg").read_text().startswith("<?xml")
    # both sittings counted, the stopped one with its stage's seconds; the design registered once, read once
    times = json.loads((out / "times.json").read_text())
    assert [s["ended"] for s in times["sittings"]] == ["stopped by SIGTERM", "finished"]
    assert times["stages"]["pilot"] > 0
    registered = json.loads((out / "design.json").read_text())
    assert len(registered["looks"]) == 1 and not registered["changes"] and "extended after a look" not in page
    contrasts = json.loads((out / "report" / "contrasts.json").read_text())
    assert {c["arm"] for c in contrasts} >= {"supervised", "mae-c4"} and all("verdict" in c for c in contrasts)
    with open(out / "transfer" / "scores.csv", newline="") as f:  # the record users read
        scores = list(csv.DictReader(f))
    for arm in ("scratch", "supervised", "mae-c4"):  # every case scored once by each arm
        assert sorted(r["case"] for r in scores if r["arm"] == arm) == sorted(c.id for c in discover("msd", labeled))
    # the same runs at their head start: each run's state kept at step 5, scored on the same cases, read on the page
    with open(out / "transfer" / "head-start" / "scores.csv", newline="") as f:
        early = list(csv.DictReader(f))
    assert sorted((r["arm"], r["case"]) for r in early) == sorted((r["arm"], r["case"]) for r in scores)
    assert [r["Dice_mean"] for r in early] != [r["Dice_mean"] for r in scores]  # five steps apart
    assert all(p.name == "kept_00000005.pt" for p in (out / "transfer" / "runs").glob("*/checkpoints/kept_*.pt"))
    assert len(list((out / "transfer" / "runs").glob("*/checkpoints/kept_00000005.pt"))) == 6
    assert "## At the head start (step 5 of 10)" in page
    checks = json.loads((out / "checks" / "checks.json").read_text())
    for g, draw in enumerate(checks["split"]["draws"]):
        control = json.loads((out / "pretrain" / f"supervised-s{g}" / "splits.json").read_text())
        assert not set(control["train"]) & set(draw["test"])  # the control never saw the fold it is scored on
    # the folder lost with its machine: its progress record, restored into a new folder, resumes with the same
    # command; no fine-tuning run or positive control trains again (the pretraining does: the page reads its runs)
    assert record_study.main(["--progress", str(out), str(tmp_path / "progress")]) == 0
    again = tmp_path / "restored"
    assert record_study.main(["--restore", str(tmp_path / "progress"), str(again)]) == 0
    argv[argv.index(str(out))] = str(again)
    resumed = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert sorted(p.name for p in (again / "logs").rglob("*.log")) == ["mae-c4.log"]
    for name in ("transfer/scores.csv", "transfer/head-start/scores.csv"):
        assert (again / name).read_bytes() == (out / name).read_bytes()
    assert len(json.loads((again / "design.json").read_text())["looks"]) == 1  # the page read again: no new look


def test_whole_heads_are_said_before_anything_trains(tmp_path):
    import nibabel as nib
    import numpy as np

    from asa.data.case import Case

    def case(name: str, background: float) -> Case:
        image = np.full((16, 16, 16), background, np.float32)
        image[4:12, 4:12, 4:12] = 1.0  # the brain
        nib.save(nib.Nifti1Image(image, np.eye(4)), tmp_path / f"{name}.nii.gz")
        return Case(name, {"t1": tmp_path / f"{name}.nii.gz"}, None, {})

    lines = skull_lines({"--pretrain-data": [case("head", 0.05)], "--root": [case("stripped", 0.0)]})
    assert len(lines) == 1 and lines[0].startswith("--pretrain-data: the scans are not skull-stripped (100%")
    assert "asa-prepare" in lines[0]  # the command that strips them



FOUR = ("t1", "t1ce", "t2", "flair")
MSD = ("FLAIR", "T1w", "T1gd", "T2w")  # the demo msd set's channels, in its dataset.json's order
# the BIDS file each of them means (hand-written)
MEANS = {"FLAIR": "_FLAIR.nii.gz", "T1w": "_T1w.nii.gz", "T1gd": "_ce-gadolinium_T1w.nii.gz", "T2w": "_T2w.nii.gz"}
BEFORE = ("data=bids", "data.layout=filelist", "data.num_workers=0", "data.split.ratios=[0.8,0.2,0.0]",
          "optim=adamw_demo", "trainer.progress=false", "trainer.panel_every=0", "probe.every=0",
          "trainer.val_min_steps=0", "seed=0", "resume=auto")  # every epoch validated: the plateau check's rounds


@pytest.fixture(scope="module")
def four(tmp_path_factory):
    return write_demo_dataset("bids", tmp_path_factory.mktemp("study-four") / "cohort", cases=4, size=32, seed=5,
                              contrasts=FOUR)


def test_the_pretraining_channels_are_the_fine_tuning_ones_in_their_order_or_the_t1(capsys):
    assert pretraining_channels(FOUR, MSD, None) == pretraining_channels(FOUR, MSD, "all") == \
        ["flair", "t1", "t1ce", "t2"]
    assert pretraining_channels(FOUR, MSD, "t1") == ["t1"]
    assert pretraining_channels(("t1", "t2"), MSD, None) == ["t1"]  # a channel lacking: the T1
    assert pretraining_channels(("t1",), ("T1w",), None) == ["t1"]
    assert pretraining_channels(FOUR, ("t2", "T1"), None) == ["t2", "t1"]
    with pytest.raises(SystemExit) as err:
        pretraining_channels(("t1", "t2"), MSD, "all")
    assert err.value.code == 2 and "FLAIR, T1gd have no channel of the cohort" in capsys.readouterr().err
    (same,) = channel_lines(MSD, ["flair", "t1", "t1ce", "t2"], FOUR)
    assert "flair as FLAIR, t1 as T1w, t1ce as T1gd, t2 as T2w, in the fine-tuning order" in same
    assert "noise volumes have 4 channel(s)" in same
    (lacking,) = channel_lines(MSD, ["t1"], ("t1", "t2"))
    assert "t1 only (the cohort lacks FLAIR, T1gd in some or all cases)" in lacking and "adapted to 4" in lacking
    (chosen,) = channel_lines(MSD, ["t1"], FOUR)
    assert "t1 only (--pretrain-channels t1)" in chosen


def test_a_multi_contrast_cohort_is_pretrained_on_the_fine_tuning_channels_in_their_order(four, tmp_path):
    """The written file lists, the runs' data.channels, the stacked channels and the pretrained stem's
    channel k loaded as fine-tuning channel k."""
    import torch

    from asa.api.config import load_config
    from asa.api.machinery.pretraining import _method
    from asa.data.preprocessing import case_to_item
    from asa.models import build_network

    cases = discover("bids", four)
    channels = pretraining_channels(cohort_channels(cases), MSD, None)
    cohorts = cohort_lists(tmp_path, cases, [4], seed=0, channels=channels)
    noise = noise_volumes(tmp_path, cases, 4, seed=0, channels=channels)
    for data in (*cohorts.values(), noise):  # as the first unit reading them starts
        data.write()
    assert (cohorts[4].folder / "files.csv").read_text().startswith("id,path,flair,t1ce,t2\n")
    network = Network("resenc", "tiny")
    runs = plan_pretraining(tmp_path, SCALES["quick"], network, ["mae"], cohorts, noise, seed=0,
                                  channels=channels)
    assert [r.name for r in runs] == ["mae-c4", "mae-c4-p1", "noise-c4", "noise-c4-p1"]  # two runs per arm
    assert [next(o for o in r.overrides if o.startswith("seed=")) for r in runs] == ["seed=0", "seed=1"] * 2
    for run in runs:  # the negative control too reads the four channels in the fine-tuning order (data.channels
        # alone: the network's input channels are read off it)
        assert run.overrides[len(network.pretrain("mae")):][:3] == (
            "data=bids", "data.layout=filelist", "data.channels=[flair,t1,t1ce,t2]")
        assert not any(o.startswith("method.in_channels") for o in run.overrides)
        root = Path(next(o.split("=", 1)[1] for o in run.overrides if o.startswith("data.root=")))
        for case in discover("filelist", root):  # what the dataset stacks: channel k is the file channel k means
            images = case_to_item(case, channels)["images"]
            assert len(set(images)) == 4
            if run.arm != "noise":
                assert [Path(p).name.removeprefix(case.id) for p in images] == [MEANS[name] for name in MSD]
    # the pretraining network's stem takes the four channels; the fine-tuning network's channel k is its channel k
    pre = _method(load_config("pretrain", *runs[0].overrides)).build_network()
    stem = pre.encoder.stem.convs[0].conv.weight
    assert stem.shape[1] == 4
    with torch.no_grad():
        stem.copy_(torch.arange(4.0).view(1, 4, 1, 1, 1).expand_as(stem))
    torch.save({"encoder": pre.encoder_state_dict(), "network": {"arch": pre.network_arch,
                                                                 "kwargs": pre.network_kwargs}}, tmp_path / "enc.pt")
    seg = build_network({"arch": "resenc", "kwargs": {"img_size": 32, "in_channels": len(MSD), "out_channels": 3,
                                                      "size": "tiny"}})
    seg.load_pretrained(tmp_path / "enc.pt")
    got = seg.encoder.stem.convs[0].conv.weight
    assert [float(got[:, k].unique()) for k in range(4)] == [0.0, 1.0, 2.0, 3.0]


def test_a_t1_cohort_is_pretrained_with_the_overrides_and_file_lists_of_before(data, tmp_path):
    cases = discover("bids", data[0])
    assert cohort_channels(cases) == ["t1"]
    channels = pretraining_channels(["t1"], MSD, None)
    cohorts = cohort_lists(tmp_path, cases, [4], seed=0, channels=channels)
    noise = noise_volumes(tmp_path, cases, 4, seed=0, channels=channels)
    for data in (*cohorts.values(), noise):
        data.write()
    network = Network("resenc", "tiny")
    one = dataclasses.replace(SCALES["quick"], pretrain_runs=1)  # one run per arm, as before the replicates
    runs = plan_pretraining(tmp_path, one, network, ["mae"], cohorts, noise, seed=0, channels=channels)
    assert runs == plan_pretraining(tmp_path, one, network, ["mae"], cohorts, noise, seed=0)
    for run in runs:
        assert run.overrides[len(network.pretrain("mae")):][:11] == BEFORE
        assert len(run.overrides) == len(network.pretrain("mae")) + len(BEFORE) + 4  # crop, root, epochs, output_dir
    for folder in (cohorts[4].folder, noise.folder):
        rows = (folder / "files.csv").read_text().splitlines()
        assert rows[0] == "id,path" and all(len(r.split(",")) == 2 for r in rows[1:])


def _planned(monkeypatch, argv: list[str]) -> list:
    """asa-study's checks and plan, not its units: the pretraining runs it would start."""
    planned = []
    monkeypatch.setattr(study, "run_stages", lambda setup, *rest: planned.extend(setup.runs) or 0)
    assert study.main(argv) == 0
    return planned


@pytest.mark.slow
def test_the_study_records_its_channels_says_them_and_refuses_all_on_a_t1_cohort(data, four, tmp_path, monkeypatch,
                                                                                 capsys):
    cohort, labeled = data
    argv = ["--data", "msd", "--root", str(labeled), *QUICK, "--network", "resenc-tiny", "--arms", "mae", "noise"]
    runs = _planned(monkeypatch, ["--pretrain-data", str(four), "--out", str(tmp_path / "four"), *argv])
    # two arms, each pretrained twice (the quick scale's --pretrain-runs 2)
    assert all("data.channels=[flair,t1,t1ce,t2]" in run.overrides for run in runs) and len(runs) == 4
    assert json.loads((tmp_path / "four" / "study.json").read_text())["pretrain_channels"] == ["flair", "t1", "t1ce", "t2"]
    (line,) = json.loads((tmp_path / "four" / "checks" / "checks.json").read_text())["channels"]
    assert "in the fine-tuning order" in line
    out = tmp_path / "t1"
    runs = _planned(monkeypatch, ["--pretrain-data", str(cohort), "--out", str(out), *argv])
    # each pretraining run as before, its replicate's seed apart (seed + replicate)
    assert all(run.overrides[len(Network("resenc", "tiny").pretrain("mae")):][:11]
               == (*BEFORE[:9], f"seed={run.replicate}", BEFORE[10]) for run in runs)
    assert json.loads((out / "study.json").read_text())["pretrain_channels"] == ["t1"]
    # a study recorded before the option pretrained on the T1: its folder continues
    record = json.loads((out / "study.json").read_text())
    record.pop("pretrain_channels")
    (out / "study.json").write_text(json.dumps(record))
    assert len(_planned(monkeypatch, ["--pretrain-data", str(cohort), "--out", str(out), *argv])) == 4
    with pytest.raises(SystemExit) as err:
        study.main(["--pretrain-data", str(cohort), "--out", str(tmp_path / "all"), "--pretrain-channels", "all", *argv])
    assert err.value.code == 2 and not (tmp_path / "all").exists()
    assert "FLAIR, T1gd, T2w have no channel of the cohort" in capsys.readouterr().err


def test_the_report_flags_a_run_still_falling_at_its_export_and_one_exported_in_its_first_eighth():
    def run(name, curve, export, replicate=0):  # exported at round ``export`` of 8 evenly spaced ones
        read = [x for i, x in enumerate(curve) if i <= export]
        progress = [(i + 1) / len(curve) for i in range(len(read))]
        return {"run": name, "arm": name.split("-")[0], "replicate": replicate, "cohort": 40, "steps": 1600,
                "seconds": 60.0, "val_curve": list(enumerate(curve)), "export_step": export,
                "export_loss": curve[export], "export_progress": progress[-1], "norm_ratio": 1.5,
                **loss_plateau(read, progress=progress, exported_at=progress[-1])}
    level = [0.49, 0.35, 0.31, 0.30, 0.296, 0.295, 0.2949, 0.2948]
    climbed = [0.90, 0.97, 1.10, 1.25, 1.33, 1.36, 1.37, 1.38]  # lowest at its first round, climbs from there
    falling = [1.0, 0.8, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1]
    # three rounds up to its export: too few for the check, flagged as not checked, not passed
    runs = [run("asa-c40", level, 7), run("noise-c40", climbed, 0), run("mae-c40", falling, 7),
            run("mae-c40-p1", level, 2, replicate=1)]
    said = readings.read([], {"pretraining": runs}, n_boot=10)  # the runs' reading: which are unfinished, rising
    table, flags = report.pretraining_lines(runs, said)
    assert "| 7 (100% of the summed lr): 0.2948 | levelled (0.1%) | 1.50 |" in table  # asa-c40: exported at its end
    assert "| exported in its first eighth |" in table and "still falling (66.7%)" in table
    assert "| not checked (< 4 rounds) |" in table
    assert flags == ["noise-c40 unfinished: exported at 12% of its summed lr, in its first eighth; its contrasts "
                     "read that encoder.",
                     "mae-c40 unfinished: its held-out loss still fell 66.7% over the last quarter of the summed lr up "
                     "to its export; its contrasts read that encoder.",
                     "mae-c40-p1 not checked: fewer than 4 held-out rounds up to its export, too few to read whether "
                     "its loss still fell there; its contrasts read that encoder."]
    # the noise control exported where mae was, replicate by replicate, or said not to be
    assert report.export_line([run("mae-c40", level, 5), run("noise-c40", climbed, 5)]).startswith(
        "The negative control is exported where mae was, replicate by replicate (steps 5)")
    unmatched = report.export_line([run("mae-c40", level, 5), run("noise-c40", climbed, 0)])
    assert unmatched.startswith("**The negative control is not matched to the arm it controls**: noise-c40 exported "
                                "at step 0, mae's run at 5")


def test_the_fine_tuning_runs_get_the_scale_s_loader_workers(data, tmp_path):
    from asa.study import transfer
    settings = transfer.Transfer(tmp_path, {"scratch": transfer.Tuned(("model.pretrained=null",))}, data="msd",
                                 root=data[1], model="resenc", crop=32, cases=(2,), seeds=(0,),
                                 test=4, steps=10, device="cpu", workers=8)
    runs = transfer.plan_runs(settings)[0]
    assert runs and all("data.num_workers=8" in run.overrides for run in runs)
    default = transfer.plan_runs(dataclasses.replace(settings, workers=0))[0]
    assert all("data.num_workers=0" in run.overrides for run in default)  # 0: in the training process, as before


def _store(cohort: Path, store: Path, *options: str) -> Path:
    """``cohort`` preprocessed into a pretraining store by asa-preprocess."""
    from asa.api import compose_config, preprocess

    preprocess(compose_config("preprocess", ["data=bids", f"data.root={cohort}", f"data.store={store}",
                                             "progress=false", *options]))
    return store


def test_a_store_of_asa_preprocess_is_a_pretraining_cohort(data, tmp_path, monkeypatch, capsys):
    """The checks accept it, study.json records it, every arm reads it (its cohort's cases named by its
    splits.json), the noise control its own file list; a folder that is no source is refused naming it."""
    cohort, labeled = data
    store = _store(cohort, tmp_path / "store")
    out = tmp_path / "out"
    argv = ["--data", "msd", "--root", str(labeled), *QUICK, "--network", "resenc-tiny", "--arms", "mae", "noise",
            "--pretrain-runs", "1"]
    runs = _planned(monkeypatch, ["--pretrain-data", str(store), "--out", str(out), "--cohorts", "3", *argv])
    assert [r.name for r in runs] == ["mae-c3", "noise-c3"]
    pretrain = len(Network("resenc", "tiny").pretrain("mae"))
    mae, noise = (r.overrides[pretrain:] for r in runs)
    assert mae[:2] == ("data=bids", "data.layout=bids") and mae[2:11] == BEFORE[2:]
    assert mae[12:14] == (f"data.root={cohort}", f"data.store={store}")  # after data.crop: the store's own root
    assert noise[:11] == BEFORE and not any(o.startswith("data.store=") for o in noise)
    recorded = json.loads((out / "study.json").read_text())
    assert recorded["pretrain_data"] == str(store) and recorded["pretrain_channels"] == ["t1"]
    assert recorded["pretrain_store"] == {"root": str(cohort), "layout": "bids"}
    assert "a store of asa-preprocess" in json.loads((out / "checks" / "checks.json").read_text())["cohort"]
    # the run's split of its cohort (the first 3 of the cohort order) and the store's other case, never read: an
    # input of its unit, written as it starts (planning wrote none)
    ids = [c.id for c in discover("bids", cohort)]
    first = cohort_order(ids, seed=0)[:3]
    assert not (runs[0].run_dir / "splits.json").exists()
    for needed in runs[0].inputs:
        needed.write()
    kept = (runs[0].run_dir / "splits.json").stat().st_mtime_ns
    for needed in runs[0].inputs:  # a resumed run's unit starts again: its split is kept
        needed.write()
    assert (runs[0].run_dir / "splits.json").stat().st_mtime_ns == kept
    split = json.loads((runs[0].run_dir / "splits.json").read_text())
    assert sorted(split["train"] + split["val"]) == sorted(first) and len(split["val"]) == 1
    assert split["test"] == sorted(set(ids) - set(first))
    for needed in runs[1].inputs:
        needed.write()
    assert not (runs[1].run_dir / "splits.json").exists()  # the noise control splits its own volumes
    with pytest.raises(SystemExit) as err:  # a t1 store cannot give the four fine-tuning channels
        study.main(["--pretrain-data", str(store), "--out", str(tmp_path / "all"), "--pretrain-channels", "all", *argv])
    assert err.value.code == 2 and "FLAIR, T1gd, T2w have no channel of the cohort" in capsys.readouterr().err
    (tmp_path / "neither").mkdir()
    with pytest.raises(SystemExit) as err:
        study.main(["--pretrain-data", str(tmp_path / "neither"), "--out", str(tmp_path / "n"), *argv])
    said = capsys.readouterr().err
    assert err.value.code == 2 and str(tmp_path / "neither") in said and "a store written by asa-preprocess" in said


def test_a_test_case_planted_in_a_store_is_refused_before_anything_trains(data, tmp_path, capsys):
    cohort, labeled = data
    split = labeled_split(discover("msd", labeled), FIXED, seed=0)
    test_case = next(c for c in discover("msd", labeled) if c.id == split.test[0])
    planted = tmp_path / "cohort.csv"  # the cohort's scans and the T1 channel of one test case, renamed
    planted.write_text("id,path\n" + "".join(f"{c.id},{c.images['t1']}\n" for c in discover("bids", cohort))
                       + f"someone,{test_case.images['T1w']}\n")
    store = _store(planted, tmp_path / "store", "data.layout=filelist")
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as err:
        study.main(["--pretrain-data", str(store), "--data", "msd", "--root", str(labeled), "--out", str(out), *QUICK])
    said = capsys.readouterr().err
    assert err.value.code == 2 and f"{test_case.id} = someone" in said and "--accept-overlap" in said
    assert not (out / "pretrain").exists() and not (out / "pilot").exists()  # nothing trained


def test_the_positive_control_takes_the_t1_and_the_adapted_stem_when_the_pretraining_reads_the_t1(data, tmp_path):
    """Its overrides as before when the pretraining reads every fine-tuning channel; on a T1 cohort its cases'
    T1 alone (``data.channels``: the same task on one channel), and its 1-channel encoder loaded into the 4-channel
    fine-tuning network through the pretrained arms' adapted stem."""
    import torch

    from asa.api.config import compose_config
    from asa.api.tasks.segmentation import reading_channels
    from asa.models import build_network
    from asa.models.registry import network_spec

    labeled = data[1]
    cases = discover("msd", labeled)
    task = get_task("msd", labeled)
    split = labeled_split(cases, FIXED, seed=0)
    network, scale = Network("resenc", "tiny"), SCALES["quick"]
    recipe = ["optim=adamw", "optim.encoder_lr_scale=1.0"]
    assert supervised_channel(MSD, ["flair", "t1", "t1ce", "t2"]) is None  # every channel pretrained
    assert supervised_channel(MSD, None) is None and supervised_channel(("T1w",), ["t1"]) is None
    assert supervised_channel(("FLAIR", "T2w"), ["t1"]) is None  # no T1 to train on alone
    assert supervised_channel(MSD, ["t1"]) == "T1w"
    run_dir = tmp_path / "pretrain" / "supervised"
    [every] = plan_labeled(tmp_path, "supervised", split, network, scale, data="msd", root=labeled, seed=0,
                           finetune=recipe)
    # the overrides of before (hand-written): the study's labeled set, every case training for the pilot's steps
    assert every.overrides == (
        "data=msd", f"data.root={labeled}", "model=resenc", "model.size=tiny", "data.crop=32", "data.num_workers=0",
        "trainer.epochs=12", "trainer.progress=false", "trainer.panel_every=0", "seed=0", "resume=auto", *recipe,
        f"output_dir={run_dir}")
    assert every.splits == {
        "train": list(split.supervised), "val": [], "test": sorted(split.test + split.val + split.pool),
        "dataset": "msd", "seed": 0}
    [one] = plan_labeled(tmp_path, "supervised", split, network, scale, data="msd", root=labeled, seed=0,
                         finetune=recipe, channel="T1w")
    sup = list(one.overrides)
    assert sup[:3] == ["data=msd", f"data.root={labeled}", "data.channels=[T1w]"] and sup[3:] == \
        list(every.overrides[2:])
    assert one.splits == every.splits
    seen = compose_config("finetune", sup[:3])
    assert list(seen.data.channels) == ["T1w"]
    seen = reading_channels(task, seen.data.channels, where="the msd task")  # the task its asa-finetune reads
    assert seen.channels == ("T1w",) and dataclasses.replace(seen, channels=task.channels) == task
    # what the control's asa-finetune builds (one channel) loaded into the study's 4-channel network
    kwargs = {"img_size": 32, "out_channels": task.num_outputs, "size": "tiny"}
    control = build_network({"arch": "resenc", "kwargs": {**kwargs, "in_channels": len(seen.channels)}})
    torch.save({"model": control.state_dict(), "network": network_spec(control)}, tmp_path / "last.pt")
    seg = build_network({"arch": "resenc", "kwargs": {**kwargs, "in_channels": len(task.channels)}})
    report = seg.load_pretrained(tmp_path / "last.pt")
    assert report.adapted and "1 -> 4 image channels" in report.adapted[0]
    stem, got = control.encoder.stem.convs[0].conv.weight, seg.encoder.stem.convs[0].conv.weight
    assert stem.shape[1] == 1 and got.shape[1] == 4
    assert all(torch.allclose(got[:, k:k + 1], stem / 4) for k in range(4))


def test_the_study_records_which_channels_the_positive_control_reads(data, four, tmp_path, monkeypatch):
    cohort, labeled = data
    argv = ["--data", "msd", "--root", str(labeled), *QUICK, "--network", "resenc-tiny", "--arms", "supervised"]
    _planned(monkeypatch, ["--pretrain-data", str(cohort), "--out", str(tmp_path / "t1"), *argv])
    assert json.loads((tmp_path / "t1" / "study.json").read_text())["supervised_channels"] == ["T1w"]
    checks = json.loads((tmp_path / "t1" / "checks" / "checks.json").read_text())
    assert "on their T1w alone" in checks["supervised"] and "so does the positive control" in checks["channels"][0]
    _planned(monkeypatch, ["--pretrain-data", str(four), "--out", str(tmp_path / "four"), *argv])
    assert json.loads((tmp_path / "four" / "study.json").read_text())["supervised_channels"] == list(MSD)
    checks = json.loads((tmp_path / "four" / "checks" / "checks.json").read_text())
    assert checks["supervised"].endswith("(held out of the training pool).")


@dataclasses.dataclass
class _ToySection:  # asa-pretrain model=toy: a masked twin that takes its mask block and nothing of ASA's
    arch: str = "toy"
    mask_block: int = 16


def _toy_masked(*, img_size, in_channels: int = 1, mask_ratio: float = 0.75, mask_block: int = 16):
    raise AssertionError("not built: the study only names it")


def test_the_swvit_takes_the_positive_control_and_refuses_the_coordinate_channel(data, tmp_path, monkeypatch):
    """--network swvit: the paper's two pretraining arms, the noise control and the positive control (an SW-ViT
    U-Net trained with labels, whose encoder its fine-tuning arm starts from); asa-coord, the residual encoder's
    coordinate channel, is refused before anything is written."""
    cohort, labeled = data
    argv = ["--data", "msd", "--root", str(labeled), *QUICK, "--network", "swvit-tiny"]
    with pytest.raises(SystemExit) as refused:
        study.main([*argv, "--pretrain-data", str(cohort), "--arms", "asa-coord", "--out", str(tmp_path / "coord")])
    assert refused.value.code == 2 and "the arms are mae, asa, noise, supervised" in str(refused.value)
    assert not (tmp_path / "coord").exists()
    seen = {}
    monkeypatch.setattr(study, "run_stages", lambda setup, *rest: seen.update(network=setup.study.network,
                                                                               labeled=setup.labeled) or 0)
    assert study.main([*argv, "--arms", "supervised", "--out", str(tmp_path / "sup")]) == 0
    (control,), network = seen["labeled"], seen["network"]  # one control: the labeled set holds the fixed split
    endpoint = json.loads((tmp_path / "sup" / "checks" / "checks.json").read_text())["endpoint"]
    assert (endpoint["key"], endpoint["label"]) == ("Dice_mean", "mean Dice")  # named before anything trained
    assert network.finetune == ["model=tiny"] and not any(o.startswith("data.channels=") for o in control.overrides)
    assert control.overrides[:3] == ("data=msd", f"data.root={labeled}", "model=tiny")
    arms = finetune_arms([], network, [control], {})
    assert arms["supervised"].drawn(0)[0] == ("model=tiny", f"model.pretrained={control.run_dir / 'checkpoints' / 'last.pt'}")


@pytest.fixture
def toy_family(monkeypatch):
    """A family declared from outside asa (its masked twin, its section, DynUNet as its segmenter), gone after."""
    from asa.models import Family, registry

    monkeypatch.setitem(registry.RECORDS, "toy_masked", registry.NetworkRecord(_toy_masked, "pretraining", "encoder",
                                                                               family="toy"))
    monkeypatch.setitem(registry.FAMILIES, "toy", Family("toy", masked="toy_masked", pretrain_settings=_ToySection,
                                                         segmenter="dynunet"))


def test_any_family_with_a_masked_twin_is_a_network_of_the_study(toy_family, tmp_path):
    """--network takes every declared family with a masked twin and a segmenter, not a list of names: each arm
    states the options its family's section has, and an arm needing what the masked twin does not take (ASA's
    attentive weight, the coordinate channel) is refused before anything runs."""
    net = parse_network("toy", SCALES["cpu"])
    assert (net.name, net.finetune, net.by_preset) == ("toy", ["model=dynunet"], False)
    assert net.pretrain("mae") == ["model=toy", "method=mae", "method.loss_weighting=uniform", "model.mask_block=16"]
    assert net.missing("mae") == [] and net.missing("asa-coord") == ["loss_weighting", "coord_channel"]
    resenc = parse_network("resenc", SCALES["cpu"])
    assert resenc.missing("asa-coord") == [] and "model.coord_channel=true" in resenc.pretrain("asa-coord")
    with pytest.raises(SystemExit) as refused:
        parse_network("toy-S", SCALES["cpu"])  # the toy family declares no sizes
    assert refused.value.code == 2 and "toy" in str(refused.value)
    with pytest.raises(SystemExit) as refused:
        study.main(["--network", "toy", "--arms", "mae", "asa", "--pretrain-data", str(tmp_path), "--data", "msd",
                    "--root", str(tmp_path), "--out", str(tmp_path / "out")])
    assert refused.value.code == 2 and str(refused.value) == (
        "--arms: asa needs loss_weighting, which the toy family's masked twin (toy_masked) does not take")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_pretraining_runs_on_several_processes_keep_the_global_batch(data, tmp_path, monkeypatch):
    """--nproc 2: every pretraining run is asa-pretrain's two processes through asa-torchrun, each taking half the
    recipe's global batch (so steps, epochs and lr are the one-process run's); one process is the plain script with
    the overrides as before; a global batch the processes cannot share is refused; a folder recorded before the
    option (one process) continues."""
    cohort, labeled = data
    argv = ["--pretrain-data", str(cohort), "--data", "msd", "--root", str(labeled), *QUICK, "--network", "resenc-tiny",
            "--arms", "mae", "--pretrain-runs", "1"]
    one = _planned(monkeypatch, [*argv, "--out", str(tmp_path / "one")])
    two = _planned(monkeypatch, [*argv, "--out", str(tmp_path / "two"), "--nproc", "2"])
    (a,), (b,) = one, two
    same = [o.replace(str(tmp_path / "one"), "OUT") for o in a.overrides]
    assert [o.replace(str(tmp_path / "two"), "OUT") for o in b.overrides] == [*same[:-1], "trainer.batch_size=1",
                                                                            same[-1]]
    assert pretraining_argv(1, *a.overrides) == (sys.executable, "-m", "asa.cli.pretrain", *a.overrides)
    assert pretraining_argv(2, "x=1") == (sys.executable, "-m", "asa.cli.launch", "--standalone",
                                                "--nproc_per_node=2", "-m", "asa.cli.pretrain", "x=1")
    with pytest.raises(SystemExit) as refused:
        _planned(monkeypatch, [*argv, "--out", str(tmp_path / "three"), "--nproc", "3"])
    assert refused.value.code == 2 and "--nproc 3: the pretraining's global batch is 2" in str(refused.value)
    record = json.loads((tmp_path / "one" / "study.json").read_text())
    record["scale"].pop("nproc")  # as a study recorded before the option
    (tmp_path / "one" / "study.json").write_text(json.dumps(record))
    assert len(_planned(monkeypatch, [*argv, "--out", str(tmp_path / "one")])) == 1


def test_a_case_planted_among_the_positive_control_s_cases_is_refused_before_the_pilot(data, tmp_path, capsys):
    """The one overlap check reads every labeled case a run scores, validates on or holds out (the positive
    control's cases and the training pool too: each fine-tuning run checks every case it does not train on), before
    anything trains; --accept-overlap lists the accepted cases and tells every run to accept them."""
    cohort, labeled = data
    cases = discover("msd", labeled)
    split = labeled_split(cases, FIXED, seed=0)
    held = next(c for c in cases if c.id == split.supervised[0])
    planted = tmp_path / "cohort.csv"  # the cohort's scans and the T1 channel of one of the control's cases, renamed
    planted.write_text("id,path\n" + "".join(f"{c.id},{c.images['t1']}\n" for c in discover("bids", cohort))
                       + f"someone,{held.images['T1w']}\n")
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as err:
        study.main(["--pretrain-data", str(planted), "--data", "msd", "--root", str(labeled), "--out", str(out), *QUICK])
    said = capsys.readouterr().err
    assert err.value.code == 2 and f"positive control: 1 of 2 case(s)" in said and f"{held.id} = someone" in said
    assert not (out / "pilot").exists() and not (out / "pretrain").exists()  # nothing trained
    planted_cases = discover("filelist", planted)
    kept, made = cohort_check_record(out, planted_cases)  # kept by the refused study: read, not made again
    assert not made and kept == json.loads((out / "checks" / "cohort.json").read_text())
    accepted = check_overlap(planted_cases, kept, cases, split, accept=True)
    assert accepted["overlapping"] == [held.id] and accepted["lines"][-1].endswith(f"every run told so): {held.id}")
    assert overlap_overrides(accepted) == ["data.accept_pretraining_overlap=true"]
    assert overlap_overrides({"accepted": False}) == []
    # a record kept by an asa whose fingerprint differs is made again: the near check is not left undone
    record = out / "checks" / "cohort.json"
    record.write_text(record.read_text().replace('"fingerprint": "int8', '"fingerprint": "older int8'))
    again, made = cohort_check_record(out, planted_cases)
    assert made and again["fingerprint"].startswith("int8")
    assert json.loads(record.read_text())["fingerprint"].startswith("older int8")  # nothing written: the caller keeps it
    again = check_overlap(planted_cases, again, cases, split, accept=True)
    assert again["overlapping"] == [held.id] and "not checked" not in " ".join(again["lines"])


def test_a_skull_stripped_copy_of_a_cohort_head_among_the_test_cases_is_refused_before_training(data, tmp_path,
                                                                                                 capsys):
    """The pretraining cohort holds a whole head whose skull-stripped brain is one of the test cases (on the head's
    grid): the digest and the fingerprint miss such a copy, the check on the cohort's files finds it, and the study
    stops with exit 2 naming it before the pilot."""
    from scipy import ndimage

    cohort, labeled = data
    cases = discover("msd", labeled)
    split = labeled_split(cases, FIXED, seed=0)
    test_case = next(c for c in cases if c.id == split.test[0])
    image = nib.load(str(test_case.images["T1w"]))
    brain = np.asarray(image.dataobj, dtype=np.float32)[..., test_case.frame("T1w")]
    inside = brain > 0
    scalp = ndimage.binary_dilation(inside, iterations=3) & ~ndimage.binary_dilation(inside, iterations=1)
    head = np.where(scalp, 0.9 * brain.max() * (1 + 0.05 * np.random.default_rng(0).standard_normal(brain.shape)),
                    brain)
    nib.save(nib.Nifti1Image(head.astype(np.float32), image.affine), str(tmp_path / "head.nii.gz"))
    planted = tmp_path / "cohort.csv"
    planted.write_text("id,path\n" + "".join(f"{c.id},{c.images['t1']}\n" for c in discover("bids", cohort))
                       + f"someone-head,{tmp_path / 'head.nii.gz'}\n")
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as err:
        study.main(["--pretrain-data", str(planted), "--data", "msd", "--root", str(labeled), "--out", str(out), *QUICK])
    said = capsys.readouterr().err
    assert err.value.code == 2, said
    assert "by image content 0, by near content 0" in said  # the digest and the fingerprint miss it
    assert f"masked copies (skull-stripped or defaced, same grid): 1 of 9 case(s): {test_case.id} = someone-head" in said
    assert not (out / "pilot").exists() and not (out / "pretrain").exists()  # nothing trained


def test_an_encoder_whose_cohort_list_is_missing_is_said_unchecked(data, tmp_path, monkeypatch):
    """An --encoder file that states a cohort whose list is not beside it: the check says it could not check that
    cohort (never "no overlap"), and checks the others."""
    from asa.data.cohort import CohortListMissing
    from asa.study import checks

    cohort, labeled = data
    cases = discover("msd", labeled)
    split = labeled_split(cases, FIXED, seed=0)

    def missing(path, option):
        raise CohortListMissing(f"{option}={path} states a pretraining cohort of 3 cases whose list is not beside it")

    monkeypatch.setattr(checks, "encoder_cohort", missing)
    alone = check_overlap([], None, cases, split, {"enc": "enc.pt"}, accept=False)
    assert alone["lines"] == ["--encoder enc: not checked: --encoder enc=enc.pt states a pretraining cohort of 3 "
                              "cases whose list is not beside it"] and alone["overlapping"] == []
    cohort_cases = discover("bids", cohort)
    both = check_overlap(cohort_cases, cohort_check_record(tmp_path / "b", cohort_cases)[0], cases, split,
                         {"enc": "enc.pt"}, accept=False)
    assert both["lines"][0].startswith("--encoder enc: not checked: ")
    assert any(line.startswith("--pretrain-data: ") for line in both["lines"][1:])


def test_one_encoder_lr_for_every_arm():
    """--encoder-lr-scale reaches the scratch twins as well as the pretrained arms (the adamw preset keeps a scale
    of its own for an encoder from scratch), so the report's "for every arm" holds."""
    from asa.api.config import compose_config
    from asa.api.machinery.training import encoder_lr_scale

    recipe = recipe_overrides("adamw", 0.5)
    scratch = compose_config("finetune", ["data=msd", "model=resenc", *recipe])
    pretrained = compose_config("finetune", ["data=msd", "model=resenc", *recipe, "model.pretrained=enc.pt"])
    assert encoder_lr_scale(scratch) == encoder_lr_scale(pretrained) == 0.5
    preset = compose_config("finetune", ["data=msd", "model=resenc", "optim=adamw"])
    assert encoder_lr_scale(preset) == 1.0  # the preset alone: scratch at 1, which the option now overrides
    assert recipe_overrides("nnunet", 0.5) == ["optim=nnunet"]


def test_the_plateau_check_reads_the_encoder_not_the_lr_schedule():
    """Under a cosine schedule the last quarter of the steps holds a twentieth of the summed lr, so every curve
    flattens there: read against the steps, an encoder still far from its plateau (here a held-out loss falling as
    0.45 + 0.32 exp(-progress / 0.4), 0.66 -> 0.47 over 200 steps) read "levelled"; read against the optimiser's
    progress (the summed lr) it is flagged. Under a constant lr both readings are the same."""
    from asa.train.schedule import lr_at

    cosine = {"name": "cosine", "total_steps": 200, "warmup_steps": 10, "base_lr": 1e-3}
    steps = list(range(20, 201, 20))
    progress = optimiser_progress(steps, cosine)
    lrs = [lr_at(t, total_steps=200, warmup_steps=10, base_lr=1e-3, schedule="cosine") for t in range(200)]
    assert progress[-1] == 1.0 and progress[6] == pytest.approx(sum(lrs[:140]) / sum(lrs))  # steps[6] = 140
    assert progress[6] > 0.95  # step 140 of 200: the optimiser has moved 95 % of its way
    losses = [0.45 + 0.32 * math.exp(-p / 0.4) for p in progress]
    by_steps = loss_plateau(losses)
    assert by_steps["plateau"] is True and by_steps["loss_drop"] < 0.01  # the old reading: levelled
    by_progress = loss_plateau(losses, progress=progress)
    assert by_progress["plateau"] is False and by_progress["loss_drop"] > 0.05
    # the eighth before the last quarter holds step 80 alone (0.677), the last eighth steps 120-200 (0.892-1.0): the
    # drop is from step 80's loss to the median of those five
    assert by_progress["loss_drop"] == pytest.approx((losses[3] - float(np.median(losses[5:]))) / losses[3])
    constant = {"name": "constant", "total_steps": 200, "warmup_steps": 0, "base_lr": 1e-3}
    even = optimiser_progress(steps, constant)
    assert even == pytest.approx([s / 200 for s in steps])
    assert loss_plateau(losses, progress=even) == loss_plateau(losses)


def test_a_pilot_that_does_not_learn_stops_the_study_before_any_pretraining(data, tmp_path, monkeypatch, capsys):
    """A pilot whose best validation Dice stays under the floor did not learn (not "levelled off"): the study
    stops with exit 2 and one line before it spends any pretraining, unless told to go on; a pilot that learned
    goes on to the pretraining."""
    cohort, labeled = data
    started: list[str] = []

    def fake_units(flat: bool):
        def run_units(units, jobs, clock, times, memory_gib):
            if any(u.name.startswith(f"{PILOT}/") for u in units):  # the pilot's run, scored with this curve
                started.append(PILOT)
                curve = [[10 * (i + 1), 0.001 if flat else min(0.6, 0.1 * i)] for i in range(8)]
                pilot = next(u for u in units if u.name.startswith(f"{PILOT}/"))
                atomic = Path(next(a for a in pilot.argv if a.startswith("output_dir=")).split("=", 1)[1]) / "scores.json"
                atomic.parent.mkdir(parents=True, exist_ok=True)
                atomic.write_text(json.dumps({"budget": {"val_curve": curve}, "scores": [], "names": []}))
                return True
            started.extend(unit.name for unit in units)
            return False  # stop after the pretraining stage is asked for
        return run_units

    argv = ["--pretrain-data", str(cohort), "--data", "msd", "--root", str(labeled), "--arms", "mae", "--scale", "cpu",
            "--network", "resenc-tiny", "--cases", "2", "--test", "3", "--val", "2", "--seeds", "0", "--time-budget", "9999",
            "--min-scored", "0"]  # 3 test cases: below what a real study reads from, a check of the pilot's gate
    monkeypatch.setattr(stages, "run_units", fake_units(flat=True))
    assert study.main([*argv, "--out", str(tmp_path / "flat")]) == 2
    said = capsys.readouterr().err
    assert "the pilot did not learn the task: best validation Dice 0.001" in said and "--accept-unlearned" in said
    assert started == [PILOT]  # no pretraining unit was asked for
    assert json.loads((tmp_path / "flat" / "pilot.json").read_text())["learned"] is False
    started.clear()
    monkeypatch.setattr(stages, "run_units", fake_units(flat=False))
    assert study.main([*argv, "--out", str(tmp_path / "learns")]) == 3  # went on to the pretraining (stopped there)
    # why every arm fine-tunes the pilot's steps: its last span (0.5, 0.6, 0.6) still rises
    assert "[study] The pilot (scratch, constant lr, 1200 steps) was not shown to level off (" in capsys.readouterr().out
    assert started == [PILOT, "mae-c4", "mae-c4-p1", "mae-c4-p2"]  # three pretraining runs per arm
    pilot = json.loads((tmp_path / "learns" / "pilot.json").read_text())
    assert pilot["learned"] is True and pilot["best_dice"] == pytest.approx(0.6)


def test_a_primary_arm_pretrained_once_is_refused_before_anything_is_written(data, tmp_path, capsys):
    cohort, labeled = data
    argv = ["--pretrain-data", str(cohort), "--data", "msd", "--root", str(labeled), "--network", "resenc-tiny",
            "--pretrain-runs", "1", "--out", str(tmp_path / "once")]
    with pytest.raises(SystemExit) as refused:
        study.main([*argv, "--arms", "asa", "supervised"])
    assert refused.value.code == 2 and "--pretrain-runs 1: the primary question reads a pretrained arm (asa)" in \
        capsys.readouterr().err
    assert not (tmp_path / "once").exists() and min(s.pretrain_runs for k, s in SCALES.items() if k != "quick") >= 3


def test_a_labeled_folder_with_no_usable_case_is_refused_in_one_line(tmp_path, capsys):
    empty = write_demo_dataset("msd", tmp_path / "empty", cases=2, size=16, seed=1)
    for image in (empty / "imagesTr").iterdir():  # the labels and dataset.json stay: no case has its scan
        image.unlink()
    with pytest.raises(SystemExit) as refused:
        study.main(["--data", "msd", "--root", str(tmp_path / "empty"), "--arms", "supervised", "--out",
                    str(tmp_path / "out")])
    said = capsys.readouterr().err.strip()
    assert refused.value.code == 2 and len(said.splitlines()) == 1 and "Traceback" not in said
    assert said.startswith(f"--root {tmp_path / 'empty'}: ") and "no usable cases" in said
    assert not (tmp_path / "out").exists()
    assert cases_text(1) == "1 labeled case" and cases_text(3) == "3 labeled cases"


@pytest.mark.slow  # plans 133 units, composing their configs
def test_the_gpu_scale_plans_the_whole_study_for_one_window_and_runs_nothing(tmp_path, capsys, monkeypatch):
    """--scale gpu --dry-run on a 20-case labeled set: 8 cross-validated draws at N = 2 (every case scored twice), four
    pretraining runs per arm, the positive control nested in each draw, units side by side as the machine holds
    them; on a machine without a GPU the schedule says it is priced on the CPU, and nothing trains. The units are
    priced at stand-in costs: the plan's counts do not depend on them, and timing units on this machine is
    test_study_plan.py's dry run (a timing here repeated its two short runs)."""
    cohort = write_demo_dataset("bids", tmp_path / "cohort", cases=6, size=32, seed=5)
    labeled = write_demo_dataset("msd", tmp_path / "labeled", cases=20, size=16, seed=1)
    out = tmp_path / "study"
    cost = StepCost(fixed=1.0, step=0.5, round=1.0, val_cases=1, score=1.0)
    costs = Costs("cpu (stand-in)", {"finetune": cost, "pretrain": cost})
    monkeypatch.setattr(study, "measure", lambda units, device, moved: costs)
    assert study.main(["--pretrain-data", str(cohort), "--data", "msd", "--root", str(labeled), "--out", str(out),
                       "--scale", "gpu", "--arms", "mae", "asa", "noise", "supervised", "--device", "cpu",
                       "--dry-run"]) == 0
    said = capsys.readouterr().out
    jobs = units_at_once(1, 0, None, len(os.sched_getaffinity(0)))
    assert "[study] plan: --scale gpu on a machine without a GPU: the plan below is priced on this machine's CPU" in said
    assert f"pilot: 1 unit(s) of 1200 steps, {jobs} at once" in said
    # mae and asa, 4 runs each, and noise, each of its 4 after mae's run of its replicate, exported at its step
    assert f"pretraining: 12 unit(s) of 480 steps, {jobs} at once" in said
    assert f"transfer: 120 unit(s) of 1200 steps, {jobs} at once" in said  # 14 arms × 8 draws, 8 controls
    assert "transfer: 14 arms × N [2] × 8 cross-validation draws" in said
    gpu = SCALES["gpu"]
    assert (gpu.pilot_steps, gpu.pretrain_steps, gpu.resenc) == (1200, 480, "S")  # the window's design
    assert not out.exists()  # a dry run writes nothing
    # on one H100 (80 GiB, 16 cores): 16 units at once
    assert units_at_once(1, 0, 80.0, 16) == 16 and units_at_once(1, 0, 10.5, 16) == 10 and units_at_once(2, 0, None, 16) == 8


def test_every_scale_cross_validates_a_small_labeled_set(data):
    """18 labeled cases at the quick scale: every case scored once per arm (2 folds), not 3 of a fixed split."""
    from types import SimpleNamespace

    split = labeled_split([SimpleNamespace(id=f"case_{i:02d}") for i in range(18)], SCALES["quick"], seed=0)
    assert split.test == tuple(f"case_{i:02d}" for i in range(18)) and len(split.draws) == 2
    assert tuple(sorted(i for d in split.draws for i in d.test)) == split.test


def test_the_noise_control_is_exported_at_the_step_its_matched_arm_exported(data, tmp_path, monkeypatch):
    """mae − noise reads two runs of one recipe: each noise run starts once mae's run of its replicate is done and is
    exported at the step that run exported (its lowest held-out round), read from that export as it starts; asa's
    steps do not count (its questions are not read against the noise control), and no noise run waits for asa's."""
    from asa.io import save_checkpoint

    cohort, labeled = data
    setups: list = []
    monkeypatch.setattr(study, "run_stages", lambda setup, *rest: setups.append(setup) or 0)
    assert study.main(["--pretrain-data", str(cohort), "--data", "msd", "--root", str(labeled), *QUICK, "--network",
                       "resenc-tiny", "--arms", "asa", "mae", "noise", "--out", str(tmp_path / "s")]) == 0
    (setup,) = setups
    titles = [s.title for s in stages.stages(setup.study)]
    assert titles == ["pilot", "pretraining", "transfer", "report"]
    units = stages.Pretrain().units(setup, stages.Findings()).units
    arms_first, noise = units[:4], units[4:]
    assert sorted(u.name for u in arms_first) == ["asa-c4", "asa-c4-p1", "mae-c4", "mae-c4-p1"]
    assert not any("export_step" in " ".join(u.command()) for u in arms_first)  # their lowest held-out round
    # each noise run after its own mae run alone, planned (and priced) without a step: nothing is exported yet
    assert {u.name: u.after for u in noise} == {"noise-c4": ("mae-c4",), "noise-c4-p1": ("mae-c4-p1",)}
    assert not any("export_step" in " ".join(u.argv) for u in noise)
    for run in setup.runs:  # the arms' exports, each at a step of its own
        if run.arm != "noise":
            save_checkpoint(run.encoder, {"step": {"mae": 3, "asa": 1}[run.arm] + run.replicate})
    assert {u.name: [a for a in u.command() if a.startswith("export_step=")] for u in noise} == {
        "noise-c4": ["export_step=3"], "noise-c4-p1": ["export_step=4"]}


def test_a_pretraining_run_trained_again_exports_at_the_step_the_study_fixed(data, tmp_path, monkeypatch):
    """Once the pretraining stage is read, each run's export step is fixed (pretrain/exports.json): a run trained
    again (its folder lost with its machine, the file restored from a progress record) exports at that step, not at
    its own lowest held-out round, and a noise run no longer waits for its matched run; a kept run exported at another
    step is refused, naming the folder to remove, and the fixed steps stay as they were."""
    from asa.io import save_checkpoint

    cohort, labeled = data
    setups: list = []
    monkeypatch.setattr(study, "run_stages", lambda setup, *rest: setups.append(setup) or 0)
    assert study.main(["--pretrain-data", str(cohort), "--data", "msd", "--root", str(labeled), *QUICK, "--network",
                       "resenc-tiny", "--arms", "mae", "noise", "--out", str(tmp_path / "s")]) == 0
    (setup,) = setups
    steps = {"mae-c4": 848, "mae-c4-p1": 1152, "noise-c4": 848, "noise-c4-p1": 1152}
    assert sorted(run.name for run in setup.runs) == sorted(steps)
    for run in setup.runs:
        save_checkpoint(run.encoder, {"step": steps[run.name]})
    stage, exports = stages.Pretrain(), setup.study.out / stages.EXPORTS
    assert stage.read(setup, stages.Findings(), stages.StageUnits()) is None
    assert json.loads(exports.read_text()) == steps
    units = {u.name: u for u in stage.units(setup, stages.Findings()).units}
    assert {name: [a for a in u.argv if a.startswith("export_step=")] for name, u in units.items()} == {
        name: [f"export_step={step}"] for name, step in steps.items()}
    assert all(u.after == () and u.late is None for u in units.values())  # every step known: no run waits
    mae = next(run for run in setup.runs if run.name == "mae-c4")
    save_checkpoint(mae.encoder, {"step": 1504})  # trained before the step was fixed, its folder kept
    with pytest.raises(SystemExit, match=rf"exported at step 1504, but .*exports\.json fixes mae-c4's export at step "
                                         rf"848 .*: remove {mae.run_dir}"):
        stage.read(setup, stages.Findings(), stages.StageUnits())
    assert json.loads(exports.read_text()) == steps


def test_the_encoder_norm_over_a_fresh_one_is_read_off_the_export(tmp_path):
    """norm_ratio rebuilds the export's network freshly initialised (seed 0) and divides the norms of the trained
    weights it exports: a fresh export reads 1, one with every weight doubled 2 (its buffers and other keys unread)."""
    from asa.models import PRESETS, build_network, network_spec
    from asa.models.keys import encoder_keys
    from asa.study.readout import norm_ratio

    torch.manual_seed(0)
    net = build_network({"arch": "asa_pretrain", "kwargs": {**PRESETS["tiny"], "img_size": 32, "patch_size": 8}})
    prefixes = encoder_keys(net).prefixes
    encoder = {k: v for k, v in net.state_dict().items() if k.startswith(prefixes)}
    export = {"network": network_spec(net), "encoder": encoder}
    assert norm_ratio(export) == pytest.approx(1.0, abs=1e-12)
    params = dict(net.named_parameters())
    doubled = {k: 2 * v if k in params else v + 7.0 for k, v in encoder.items()}
    assert norm_ratio({**export, "encoder": doubled}) == pytest.approx(2.0, rel=1e-12)
