"""benchmarks.fusion_probe: the unit's convolutions read off its network, the grouped convolution computing the K units'
dense ones, FLOPs and totals by hand, and its dry run on the CPU."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks.fusion_probe import Conv, main, probe, totals, unit_convs, unit_network

CPU = torch.device("cpu")


@pytest.mark.parametrize("transposed", [False, True])
def test_the_grouped_convolution_is_the_k_dense_ones_and_its_flops_are_k_units(transposed):
    # a 1×1×1 kernel, 2 -> 3 channels, 2³ voxels, batch 1: forward 2·1·3·8·2 = 96 FLOPs a unit, its backward twice
    # that (input and weight gradients), so 3 · 96 = 288 a unit and 576 for K = 2
    conv = Conv(transposed, 2, 3, (1, 1, 1), (1, 1, 1), (0, 0, 0), True, (1, 2, 2, 2, 2))
    row = probe(conv, 2, torch.float32, CPU, warmup=0, repeats=1)
    assert row["k"] == 2 and row["flops"] == 576
    assert row["max_abs_diff"] < 1e-5
    assert all(row[f"{name}_ms"] > 0 for name in ("grouped", "dense", "batched"))


def test_the_units_convolutions_are_read_off_its_network():
    net = unit_network("tiny", 16, 4, 3)
    convs, flops = unit_convs(net, 2, 16, 4)
    first = next(iter(convs))
    assert (first.transposed, first.in_channels, first.input) == (False, 4, (2, 4, 16, 16, 16))
    assert any(c.transposed for c in convs)
    n_modules = sum(isinstance(m, (torch.nn.Conv3d, torch.nn.ConvTranspose3d)) for m in net.modules())
    assert sum(convs.values()) <= n_modules and flops > 0  # deep-supervision heads unused in a forward are left out


def test_totals_weight_each_shape_by_its_number_in_the_network():
    rows = [{"conv": "a", "dtype": "bf16", "k": 4, "flops": 100, "grouped_ms": 1.0, "dense_ms": 4.0, "batched_ms": 0.5},
            {"conv": "b", "dtype": "bf16", "k": 4, "flops": 50, "grouped_ms": 2.0, "dense_ms": 2.0, "batched_ms": 1.0}]
    (t,) = totals(rows, {"a": 3, "b": 1})
    assert (t["grouped_ms"], t["dense_ms"], t["batched_ms"], t["flops"]) == (5.0, 14.0, 2.5, 350)
    assert t["grouped_over_dense"] == round(5 / 14, 4)
    assert t["grouped_tflops"] == round(350 / 5e-3 / 1e12, 4)


@pytest.mark.slow  # every convolution of the tiny network, three ways, K 1 and 2 (a few CPU-s)
def test_the_dry_run_writes_its_json_and_table_on_the_cpu(tmp_path):
    assert main(["--dry-run", "--json", str(tmp_path / "p.json"), "--markdown", str(tmp_path / "p.md")]) == 0
    doc = json.loads((tmp_path / "p.json").read_text())
    assert doc["dry_run"] and doc["device"] == "cpu" and doc["stopped"] is None
    shapes = len(doc["convs"])
    assert len(doc["rows"]) == 2 * shapes and [(t["dtype"], t["k"]) for t in doc["totals"]] == [("fp32", 1), ("fp32", 2)]
    assert all(r["max_abs_diff"] < 1e-4 for r in doc["rows"])
    one, two = doc["totals"]
    assert two["flops"] == 2 * one["flops"]
    table = (tmp_path / "p.md").read_text()
    assert "| fp32 | 2 |" in table and "ResEnc tiny, 16³ crops, batch 2" in table
