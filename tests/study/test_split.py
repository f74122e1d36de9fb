"""The labeled split as a type (asa.study.runs): a fixed split and a cross-validated one each say the seeds the
transfer stage runs, what design.json registers, the report's design line, the positive control's runs and the
record checks.json keeps; no stage tells them apart by a key."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from asa.study.design import Design
from asa.study.runs import SCALES, CrossValidated, FixedSplit, Network, labeled_split, plan_labeled
from asa.study.settings import Study
from asa.study.stages import Setup

QUICK = SCALES["quick"]  # 16 test + 2 val + N 2 + the control's 2 = 22 cases for a fixed split; 2 folds × 1 repeat


def _cases(n: int) -> list[SimpleNamespace]:
    return [SimpleNamespace(id=f"case_{i:02d}") for i in range(n)]


def _study(tmp_path: Path) -> Study:
    return Study("msd", tmp_path / "labeled", tmp_path / "out", "quick", QUICK, Network("resenc", "tiny"),
                 ("mae", "supervised"), ())


def _plan(tmp_path: Path, split: FixedSplit | CrossValidated) -> Setup:
    return Setup(_study(tmp_path), None, split, None, (), (), (), ())


def test_a_fixed_split_runs_the_scale_s_seeds_and_one_positive_control_on_its_held_cases(tmp_path):
    split = labeled_split(_cases(24), QUICK, seed=0)
    assert isinstance(split, FixedSplit) and (len(split.test), len(split.val), len(split.supervised)) == (16, 2, 2)
    assert split.seeds(QUICK) == split.registered_seeds(QUICK) == (0, 1)
    assert split.seeds_text(QUICK) == "seeds [0, 1]"
    assert (split.folds, split.repeats) == (0, 0) and split.report_design() is None
    assert split.design_line(24, QUICK, True) is None
    assert split.labeled_cases() == {None: split.supervised}
    [control] = plan_labeled(tmp_path, "supervised", split, Network("resenc", "tiny"), QUICK, data="msd",
                             root=tmp_path / "labeled", seed=0)
    assert control.run_dir == tmp_path / "pretrain" / "supervised" and control.cases == split.supervised
    assert split.control_line(None, 4) == ("The positive control trains on 2 labeled cases no other run "
                                                      "sees (held out of the training pool).")
    assert json.loads(json.dumps(split.record())) == {"test": list(split.test), "val": list(split.val),
                                                      "pool": list(split.pool), "supervised": list(split.supervised)}
    design = Design.of(_study(tmp_path), split, "Dice")
    assert (design.seeds, design.folds, design.repeats) == ((0, 1), 0, 0)
    settings = _plan(tmp_path, split).transfer("transfer", arms={})
    assert (settings.folds, settings.hold_out) == (0, split.supervised)


def test_a_cross_validated_split_runs_a_seed_per_draw_and_a_positive_control_in_each(tmp_path):
    split = labeled_split(_cases(18), QUICK, seed=0)
    assert isinstance(split, CrossValidated) and split.test == tuple(c.id for c in _cases(18))
    assert (split.val, split.pool, split.supervised) == ((), (), ())
    assert split.seeds(QUICK) == (0, 1) and split.registered_seeds(QUICK) == ()  # the draws, not the scale's seeds
    more = labeled_split(_cases(18), dataclasses.replace(QUICK, repeats=2, seeds=(0,)), seed=0)
    assert more.seeds(QUICK) == (0, 1, 2, 3) and more.seeds_text(QUICK) == "4 cross-validation draws"
    assert split.report_design() == {"folds": 2, "repeats": 1, "draws": 2, "cases": 18}
    assert split.design_line(18, QUICK, True).startswith(
        "Cross-validation: the 18 labeled cases are fewer than a fixed split needs (16 test + 2 validation + N 2 + "
        "the positive control's 2), so each case is scored by models that did not see it: 2 folds × 1 repeat(s), "
        "2 distinct labeled draws per arm")
    controls = plan_labeled(tmp_path, "supervised", split, Network("resenc", "tiny"), QUICK, data="msd",
                            root=tmp_path / "labeled", seed=0, channel="T1w")
    assert [c.run_dir.name for c in controls] == ["supervised-s0", "supervised-s1"]
    assert [c.cases for c in controls] == [tuple(sorted(d.pool)) for d in split.draws]
    assert all("data.channels=[T1w]" in c.overrides for c in controls)
    assert split.control_line("T1w", 4).endswith(
        "so it consumes none of the scored cases, on their T1w alone (data.channels=[T1w]).")
    record = json.loads(json.dumps(split.record()))  # as checks.json keeps it
    assert record["draws"][0] == {"repeat": 0, "fold": 0, "test": list(split.draws[0].test),
                                  "val": list(split.draws[0].val), "pool": list(split.draws[0].pool)}
    assert [record[k] for k in ("val", "pool", "supervised", "folds", "repeats")] == [[], [], [], 2, 1]
    design = Design.of(_study(tmp_path), split, "Dice")
    assert (design.seeds, design.folds, design.repeats) == ((), 2, 1)
    settings = _plan(tmp_path, split).transfer("transfer", arms={})
    assert (settings.folds, settings.repeats, settings.hold_out) == (2, 1, ())


def test_the_scale_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        QUICK.cases = (4,)


def test_no_stage_tells_the_splits_apart_by_a_key():
    study = Path(__file__).parents[2] / "asa" / "study"
    found = [f"{p.name}:{n}" for p in sorted(study.glob("*.py"))
             for n, line in enumerate(p.read_text().splitlines(), 1) if re.search(r"""["']draws["'] in\b""", line)]
    assert found == []
