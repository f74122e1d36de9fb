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
PARTS = ("loop_swvit", "loop_resenc", "known_costs", "masked_S", "precision", "study")


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
    failed = {k: v for k, v in window["parts"].items() if v["exit"] != 0 and k != "study"}
    assert not failed, done.stdout
    assert window["parts"]["study"]["exit"] in (0, 3)  # 3: the study's --time-budget ended it, as the part asks
    for name in ("loop_swvit", "loop_resenc"):
        loop = json.loads((out / f"{name}.json").read_text())
        # end to end over the step alone: the loop adds to the step, so at most 1
        assert loop["timed_steps"] == 2 and 0 < loop["samples_per_s"] <= loop["step_samples_per_s"] * 1.001, loop
    (row,) = json.loads((out / "masked_S.json").read_text())
    assert row["median_s"]["masked"] > 0 and row["median_s"]["dense"] > 0 and row["autograd_norm_over_dense"] > 0
    precision = json.loads((out / "precision.json").read_text())
    # fp32 (no autocast on the CPU dry run): the stream's dtype cannot differ, so the losses are the same numbers
    assert precision["max_relative_loss_gap"] == {"fp32_stream": 0.0}
    assert set(precision["loss_mean_last_quarter"]) == {"eager", "fp32_stream"}
    study = json.loads((out / "study.json").read_text())
    assert study["scale"]["crop"] == 32 and "pilot and positive control" in study["stages_seconds"]
    with tarfile.open(out / "logs.tgz") as logs:
        assert {f"logs/{p}.log" for p in PARTS} <= set(logs.getnames())
        log = logs.extractfile("logs/known_costs.log").read().decode()
    costs = json.loads(log[log.index("{"):])  # the JSON it printed (no eighth file in OUT)
    assert costs["device"] == "cpu" and 0 < costs["python_rate_while_writing"] < 2
    assert not (tmp_path / "out" / "loop_swvit.txt").exists()


def test_an_unknown_option_is_refused(tmp_path):
    done = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "out"), "--dry"], capture_output=True, text=True)
    assert done.returncode == 2 and "unknown option --dry" in done.stderr
    assert not (tmp_path / "out").exists()
