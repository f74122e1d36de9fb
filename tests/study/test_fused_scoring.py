"""A fused draw's runs scored as one (`asa.study.transfer.score` of a group, `asa.eval.predict.Predictor.of_units`):
each test case read and predicted once for the group, each run's scores.json as scored alone, to float rounding."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil

import pytest
import torch
from torch import nn

from asa.api.config import compose_config
from asa.api.finetune import finetune
from asa.data import discover, get_task, write_demo_dataset
from asa.eval.predict import Predictor
from asa.study import transfer

UNIT = ["data=msd", "model=resenc", "model.size=tiny", "model.pretrained=null", "data.crop=32", "data.num_workers=0",
        "trainer.threads=1", "trainer.progress=false", "trainer.panel_every=0", "trainer.amp=off", "device=cpu",
        "trainer.epochs=4", "trainer.log_every=1", "trainer.val_every=2", "task.overlap=0", "seed=3",
        "data.split.ratios=[2,1,1]", "optim=adamw", "trainer.keep_steps=[2]"]


@pytest.mark.slow  # two tiny ResEnc runs of 4 steps, scored twice (about 20 CPU-s)
def test_a_fused_draw_scores_each_run_as_it_is_scored_alone(tmp_path, monkeypatch):
    root = write_demo_dataset("msd", tmp_path / "data", cases=4, size=32, seed=1)
    runs = []
    for arm, lr in (("a", "1e-3"), ("b", "3e-2")):
        out = tmp_path / "alone" / arm
        finetune(compose_config("finetune", [*UNIT, f"optim.base_lr={lr}", f"data.root={root}", f"output_dir={out}"]))
        runs.append(transfer.Run(arm, 2, 3, ("lesion_000",), (), out, head_start=2))
    shutil.copytree(tmp_path / "alone", tmp_path / "fused")
    fused = [transfer.Run(r.arm, r.n, r.seed, r.train, r.overrides, tmp_path / "fused" / r.arm, head_start=2)
             for r in runs]
    by_id = {c.id: c for c in discover("msd", root)}
    test = sorted(by_id)
    predicted = []  # the predictors' units, a predictor a call
    of_units = Predictor.__call__

    def counted(self, image, **kwargs):
        predicted.append(self.units)
        return of_units(self, image, **kwargs)

    monkeypatch.setattr(Predictor, "__call__", counted)
    for run in runs:
        transfer.score([run], by_id, test, "cpu")
    assert predicted == [1] * 2 * len(test) * 3  # each run: its end point, zeroed, its head start
    predicted.clear()
    transfer.score(fused, by_id, test, "cpu")
    assert predicted == [2] * len(test) * 3  # the draw's runs as one
    alone, together = ([json.loads(r.scores_file.read_text()) for r in group] for group in (runs, fused))
    for a, b in zip(alone, together):
        assert a["budget"] == b["budget"] and a["names"] == b["names"] and a["head_start"]["step"] == 2
        for rows_a, rows_b in ((a["scores"], b["scores"]), (a["head_start"]["scores"], b["head_start"]["scores"])):
            assert [r["case"] for r in rows_a] == [r["case"] for r in rows_b] == test
            for ra, rb in zip(rows_a, rows_b):
                assert ra.keys() == rb.keys()
                for key, value in ra.items():
                    if isinstance(value, float) and not math.isnan(value):
                        assert abs(value - rb[key]) < 1e-3 * max(1.0, abs(value)), (key, value, rb[key])
                    else:
                        assert value == rb[key] or (math.isnan(value) and math.isnan(rb[key]))
    # the runs differ: each group member kept its own network
    assert [r["Dice_mean"] for r in together[0]["scores"]] != [r["Dice_mean"] for r in together[1]["scores"]]


def test_predictors_that_differ_in_more_than_their_weights_are_refused():
    task = get_task("wmh")
    a = Predictor(nn.Conv3d(2, 2, 1), task, (16, 16, 16), torch.device("cpu"))
    b = dataclasses.replace(a, model=nn.Conv3d(2, 2, 1), roi_size=(32, 32, 32))
    with pytest.raises(ValueError, match=r"predictors \[1\] differ from predictor 0 in their task or inference"):
        Predictor.of_units([a, b])
    both = Predictor.of_units([a, dataclasses.replace(b, roi_size=(16, 16, 16))])
    assert both.units == 2 and both.roi_size == (16, 16, 16)
    assert Predictor.of_units([a]) is a  # one network: dense, as alone
    with pytest.raises(ValueError, match=r"predictors \[0, 1\] differ"):  # units already: not stacked again
        Predictor.of_units([both, a])
