"""asa/study/sittings.py and the stages' seconds: a sitting stopped by SIGTERM mid-stage keeps its stage's and its
stopped unit's seconds in times.json, and every sitting says when it ran and how it ended."""
from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from asa.study import stages, transfer
from asa.study.common import Clock
from asa.study.scheduler import Unit, stop_on_signals
from asa.study.sittings import ended, keep_sitting


def _stop_once_started(started: Path, after: float = 1.0) -> None:
    """SIGTERM to this process ``after`` s after the unit wrote ``started``: the study stops mid-stage."""
    deadline = time.monotonic() + 120
    while not started.is_file() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(after)
    os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.slow  # a unit in a process of its own, stopped by a real SIGTERM after it started
def test_a_sitting_stopped_mid_stage_keeps_its_seconds_and_says_how_it_ended(tmp_path, monkeypatch):
    started = tmp_path / "started"
    unit = Unit("sleeper", (sys.executable, "-c", f"import time; open({str(started)!r}, 'w'); time.sleep(60)"),
                lambda: False, tmp_path / "logs" / "sleeper.log")

    class Slow(stages.Stage):
        title = "slow"

        def units(self, setup, found):
            return stages.StageUnits((unit,))

    monkeypatch.setattr(stages, "stages", lambda study: [Slow()])
    setup = SimpleNamespace(study=SimpleNamespace(scale=SimpleNamespace(jobs=1, time_budget=None), memory_gib=None))
    times, times_file = {"stages": {"pilot": 5.0}, "runs": {}}, tmp_path / "times.json"
    stopper = threading.Thread(target=_stop_once_started, args=(started,))
    stopper.start()
    code = keep_sitting(times, times_file, lambda: stop_on_signals(
        lambda: stages.run_stages(setup, Clock(None), times, times_file), lambda stop, names: None))
    stopper.join()
    assert code == 128 + signal.SIGTERM
    kept = json.loads(times_file.read_text())
    assert kept["stages"]["pilot"] == 5.0 and kept["stages"]["slow"] >= 1.0  # the stopped stage's seconds, added
    assert kept["runs"]["sleeper"] >= 1.0  # and its stopped unit's
    [sitting] = kept["sittings"]
    assert sitting["ended"] == "stopped by SIGTERM" and sitting["seconds"] >= kept["stages"]["slow"] - 0.1
    assert sitting["start"] <= sitting["end"]
    # a second sitting is added beside the first
    assert keep_sitting(times, times_file, lambda: 3) == 3
    assert [s["ended"] for s in json.loads(times_file.read_text())["sittings"]] == [
        "stopped by SIGTERM", "unfinished (rerun to continue)"]


def test_a_sitting_says_how_it_ended():
    assert [ended(c) for c in (0, 2, 3, 130, None)] == [
        "finished", "refused", "unfinished (rerun to continue)", "stopped by SIGINT", "failed"]


def test_a_sitting_is_on_disk_from_its_start_and_one_killed_is_closed_by_the_next_at_its_last_log(tmp_path):
    """A SIGKILL runs no handler: what it leaves is times.json as the sitting wrote it at its start. The next
    sitting closes that one as killed, ending when the study was last seen working (its units' last log line)."""
    from asa.study.sittings import KILLED, RUNNING

    times_file, log = tmp_path / "times.json", tmp_path / "logs" / "unit.log"
    on_disk = {}

    def work() -> int:  # the state a kill at this moment leaves behind, with a unit's log written just now
        on_disk.update(json.loads(times_file.read_text()))
        log.parent.mkdir()
        log.write_text("step 1\n")
        os.utime(log, (time.time() + 30, time.time() + 30))  # last seen half a minute into the sitting
        return 0

    keep_sitting({"stages": {}, "runs": {}}, times_file, work)
    [left] = on_disk["sittings"]
    assert left["ended"] == RUNNING and left["end"] is None  # written before any work
    times = dict(on_disk)  # the next sitting reads what the killed one left
    assert keep_sitting(times, times_file, lambda: 0) == 0
    killed, now = json.loads(times_file.read_text())["sittings"]
    assert killed["ended"] == KILLED and 29 <= killed["seconds"] <= 32  # to its last log line, not to now
    assert killed["start"] < killed["end"] and now["ended"] == "finished"


@pytest.mark.slow  # two units in processes of their own, a real SIGTERM between sittings
def test_each_fine_tuning_run_s_wall_time_holds_every_sitting_s_seconds(tmp_path, monkeypatch):
    """A fine-tuning stage stopped mid-way and rerun: each run's wall_time.json (the budget table's "train s / run",
    the Cost table's fine-tuning rows) holds what times.json holds for its unit, every sitting's: run a ended in the
    stopped sitting (its read, which writes the file, came only in the rerun), run b trained in both."""
    out = tmp_path / "transfer"
    settings = transfer.Transfer(out, arms={})
    runs = tuple(transfer.Run(arm, 1, 0, (), (), out / "runs" / f"{arm}-n1-s0") for arm in ("a", "b"))
    started = tmp_path / "b-started"

    def unit(run: transfer.Run, seconds: float, marker: Path | None = None) -> Unit:
        mark = f"open({str(marker)!r}, 'w'); " if marker else ""
        code = f"import pathlib, time; {mark}time.sleep({seconds}); pathlib.Path({str(run.run_dir / 'done')!r}).touch()"
        run.run_dir.mkdir(parents=True, exist_ok=True)
        return Unit(f"transfer/{run.run_dir.name}", (sys.executable, "-c", code), (run.run_dir / "done").is_file,
                    tmp_path / "logs" / f"{run.arm}.log", config=("finetune", ()))

    trained = (unit(runs[0], 0.5), unit(runs[1], 3.0, started))

    class Tuning(stages.FineTuning):
        title = "transfer"

        def units(self, setup, found):
            return stages.FineTuningUnits(trained, "", settings=settings, runs=runs, cfg=None, trained=trained)

    monkeypatch.setattr(stages, "stages", lambda study: [Tuning()])
    monkeypatch.setattr(transfer, "_names", lambda done, cfg: [])  # nothing is scored here
    setup = SimpleNamespace(study=SimpleNamespace(scale=SimpleNamespace(jobs=2, time_budget=None), memory_gib=None))
    times, times_file = {"stages": {}, "runs": {}}, tmp_path / "times.json"

    def sitting() -> int:
        return keep_sitting(times, times_file, lambda: stop_on_signals(
            lambda: stages.run_stages(setup, Clock(None), times, times_file), lambda stop, names: None))

    stopper = threading.Thread(target=_stop_once_started, args=(started, 1.5))
    stopper.start()
    assert sitting() == 128 + signal.SIGTERM
    stopper.join()
    assert not any((run.run_dir / "wall_time.json").exists() for run in runs)  # the stage's read did not come
    assert sitting() == 0  # b again from its start, then the read
    recorded = json.loads(times_file.read_text())["runs"]
    for run in runs:
        total = recorded[f"transfer/{run.run_dir.name}"]
        assert json.loads((run.run_dir / "wall_time.json").read_text())["train_seconds"] == pytest.approx(total)
    assert recorded["transfer/b-n1-s0"] > 4.0  # its 1.5 s before the stop and its 3 s after
