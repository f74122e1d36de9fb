"""The loop's costs taken out without changing what it trains: best.pt holds the weights only (the optimiser's
state stays in last.pt), validation by optimiser steps (``trainer.val_every_steps``), the encoder/decoder relative
update measured on logging steps only. Each against the same-seed run it must equal, weight for weight. Toy
engine runs (tests/train/toy.py); 16 samples at batch 2: 8 steps an epoch."""
from __future__ import annotations

import os
import signal

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from asa.io import load_checkpoint
from asa.train import Engine, IncompatibleCheckpointError, TrainConfig, build_optimizer, check_training_checkpoint
from asa.train.checkpoint import RESUME_ONLY
from asa.train.updates import REL_UPDATE_KEYS
from tests.fixtures.training import Volumes, segmentation_step, tiny_segmenter
from tests.train.toy import ToyData, make_engine


def _cfg(**kw) -> TrainConfig:
    base = dict(epochs=3, batch_size=2, progress=False, log_every=1, ckpt_every=1000, warmup_steps=2)
    return TrainConfig(**(base | kw))


def _ckpt(out, name: str = "last.pt") -> dict:
    return load_checkpoint(out / "checkpoints" / name)


def _assert_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _falling(model) -> dict:  # a validation loss that improves every round: best.pt at each one
    _falling.calls += 1
    return {"loss": 1.0 / _falling.calls}


def test_best_pt_holds_the_weights_and_what_rebuilds_the_network_not_the_optimiser(tmp_path):
    _falling.calls = 0
    make_engine(tmp_path, config=_cfg(max_steps=12, ckpt_every=8, keep_last=5), validate=_falling).fit(ToyData())
    best, step8 = _ckpt(tmp_path, "best.pt"), _ckpt(tmp_path, "step_00000008.pt")
    assert best["weights_only"] is True and not any(key in best for key in RESUME_ONLY)
    assert best["step"] == 12 and best["tracker"]["best_step"] == 12  # the final round improved too
    for key in ("model", "network", "config", "scheduler", "history", "epoch"):
        assert key in best, key
    _assert_identical(best["model"], _ckpt(tmp_path)["model"])  # the final step's weights, as last.pt's
    assert all(key in step8 for key in RESUME_ONLY) and "weights_only" not in step8  # resumable files keep them
    with pytest.raises(IncompatibleCheckpointError, match="weights only .*optimizer, scaler, rng.*resume=true"):
        check_training_checkpoint(tmp_path / "checkpoints" / "best.pt", {"model": {"width": 16}}, ("model",))


def test_a_run_resumes_from_last_pt_as_before_with_best_pt_beside_it(tmp_path):
    _falling.calls = 0
    make_engine(tmp_path / "full", config=_cfg(max_steps=14), validate=_falling).fit(ToyData())
    _falling.calls = 0
    make_engine(tmp_path / "part", config=_cfg(max_steps=10), validate=_falling).fit(ToyData())
    _falling.calls = 1  # the part run's rounds: step 8's and the final one at 10 (not in the full run)
    make_engine(tmp_path / "part", config=_cfg(max_steps=14), validate=_falling, resume=True).fit(ToyData())
    _assert_identical(_ckpt(tmp_path / "full")["model"], _ckpt(tmp_path / "part")["model"])
    a, b = _ckpt(tmp_path / "full")["optimizer"]["state"], _ckpt(tmp_path / "part")["optimizer"]["state"]
    assert all(a[i]["exp_avg_sq"].equal(b[i]["exp_avg_sq"]) for i in a)


def test_validation_by_steps_falls_inside_epochs_and_leaves_the_weights_alone(tmp_path):
    seen = []

    def validate(model):
        seen.append(1)
        return {"loss": float(sum(p.abs().sum() for p in model.parameters()))}

    by_epoch = make_engine(tmp_path / "epochs", config=_cfg(max_steps=20), validate=validate).fit(ToyData())
    by_steps = make_engine(tmp_path / "steps", config=_cfg(max_steps=20, val_every_steps=6),
                           validate=validate).fit(ToyData())
    assert [h["step"] for h in by_epoch.history] == [8, 16, 20]
    assert [h["step"] for h in by_steps.history] == [6, 12, 18, 20]  # 12: inside epoch 2; 20: the run's end
    assert [h["epoch"] for h in by_steps.history] == [0, 1, 2, 2]
    # the rounds run under a forked RNG: the trajectory is the one without them, weight for weight
    plain = make_engine(tmp_path / "none", config=_cfg(max_steps=20)).fit(ToyData())
    assert plain.history == []
    for run in ("epochs", "steps"):
        _assert_identical(_ckpt(tmp_path / run)["model"], _ckpt(tmp_path / "none")["model"])
    # a round at an epoch's last step is the epoch end's (once), and last.pt there follows it
    at_end = make_engine(tmp_path / "ends", config=_cfg(max_steps=17, val_every_steps=4, ckpt_every=8),
                         validate=validate).fit(ToyData())
    assert [h["step"] for h in at_end.history] == [4, 8, 12, 16, 17]
    assert [h["step"] for h in _ckpt(tmp_path / "ends")["history"]] == [4, 8, 12, 16, 17]


def test_early_stopping_at_a_round_inside_an_epoch(tmp_path):
    values = iter([1.0, 0.5, 0.7, 0.6, 0.9, 0.1])
    res = make_engine(tmp_path, config=_cfg(epochs=10, patience=2, val_every_steps=3),
                      validate=lambda m: {"loss": next(values)}).fit(ToyData())
    assert res.stopped_early and res.step == 12 and res.epoch == 1  # rounds at 3, 6, 9, 12: 12 is the second bad
    assert res.best_step == 6 and _ckpt(tmp_path, "best.pt")["step"] == 6
    assert _ckpt(tmp_path)["step"] == 12


def test_a_signal_during_a_round_inside_an_epoch_and_the_resumed_run_validates_first(tmp_path):
    def validate(model):
        return {"loss": float(sum(p.abs().sum() for p in model.parameters()))}

    def stopping(model):
        os.kill(os.getpid(), signal.SIGTERM)
        return validate(model)

    cfg = _cfg(max_steps=12, val_every_steps=5)
    full = make_engine(tmp_path / "full", config=cfg, validate=validate).fit(ToyData())
    part = make_engine(tmp_path / "part", config=cfg, validate=stopping).fit(ToyData())
    assert part.preempted and part.step == 5 and part.history == []
    resumed = make_engine(tmp_path / "part", config=cfg, validate=validate, resume=True).fit(ToyData())
    assert [h["step"] for h in resumed.history] == [h["step"] for h in full.history] == [5, 10, 12]
    assert resumed.history == full.history
    _assert_identical(_ckpt(tmp_path / "full")["model"], _ckpt(tmp_path / "part")["model"])


def test_val_every_steps_is_checked():
    with pytest.raises(ValueError, match=r"trainer.val_every_steps=0: expected >= 1"):
        TrainConfig(val_every_steps=0)
    with pytest.raises(ValueError, match=r"trainer.val_every=2 \(epochs\) and trainer.val_every_steps=50"):
        TrainConfig(val_every=2, val_every_steps=50)


def _segmenter_run(out, log_every: int) -> dict[str, dict[int, float]]:
    net = tiny_segmenter()
    opt = build_optimizer(net, name="adamw", lr=1e-3, weight_decay=0.05)
    cfg = TrainConfig(epochs=4, max_steps=3, batch_size=2, progress=False, log_every=log_every, ckpt_every=1000,
                      panel_every=0, amp="off")
    torch.manual_seed(0)
    Engine(net, opt, segmentation_step, config=cfg, lr=1e-3, out_dir=out).fit(Volumes())
    events = EventAccumulator(str(out / "tb"))
    events.Reload()
    return {k: {e.step: e.value for e in events.Scalars(k)} for k in (*REL_UPDATE_KEYS, "train/loss")}


@pytest.mark.slow  # two segmenter runs: about 25 s on the shared 2-core machine
def test_relative_update_on_logging_steps_only_is_the_every_step_value_there(tmp_path):
    every = _segmenter_run(tmp_path / "every", log_every=1)
    sparse = _segmenter_run(tmp_path / "sparse", log_every=2)
    enc, dec = REL_UPDATE_KEYS
    assert sorted(every[enc]) == [1, 2, 3] and sorted(sparse[enc]) == [2, 3]  # 3: the run's last step
    for key in REL_UPDATE_KEYS:  # the logging step's own value (no longer the window's mean)
        assert all(sparse[key][s] == every[key][s] > 0 for s in (2, 3)), key
    _assert_identical(_ckpt(tmp_path / "every")["model"], _ckpt(tmp_path / "sparse")["model"])
    assert every["train/loss"][3] == sparse["train/loss"][3]


@pytest.mark.parametrize("ckpt_every, held_step, release_round, held_name", [
    (1000, 4, 2, "best.pt"),  # best.pt of the round at step 4, released by the round at step 8
    (3, 3, 1, "last.pt"),  # last.pt at its cadence (step 3), released by the round at step 4
])
def test_training_goes_on_while_a_checkpoint_is_written_and_the_run_ends_with_it_on_disk(
        tmp_path, monkeypatch, ckpt_every, held_step, release_round, held_name):
    import threading

    import asa.io.checkpoint as checkpoint_module

    write, released, written = checkpoint_module.save_checkpoint, threading.Event(), []

    def held(path, state):  # the first write waits for a validation round that comes steps later
        if not written:
            written.append((path.name, state["step"], released.wait(10)))
        return write(path, state)

    monkeypatch.setattr(checkpoint_module, "save_checkpoint", held)
    rounds = []

    def validate(model):
        rounds.append(1)
        if len(rounds) == release_round:
            released.set()
        return {"loss": 1.0 / len(rounds)}  # every round improves: best.pt at each

    cfg = _cfg(max_steps=12, val_every_steps=4, ckpt_every=ckpt_every)
    run = make_engine(tmp_path / "held", config=cfg, validate=validate).fit(ToyData())
    assert [h["step"] for h in run.history] == [4, 8, 12]
    assert written == [(held_name, held_step, True)]  # written as of its step after later steps ran: not waited for
    _falling.calls = 0
    make_engine(tmp_path / "unheld", config=cfg, validate=_falling).fit(ToyData())
    for name in ("best.pt", "last.pt"):
        _assert_identical(_ckpt(tmp_path / "held", name)["model"], _ckpt(tmp_path / "unheld", name)["model"])
    _assert_identical(_ckpt(tmp_path / "held", "best.pt")["model"], _ckpt(tmp_path / "held")["model"])  # step 12's


def test_a_best_pt_write_that_fails_stops_the_run_with_its_error(tmp_path, monkeypatch):
    import asa.io.checkpoint as checkpoint_module

    def full(path, state):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(checkpoint_module, "save_checkpoint", full)
    _falling.calls = 0
    with pytest.raises(OSError, match="best.pt"):  # at the next write (last.pt), not lost on the thread
        make_engine(tmp_path, config=_cfg(max_steps=12, val_every_steps=4), validate=_falling).fit(ToyData())
    assert not (tmp_path / "checkpoints" / "best.pt").exists()
