"""A study's fine-tuning unit (ResEnc, 32³ crops, batch 2, a small labeled set) trains to the same bits whether its
dataset keeps the preprocessed cases in memory or reads them from the files at every step: the weights, every logged
loss and the validation scores."""

from __future__ import annotations

import pytest
import torch

from asa.api import finetune
from asa.api.config import compose_config
from asa.data import datasets, write_demo_dataset
from asa.io import load_checkpoint
from asa.train.reporting import TrainLog

UNIT = ["data=msd", "model=resenc", "model.size=tiny", "model.pretrained=null", "data.crop=32", "data.num_workers=0",
        "trainer.threads=1", "trainer.progress=false", "trainer.panel_every=0", "trainer.amp=off", "device=cpu",
        "trainer.epochs=3", "trainer.log_every=1", "trainer.val_every=1", "task.overlap=0", "seed=3",
        "data.split.ratios=[2,2,0]"]
SCALARS = TrainLog.scalars


def trained(root, out, monkeypatch, cache_bytes: int) -> tuple[dict, list, list]:
    """(last.pt, the validation history, every logged scalar but the throughput) of the unit's run."""
    monkeypatch.setattr(datasets, "CASE_CACHE_BYTES", cache_bytes)
    logged: list = []
    def scalars(self, values, step):
        logged.append((step, {k: v for k, v in values.items() if k != "train/samples_per_s"}))
        return SCALARS(self, values, step)

    monkeypatch.setattr(TrainLog, "scalars", scalars)
    result = finetune(compose_config("finetune", [*UNIT, f"data.root={root}", f"output_dir={out}"]))
    return load_checkpoint(out / "checkpoints" / "last.pt"), result.history, logged


@pytest.mark.slow  # two fine-tuning runs of 3 steps and 3 validation rounds (6 CPU-s)
def test_the_cached_unit_trains_to_the_bits_of_the_unit_that_reads_its_files(tmp_path, monkeypatch):
    root = write_demo_dataset("msd", tmp_path / "data", cases=4, size=32, seed=1)
    reads, cached = (trained(root, tmp_path / name, monkeypatch, size)
                     for name, size in (("reads", 0), ("cached", datasets.CASE_CACHE_BYTES)))
    (a, history_a, logged_a), (b, history_b, logged_b) = reads, cached
    assert b["step"] == a["step"] == 3 and len(history_b) == 3
    assert history_b == history_a  # the validation Dice of every round, exactly
    assert logged_b == logged_a and any("train/loss" in values for _, values in logged_a)
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert any(not torch.equal(v, torch.zeros_like(v)) for v in a["optimizer"]["state"][0].values())
