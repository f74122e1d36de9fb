"""asa/study/scheduler.py: units run in order, ``jobs`` at once, only while the call's time budget holds them; a
finished unit is not run again and a failed one ends the study naming its log."""
from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from asa.study.common import Clock
from asa.study.scheduler import STOP_MARGIN, Unit, progress, run_units, stop_on_signals


def _unit(tmp_path: Path, name: str, code: str = "") -> Unit:
    """A unit whose process writes ``<tmp_path>/<name>`` (its result) after ``code``."""
    result = tmp_path / name
    return Unit(name, (sys.executable, "-c", f"{code}\nopen({str(result)!r}, 'w').write('done')"), result.is_file,
                tmp_path / "logs" / f"{name}.log")


@pytest.mark.slow  # units run as child processes
def test_units_run_until_done_and_only_while_the_budget_holds_them(tmp_path):
    times: dict[str, float] = {}
    assert run_units([_unit(tmp_path, "a"), _unit(tmp_path, "b"), _unit(tmp_path, "c")], 2, Clock(None), times)
    assert sorted(times) == ["a", "b", "c"] and all(t > 0 for t in times.values())
    assert (tmp_path / "logs" / "a.log").is_file()
    again = _unit(tmp_path, "a", "raise SystemExit(1)")  # done already: not started, so it cannot fail
    assert run_units([again], 1, Clock(None), times)
    # a budget that ends within the stop margin starts nothing, and says the call did not finish
    assert not run_units([_unit(tmp_path, "d")], 1, Clock(STOP_MARGIN - 1), times)
    assert not (tmp_path / "d").exists() and "d" not in times


def test_progress_prices_the_training_units_left_at_the_mean_the_done_ones_took(tmp_path):
    def unit(name: str, trains: bool = True) -> Unit:
        return Unit(name, (), lambda: False, tmp_path / name, config=("finetune", ()) if trains else None)

    a, b, c, d, score = unit("a"), unit("b"), unit("c"), unit("d"), unit("score", trains=False)
    # a and b done (40 and 20 min: a mean of 30); c spent 10 min before a stop, d none: 20 + 30 min at 2 at once
    times = {"a": 2400.0, "b": 1200.0, "c": 600.0}
    said = progress([a, b, c, d, score], [c, d, score], times, 2)
    assert said == ("2 of 5 unit(s) done; the 2 training unit(s) left: about 0.4 h at 2 at once (the 2 trained "
                    "took 30 min each on average, scoring and probing not priced)")
    # a done unit whose seconds were never recorded (NaN, or none) is not in the mean: a's 40 min, 30 + 40 left
    unrecorded = {**times, "b": math.nan}
    assert "about 1.2 h at 1 at once (the 1 trained took 40 min" in progress([a, b, c, d], [c, d], unrecorded, 1)
    assert progress([a, b], [a, b], {}, 2) == "0 of 2 unit(s) done"  # nothing done: nothing to price from


@pytest.mark.slow  # two calls, each with its fork server and child processes
def test_a_call_says_how_far_its_units_are_as_it_resumes_and_as_each_ends(tmp_path, capsys):
    import dataclasses

    first, second = (dataclasses.replace(_unit(tmp_path, n), config=("finetune", ())) for n in ("first", "second"))
    times: dict[str, float] = {}
    assert run_units([first], 1, Clock(None), times)
    assert run_units([first, second], 1, Clock(None), times)
    said = [line for line in capsys.readouterr().out.splitlines() if " done" in line]
    assert said[0].startswith("[study] first done (") and said[0].endswith("): 1 of 1 unit(s) done")
    assert said[1].startswith("[study] resumed: 1 of 2 unit(s) done; the 1 training unit(s) left: about ")
    assert said[2].startswith("[study] second done (") and said[2].endswith("): 2 of 2 unit(s) done")


def test_a_failed_unit_ends_the_study_naming_its_log(tmp_path):
    with pytest.raises(SystemExit, match=r"\[study\] bad failed \(exit 3\): see .*bad\.log"):
        run_units([_unit(tmp_path, "bad", "raise SystemExit(3)")], 1, Clock(None), {})


def test_units_run_side_by_side_and_a_unit_after_others_waits_for_them(tmp_path):
    """Three one-second units at three at once overlap; the scoring-like unit ``after`` two of them starts only once
    both ended, though a slot was free, while a unit behind it in the list takes that slot."""
    import dataclasses
    import json

    def timed(name: str, seconds: float) -> Unit:
        stamp = tmp_path / f"{name}.json"
        code = (f"import json, time; t = time.time(); time.sleep({seconds}); "
                f"json.dump([t, time.time()], open({str(stamp)!r}, 'w'))")
        return _unit(tmp_path, name, code)

    a, b, c = timed("a", 1.0), timed("b", 1.5), timed("c", 0.2)
    score = dataclasses.replace(timed("score", 0.1), after=("a", "b"))
    assert run_units([a, b, score, c], 3, Clock(None), {})
    span = {n: json.loads((tmp_path / f"{n}.json").read_text()) for n in ("a", "b", "c", "score")}
    assert span["a"][0] < span["b"][1] and span["b"][0] < span["a"][1]  # side by side
    assert span["c"][0] < span["a"][1]  # took the free slot ahead of the unit that waits
    assert span["score"][0] >= max(span["a"][1], span["b"][1])



def test_a_unit_s_late_arguments_are_read_as_it_starts_from_what_the_units_it_waits_for_wrote(tmp_path, capsys):
    """The negative control's export step is its matched run's, known once that run is done: ``late`` is read as
    the unit starts (after it, though listed first with a slot free), it sees what that unit wrote, and the line
    that starts it says so."""
    import json

    step, seen = tmp_path / "step", tmp_path / "seen.json"
    first = _unit(tmp_path, "first", f"import time; time.sleep(0.5); open({str(step)!r}, 'w').write('1504')")
    then = Unit("then", (sys.executable, "-c", f"import json, sys; json.dump(sys.argv[1:], open({str(seen)!r}, 'w'))"),
                seen.is_file, tmp_path / "logs" / "then.log", after=("first",),
                late=lambda: (f"export_step={step.read_text()}",))
    assert run_units([then, first], 2, Clock(None), {})
    assert json.loads(seen.read_text()) == ["export_step=1504"]
    assert any(line.startswith("[study] then: ") and line.endswith(f"export_step=1504 (log {then.log})")
               for line in capsys.readouterr().out.splitlines())


def test_a_unit_runs_its_command_line_as_a_fresh_interpreter_would_from_the_preloaded_one(tmp_path):
    """A ``-c`` unit sees its arguments, ``__main__``, its environment and its thread count, and its exit handlers
    run; torch is in its modules before it imports anything (the fork server's); a ``-m`` unit runs the module with
    its arguments, and its exit code (argparse's 2 for an unknown option) is the unit's."""
    import json

    seen = tmp_path / "seen.json"
    code = ("import atexit, json, os, sys\n"
            "preloaded = 'torch' in sys.modules\n"
            "import torch\n"
            f"atexit.register(lambda: open({str(tmp_path / 'atexit')!r}, 'w').write('ran'))\n"
            f"json.dump({{'argv': sys.argv, 'name': __name__, 'var': os.environ.get('OMP_NUM_THREADS'), "
            f"'threads': torch.get_num_threads(), 'preloaded': preloaded}}, open({str(seen)!r}, 'w'))")
    unit = Unit("c", (sys.executable, "-c", code, "one", "two"), seen.is_file, tmp_path / "logs" / "c.log", threads=1)
    assert run_units([unit], 1, Clock(None), {})
    assert json.loads(seen.read_text()) == {"argv": ["-c", "one", "two"], "name": "__main__", "var": "1",
                                            "threads": 1, "preloaded": True}
    assert (tmp_path / "atexit").read_text() == "ran"

    (tmp_path / "in.json").write_text('{"b": 1, "a": [2]}')
    pretty = tmp_path / "out.json"
    tool = Unit("m", (sys.executable, "-m", "json.tool", "--sort-keys", str(tmp_path / "in.json"), str(pretty)),
                pretty.is_file, tmp_path / "logs" / "m.log")
    assert run_units([tool], 1, Clock(None), {})
    assert json.loads(pretty.read_text()) == {"a": [2], "b": 1} and pretty.read_text().startswith('{\n    "a"')
    refused = Unit("bad", (sys.executable, "-m", "json.tool", "--no-such-option"), lambda: False,
                   tmp_path / "logs" / "bad.log")
    with pytest.raises(SystemExit, match=r"bad failed \(exit 2\)"):
        run_units([refused], 1, Clock(None), {})
    assert "--no-such-option" in (tmp_path / "logs" / "bad.log").read_text()


def test_a_command_line_that_is_not_this_interpreter_s_is_refused(tmp_path):
    with pytest.raises(ValueError, match="is not .* -m <module>"):
        run_units([Unit("sh", ("sh", "-c", "true"), lambda: False, tmp_path / "sh.log")], 1, Clock(None), {})


def _children() -> dict[int, str]:
    """This process's children (zombies included, with no command line) by the kernel's list: {pid: command line}."""
    pids = Path(f"/proc/self/task/{os.getpid()}/children").read_text().split()
    lines = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            lines[int(pid)] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    return lines


@pytest.mark.slow  # a study's child processes
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads /proc")
def test_no_process_of_the_study_outlives_it(tmp_path):
    """Once the study's work returns, the fork server its units came from and the resource tracker that server
    started have ended and been waited for: no child is left that the call started, not even one still tearing
    down, and neither server runs on."""
    before = _children()
    assert stop_on_signals(lambda: 0 if run_units([_unit(tmp_path, "a")], 1, Clock(None), {}) else 1,
                           lambda stop, names: None) == 0
    assert (tmp_path / "a").is_file()
    after = _children()
    assert set(after) <= set(before), after
    assert not [line for line in after.values() if "multiprocessing" in line], after


# a unit holding its folder's run.lock as a run does: on SIGTERM it saves until its folder holds `saved` (at most
# 60 s), writes `done` once it ran argv[2] seconds
HOLDER = """
import os, signal, sys, time
from pathlib import Path
from asa.api.machinery.rundir import RunLock
folder = Path(sys.argv[1])
lock = RunLock(folder)
lock.acquire('unit')
def stop(signum, frame):
    deadline = time.monotonic() + 60.0
    while not (folder / 'saved').exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    lock.release()
    raise SystemExit(143)
signal.signal(signal.SIGTERM, stop)
(folder / 'pid').write_text(str(os.getpid()))
time.sleep(float(sys.argv[2]))
(folder / 'done').write_text('')
lock.release()
"""
# a study of that one unit: it waits for the units of a study killed before, then runs its own
STUDY = """
import sys
from pathlib import Path
from asa.study.common import Clock
from asa.study.scheduler import Unit, run_units, stop_on_signals, wait_for_orphans
out, seconds, code = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
unit = Unit('unit', (sys.executable, '-c', code, str(out / 'unit'), seconds), (out / 'unit' / 'done').is_file,
            out / 'logs' / 'unit.log')
def work():
    wait_for_orphans(out)
    return 0 if run_units([unit], 1, Clock(None), {}) else 3
sys.exit(stop_on_signals(work, lambda stop, names: None))
"""


@pytest.mark.slow  # two studies, each with its fork server
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_a_killed_study_s_units_end_with_it_and_the_same_command_then_runs(tmp_path):
    """A study killed by SIGKILL (as the OOM killer kills) runs no handler: its running unit gets SIGTERM as the fork
    server ends with the study, saves and ends (no orphan holding its folder's lock for as long as it would
    have run), and a study started right after waits for it, then runs the unit in that folder."""
    out = tmp_path / "study"
    (out / "unit").mkdir(parents=True)
    killed = subprocess.Popen([sys.executable, "-c", STUDY, str(out), "120", HOLDER])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (out / "unit" / "pid").is_file():
        time.sleep(0.2)
    unit = int((out / "unit" / "pid").read_text())
    killed.kill()
    assert killed.wait() == -signal.SIGKILL
    again = subprocess.Popen([sys.executable, "-c", STUDY, str(out), "0", HOLDER], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    said = []  # the second study's lines as it prints them: the orphan saves until the study said it waits for it
    reader = threading.Thread(target=lambda: said.extend(again.stdout), daemon=True)
    reader.start()
    waiting = f"waiting for the units of a study stopped before to save and end (pid {unit})"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(waiting in line for line in said) and again.poll() is None:
        time.sleep(0.1)
    assert _alive(unit) and any(waiting in line for line in said), said
    (out / "unit" / "saved").write_text("")
    assert again.wait(timeout=300) == 0, again.stderr.read()[-2000:] + (out / "logs" / "unit.log").read_text()[-2000:]
    reader.join(timeout=10)
    assert (out / "unit" / "done").is_file() and not (out / "unit" / "run.lock").exists()
    assert not _alive(unit)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# a study that says when its first unit starts (and with it its fork server)
CTRL_C = """
import sys, time
from pathlib import Path
from asa.study.scheduler import Unit, launch, stop_on_signals
out = Path(sys.argv[1])
unit = Unit('unit', (sys.executable, '-c', 'import time; time.sleep(60)'), lambda: False, out / 'unit.log')
def work():
    (out / 'starting').write_text('')
    launch(unit)
    time.sleep(60)
    return 0
sys.exit(stop_on_signals(work, lambda stop, names: print(f'stopped by {stop}', file=sys.stderr)))
"""


@pytest.mark.slow  # a study of its own, with its fork server
def test_a_ctrl_c_as_the_first_unit_starts_reaches_the_study_alone(tmp_path):
    """Ctrl-C reaches the terminal's whole foreground process group, the fork server included while it starts (with
    the first unit): the study exits 130 with its own line alone, no fork server's traceback."""
    study = subprocess.Popen([sys.executable, "-c", CTRL_C, str(tmp_path)], stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (tmp_path / "starting").is_file():
        time.sleep(0.05)
    time.sleep(0.3)  # the fork server is importing what it preloads (seconds)
    os.killpg(study.pid, signal.SIGINT)  # as a terminal sends Ctrl-C: to its process group
    assert study.wait(300) == 130
    assert study.stderr.read().strip() == "stopped by SIGINT"
