"""benchmarks.fusion_host: a step's host time on meta tensors, alone and fused, each K's row and its arithmetic."""
from __future__ import annotations

import json

import torch

from benchmarks.fusion_host import META, main, step_fn


def test_each_k_gets_a_row_whose_per_unit_time_is_the_fused_step_over_k(tmp_path):
    out = tmp_path / "host.json"
    assert main(["--ks", "1", "3", "--size", "tiny", "--repeats", "1", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert [r["k"] for r in doc["rows"]] == [1, 3]
    for row in doc["rows"]:
        assert row["alone_ms"] > 0 and row["stack_ms"] > 0 and row["fused_ms"] > 0
        assert row["fused_ms_per_unit"] == round(row["fused_ms"] / row["k"], 2)
        assert row["alone_over_fused_per_unit"] == round(row["alone_ms"] / (row["fused_ms"] / row["k"]), 2)


def test_the_meta_step_runs_the_network_without_its_arithmetic():
    """What the benchmark times: the forward and backward dispatched in full (every parameter that gets a gradient on
    the CPU gets one of its shape), on tensors that hold no data."""
    from asa.models.cnn.resenc import resenc_unet

    graded = {}
    for device in (torch.device("cpu"), META):
        torch.manual_seed(0)
        net = resenc_unet(img_size=32, in_channels=1, out_channels=2, size="tiny").to(device)
        batch = {"x": torch.randn(1, 1, 32, 32, 32).to(device), "y": torch.zeros(1, 32, 32, 32, dtype=torch.long).to(device)}
        loss, _ = step_fn(net, batch)
        loss.backward()
        assert loss.device == device and loss.shape == ()
        graded[device.type] = {n: (p.grad.device, p.grad.shape == p.shape) for n, p in net.named_parameters()
                               if p.grad is not None}
    assert graded["meta"].keys() == graded["cpu"].keys() and len(graded["meta"]) > 10
    assert set(graded["meta"].values()) == {(META, True)}
