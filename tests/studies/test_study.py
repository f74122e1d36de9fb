"""asa-study (asa.study.study): the split and its held-out positive control, the overlap check that refuses a test
case planted in the pretraining cohort (exit 2, before anything trains), refusals of a changed study folder (exit 2,
old -> new), the plateau check, the report's verdicts and instrument checks, and the installed script end to end
from a folder outside the checkout, stopped by SIGTERM with no child left."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from asa.data import discover
from asa.data.synthetic.demo import write_demo_dataset
from asa.study import report, study
from asa.study.common import record_settings

QUICK = ["--scale", "quick", "--n-boot", "50"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    base = tmp_path_factory.mktemp("study-data")
    cohort = write_demo_dataset("bids", base / "cohort", cases=4, size=32, seed=5)
    labeled = write_demo_dataset("msd", base / "labeled", cases=9, size=32, seed=1)
    return cohort, labeled


def test_the_split_holds_the_positive_control_apart_or_leaves_it_out(data):
    cases = discover("msd", data[1])
    scale = study.SCALES["quick"]  # 3 test + 2 val + N 2 + 2 for the control = 9
    split = study.labeled_split(cases, scale, seed=0)
    parts = [set(split[k]) for k in ("test", "val", "pool", "supervised")]
    assert [len(p) for p in parts] == [3, 2, 2, 2] and set().union(*parts) == {c.id for c in cases}
    assert sum(len(p) for p in parts) == len(cases)  # disjoint
    small = study.labeled_split(cases[:8], scale, seed=0)
    assert small["supervised"] == [] and len(small["pool"]) == 3  # too few for the control: left out, not shrunk
    with pytest.raises(SystemExit) as err:
        study.labeled_split(cases[:6], scale, seed=0)
    assert err.value.code == 2


def test_a_changed_study_folder_is_refused_with_old_and_new_values(tmp_path, capsys):
    record_settings(tmp_path, {"seed": 0, "scale": {"cases": [2]}}, grows=("scale.cases",))
    record_settings(tmp_path, {"seed": 0, "scale": {"cases": [2, 8]}}, grows=("scale.cases",))  # may grow
    with pytest.raises(SystemExit) as err:
        record_settings(tmp_path, {"seed": 1, "scale": {"cases": [2, 8]}}, grows=("scale.cases",))
    assert err.value.code == 2 and "seed: 0 -> 1" in capsys.readouterr().err


def test_a_test_case_planted_in_the_pretraining_cohort_is_refused_before_anything_trains(data, tmp_path):
    cohort, labeled = data
    split = study.labeled_split(discover("msd", labeled), study.SCALES["quick"], seed=0)
    planted = tmp_path / "cohort.csv"  # the cohort's scans and the T1 channel of one test case, renamed
    cases = discover("bids", cohort)
    test_case = next(c for c in discover("msd", labeled) if c.id == split["test"][0])
    t1 = next(p for ch, p in test_case.images.items() if ch.lower().startswith("t1") and "gd" not in ch.lower())
    planted.write_text("id,path\n" + "".join(f"{c.id},{c.images['t1']}\n" for c in cases) + f"someone,{t1}\n")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "asa.cli.study", "--pretrain-data", str(planted), "--data", "msd",
                           "--root", str(labeled), "--out", str(out), *QUICK], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"{test_case.id} = someone" in proc.stderr and "--accept-overlap" in proc.stderr
    assert not (out / "pretrain").exists() and not (out / "pilot").exists()  # nothing trained


def test_the_plateau_check_can_fail():
    assert study.loss_plateau([1.0, 0.6, 0.5, 0.49, 0.488, 0.487, 0.4869, 0.4868])["plateau"] is True
    falling = study.loss_plateau([1.0, 0.8, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1])
    # the 6th of 8 points (3/4 of the run) is 0.3, the last quarter reaches 0.1: a drop of 2/3
    assert falling["plateau"] is False and falling["loss_drop"] == pytest.approx((0.3 - 0.1) / 0.3)
    assert study.loss_plateau([1.0, 0.5])["plateau"] is None


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
    assert report.verdict(0.01, 0.05) == "helped" and report.verdict(-0.05, -0.01) == "hurt"
    assert report.verdict(-0.01, 0.02) == "no difference"
    rows = report.contrast_rows(_scores(0.1, "supervised") + [r for r in _scores(0.02, "noise-c4") if r["arm"] != "scratch"],
                                [4], n_boot=200)
    by_arm = {r["arm"]: r for r in rows}
    assert by_arm["supervised"]["verdict"] == "helped" and by_arm["supervised"]["Dice_mean"][0] == pytest.approx(0.1)
    assert report.instrument_faults(rows, {"test": {"lesion": 0.7}}) == [
        "the negative control helped, so a gain may be the recipe's, not what pretraining learned."]
    flat = report.contrast_rows(_scores(0.0, "supervised", spread=0.02), [], n_boot=200)
    assert flat[0]["verdict"] == "no difference"
    faults = report.instrument_faults(flat, {"test": {"lesion": 0.05}})
    assert len(faults) == 2 and "does not learn the task" in faults[0] and "positive control did not move" in faults[1]


def _children_of(out: Path) -> list[int]:
    """Processes whose command line names the study folder (the study's children)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if str(out) in (proc / "cmdline").read_bytes().decode(errors="ignore"):
                    found.append(int(proc.name))
            except OSError:
                pass
    return found


@pytest.mark.slow
def test_the_installed_script_runs_a_quick_study_from_outside_the_checkout_and_sigterm_stops_every_child(data, tmp_path):
    cohort, labeled = data
    out = tmp_path / "study"
    argv = ["asa-study", "--pretrain-data", str(cohort), "--data", "msd", "--root", str(labeled), "--out", str(out),
            *QUICK, "--arms", "mae", "supervised", "--seeds", "0", "--pretrain-steps", "2", "--pilot-steps", "10"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    stopped = subprocess.Popen([*argv, "--threads", "1"], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not (out / "logs").is_dir():
        time.sleep(0.5)
    time.sleep(3)  # the first units are running
    assert _children_of(out), "no unit started"
    stopped.send_signal(signal.SIGTERM)
    assert stopped.wait(300) == 143
    assert "SIGTERM: stopped" in stopped.stderr.read()
    assert _children_of(out) == []  # every child waited for
    written = {f: f.stat().st_mtime_ns for f in out.rglob("*") if f.is_file()}
    time.sleep(3)
    assert {f: f.stat().st_mtime_ns for f in out.rglob("*") if f.is_file()} == written  # nothing written after the exit
    done = subprocess.run([*argv, "--threads", "1"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    page = (out / "report" / "README.md").read_text()
    assert "## Answers" in page and "Overlap of the pretraining cohort" in page and "positive control" in page.lower()
    assert (out / "report" / "dice_vs_n.svg").read_text().startswith("<?xml")
    contrasts = json.loads((out / "report" / "contrasts.json").read_text())
    assert {c["arm"] for c in contrasts} >= {"supervised", "mae-c4"} and all("verdict" in c for c in contrasts)


def test_whole_heads_are_said_before_anything_trains(tmp_path):
    import nibabel as nib
    import numpy as np

    from asa.data.case import Case

    def case(name: str, background: float) -> Case:
        image = np.full((16, 16, 16), background, np.float32)
        image[4:12, 4:12, 4:12] = 1.0  # the brain
        nib.save(nib.Nifti1Image(image, np.eye(4)), tmp_path / f"{name}.nii.gz")
        return Case(name, {"t1": tmp_path / f"{name}.nii.gz"}, None, {})

    lines = study.skull_lines({"--pretrain-data": [case("head", 0.05)], "--root": [case("stripped", 0.0)]})
    assert len(lines) == 1 and lines[0].startswith("--pretrain-data: the scans are not skull-stripped (100%")
