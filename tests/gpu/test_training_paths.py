"""CUDA paths: fp16 autocast, fused SDPA, the AMP training engine and GPU inference (skipped without a GPU)."""
from __future__ import annotations

import pytest
import torch

from asa.models import ASA, PRESETS, ASASegmenter, LinearWindowAttention

pytestmark = pytest.mark.gpu


def test_window_attention_fp16_matches_fp32():
    attn = LinearWindowAttention(96, 3, window_size=32, shift=16).cuda().eval()
    x = torch.randn(2, 1000, 96, device="cuda")
    ref = attn(x)
    with torch.autocast("cuda", dtype=torch.float16):
        half = attn(x)
    torch.testing.assert_close(half.float(), ref, atol=2e-2, rtol=2e-2)


def test_asa_fp16_step_with_grad_scaler():
    model = ASA(img_size=64, **PRESETS["tiny"]).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cuda")
    x = torch.randn(2, 1, 64, 64, 64, device="cuda")
    for _ in range(3):
        with torch.autocast("cuda", dtype=torch.float16):
            out = model(x)
        opt.zero_grad()
        scaler.scale(out.loss).backward()
        scaler.step(opt)
        scaler.update()
        assert torch.isfinite(out.loss)
    torch.testing.assert_close(out.weights.sum(1), torch.ones(2, device="cuda"))


def test_gpu_inference_matches_cpu():
    from asa.eval.inference import predict_volume

    enc = {k: v for k, v in PRESETS["tiny"].items() if not k.startswith("decoder")}
    net = ASASegmenter(img_size=32, in_channels=2, out_channels=3, **enc).eval()
    x = torch.randn(2, 48, 40, 36)
    cpu = predict_volume(net, x, roi_size=(32, 32, 32), multilabel=True)
    gpu = predict_volume(net.cuda(), x, roi_size=(32, 32, 32), multilabel=True)
    assert gpu.device.type == "cpu"  # blended on the CPU whatever the window device
    torch.testing.assert_close(gpu, cpu, atol=1e-3, rtol=1e-3)


def test_pretrain_smoke_on_cuda_with_amp(tmp_path):
    from asa.api import pretrain as run
    from asa.io import load_checkpoint
    from asa.api.config import compose_config

    cfg = compose_config("pretrain", [
        "model=tiny", "trainer=smoke", "device=cuda", f"output_dir={tmp_path}", "data.crop=32",
        "data.demo.size=40", "data.demo.cases=8", f"data.demo.cache_dir={tmp_path / 'demo'}",
    ])
    result = run(cfg)
    assert result.step == 2
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert state["scaler"]  # fp16 GradScaler state is saved for resume


@pytest.mark.parametrize("amp", ["fp16", "bf16"])
def test_fused_units_step_on_cuda_as_each_steps_alone(amp):
    """`asa.train.fused.Stacked` on CUDA under autocast (fp16 with each unit's GradScaler): two ResEnc units trained
    as one take, to rounding, the step each takes alone: the same loss, the same skip or update, each tensor's
    update within 5 % of its largest. Vmapped, an instance norm of a half input was refused by cuDNN's batch norm
    until the fused step ran the norm in float32."""
    from asa.models.cnn.resenc import resenc_unet
    from asa.train.fused import Stacked
    from asa.train.step import OptimizerStep

    def step_fn(net, batch):
        out = net(batch["x"])
        out = out[0] if isinstance(out, (list, tuple)) else out
        loss = torch.nn.functional.cross_entropy(out.float(), batch["y"])
        return loss, {"ce": loss.detach()}

    def units():
        nets, steps = [], []
        for seed in (0, 1):
            torch.manual_seed(seed)
            nets.append(resenc_unet(img_size=32, in_channels=4, out_channels=3, size="tiny").cuda())
            steps.append(OptimizerStep(torch.optim.SGD(nets[-1].parameters(), lr=0.1), amp=amp,
                                       device=torch.device("cuda"), accum_steps=1, clip_grad=1.0))
            if amp == "fp16":  # a scale that does not overflow on the first step, alone or fused
                steps[-1].scaler = torch.amp.GradScaler("cuda", init_scale=2.0**8)
        return nets, steps

    g = torch.Generator(device="cuda").manual_seed(0)
    batch = {"x": torch.randn(2, 4, 32, 32, 32, device="cuda", generator=g),
             "y": torch.randint(0, 3, (2, 32, 32, 32), device="cuda", generator=g)}
    start = [{n: p.detach().clone() for n, p in net.named_parameters()} for net in units()[0]]
    alone, alone_steps = units()
    took = [s.apply(0, s.accumulate(n, step_fn, [batch], distributed=False)) for n, s in zip(alone, alone_steps)]
    fused, fused_steps = units()
    accs = Stacked(fused, step_fn).accumulate(fused_steps, [batch])
    fused_took = [s.apply(0, acc) for s, acc in zip(fused_steps, accs)]
    assert [t.loss for t in fused_took] == pytest.approx([t.loss for t in took], rel=2e-3)
    assert [t.grad_norm is None for t in fused_took] == [t.grad_norm is None for t in took] == [False, False]
    assert fused_steps[0].scaler.is_enabled() is (amp == "fp16")
    for a, b, before in zip(alone, fused, start):
        names = dict(a.named_parameters())
        for name, pa in names.items():
            if name.endswith(".conv.bias") and name.replace(".conv.bias", ".norm.weight") in names:
                continue  # a bias its instance norm cancels: its gradient is rounding noise in either mode
            pb = dict(b.named_parameters())[name]
            ua, ub = (p.detach() - before[name] for p in (pa, pb))
            torch.testing.assert_close(ub, ua, rtol=0, atol=0.05 * max(float(ua.abs().max()), 1e-6), msg=name)
