from __future__ import annotations

import pytest
import torch

from asa.io import load_checkpoint
from asa.train import IncompatibleCheckpointError, NonFiniteLossError, TrainConfig
from tests.train.toy import ToyData, make_engine, step_fn


def _cfg(**kw) -> TrainConfig:
    base = dict(epochs=3, batch_size=2, progress=False, log_every=1, ckpt_every=1000, warmup_steps=2)
    return TrainConfig(**(base | kw))


def _weights(out) -> dict:
    return load_checkpoint(out / "checkpoints" / "last.pt")["model"]


def _assert_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize(
    "split, total, extra",
    [
        (2, 4, {}),  # last.pt written mid-epoch (8 steps per epoch)
        (3, 11, {"accum_steps": 2, "num_workers": 2}),  # crosses an epoch boundary, accumulation, workers
    ],
)
def test_resume_is_bit_exact(tmp_path, split, total, extra):
    full = make_engine(tmp_path / "full", config=_cfg(max_steps=total, **extra)).fit(ToyData())
    make_engine(tmp_path / "part", config=_cfg(max_steps=split, **extra)).fit(ToyData())
    resumed = make_engine(tmp_path / "part", config=_cfg(max_steps=total, **extra), resume=True).fit(ToyData())
    assert full.step == resumed.step == total
    _assert_identical(_weights(tmp_path / "full"), _weights(tmp_path / "part"))
    a = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "part" / "checkpoints" / "last.pt")
    assert a["optimizer"]["state"][0]["exp_avg"].equal(b["optimizer"]["state"][0]["exp_avg"])
    assert (a["epoch"], a["batch_in_epoch"]) == (b["epoch"], b["batch_in_epoch"])


def test_validation_does_not_change_the_trajectory(tmp_path):
    def validate(model):
        return {"loss": float(torch.rand(()))}  # consumes RNG on purpose

    a = make_engine(tmp_path / "a", config=_cfg(max_steps=10)).fit(ToyData())
    b = make_engine(tmp_path / "b", config=_cfg(max_steps=10), validate=validate).fit(ToyData())
    assert a.step == b.step
    _assert_identical(_weights(tmp_path / "a"), _weights(tmp_path / "b"))
    assert len(b.history) == 2  # end of epoch 1 and the final step
    assert (tmp_path / "b" / "checkpoints" / "best.pt").is_file()


def test_checkpoint_contents(tmp_path):
    make_engine(tmp_path, config=_cfg(max_steps=3, keep_last=2, ckpt_every=1)).fit(ToyData())
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    for key in ("model", "optimizer", "scheduler", "scaler", "step", "epoch", "rng", "config"):
        assert key in ckpt, key
    assert ckpt["step"] == 3 and ckpt["scheduler"]["total_steps"] == 24
    assert set(ckpt["rng"][0]) == {"python", "numpy", "torch", "cuda"}
    assert ckpt["config"] == {"model": {"width": 16}}
    steps = sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*.pt"))
    assert steps == ["step_00000001.pt", "step_00000002.pt"]
    assert any((tmp_path / "tb").iterdir())


def test_incompatible_resume_is_refused_naming_keys(tmp_path):
    make_engine(tmp_path, config=_cfg(max_steps=1)).fit(ToyData())
    with pytest.raises(IncompatibleCheckpointError, match=r"model\.width: .* has 16, config has 32"):
        make_engine(tmp_path, config=_cfg(max_steps=2), resume=True,
                    run_config={"model": {"width": 32}}).fit(ToyData())


def test_non_finite_losses_are_skipped_then_abort_keeps_last_good(tmp_path):
    # one bad item in 16: a few steps are skipped, training finishes and counts them
    res = make_engine(tmp_path / "a", config=_cfg(epochs=1)).fit(ToyData(nan_items=(5,)))
    assert res.step == 8 and res.nonfinite_steps == 1
    # every item bad after a good checkpoint: abort after K consecutive, last.pt untouched
    out = tmp_path / "b"
    make_engine(out, config=_cfg(max_steps=2, epochs=1)).fit(ToyData())
    before = (out / "checkpoints" / "last.pt").read_bytes()
    with pytest.raises(NonFiniteLossError, match="3 consecutive non-finite.*last.pt"):
        make_engine(out, config=_cfg(epochs=1, max_nonfinite=3, ckpt_every=1), resume=True).fit(
            ToyData(nan_items=tuple(range(16)))
        )
    assert (out / "checkpoints" / "last.pt").read_bytes() == before


def test_a_finite_loss_with_non_finite_gradients_is_skipped_not_applied(tmp_path):
    """sqrt at 0 has an infinite derivative: 0·sqrt(0·w) adds 0 to the loss and NaN to w's gradient.
    Such a step must be skipped (applied, it would make every weight NaN), and a run of them aborts."""
    poisoned = {"steps": set(), "calls": 0}

    def step(model, batch):
        loss, logs = step_fn(model, batch)
        poisoned["calls"] += 1
        if poisoned["calls"] in poisoned["steps"]:
            loss = loss + 0.0 * torch.sqrt((0.0 * model.fc1.weight).sum())
        assert torch.isfinite(loss)
        return loss, logs

    poisoned["steps"] = {3}
    res = make_engine(tmp_path / "a", config=_cfg(epochs=1), step=step).fit(ToyData(augment=False))
    assert res.step == 8 and res.nonfinite_steps == 1
    weights = _weights(tmp_path / "a")
    assert all(torch.isfinite(w).all() for w in weights.values())
    # the same run without the poisoned step differs from it only by that step's update
    clean = make_engine(tmp_path / "b", config=_cfg(epochs=1)).fit(ToyData(augment=False))
    assert clean.nonfinite_steps == 0 and not torch.equal(weights["fc1.weight"], _weights(tmp_path / "b")["fc1.weight"])

    poisoned["steps"], poisoned["calls"] = set(range(1, 100)), 0
    with pytest.raises(NonFiniteLossError, match="2 consecutive non-finite steps .*loss or gradient"):
        make_engine(tmp_path / "c", config=_cfg(epochs=1, max_nonfinite=2), step=step).fit(ToyData())


def test_early_stopping_on_monitored_metric(tmp_path):
    values = iter([1.0, 0.5, 0.7, 0.6, 0.9, 0.1])
    res = make_engine(tmp_path, config=_cfg(epochs=10, patience=2),
                      validate=lambda m: {"loss": next(values)}).fit(ToyData())
    assert res.stopped_early and res.epoch == 4
    assert res.best_metric == 0.5 and res.best_step == 16
    assert load_checkpoint(tmp_path / "checkpoints" / "best.pt")["step"] == 16


def test_accumulation_matches_a_larger_batch(tmp_path):
    # fp32: under bf16 autocast the kernels round differently for batch 4 and batch 2 (~1e-4)
    big = make_engine(tmp_path / "a", config=_cfg(max_steps=3, batch_size=4, amp="off"), dropout=0.0).fit(ToyData())
    acc = make_engine(tmp_path / "b", config=_cfg(max_steps=3, batch_size=2, accum_steps=2, amp="off"), dropout=0.0)
    acc.fit(ToyData())
    assert big.step == 3
    wa, wb = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    for k in wa:
        assert torch.allclose(wa[k], wb[k], atol=1e-6), k


@pytest.mark.parametrize("clip", [None, 1e-3])
def test_grad_clipping_bounds_the_update(tmp_path, clip):
    """Plain SGD at lr 1: one step moves the weights by exactly the (clipped) gradient, so the
    update's norm is at most clip_grad, while the same step unclipped moves them much further."""
    from asa.train import Engine
    from tests.train.toy import ToyNet, step_fn

    torch.manual_seed(0)
    model = ToyNet(dropout=0.0)
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    engine = Engine(model, torch.optim.SGD(model.parameters(), lr=1.0), step_fn, lr=1.0, out_dir=tmp_path,
                    config=_cfg(max_steps=1, clip_grad=clip, warmup_steps=0, schedule="constant"))
    seen = []
    engine._write_scalars = lambda values: seen.append(dict(values))
    engine.fit(ToyData(augment=False))
    moved = float((torch.cat([p.detach().flatten() for p in model.parameters()]) - before).norm())
    grad_norm = next(s["train/grad_norm"] for s in seen if "train/grad_norm" in s)  # the norm before clipping
    assert grad_norm > 0.1  # the toy gradient is far larger than the clip
    if clip is None:
        assert moved == pytest.approx(grad_norm, rel=1e-4)
    else:
        assert moved <= clip * (1 + 1e-4)
        assert moved == pytest.approx(clip, rel=1e-3)


def test_bad_trainer_options():
    with pytest.raises(ValueError, match="trainer.amp"):
        TrainConfig(amp="fp8")
    with pytest.raises(ValueError, match="too small"):
        make_engine("/tmp/unused-asa", config=_cfg(batch_size=32)).fit(ToyData())


def test_loader_workers_never_exceed_the_cpus(monkeypatch, tmp_path, capsys):
    """data.num_workers=4 on a 2-CPU machine: 2 workers (PyTorch warns above the CPU count), said once."""
    import asa.train.data as data

    monkeypatch.setattr(data, "available_cpus", lambda: 2)
    assert [data.loader_workers(n) for n in (0, 1, 2, 4, 8)] == [0, 1, 2, 2, 2]
    loader = data.build_loader(ToyData(), batch_size=2, rank=0, world_size=1, seed=0, num_workers=4)[0]
    assert loader.num_workers == 2
    import asa.train.engine as engine

    seen = {}
    real = engine.build_loader

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        seen["workers"] = out[0].num_workers
        return out

    monkeypatch.setattr(engine, "build_loader", spy)
    make_engine(tmp_path, config=_cfg(max_steps=1, num_workers=4)).fit(ToyData())
    assert seen["workers"] == 2
    assert "data.num_workers=4 capped to the 2 CPU(s) available" in capsys.readouterr().err


def test_resume_keeps_every_tensorboard_point(tmp_path):
    """A run killed after step 8 with its last checkpoint at step 4 (epoch end, with validation) is
    resumed from step 4: every scalar logged up to the checkpoint survives, the steps after it are
    logged once, by the resumed run (TensorBoard's purge drops only what the checkpoint does not hold)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def validate(model):
        return {"loss": 1.0}

    # 8 samples, batch 2: 4 steps per epoch; step_00000004.pt is the state at the end of epoch 1
    cfg = _cfg(epochs=3, max_steps=8, ckpt_every=4, keep_last=5)
    make_engine(tmp_path, config=cfg, validate=validate).fit(ToyData(8))
    make_engine(tmp_path, config=_cfg(epochs=3, max_steps=12), validate=validate,
                resume=tmp_path / "checkpoints" / "step_00000004.pt").fit(ToyData(8))
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    steps = {tag: [e.step for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    assert steps["train/loss"] == list(range(1, 13))  # each step once: none lost at the resume step 4
    assert steps["val/loss"] == [4, 8, 12]  # the validation at the checkpoint's own step survives


def test_short_epochs_write_last_pt_every_ckpt_every_steps_not_every_epoch(tmp_path):
    # 16 samples at batch 8: 2 steps an epoch, 11 steps; ckpt_every 4 -> the first epoch's end (a run killed early
    # keeps it), then steps 6 and 10 (epoch ends, 4 since the last write), then the end; ckpt_every 0 -> every
    # epoch's end (2, 4, 6, 8, 10), then the end
    written = {}
    for every in (4, 0):
        engine = make_engine(tmp_path / str(every), config=_cfg(epochs=6, max_steps=11, batch_size=8, ckpt_every=every))
        saved, save = [], engine.save
        engine.save = lambda *names, save=save, saved=saved, engine=engine, **kw: (saved.append((engine.step, names)),
                                                                                   save(*names, **kw))
        engine.fit(ToyData())
        written[every] = [step for step, names in saved if "last.pt" in names]
    assert written[4] == [2, 6, 10, 11] and written[0] == [2, 4, 6, 8, 10, 11]
    # the rule moves no weight: the same run either way
    _assert_identical(_weights(tmp_path / "4"), _weights(tmp_path / "0"))


def test_the_toy_helper_is_one_module_under_one_name():
    """tests/train/toy.py is imported as tests.train.toy alone (no test imports it as ``toy``, which took a sys.path
    entry), so its classes are the same objects in every test."""
    from pathlib import Path

    import tests.train.toy as toy

    folder = Path(toy.__file__).parent
    bare = [p.name for p in sorted(folder.glob("*.py"))
            if any(line.strip().startswith(("from toy ", "import toy")) for line in p.read_text().splitlines())]
    assert ToyData is toy.ToyData and bare == [] and not (folder / "conftest.py").exists()


def test_kept_steps_hold_the_state_of_their_step_whatever_the_cadence(tmp_path):
    # 8 samples at batch 2: 4 steps an epoch. Kept: step 3 (inside an epoch), 4 (an epoch's last step, saved after its
    # validation) and 10 (the run's end); keep_last prunes step files, never kept ones
    kept = [3, 4, 10]
    make_engine(tmp_path / "kept", config=_cfg(max_steps=10, keep_steps=kept, keep_last=1, ckpt_every=2),
                validate=lambda model: {"loss": 1.0}).fit(ToyData(8))
    folder = tmp_path / "kept" / "checkpoints"
    assert sorted(p.name for p in folder.glob("kept_*.pt")) == [f"kept_{s:08d}.pt" for s in kept]
    assert sorted(p.name for p in folder.glob("step_*.pt")) == ["step_00000008.pt"]  # the newest ckpt_every step
    for s in kept:  # each the state a run stopped at that step ends with, and the run's weights unchanged by it
        make_engine(tmp_path / f"to{s}", config=_cfg(max_steps=s), validate=lambda model: {"loss": 1.0}).fit(ToyData(8))
        at = load_checkpoint(folder / f"kept_{s:08d}.pt")
        assert at["step"] == s
        _assert_identical(at["model"], _weights(tmp_path / f"to{s}"))
    _assert_identical(_weights(tmp_path / "kept"), _weights(tmp_path / "to10"))


def test_a_kept_step_that_is_no_step_is_refused():
    with pytest.raises(ValueError, match=r"trainer.keep_steps=\[600, 0\]: \[0\]"):
        _cfg(keep_steps=[600, 0])


def test_a_kept_step_inside_a_non_finite_streak_is_kept_and_last_pt_is_not_written_there(tmp_path):
    """Steps 3 and 4 skipped (non-finite gradients), the kept steps 3 and 4 among them: their files hold the weights
    of step 2 (the streak updated nothing), while last.pt and the step files skip the streak. Without them the
    study's scoring at a kept step would fail, on every rerun."""
    calls = {"n": 0}

    def step(model, batch):
        loss, logs = step_fn(model, batch)
        calls["n"] += 1
        if calls["n"] in (3, 4):
            loss = loss + 0.0 * torch.sqrt((0.0 * model.fc1.weight).sum())
        return loss, logs

    # 8 samples at batch 2: step 4 ends the first epoch (its files saved after the epoch's validation)
    cfg = _cfg(max_steps=6, keep_steps=[3, 4], keep_last=10, ckpt_every=1)
    res = make_engine(tmp_path / "run", config=cfg, step=step,
                      validate=lambda model: {"loss": 1.0}).fit(ToyData(8, augment=False))
    assert res.nonfinite_steps == 2
    folder = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in folder.glob("kept_*.pt")) == ["kept_00000003.pt", "kept_00000004.pt"]
    assert sorted(p.name for p in folder.glob("step_*.pt")) == ["step_00000001.pt", "step_00000002.pt",
                                                                 "step_00000005.pt"]
    make_engine(tmp_path / "to2", config=_cfg(max_steps=2), validate=lambda model: {"loss": 1.0}).fit(
        ToyData(8, augment=False))
    for s in (3, 4):
        at = load_checkpoint(folder / f"kept_{s:08d}.pt")
        assert at["step"] == s
        _assert_identical(at["model"], _weights(tmp_path / "to2"))
