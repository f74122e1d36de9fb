"""SA-Swin gives the pretraining probes its SwinViT tokens (stride 8), so probe.every > 0 runs for method=sa_swin."""
from __future__ import annotations

import pytest
import torch

from asa.api import compose_config, load_config
from asa.api.machinery.pretraining import _method, _probe
from asa.data import write_demo_dataset
from asa.models.swin.family import swin_tokens

SIZES = ["method.feature_size=12", "method.depths=[1,1,1,1]", "method.num_heads=[1,1,2,4]"]


@pytest.mark.slow
def test_sa_swin_probe_tokens_are_the_stride_8_swin_stage(tmp_path):
    root = write_demo_dataset("ibsr", tmp_path / "ibsr", cases=2, size=32, seed=2)
    cfg = load_config("pretrain", "experiment=sa_swin", "data.crop=32", f"probe.data={root}", "probe.cases=2", *SIZES)
    method = _method(cfg)
    torch.manual_seed(0)
    net = method.build_network().eval()
    assert method.probe_stride(net) == 8
    x = torch.randn(2, 1, 32, 32, 32)
    tokens = method.probe_tokens(net, x)
    assert tokens.shape == (2, 4 ** 3, 4 * 12)  # (32 / 8)^3 tokens of 4 * feature_size channels
    # token t is the stage-2 feature map at raster position t (axis 2 fastest)
    stage = net.swinViT(x, normalize=True)[2]  # [2, 48, 4, 4, 4]
    assert torch.equal(tokens[1, 1 * 16 + 2 * 4 + 3], stage[1, :, 1, 2, 3])
    assert torch.equal(tokens, swin_tokens(net.swinViT, x))
    metrics = _probe(cfg, method, 8)(net)
    assert set(metrics) == {"probe/r2_CSF", "probe/r2_GM", "probe/r2_WM", "probe/r2_mean", "probe/knn_acc"}
    assert all(v == v for v in metrics.values())  # finite: the probe set has every class


@pytest.mark.slow
def test_sa_swin_pretraining_logs_probe_metrics(tmp_path):
    from asa.api import pretrain

    result = pretrain(compose_config("pretrain", [
        "experiment=sa_swin", "trainer=smoke", f"output_dir={tmp_path / 'pre'}", "device=cpu", "data.crop=32",
        "data.demo.size=40", "data.demo.cases=6", f"data.demo.cache_dir={tmp_path / 'cache'}", "method.drop_patch=8",
        "probe.cases=2", *SIZES,
    ]))
    assert result.history and "probe/r2_mean" in result.history[-1] and "probe/knn_acc" in result.history[-1]
