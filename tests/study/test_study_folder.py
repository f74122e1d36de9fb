"""asa-study's hold on its folder: one study at a time writes --out (a second is refused in one line naming the
holder, touching nothing), a killed study's lock is taken over; a dry run stopped by a signal ends in one line."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from asa.data.synthetic.demo import write_demo_dataset
from asa.study import study
from asa.study.cost import epoch_rounds
from asa.study.transfer import cadence

QUICK = ["--data", "msd", "--scale", "quick", "--n-boot", "50", "--test", "3", "--arms", "supervised"]


@pytest.fixture(scope="module")
def labeled(tmp_path_factory):
    return write_demo_dataset("msd", tmp_path_factory.mktemp("folder-data") / "labeled", cases=9, size=24, seed=1)


def _lock(out, pid: int) -> None:
    """``<out>/run.lock`` as a study of process ``pid`` on this host holds it."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "run.lock").write_text(json.dumps({"host": socket.gethostname(), "pid": pid, "started": "2026-01-01T00:00:00",
                                              "command": "asa-study --out study"}))


def test_a_second_study_on_a_held_folder_is_refused_in_one_line_naming_the_holder(labeled, tmp_path, capsys,
                                                                                   monkeypatch):
    """A study running in --out holds its run.lock: a second one there is refused at once (exit 2, one line naming
    the holder's pid), before its checks, writing nothing; the first's lock stays."""
    monkeypatch.setattr(study, "run_stages", lambda *rest: 0)  # the checks and the plan, not the units
    out = tmp_path / "study"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        _lock(out, holder.pid)
        with pytest.raises(SystemExit) as refused:
            study.main([*QUICK, "--root", str(labeled), "--out", str(out)])
    finally:
        holder.kill()
        holder.wait()
    err = capsys.readouterr().err.strip().splitlines()
    assert refused.value.code == 2 and len(err) == 1 and f"pid {holder.pid}" in err[0] and "--out" in err[0], err
    assert [p.name for p in out.iterdir()] == ["run.lock"]
    assert json.loads((out / "run.lock").read_text())["pid"] == holder.pid


def test_a_study_holds_its_folder_while_it_runs_and_takes_over_a_killed_one_s_lock(labeled, tmp_path, monkeypatch,
                                                                                    capsys):
    out = tmp_path / "study"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _lock(out, dead.pid)  # a study killed by SIGKILL left its lock
    held = []
    monkeypatch.setattr(study, "run_stages",
                        lambda *rest: held.append(json.loads((out / "run.lock").read_text())["pid"]) or 0)
    assert study.main([*QUICK, "--root", str(labeled), "--out", str(out)]) == 0
    assert held == [os.getpid()] and not (out / "run.lock").exists()  # held while it ran, given back
    assert "taking over the stale lock" in capsys.readouterr().err
    # a refusal leaves no folder behind where there was none
    with pytest.raises(SystemExit):
        study.main([*QUICK, "--root", str(labeled), "--out", str(tmp_path / "new" / "study"), "--test", "-1"])
    assert not (tmp_path / "new").exists()


@pytest.mark.slow  # the console script in a process of its own, timing a unit
def test_sigterm_during_a_dry_run_is_one_line_and_exit_143(labeled, tmp_path):
    """A dry run times a short run of a unit in its own process: SIGTERM there (the timed run saves and stops, or the
    study is between runs) ends the dry run as a run's stop ends, one line and 143, writing nothing to --out."""
    scratch, out = tmp_path / "tmp", tmp_path / "study"
    scratch.mkdir()
    argv = [sys.executable, "-m", "asa.cli.study", *QUICK, "--crop", "16", "--threads", "1", "--root", str(labeled),
            "--out", str(out), "--dry-run"]
    dry = subprocess.Popen(argv, env={**os.environ, "TMPDIR": str(scratch), "OMP_NUM_THREADS": "1"},
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and dry.poll() is None and not list(scratch.glob("asa-study-cost-*/run-*/tb")):
        time.sleep(0.05)  # until the timed run trains (its TensorBoard folder)
    dry.send_signal(signal.SIGTERM)
    _, err = dry.communicate(timeout=300)
    assert dry.returncode == 143, err[-3000:]
    assert "Traceback" not in err and err.strip().splitlines()[-1] == \
        f"[study] SIGTERM: the dry run stopped; nothing was written to {out}", err[-3000:]
    assert not out.exists()


def test_a_refused_override_is_the_only_line_and_leaves_the_folder_free(labeled, tmp_path, capsys, monkeypatch):
    """An --override that does not compose, or names a file that is not there, is refused first, in one line (exit 2),
    with nothing written: the corrected command then runs as a new study, not refused as 'other settings'."""
    monkeypatch.setattr(study, "run_stages", lambda *rest: 0)  # the checks and the plan, not the units
    out = tmp_path / "study"
    argv = [*QUICK, "--root", str(labeled), "--out", str(out)]
    for bad, said in (("trainer.no_such_key=1", "no_such_key"), ("model.pretrained=/no/such.pt", "/no/such.pt does "
                                                                  "not exist")):
        with pytest.raises(SystemExit) as refused:
            study.main([*argv, "--override", bad])
        printed = capsys.readouterr()
        lines = printed.err.strip().splitlines()
        assert refused.value.code == 2 and not printed.out and len(lines) == 1 and said in lines[0], printed
        assert lines[0].startswith(f"--override {bad}") and not out.exists()
    assert study.main([*argv, "--override", "trainer.log_every=1"]) == 0  # the corrected command
    assert json.loads((out / "study.json").read_text())["override"] == ["trainer.log_every=1"]


@pytest.mark.parametrize("option, said", [
    (["--pilot-steps", "3"], "--pilot-steps 3: the pilot sets the fine-tuning budget where its validation Dice stops "
                             "rising, which takes 6 validation rounds at least, and 3 steps over N 2 validate 3 "
                             "time(s): expected at least 6"),
    (["--val", "0"], "--val 0: the pilot sets the fine-tuning budget where its validation Dice stops rising, which "
                     "takes 6 validation rounds at least, on validation cases: expected --val 1 or more")])
def test_a_pilot_too_short_to_set_the_budget_is_refused_before_anything_runs(labeled, tmp_path, capsys, monkeypatch,
                                                                             option, said):
    """The pilot's budget reads 6 validation rounds at least: fewer steps than its cadence gives 6 rounds in, or no
    validation case, is refused in one line naming the option and its floor, before anything runs or is kept (a dry
    run too: it planned 'nan min')."""
    monkeypatch.setattr(study, "run_stages", lambda *rest: 0)  # the checks and the plan, not the units
    for dry in ([], ["--dry-run"]):
        with pytest.raises(SystemExit) as refused:
            study.main([*QUICK, *option, *dry, "--root", str(labeled), "--out", str(tmp_path / "study")])
        assert refused.value.code == 2 and capsys.readouterr().err.strip().splitlines()[-1] == said
        assert not (tmp_path / "study" / "study.json").exists()
    # the floor holds: 6 steps at N 2 in batches of 2 are 6 epochs, each validated
    assert epoch_rounds(6, *cadence(6, 2, 2), 0) + 1 == 6 and epoch_rounds(5, *cadence(5, 2, 2), 0) + 1 == 5
