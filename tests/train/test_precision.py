"""Precision and threads options: what `amp` resolves to, and bf16 training that follows fp32."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import Dataset

from asa.models import ASA, PRESETS
from asa.train import DistEnv, Engine, TrainConfig, build_optimizer
from asa.train import precision
from asa.train.precision import amp_name, cpu_has_native_bf16, resolve_amp, set_threads

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    "flags, native",
    [("fpu sse avx512f avx512_bf16 avx512_vnni", True), ("fpu sse amx_bf16 amx_tile", True),
     ("fpu sse avx2 avx512f", False)],
)
def test_native_bf16_is_read_from_the_cpu_flags(tmp_path, flags, native):
    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nmodel name\t: test\nflags\t\t: {flags}\n")
    assert cpu_has_native_bf16(str(info)) is (native and torch.backends.mkldnn.is_available())
    assert cpu_has_native_bf16(str(tmp_path / "missing")) is False


@pytest.mark.parametrize("native, expected", [(True, torch.bfloat16), (False, None)])
def test_auto_is_bf16_only_on_a_cpu_with_native_bf16(monkeypatch, native, expected):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    assert resolve_amp("auto", CPU) is expected
    assert resolve_amp("off", CPU) is None
    assert amp_name(expected) == ("bf16" if native else "fp32")


@pytest.mark.parametrize("native", [True, False])
def test_explicit_bf16_warns_on_a_cpu_that_emulates_it(monkeypatch, recwarn, native):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    assert resolve_amp("bf16", CPU, option="amp") is torch.bfloat16
    emulated = [w for w in recwarn if "without native bf16 matmul" in str(w.message)]
    assert len(emulated) == (0 if native else 1)
    if emulated:
        assert "amp=bf16" in str(emulated[0].message) and "amp=auto uses fp32" in str(emulated[0].message)
    recwarn.clear()
    assert resolve_amp("auto", CPU) is (torch.bfloat16 if native else None)  # auto never warns: it picks fp32
    assert resolve_amp("off", CPU) is None
    assert not [w for w in recwarn if "bf16" in str(w.message)]


def test_bad_precision_and_threads_name_the_option():
    with pytest.raises(ValueError, match="amp=fp16 needs a CUDA device"):
        resolve_amp("fp16", CPU, option="amp")
    with pytest.raises(ValueError, match=r"trainer.amp='fp8'"):
        resolve_amp("fp8", CPU)
    with pytest.raises(ValueError, match="trainer.threads=0"):
        TrainConfig(threads=0)
    with pytest.raises(ValueError, match="threads=-1"):
        set_threads(-1, option="threads")


def test_set_threads():
    before = torch.get_num_threads()
    try:
        assert set_threads(1) == 1 == torch.get_num_threads()
        assert set_threads(None) == 1  # None leaves the count alone
    finally:
        torch.set_num_threads(before)


class Blobs(Dataset):
    """Fixed smooth volumes [1, 32, 32, 32] (a few Gaussian blobs each)."""

    def __init__(self, n: int = 8) -> None:
        g = torch.Generator().manual_seed(7)
        grid = torch.stack(torch.meshgrid(*[torch.linspace(-1, 1, 32)] * 3, indexing="ij"))
        self.x = []
        for _ in range(n):
            centres, widths = torch.rand(4, 3, generator=g) * 1.6 - 0.8, torch.rand(4, generator=g) * 0.3 + 0.15
            d2 = ((grid[None] - centres[:, :, None, None, None]) ** 2).sum(1)
            self.x.append(torch.exp(-d2 / (2 * widths[:, None, None, None] ** 2)).sum(0, keepdim=True))

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.x[i]}


def _train(tmp_path, amp: str, steps: int = 50, device: str = "cpu") -> list[float]:
    torch.manual_seed(0)
    model = ASA(img_size=32, **PRESETS["tiny"])
    losses: list[float] = []
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16}

    def step(net, batch):
        out = net(batch["image"])
        assert out.loss.dtype == out.weights.dtype == torch.float32  # loss and AR weights stay fp32
        assert torch.is_autocast_enabled(device) is (amp in dtypes)
        if amp in dtypes:
            assert out.pred.dtype == dtypes[amp]
        losses.append(float(out.loss.detach()))
        return out.loss, {}

    config = TrainConfig(epochs=13, max_steps=steps, batch_size=2, progress=False, amp=amp, warmup_steps=5,
                         ckpt_every=1000, threads=1)
    optimizer = build_optimizer(model, name="adamw", lr=3e-3, weight_decay=0.05, betas=(0.9, 0.95))
    engine = Engine(model, optimizer, step, config=config, lr=3e-3, out_dir=tmp_path / amp, seed=0,
                    env=DistEnv(device=torch.device(device)))
    engine.fit(Blobs())
    assert engine.optim_step.scaler.is_enabled() is (amp == "fp16")  # fp16 trains with its GradScaler
    return losses


@pytest.mark.slow
def test_bf16_training_follows_fp32(tmp_path):
    """50 steps of the tiny ASA from one seed: the bf16 loss curve stays within 2 % of the fp32 one at
    every step (measured: 0.05 %; bf16 keeps 8 mantissa bits, ~0.4 % per rounding, and the loss
    averages many of them), and both runs learn."""
    before = torch.get_num_threads()
    try:
        fp32, bf16 = _train(tmp_path, "off"), _train(tmp_path, "bf16")
    finally:
        torch.set_num_threads(before)
    assert len(fp32) == len(bf16) == 50
    assert fp32 != bf16  # the bf16 run really ran in bf16
    a, b = torch.tensor(fp32), torch.tensor(bf16)
    assert torch.all((a - b).abs() <= 0.02 * a), ((a - b).abs() / a).max()
    assert a[-10:].mean() < 0.7 * a[:10].mean() and b[-10:].mean() < 0.7 * b[:10].mean()


@pytest.mark.gpu
def test_fp16_and_bf16_training_follow_fp32_on_cuda(tmp_path):
    """The same 50 steps on CUDA: fp16 autocast with its GradScaler and bf16 autocast each stay within
    2 % of the fp32 loss at every step (the CPU bf16 run above: 0.05 %), and all three learn."""
    fp32, fp16, bf16 = (torch.tensor(_train(tmp_path, amp, device="cuda")) for amp in ("off", "fp16", "bf16"))
    assert len(fp32) == len(fp16) == len(bf16) == 50
    for name, amp in (("fp16", fp16), ("bf16", bf16)):
        assert not torch.equal(amp, fp32), name
        assert torch.all((amp - fp32).abs() <= 0.02 * fp32), (name, ((amp - fp32).abs() / fp32).max())
        assert amp[-10:].mean() < 0.7 * amp[:10].mean(), name
    assert fp32[-10:].mean() < 0.7 * fp32[:10].mean()


def test_cpu_bf16_convolutions_on_depth_2_inputs_run_in_fp32_and_deep_ones_stay_bf16():
    """The guarded Conv3d gives the fp32 weight gradient, the same on every repeat, for a depth-2
    input under CPU bf16 autocast, and still computes in bf16 where the input is deep enough."""
    torch.manual_seed(0)
    conv = torch.nn.Sequential(torch.nn.Conv3d(16, 16, 3, padding=1), torch.nn.Conv3d(16, 16, 1))
    keys = list(conv.state_dict())
    assert precision.guard_cpu_bf16_convolutions(conv) == 2 and list(conv.state_dict()) == keys
    x = torch.randn(2, 16, 2, 4, 4)
    conv(x).square().mean().backward()
    fp32 = conv[0].weight.grad.clone()
    for _ in range(5):
        conv.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = conv[0](x)
        assert out.dtype == torch.float32
        conv[1](out).square().mean().backward()
        torch.testing.assert_close(conv[0].weight.grad, fp32, rtol=2e-2, atol=1e-4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert conv[0](torch.randn(1, 16, 3, 4, 4)).dtype == torch.bfloat16


def test_the_engine_guards_convolutions_only_under_cpu_bf16(tmp_path):
    for amp, guarded in (("bf16", True), ("off", False)):
        net = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3, padding=1))
        Engine(net, build_optimizer(net, name="adamw", lr=1e-3, weight_decay=0.0), lambda m, b: (m(b).sum(), {}),
               config=TrainConfig(epochs=1, batch_size=1, progress=False, amp=amp), lr=1e-3, out_dir=tmp_path / amp)
        assert (type(net[0]) is not torch.nn.Conv3d) is guarded
