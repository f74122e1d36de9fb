"""The epoch cadence's floor (``trainer.val_min_steps``): a round due at an epoch's end waits until that many steps
have passed since the last round; the first and the last round always run; a resumed run validates where the
uninterrupted one does; explicit step cadences (``trainer.val_every_steps``) are left alone. Toy engine runs
(tests/train/toy.py); 8 samples at batch 2: 4 steps an epoch."""
from __future__ import annotations

import os
import signal

import pytest
import torch

from asa.api.config import compose_config
from asa.io import load_checkpoint
from asa.train import TrainConfig
from tests.train.toy import ToyData, make_engine, step_fn


def _cfg(**kw) -> TrainConfig:
    base = dict(epochs=10, batch_size=2, progress=False, log_every=1, ckpt_every=1000, warmup_steps=2)
    return TrainConfig(**(base | kw))


def _validate(model) -> dict:
    return {"loss": float(sum(p.abs().sum() for p in model.parameters()))}


def _steps(result) -> list[int]:
    return [h["step"] for h in result.history]


def test_rounds_at_epoch_ends_at_most_every_val_min_steps(tmp_path):
    every = make_engine(tmp_path / "every", config=_cfg(max_steps=30), validate=_validate).fit(ToyData(8))
    spaced = make_engine(tmp_path / "spaced", config=_cfg(max_steps=30, val_min_steps=10),
                         validate=_validate).fit(ToyData(8))
    assert _steps(every) == [4, 8, 12, 16, 20, 24, 28, 30]
    # the first epoch's end, then the first epoch end >= 10 steps after the last round (14 -> 16, 26 -> 28), the end
    assert _steps(spaced) == [4, 16, 28, 30]
    assert spaced.history == [h for h in every.history if h["step"] in (4, 16, 28, 30)]  # the same rounds' values
    # validation runs under a forked RNG: the weights do not depend on the cadence
    a, b = (load_checkpoint(tmp_path / run / "checkpoints" / "last.pt")["model"] for run in ("every", "spaced"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_val_every_epochs_and_the_floor_together(tmp_path):
    res = make_engine(tmp_path, config=_cfg(max_steps=40, val_every=2, val_min_steps=12),
                      validate=_validate).fit(ToyData(8))
    assert _steps(res) == [8, 24, 40]  # even epochs only (8, 16, 24, 32), 12 steps apart at least; the end


def test_a_resumed_run_validates_where_the_uninterrupted_one_does(tmp_path):
    count = [0]

    def stopping(model, batch):  # SIGTERM during step 14: after the rounds at 4 and (floor 10) not yet 16
        count[0] += 1
        if count[0] == 14:
            os.kill(os.getpid(), signal.SIGTERM)
        return step_fn(model, batch)

    cfg = _cfg(max_steps=30, val_min_steps=10)
    full = make_engine(tmp_path / "full", config=cfg, validate=_validate).fit(ToyData(8))
    part = make_engine(tmp_path / "part", config=cfg, validate=_validate, step=stopping).fit(ToyData(8))
    assert part.preempted and part.step == 14 and _steps(part) == [4]
    resumed = make_engine(tmp_path / "part", config=cfg, validate=_validate, resume=True).fit(ToyData(8))
    assert _steps(resumed) == _steps(full) == [4, 16, 28, 30]  # not 16 -> 20: the floor counts from step 4's round
    assert resumed.history == full.history


def test_val_every_steps_is_not_floored(tmp_path):
    # an explicit step cadence states its own spacing: the epoch cadence's floor does not apply to it
    res = make_engine(tmp_path, config=_cfg(max_steps=14, val_every_steps=3, val_min_steps=100),
                      validate=_validate).fit(ToyData(8))
    assert _steps(res) == [3, 6, 9, 12, 14]


@pytest.mark.parametrize("bad", [-1, -200])
def test_a_negative_floor_is_refused_naming_it(bad):
    with pytest.raises(ValueError, match=rf"trainer.val_min_steps={bad}: expected >= 0"):
        TrainConfig(val_min_steps=bad)


def test_the_presets_cadence():
    """asa-pretrain's trainer=default (and paper, which builds on it) floors the rounds at 400 steps; the Python
    API's TrainConfig and asa-finetune keep a round at every epoch's end."""
    assert compose_config("pretrain", []).trainer.val_min_steps == 400
    assert compose_config("pretrain", ["trainer=paper"]).trainer.val_min_steps == 400
    assert compose_config("finetune", []).trainer.val_min_steps == 0
    assert TrainConfig().val_min_steps == 0
