"""scripts/gpu_window.sh's dry run: the GPU window's every part at toy sizes on the CPU writes its JSON to OUT as it
ends (eight files at most, what a device call brings back), with each part's exit code and seconds in window.json."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "gpu_window.sh"
# masked_L is masked_S's command at the dry run's toy sizes: the dry run runs it once
# the dry run's loops, for a 64-case cohort alone: the window's 2,000-case parts are the same command at another
# --cohort, whose cadence model tests/benchmarks/test_loop_profile.py checks
LOOPS = ("loop_swvit_64", "loop_resenc_64")
PARTS = (*LOOPS, "masked_S", "swvit_step")


@pytest.mark.slow  # every part's process at toy sizes: a few CPU-minutes
@pytest.mark.timeout(900)
def test_the_dry_run_writes_every_part_as_json(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    env = {**os.environ, "PYTHON": sys.executable, "WORK": str(work), "OMP_NUM_THREADS": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["bash", str(SCRIPT), str(out), "--dry-run"], env=env, capture_output=True, text=True,
                          timeout=880)
    assert done.returncode == 0, done.stdout + done.stderr
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8, files  # a device call brings back eight files
    window = json.loads((out / "window.json").read_text())
    assert window["dry_run"] and set(PARTS) <= set(window["parts"])
    failed = {k: v for k, v in window["parts"].items() if v["exit"] != 0}
    assert not failed, done.stdout
    loops = json.loads((out / "loops.json").read_text())
    assert set(loops) == set(LOOPS)
    for name, loop in loops.items():
        # end to end over the step alone: the loop adds to the step, so at most 1
        assert loop["timed_steps"] == 2 and 0 < loop["samples_per_s"] <= loop["step_samples_per_s"] * 1.001, loop
        cohort = loop["cohort"]  # one round and one last.pt timed, the configured cadence modelled for the cohort
        assert cohort["cases"] == int(name.rsplit("_", 1)[1]) and loop["validations"] == 1
        assert 0 < cohort["loop_over_step"] <= 1 and cohort["validation_every_steps"] >= 200
    (row,) = json.loads((out / "masked_S.json").read_text())
    assert row["median_s"]["masked"] > 0 and row["median_s"]["dense"] > 0 and row["previous_over_dense"] > 0
    step = json.loads((out / "swvit_step.json").read_text())
    # fp32 (no autocast on the CPU dry run): neither variant changes a loss (the copies' values are bit-exact)
    assert step["max_relative_loss_gap"] == {"copies": 0.0, "fp32_stream": 0.0}
    assert set(step["loss_mean_last_quarter"]) == {"eager", "copies", "fp32_stream"}
    with tarfile.open(out / "logs.tgz") as logs:
        assert {f"logs/{p}.log" for p in PARTS} <= set(logs.getnames())
    assert not (tmp_path / "out" / "loop_swvit_64.txt").exists()


def test_an_unknown_option_is_refused(tmp_path):
    done = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "out"), "--dry"], capture_output=True, text=True)
    assert done.returncode == 2 and "unknown option --dry" in done.stderr
    assert not (tmp_path / "out").exists()


def _dry_part(tmp_path, part: str):
    """The window's dry run of ``part`` alone (one thread), checked to have ended well; its OUT folder."""
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "WORK": str(tmp_path / "work"), "OMP_NUM_THREADS": "1",
           "PARTS": part}
    done = subprocess.run(["bash", str(SCRIPT), str(out), "--dry-run"], env=env, capture_output=True, text=True,
                          timeout=280)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads((out / "window.json").read_text())["parts"][part]["exit"] == 0, done.stdout
    return out


@pytest.mark.slow  # one toy profile: under a CPU-minute
@pytest.mark.timeout(300)
def test_the_fusion_profile_part_writes_its_rows(tmp_path):
    out = _dry_part(tmp_path, "fusion_profile")
    (row,) = json.loads((out / "fusion_profile.json").read_text())["rows"]
    assert row["k"] == 2 and row["fused_device_ms_per_unit"]["convolution"] > 0


@pytest.mark.slow  # two toy units and one alone, a few steps each: under a CPU-minute
@pytest.mark.timeout(300)
def test_the_stream_units_part_writes_its_rows(tmp_path):
    out = _dry_part(tmp_path, "stream_units")
    doc = json.loads((out / "stream_units.json").read_text())
    assert [(r["k"], r["mode"]) for r in doc["rows"]] == [(2, "eager")]  # on a CPU: no streams, no graphs
    assert doc["rows"][0]["max_abs_diff"] == 0.0 and doc["left_out"] == ["graph_streams", "graphs", "streams"]
