"""A stop signal ends a run within a scheduler's grace period, and last.pt is bounded in time.

A signal (SIGTERM, SIGUSR1, a user's SIGINT) is acted on at the end of the step it arrives in: no
validation and no further step run before last.pt is saved; one that arrives during a validation round
ends the round at once, and the resumed run validates again and ends where an uninterrupted run ends.
last.pt is written at the first epoch's end and every ``trainer.ckpt_minutes``, so that a SIGKILL
before ``trainer.ckpt_every`` steps still leaves a run to resume. Toy engine runs (tests/train/toy.py)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from asa.io import load_checkpoint
from asa.train import TrainConfig
from tests.train.toy import ToyData, make_engine, step_fn

TOY = str(Path(__file__).with_name("toy.py"))


def _cfg(**kw) -> TrainConfig:  # 16 samples at batch 2: 8 steps an epoch
    base = dict(epochs=3, batch_size=2, progress=False, log_every=1, ckpt_every=1000, warmup_steps=2)
    return TrainConfig(**(base | kw))


def _state(out: Path) -> dict:
    return load_checkpoint(out / "checkpoints" / "last.pt")


def _assert_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _signal_at(calls: int, sig: int):
    """A step function that sends ``sig`` to this process during its ``calls``-th call."""
    count = [0]

    def step(model, batch):
        count[0] += 1
        if count[0] == calls:
            os.kill(os.getpid(), sig)
        return step_fn(model, batch)

    return step


@pytest.mark.parametrize("sig, at", [(signal.SIGINT, 3), (signal.SIGTERM, 8), (signal.SIGUSR1, 8)])
def test_a_signal_stops_at_the_end_of_its_step_without_validation(tmp_path, sig, at):
    validated = []
    engine = make_engine(tmp_path, config=_cfg(), validate=lambda m: validated.append(1) or {"loss": 1.0},
                         step=_signal_at(at, sig))
    result = engine.fit(ToyData())
    assert result.preempted and result.signal == sig and result.step == at
    assert validated == []  # step 8 ends the epoch: its validation is left to the resumed run
    state = _state(tmp_path)
    assert (state["step"], state["epoch"], state["batch_in_epoch"]) == (at, 0, at)


def test_a_signal_during_validation_ends_it_and_the_resumed_run_validates_again(tmp_path):
    def validate(model):
        return {"loss": float(sum(p.abs().sum() for p in model.parameters()))}

    def stopped_validate(model):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)  # a long validation round: the signal ends it
        raise AssertionError("the validation round was not ended by the signal")

    full = make_engine(tmp_path / "full", config=_cfg(max_steps=12), validate=validate).fit(ToyData())
    start = time.monotonic()
    part = make_engine(tmp_path / "part", config=_cfg(max_steps=12), validate=stopped_validate).fit(ToyData())
    assert time.monotonic() - start < 15
    assert part.preempted and part.signal == signal.SIGTERM and part.step == 8 and part.history == []
    state = _state(tmp_path / "part")  # as before the epoch's end: the resumed run ends it
    assert (state["step"], state["epoch"], state["batch_in_epoch"]) == (8, 0, 8)
    resumed = make_engine(tmp_path / "part", config=_cfg(max_steps=12), validate=validate, resume=True).fit(ToyData())
    assert resumed.step == 12 and [h["step"] for h in resumed.history] == [h["step"] for h in full.history] == [8, 12]
    assert resumed.history == full.history
    _assert_identical(_state(tmp_path / "full")["model"], _state(tmp_path / "part")["model"])


def test_a_signal_during_the_final_validation_saves_and_the_resume_validates(tmp_path):
    rounds = []

    def validate(model):
        rounds.append(1)
        if len(rounds) == 2:  # the final round (after the epoch end's at step 8)
            os.kill(os.getpid(), signal.SIGINT)
        return {"loss": 1.0}

    part = make_engine(tmp_path, config=_cfg(max_steps=10), validate=validate).fit(ToyData())
    assert part.preempted and part.signal == signal.SIGINT and part.step == 10
    assert [h["step"] for h in part.history] == [8] and not (tmp_path / "checkpoints" / "encoder.pt").exists()
    resumed = make_engine(tmp_path, config=_cfg(max_steps=10), validate=validate, resume=True).fit(ToyData())
    assert not resumed.preempted and [h["step"] for h in resumed.history] == [8, 10]



@pytest.mark.parametrize("kept, during", [(3, "step"), (8, "step"), (8, "validation")])
def test_a_stop_at_a_kept_step_keeps_it(tmp_path, kept, during):
    # the study's head start (trainer.keep_steps): a stop during that step, or during the validation at its epoch's
    # end (step 8 of 8 an epoch), saves its kept file with last.pt; the resumed run starts after it and never would
    cfg = _cfg(max_steps=12, keep_steps=[kept])
    rounds = []

    def validate(model):
        rounds.append(1)
        if during == "validation" and len(rounds) == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return {"loss": 1.0}

    step = _signal_at(kept, signal.SIGTERM) if during == "step" else step_fn
    part = make_engine(tmp_path / "part", config=cfg, validate=validate, step=step).fit(ToyData())
    assert part.preempted and part.step == kept
    resumed = make_engine(tmp_path / "part", config=cfg, validate=validate, resume=True).fit(ToyData())
    assert not resumed.preempted and resumed.step == 12
    at = load_checkpoint(tmp_path / "part" / "checkpoints" / f"kept_{kept:08d}.pt")
    make_engine(tmp_path / "to", config=_cfg(max_steps=kept), validate=validate).fit(ToyData())
    assert at["step"] == kept
    _assert_identical(at["model"], _state(tmp_path / "to")["model"])  # the weights of a run that ended there


def test_a_stop_during_the_final_validation_of_the_whole_schedule_leaves_a_run_not_yet_finished(tmp_path):
    # the study's runs go through their whole schedule (no max_steps): its last.pt at the last step, saved by the
    # stop, must not read as a finished run (asa.study.common.finished), or the study would never run the final
    # round its budget and curves read; the resumed run validates there and ends
    from asa.study.common import finished

    rounds = []

    def validate(model):
        rounds.append(1)
        if len(rounds) == 3:  # the final round, at step 24 (after the epoch ends' at 8 and 16)
            os.kill(os.getpid(), signal.SIGTERM)
        return {"loss": 1.0}

    last = tmp_path / "checkpoints" / "last.pt"
    part = make_engine(tmp_path, config=_cfg(), validate=validate).fit(ToyData())
    assert part.preempted and part.step == 24 and [h["step"] for h in part.history] == [8, 16]
    assert _state(tmp_path)["step"] == 24 and not finished(last)
    resumed = make_engine(tmp_path, config=_cfg(), validate=validate, resume=True).fit(ToyData())
    assert not resumed.preempted and [h["step"] for h in resumed.history] == [8, 16, 24] and finished(last)


def test_a_stop_inside_a_logging_window_logs_the_window_as_an_uninterrupted_run_does(tmp_path):
    # windows of 4 steps, a stop after step 6: the resumed run's window at step 8 averages steps 5-8, as the
    # uninterrupted run's does (not 7-8 alone): the logged loss a study reads (its final quarter) does not move
    from asa.study.tables import logged_series

    cfg = _cfg(log_every=4, max_steps=16)
    make_engine(tmp_path / "full", config=cfg).fit(ToyData())
    part = make_engine(tmp_path / "part", config=cfg, step=_signal_at(6, signal.SIGTERM)).fit(ToyData())
    assert part.preempted and part.step == 6
    make_engine(tmp_path / "part", config=cfg, resume=True).fit(ToyData())
    _assert_identical(_state(tmp_path / "full")["model"], _state(tmp_path / "part")["model"])
    full, got = (dict(logged_series(tmp_path / name, ["train/loss"])["train/loss"]) for name in ("full", "part"))
    assert sorted(got) == sorted(full) == [4, 8, 12, 16]
    assert got == pytest.approx(full, rel=1e-6)


def test_a_last_pt_written_before_the_logging_window_was_kept_still_resumes(tmp_path):
    # a run stopped by an older asa (its last.pt without "log_window") resumes, its first window from the resume on
    from asa.io import save_checkpoint

    cfg = _cfg(log_every=4, max_steps=16)
    make_engine(tmp_path / "full", config=cfg).fit(ToyData())
    make_engine(tmp_path, config=cfg, step=_signal_at(6, signal.SIGTERM)).fit(ToyData())
    older = {k: v for k, v in _state(tmp_path).items() if k != "log_window"}
    save_checkpoint(tmp_path / "checkpoints" / "last.pt", older)
    resumed = make_engine(tmp_path, config=cfg, resume=True).fit(ToyData())
    assert not resumed.preempted and resumed.step == 16
    _assert_identical(_state(tmp_path / "full")["model"], _state(tmp_path)["model"])

def _last_pt_steps(engine) -> list[int]:
    saved, save = [], engine.save
    engine.save = lambda *names, **kw: (saved.append((engine.step, names)), save(*names, **kw))
    engine.fit(ToyData())
    return [step for step, names in saved if "last.pt" in names]


def test_last_pt_is_written_every_ckpt_minutes_and_at_the_first_epoch_end(tmp_path):
    def slow(model, batch):
        time.sleep(0.02)
        return step_fn(model, batch)

    timed = make_engine(tmp_path / "timed", config=_cfg(max_steps=5, ckpt_minutes=0.01 / 60), step=slow)
    assert _last_pt_steps(timed) == [1, 2, 3, 4, 5]  # each step took longer than ckpt_minutes
    steps = make_engine(tmp_path / "steps", config=_cfg(max_steps=20, ckpt_minutes=0))
    assert _last_pt_steps(steps) == [8, 20]  # the first epoch's end, then the end (ckpt_every=1000)


def test_bad_ckpt_minutes_is_refused_naming_it():
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="trainer.ckpt_minutes"):
            _cfg(ckpt_minutes=bad)


@pytest.mark.slow  # a run in a child process, killed and resumed
def test_a_run_killed_before_ckpt_every_resumes_from_its_first_epoch(tmp_path):
    """SIGKILL (nothing to catch) after the first epoch, long before trainer.ckpt_every=1000 steps: last.pt
    of the first epoch's end is there, and the resumed run ends as an uninterrupted one."""
    out = tmp_path / "killed"
    args = ["--epochs", "3", "--ckpt-every", "1000", "--sleep", "0.05"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(Path(TOY).parent), *sys.path]))
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    proc = subprocess.Popen([sys.executable, TOY, "--out", str(out), *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last, deadline = out / "checkpoints" / "last.pt", time.time() + 60
    while not last.is_file() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.2)  # a few steps of the second epoch, then killed
    proc.kill()
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert _state(out)["step"] == 8  # the first epoch's end
    cfg = TrainConfig(epochs=3, batch_size=2, ckpt_every=1000, progress=False, log_every=1)
    resumed = make_engine(out, config=cfg, dropout=0.0, resume=True).fit(ToyData())
    full = make_engine(tmp_path / "full", config=cfg, dropout=0.0).fit(ToyData())
    assert resumed.step == full.step == 24
    _assert_identical(_state(out)["model"], _state(tmp_path / "full")["model"])
