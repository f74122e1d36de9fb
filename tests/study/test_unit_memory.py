"""A unit's planned GPU memory (`Unit.gib`: `UNIT_GIB` a run it trains) bounds the units at once on a GPU, besides
``jobs``: `run_units` starts a unit only while its memory fits beside the running units', a unit larger than the
device runs alone (and says so), the CPU is bounded by ``jobs`` alone, and the dry run's `_makespan` prices the same
rule."""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest

from asa.study.common import Clock
from asa.study.scheduler import UNIT_GIB, Unit, run_units
from asa.study.stages import _makespan


def _timed(tmp_path: Path, name: str, seconds: float, runs: int = 1) -> Unit:
    """A unit of ``runs`` runs (a fused one above 1) whose process sleeps ``seconds`` and writes its [start, end]."""
    stamp = tmp_path / f"{name}.json"
    code = (f"import json, time; t = time.time(); time.sleep({seconds}); "
            f"json.dump([t, time.time()], open({str(stamp)!r}, 'w'))")
    unit = Unit(name, (sys.executable, "-c", code), stamp.is_file, tmp_path / "logs" / f"{name}.log")
    if runs > 1:
        unit = dataclasses.replace(unit, group=tuple((f"output_dir=run{k}",) for k in range(runs)))
    return unit


def _most_at_once(tmp_path: Path, units: list[Unit]) -> int:
    """The most of ``units`` whose [start, end] overlapped, read from what each wrote."""
    spans = [json.loads((tmp_path / f"{u.name}.json").read_text()) for u in units]
    return max(sum(start <= t < end for start, end in spans) for t, _ in spans)


@pytest.mark.slow  # units run as child processes
def test_units_start_only_while_their_memory_fits_on_the_device(tmp_path):
    """3 GiB, 4 jobs: fused units of 2 runs (2 GiB each) run one at a time, one-run units (1 GiB) three at once."""
    fused = [_timed(tmp_path, f"fused{k}", 1.0, runs=2) for k in range(2)]
    assert [u.gib for u in fused] == [2 * UNIT_GIB] * 2
    assert run_units(fused, 4, Clock(None), {}, memory_gib=3.0)
    assert _most_at_once(tmp_path, fused) == 1
    single = [_timed(tmp_path, f"run{k}", 1.5) for k in range(4)]
    assert run_units(single, 4, Clock(None), {}, memory_gib=3.0)
    assert _most_at_once(tmp_path, single) == 3


@pytest.mark.slow  # units run as child processes, one after another
def test_a_unit_larger_than_the_device_runs_alone_and_says_so(tmp_path, capsys):
    """A 4-run unit (4 GiB) on 3 GiB waits for the unit before it, then runs alone: the unit after it waits for it."""
    units = [_timed(tmp_path, "before", 0.6), _timed(tmp_path, "big", 0.6, runs=4), _timed(tmp_path, "after", 0.6)]
    assert run_units(units, 3, Clock(None), {}, memory_gib=3.0)
    assert _most_at_once(tmp_path, units) == 1
    said = capsys.readouterr().out
    line = "[study] big: its planned 4 GiB of GPU memory exceed the device's 3.0 GiB: it runs alone"
    assert said.count(line) == 1 and said.count("exceed the device's") == 1


def test_on_the_cpu_only_jobs_bound_the_units_at_once(tmp_path):
    """No device memory (None): two fused units of 2 runs at 2 jobs run side by side, whatever their GiB."""
    fused = [_timed(tmp_path, f"fused{k}", 1.5, runs=2) for k in range(2)]
    assert run_units(fused, 2, Clock(None), {}, memory_gib=None)
    assert _most_at_once(tmp_path, fused) == 2


def test_the_dry_run_s_makespan_applies_the_memory_rule():
    """Each unit in order starts once fewer than ``jobs`` run and its GiB fit beside theirs, or nothing runs."""
    units = [(2.0, 2.0, ()), (1.0, 1.0, ()), (3.0, 2.0, ()), (1.0, 1.0, ())]  # (seconds, GiB, after)
    # 3 GiB: the first two at 0 (3 GiB); the third waits for both (2 + 2 > 3): 2 to 5, the fourth beside it, 2 to 3
    assert _makespan(units, 4, 3.0) == 5.0
    assert _makespan(units, 4, None) == 3.0  # on the CPU: all four at 0, the longest 3 s
    assert _makespan(units, 1, 3.0) == 7.0  # one at a time: their sum
    # a unit larger than the device starts alone at 0; the one after it waits for it to end
    assert _makespan([(1.0, 4.0, ()), (1.0, 1.0, ())], 2, 3.0) == 2.0


def test_the_dry_run_s_makespan_starts_a_unit_after_the_units_it_comes_after():
    """A noise run after its matched run (`stages.Pretrain`): three arms' runs and three noise runs, each after its
    own, 2 at once on the CPU take three waves (no core idle); 16 at once, two (the noise runs wait for theirs)."""
    runs = [(10.0, 1.0, ())] * 3 + [(10.0, 1.0, (k,)) for k in range(3)]
    assert _makespan(runs, 2) == 30.0
    assert _makespan(runs, 16) == 20.0
    assert _makespan(runs, 16, 100.0) == 20.0 and _makespan([(10.0, 1.0, ())] * 6, 16) == 10.0

def test_the_dry_run_s_makespan_lets_a_ready_unit_pass_one_that_waits_for_another():
    """As `run_units` starts them: a noise run waiting for its long matched run does not hold back the units behind it
    (2 at once: the four short ones run beside the long one, the waiting one after it: 1,100 s, not 1,300)."""
    units = [(1000.0, 1.0, ()), (100.0, 1.0, (0,)), *[(100.0, 1.0, ())] * 4]
    assert _makespan(units, 2) == 1100.0
    # waiting for room still holds back those behind it: the second waits for the first's GiB, the third (which
    # would fit at 0) behind it, from 10 to 25 beside the second
    assert _makespan([(10.0, 3.0, ()), (10.0, 3.0, ()), (15.0, 0.5, ())], 3, 4.0) == 25.0
