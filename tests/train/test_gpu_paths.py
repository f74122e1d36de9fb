"""The logic of the CUDA-only code paths, checked on a CPU: process-group set-up under a launcher,
device refusals, kernel determinism, GradScaler with accumulation and clipping, and what the
training log averages."""
from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist

from asa.train import TrainConfig
from asa.train.distributed import all_reduce_mean, cleanup_distributed, dist_timeout_s, resolve_device, setup_distributed
from asa.train.distributed import DistEnv
from asa.train.reporting import TrainLog
from asa.train.rng import kernel_determinism
from asa.train.step import OptimizerStep
from tests.train.toy import ToyData, ToyNet, make_engine, step_fn

CPU = torch.device("cpu")
LAUNCH_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def no_launcher(monkeypatch):
    for name in LAUNCH_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_a_one_process_launcher_job_joins_a_gloo_group(no_launcher):
    """torchrun --nproc_per_node=1 runs the same collectives as a many-process job (NCCL on CUDA)."""
    for name, value in {"WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                        "MASTER_PORT": str(_free_port())}.items():
        no_launcher.setenv(name, value)
    env = setup_distributed("cpu", timeout_s=30)
    try:
        assert env.backend == "gloo" and env.distributed and env.world_size == 1 and env.is_main
        assert dist.is_initialized() and dist.get_world_size() == 1
        assert all_reduce_mean({"a": 2.0, "b": 4.0}, env) == {"a": 2.0, "b": 4.0}
    finally:
        cleanup_distributed()
    assert not dist.is_initialized()


def test_a_plain_process_joins_no_group(no_launcher):
    env = setup_distributed("cpu")
    assert env.backend is None and not env.distributed and not dist.is_initialized()
    assert DistEnv(world_size=2).distributed  # several processes are distributed whatever the backend


@pytest.mark.parametrize("value", ["soon", "0", "-5", "inf"])
def test_a_bad_collective_timeout_names_the_variable(monkeypatch, value):
    monkeypatch.setenv("ASA_DIST_TIMEOUT_S", value)
    with pytest.raises(ValueError, match=f"ASA_DIST_TIMEOUT_S='{value}': expected a positive number of seconds"):
        dist_timeout_s()


def test_collective_timeout_default_and_override(monkeypatch):
    monkeypatch.delenv("ASA_DIST_TIMEOUT_S", raising=False)
    assert dist_timeout_s() == 1800.0
    monkeypatch.setenv("ASA_DIST_TIMEOUT_S", "60")
    assert dist_timeout_s() == 60.0


def test_more_ranks_than_visible_gpus_is_refused_naming_local_rank(monkeypatch):
    """LOCAL_RANK 2 on a node with 2 visible GPUs would fail in cudaSetDevice with 'invalid device
    ordinal'; the refusal says what to change instead."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5")
    assert resolve_device("auto", 1) == torch.device("cuda", 1)
    assert resolve_device("cuda:0", 3) == torch.device("cuda", 0)  # one GPU per process: taken as given
    with pytest.raises(ValueError, match=r"LOCAL_RANK=2 but this process sees 2 CUDA device\(s\) "
                                         r"\(CUDA_VISIBLE_DEVICES=4,5\).*--nproc_per_node=2"):
        resolve_device("cuda", 2)
    with pytest.raises(ValueError, match=r"device='cuda:2'.*the last is cuda:1"):
        resolve_device("cuda:2")


def test_rank_outside_the_world_is_refused(no_launcher):
    no_launcher.setenv("WORLD_SIZE", "2")
    no_launcher.setenv("RANK", "2")
    with pytest.raises(ValueError, match=r"RANK=2 must lie in \[0, WORLD_SIZE=2\)"):
        setup_distributed("cpu")


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("deterministic", [True, False])
def test_kernel_determinism_for_a_run_then_the_process_as_found(monkeypatch, device, deterministic):
    """Only flags are set (no CUDA needed): deterministic -> deterministic algorithms (warn-only),
    cuDNN deterministic without autotuning and, on CUDA, a fixed cuBLAS workspace; otherwise on CUDA
    cuDNN autotunes. Afterwards every flag is back as it was."""
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, False
    with kernel_determinism(deterministic, torch.device(device)):
        assert torch.are_deterministic_algorithms_enabled() is deterministic
        if deterministic:
            assert torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.backends.cudnn.deterministic is deterministic
        assert torch.backends.cudnn.benchmark is (device == "cuda" and not deterministic)
        import os
        assert ("CUBLAS_WORKSPACE_CONFIG" in os.environ) is (device == "cuda" and deterministic)
    assert not torch.are_deterministic_algorithms_enabled()
    assert torch.backends.cudnn.benchmark is False and torch.backends.cudnn.deterministic is False


def test_the_engine_runs_under_its_kernel_settings_and_restores_them(tmp_path):
    seen = []

    def step(model, batch):
        seen.append((torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic))
        return step_fn(model, batch)

    cfg = TrainConfig(epochs=1, max_steps=2, batch_size=2, progress=False, ckpt_every=1000, deterministic=True)
    make_engine(tmp_path, config=cfg, step=step).fit(ToyData())
    assert seen == [(True, True)] * 2
    assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.deterministic


def test_window_means_are_over_the_steps_that_logged_a_key(tmp_path):
    log = TrainLog(DistEnv(), tmp_path / "tb")
    log.open(start_step=0, stop_step=4, progress=False, resumed=False)
    for entry in ({"loss": 1.0, "grad_norm": 2.0}, {"grad_norm": 4.0}, {"loss": 3.0}, {"loss": 5.0}):
        log.add_step(entry)
    means = log.take_window(samples_per_step=2, nonfinite_total=1)
    log.close()
    assert means["loss"] == pytest.approx(3.0) and means["grad_norm"] == pytest.approx(3.0)


def test_a_skipped_steps_loss_stays_out_of_the_logged_mean(tmp_path):
    """One non-finite item in 16 (batch 2, one logging window of 8 steps): the window's loss is the
    mean of the 7 finite step losses, not pulled down by a 0 for the skipped step."""
    losses = []

    def step(model, batch):
        loss, logs = step_fn(model, batch)
        losses.append(float(loss.detach()))
        return loss, logs

    cfg = TrainConfig(epochs=1, batch_size=2, progress=False, log_every=8, ckpt_every=1000, amp="off")
    engine = make_engine(tmp_path, config=cfg, step=step)
    seen = []
    engine._write_scalars = lambda values: seen.append(dict(values))
    result = engine.fit(ToyData(nan_items=(5,)))
    assert result.nonfinite_steps == 1 and len(losses) == 8
    finite = [v for v in losses if v == v]
    assert len(finite) == 7
    window = next(s for s in seen if "train/loss" in s)
    assert window["train/loss"] == pytest.approx(sum(finite) / 7, rel=1e-6)


def _grads_after(clip: float | None, accum: int, scaler: torch.amp.GradScaler | None):
    """One OptimizerStep (SGD, lr 1) over ``accum`` micro-batches of the toy model; returns
    (grad norm it reports, parameter update, the step)."""
    torch.manual_seed(0)
    model = ToyNet(dropout=0.0)
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    step = OptimizerStep(opt, amp="off", device=CPU, accum_steps=accum, clip_grad=clip)
    if scaler is not None:
        step.scaler = scaler  # the fp16 path of CUDA, with the CPU's GradScaler
    data = ToyData(augment=False)
    batches = [{k: torch.stack([data[2 * i + j][k] for j in range(2)]) for k in ("x", "y")} for i in range(accum)]
    norm = step.apply(0, step.accumulate(model, step_fn, batches, distributed=False)).grad_norm
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    return norm, after - before, step


@pytest.mark.parametrize("clip", [None, 1e-2])
def test_grad_scaler_unscales_before_clipping_with_accumulation(clip):
    """Scaled by 2^10 over two micro-batches, the step reports the unscaled gradient norm and takes
    exactly the update of the unscaled, clipped step: the scaler unscales once, before the clip."""
    ref_norm, ref_update, _ = _grads_after(clip, 2, None)
    norm, update, step = _grads_after(clip, 2, torch.amp.GradScaler("cpu", init_scale=2.0**10))
    assert step.scaler.is_enabled() and step.scaler.get_scale() == 2.0**10
    assert norm == pytest.approx(ref_norm, rel=1e-5)
    torch.testing.assert_close(update, ref_update, rtol=1e-5, atol=1e-8)
    if clip is not None:
        assert float(update.norm()) == pytest.approx(clip, rel=1e-4)


def test_a_grad_scaler_overflow_is_skipped_by_the_scaler_not_counted_as_non_finite(tmp_path):
    """A step whose scaled gradients overflow: the scaler skips it and halves its scale; the engine
    logs it as an AMP overflow, keeps its inf norm out of train/grad_norm and does not count it
    towards trainer.max_nonfinite (such steps are routine while fp16 finds its scale)."""
    calls = [0]

    def step(model, batch):
        loss, logs = step_fn(model, batch)
        calls[0] += 1
        return (loss * 1e36 if calls[0] in (2, 3) else loss), logs  # × 2^16 in the backward: inf

    cfg = TrainConfig(epochs=1, max_steps=4, batch_size=2, progress=False, log_every=4, ckpt_every=1000,
                      amp="off", max_nonfinite=2)
    engine = make_engine(tmp_path, config=cfg, step=step)
    engine.optim_step.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    seen = []
    engine._write_scalars = lambda values: seen.append(dict(values))
    result = engine.fit(ToyData(augment=False))
    assert result.step == 4 and result.nonfinite_steps == 0
    window = next(s for s in seen if "train/amp_overflow" in s)
    assert window["train/amp_overflow"] == pytest.approx(0.5)
    assert torch.isfinite(torch.tensor(window["train/grad_norm"]))
    assert engine.optim_step.scaler.get_scale() == 2.0**14  # halved twice


def test_fused_units_each_scale_their_loss_by_their_own_grad_scaler():
    """fp16's GradScaler under fusion (`asa.train.fused.Stacked`): two toy units trained as one, one with a scaler at
    2^10 and one without, each take the update it takes stepped alone (the CPU's GradScaler stands in for CUDA's):
    each unit's gradient carries its own scale alone, and its scaler unscales it before the clip."""
    from asa.train.fused import Stacked

    _, ref_update, _ = _grads_after(1e-2, 2, None)  # the same update whether the scaler is on or not (test above)
    steps, models, befores = [], [], []
    for scaler in (torch.amp.GradScaler("cpu", init_scale=2.0**10), None):
        torch.manual_seed(0)
        models.append(ToyNet(dropout=0.0))
        befores.append(torch.cat([p.detach().flatten().clone() for p in models[-1].parameters()]))
        steps.append(OptimizerStep(torch.optim.SGD(models[-1].parameters(), lr=1.0), amp="off", device=CPU,
                                   accum_steps=2, clip_grad=1e-2))
        if scaler is not None:
            steps[-1].scaler = scaler
    data = ToyData(augment=False)
    batches = [{k: torch.stack([data[2 * i + j][k] for j in range(2)]) for k in ("x", "y")} for i in range(2)]
    accs = Stacked(models, step_fn).accumulate(steps, batches)
    grads = [p.grad.clone() for p in models[0].parameters()]
    assert steps[0].scaler.is_enabled() and not steps[1].scaler.is_enabled()
    # unit 0's gradients are 2^10 times unit 1's (the same weights and batches) before either unscales
    for g0, g1 in zip(grads, (p.grad for p in models[1].parameters())):
        torch.testing.assert_close(g0, g1 * 2.0**10, rtol=1e-5, atol=1e-6)
    for model, step, acc, before in zip(models, steps, accs, befores):
        step.apply(0, acc)
        update = torch.cat([p.detach().flatten() for p in model.parameters()]) - before
        torch.testing.assert_close(update, ref_update, rtol=1e-5, atol=1e-8)
