"""asa/study/scheduler.py: units run in order, ``jobs`` at once, only while the call's time budget holds them; a
finished unit is not run again and a failed one ends the study naming its log."""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import pytest

from asa.study.common import Clock
from asa.study.scheduler import STOP_MARGIN, Unit, run_units, stop_on_signals


def _unit(tmp_path: Path, name: str, code: str = "") -> Unit:
    """A unit whose process writes ``<tmp_path>/<name>`` (its result) after ``code``."""
    result = tmp_path / name
    return Unit(name, (sys.executable, "-c", f"{code}\nopen({str(result)!r}, 'w').write('done')"), result.is_file,
                tmp_path / "logs" / f"{name}.log")


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
