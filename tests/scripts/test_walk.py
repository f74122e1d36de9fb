"""scripts/walk.py: the job layer's walk from asa-finetune (and asa-pretrain) to the training loop. Each task
is a home: the walk never leaves a module and calls back into it (no climb), and the task's own module and
the shared training skeleton (asa.api.machinery.job) are on it."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "walk.py"
_spec = importlib.util.spec_from_file_location("asa_walk", SCRIPT)
walk = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = walk
_spec.loader.exec_module(walk)


@pytest.mark.parametrize("overrides, home", [([], "asa.api.tasks.segmentation"),
                                             (["data=targets", "task=case", "task.target=diagnosis"], "asa.api.tasks.case")])
def test_each_task_s_walk_has_no_climb_and_passes_its_home(overrides, home):
    w = walk.walk("finetune", overrides)
    assert w["climbs"] == 0, w["climb_calls"]
    assert {home, "asa.api.tasks", "asa.api.machinery.job"} <= set(w["room_names"])
    assert w["path"][-1] != "" and w["stays"] == len(set(w["path"])) and w["rooms"] == len(w["room_names"])
    # the skeleton, not the task, makes the engine: the walk ends on entering fit (no training ran)
    assert not any(p.startswith("asa.train.engine:Engine.fit") for p in w["path"])


def test_the_pretraining_walk_has_no_climb():
    w = walk.walk("pretrain", [])
    assert w["climbs"] == 0, w["climb_calls"]
    assert {"asa.api.machinery.job", "asa.api.machinery.pretraining"} <= set(w["room_names"])
