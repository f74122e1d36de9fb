"""asa-study's hold on its folder and its settings: one study at a time writes --out (a second is refused in one line
naming the holder, touching nothing), a killed study's lock is taken over."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from asa.data.synthetic.demo import write_demo_dataset
from asa.study import study

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
