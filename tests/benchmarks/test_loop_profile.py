"""benchmarks/loop.py: the loop profile's split covers each step's wall time exactly once, a no-op step
takes no time of its own, and host syncs are counted where they happen."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from asa.train import Engine, TrainConfig
from benchmarks.loop import (PARTS, LoopProfile, cadence_model, cohort_of, pretrain_overrides, profile_pretrain,
                             validation_spacing)


class _Pairs(Dataset):
    def __init__(self, n: int) -> None:
        self.x = torch.randn(n, 4, generator=torch.Generator().manual_seed(1))

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "y": self.x[i].sum(0, keepdim=True)}


def _profiled_engine(out_dir, *, noop: bool) -> tuple[dict, nn.Module, dict]:
    """The engine on a linear model (4 steps an epoch, 7 steps, validation every epoch) under a profile."""
    model = nn.Linear(4, 1)
    before = {k: v.clone() for k, v in model.state_dict().items()}

    def step(net, batch):
        loss = (net(batch["x"]) - batch["y"]).square().mean()
        return loss, {"mse": loss.detach()}  # a tensor log: one .item() per step (asa.train.reporting.scalar)

    cfg = TrainConfig(epochs=10, max_steps=7, batch_size=2, log_every=2, ckpt_every=4, progress=False, warmup_steps=0)
    engine = Engine(model, torch.optim.SGD(model.parameters(), lr=0.1), step, config=cfg, lr=0.1, out_dir=out_dir,
                    validate=lambda net: {"loss": 1.0})
    profile = LoopProfile(torch.device("cpu"), noop=noop)
    with profile.installed():
        engine.fit(_Pairs(8))
    return profile.summary(warmup=1, samples_per_step=2), model, before


def test_a_planted_item_is_counted_in_its_part_and_the_loaders_own_are_not():
    profile = LoopProfile(torch.device("cpu"))
    x = torch.ones(3)

    def step():
        return x.sum().item() + float(x[0]) + bool(x[1])  # three host syncs

    def data():
        return int(x[2])  # the loader's own CPU work on a CPU run: not a device sync

    with profile.installed():
        for _ in range(3):
            profile.step_started()
            profile.timed("data", data)()
            profile.timed("step", profile.timed("logging", step))()
        profile.step_started()
    r = profile.summary(warmup=1, samples_per_step=1)
    assert r["timed_steps"] == 2
    assert r["host_syncs_per_step_by_part"] == {"logging": 3.0}  # the innermost part
    assert r["host_syncs_by_call"] == {"logging:item": 1.0, "logging:__float__": 1.0, "logging:__bool__": 1.0}
    assert float(x.sum()) == 3.0 and not hasattr(torch.Tensor, "_profiled")  # the hooks are gone
    assert "item" not in torch.Tensor.__dict__ and "to" not in torch.Tensor.__dict__


def test_nested_parts_are_exclusive_and_sum_to_the_wall_time():
    profile = LoopProfile(torch.device("cpu"))
    with profile.installed():
        for _ in range(4):
            profile.step_started()
            profile.timed("step", lambda: profile.timed("data", sum)(range(20000)))()
            profile.timed("checkpoint", lambda: profile.timed("copy", sum)(range(20000)))()  # absorbed
            profile.timed("validation", lambda: profile.timed("data", sum)(range(20000)) + sum(range(20000)))()
        profile.step_started()
    r = profile.summary(warmup=0, samples_per_step=2)
    assert r["timed_steps"] == 4
    assert r["part_s"]["copy"] == 0.0 and r["part_s"]["data"] > 0 and r["part_s"]["checkpoint"] > 0
    # the validation loader's wait: inside the validation part (which absorbs it), timed apart as its share
    assert 0 < r["validation_loader_ms_per_step"] < r["part_ms_per_step"]["validation"]
    assert all(r["part_s"][p] >= 0 for p in PARTS if p != "other")
    assert r["part_s"]["other"] >= -1e-9  # no time counted twice
    assert math.isclose(sum(r["part_s"].values()), r["wall_s"], rel_tol=1e-9)
    assert math.isclose(r["samples_per_s"], 8 / r["wall_s"])


def test_the_engine_profile_counts_the_steps_syncs_and_a_noop_step_changes_nothing(tmp_path):
    real, trained, initial = _profiled_engine(tmp_path / "real", noop=False)
    noop, untouched, same = _profiled_engine(tmp_path / "noop", noop=True)
    for r in (real, noop):
        assert r["timed_steps"] == 5  # steps 1..5: the last step's interval would end after the run
        assert r["part_s"]["other"] >= -1e-9 and math.isclose(sum(r["part_s"].values()), r["wall_s"], rel_tol=1e-9)
        assert r["validations"] == 1 and r["checkpoints"] == 1  # the epoch's end after step 4 (ckpt_every 4)
        assert r["loader"]["num_workers"] == 0 and r["loader"]["pin_memory"] is False
    # one read of the step: the loss (its finiteness), the "mse" log and the gradient norm in one transfer
    step_syncs = {k: v for k, v in real["host_syncs_by_call"].items() if k.startswith("step:")}
    assert step_syncs == {"step:tolist": 1.0}
    assert set(noop["host_syncs_per_step_by_part"]) <= {"validation"}  # best.pt's RNG state: not the step's
    assert any(not torch.equal(trained.state_dict()[k], v) for k, v in initial.items())
    assert all(torch.equal(untouched.state_dict()[k], v) for k, v in same.items())  # no update


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The real asa-pretrain loop (tiny model, 32³ demo phantoms, no workers) profiled with the real and
    the no-op step."""
    tmp = tmp_path_factory.mktemp("loop")
    out = {}
    for noop in (False, True):
        overrides = pretrain_overrides(model="tiny", size=None, crop=32, batch=2, workers=0, device="cpu", data=None,
                                       store=None, steps=5, out_dir=tmp / f"run{noop}",
                                       extra=["data.demo.cases=6", "data.demo.size=32", f"data.demo.cache_dir={tmp}",
                                              "trainer.threads=1", "trainer.amp=off", "trainer.log_every=2",
                                              "trainer.progress=false", "trainer.panel_every=0", "trainer.ckpt_every=2"])
        out[noop] = profile_pretrain(overrides, warmup=1, steps=3, noop=noop)
    return out


@pytest.mark.slow  # two asa-pretrain runs
def test_the_real_loop_profile_splits_the_wall_time_and_counts_the_steps_syncs(runs):
    real, noop = runs[False], runs[True]
    for r in (real, noop):
        assert r["timed_steps"] == 3
        assert r["part_s"]["other"] >= -1e-9 and math.isclose(sum(r["part_s"].values()), r["wall_s"], rel_tol=1e-9)
        assert r["part_s"]["data"] > 0 and r["part_s"]["copy"] > 0
        assert r["loader"] == {"batch_size": 2, "num_workers": 0, "pin_memory": False, "persistent_workers": False,
                               "prefetch_factor": None, "requested_workers": 0}
        assert r["copy"]["non_blocking"] is True and r["copy"]["shape"][:2] == [2, 1]
        assert r["cadence"]["steps_per_epoch"] == 2  # 4 training cases of 6 at batch 2: an epoch's end is timed
        assert r["validations"] >= 1 and r["checkpoints"] >= 1
        assert 0 < r["validation_loader_ms_per_step"] < r["part_ms_per_step"]["validation"]
    # what each step part ran, by the reads it made (not by its time, which a loaded machine moves): the no-op step
    # read nothing, no loss and no gradient norm
    assert "step" not in noop["host_syncs_per_step_by_part"]
    # the real step's syncs: the engine's one read (the loss and its finiteness, the logs, the gradient norm) and the
    # AR-loss's statistics (asa.losses.reconstruction)
    assert real["host_syncs_by_call"]["step:tolist"] == 2 and real["host_syncs_per_step_by_part"]["step"] == 2
    assert noop["host_syncs_per_step_by_part"].get("step", 0) == 0


def test_known_costs_write_best_pt_without_adamw_state_in_a_third_of_the_bytes(tmp_path):
    from benchmarks.loop import known_costs

    r = known_costs(tmp_path / "costs", model="tiny", crop=32, repeats=1)
    full, weights = r["bytes"]["best_pt_full_state"], r["bytes"]["best_pt_weights_only"]
    assert 2.5 < full / weights < 3.5  # the weights and AdamW's two moments of the same size, against the weights
    assert set(r["wall_s"]) == set(r["cpu_s"]) == {"best_pt_full_state", "best_pt_weights_only",
                                                  "best_pt_weights_only_background", "last_pt_background",
                                                  "relative_update"}
    assert all(v >= 0 for v in r["wall_s"].values()) and not list((tmp_path / "costs").iterdir())
    assert 0 < r["python_rate_while_writing"] < 2


def test_syncs_of_another_thread_are_not_the_loops():
    import threading

    profile = LoopProfile(torch.device("cpu"))
    x = torch.ones(3)
    with profile.installed():
        profile.step_started()
        other = threading.Thread(target=lambda: [x.sum().item() for _ in range(5)])  # as the checkpoint writer
        profile.timed("step", lambda: (other.start(), other.join(), x.sum().item()))()
        profile.step_started()
    assert profile.summary(warmup=0, samples_per_step=1)["host_syncs_by_call"] == {"step:item": 1.0}


def _trainer(**kw) -> TrainConfig:
    return TrainConfig(**({"val_min_steps": 200, "ckpt_every": 100} | kw))


@pytest.mark.parametrize("epoch, kw, spacing", [
    (7, {}, 203),  # a 64-case cohort at batch 8: the first epoch's end 200 steps after the last round
    (238, {}, 238),  # a 2,000-case cohort: every epoch's end
    (7, {"val_min_steps": 0}, 7),
    (7, {"val_every": 2}, 210),  # even epochs only: 14-step periods, 15 of them
    (7, {"val_every_steps": 50}, 50),  # the step cadence has no floor
])
def test_validation_spacing(epoch, kw, spacing):
    assert validation_spacing(epoch, _trainer(**kw)) == spacing


def test_the_cadence_model_by_hand():
    r = {"timed_steps": 10, "wall_s": 4.0, "validations": 1, "checkpoints": 2, "cadence": {"steps_per_epoch": 7},
         "part_s": {"validation": 2.0, "checkpoint": 1.0, "step": 0.9}}
    c = cadence_model(r, _trainer(), 64)
    # 0.1 s a step between rounds and writes, 0.09 the step; a 2 s round every 203 steps, a 0.5 s write every 100
    assert (c["validation_every_steps"], c["checkpoint_every_steps"]) == (203, 100)
    assert c["loop_over_step"] == pytest.approx(0.09 / (0.1 + 2 / 203 + 0.5 / 100))
    assert c["loop_over_step_every_epoch"] == pytest.approx(0.09 / (0.1 + 2 / 7 + 0.5 / 100))
    assert c["share_lost"] == pytest.approx((2 / 203 + 0.005) / (0.1 + 2 / 203 + 0.005))
    with pytest.raises(ValueError, match="needs one of each"):
        cadence_model({**r, "validations": 0}, _trainer(), 64)


def test_a_cohort_is_modelled_by_repeating_the_split(monkeypatch):
    from asa.api.machinery.pretraining import PretrainJob

    monkeypatch.setattr(PretrainJob, "datasets", lambda job, run, splits: (list(range(61)), list(range(100, 103))))
    with cohort_of(2000):
        train, val = PretrainJob.datasets(None, None, {"train": [0] * 61, "val": [0] * 3, "test": []})
    assert (len(train), len(val)) == (1906, 94)  # 61 and 3 of 64 cases, scaled to 2,000
    assert train[61] == 0 and train[1905] == 1905 % 61 and val[93] == 100 + 93 % 3
    assert PretrainJob.datasets(None, None, {})[0] == list(range(61))  # put back after the block
