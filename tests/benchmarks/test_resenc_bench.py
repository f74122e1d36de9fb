"""benchmarks/resenc.py: every step timed beside the others, with its FLOPs against the machine's references."""
from __future__ import annotations

import json

import pytest

from benchmarks import resenc


@pytest.mark.slow
def test_steps_side_by_side_with_flops_and_memory(tmp_path):
    out = tmp_path / "r.json"
    r = resenc.main(["--crop", "32", "--size", "tiny", "--batch", "1", "--repeats", "1", "--swvit", "tiny",
                     "--device", "cpu", "--json", str(out)])
    assert json.loads(out.read_text()) == r
    (r,) = r
    steps = {"masked", "dense", "finetune", "swvit"}
    assert set(r["median_s"]) == set(r["step_GFLOPs"]) == set(r["fraction_of_reference_rate"]) == steps
    # the masked step runs the dense step's convolutions (masked, not skipped) plus SparK's 3³ densify
    # convolutions: a little more than the dense step's FLOPs
    assert 1.0 < r["step_GFLOPs"]["masked"] / r["step_GFLOPs"]["dense"] < 1.2
    assert all(0 < f for f in r["fraction_of_reference_rate"].values())
    assert r["reference_of"] == {"masked": "conv", "dense": "conv", "finetune": "conv", "swvit": "matmul"}
    assert r["masked_over_dense"] == pytest.approx(r["median_s"]["masked"] / r["median_s"]["dense"], rel=1e-2)


@pytest.mark.slow  # a benchmark run
def test_the_swvit_step_can_be_left_out(tmp_path):
    r = resenc.main(["--crop", "16", "--size", "tiny", "--batch", "1", "--repeats", "1", "--swvit", "none",
                     "--device", "cpu"])[0]
    assert "swvit" not in r["median_s"] and r["step_GFLOPs"]["masked"] > 0


@pytest.mark.slow  # a benchmark run over every crop and size (10 CPU-s)
def test_every_crop_with_every_size(tmp_path):
    out = tmp_path / "r.json"
    r = resenc.main(["--crop", "16", "32", "--size", "tiny", "--batch", "1", "--repeats", "1", "--swvit", "none",
                     "--device", "cpu", "--amp", "off", "--json", str(out)])
    assert [(x["crop"], x["size"], x["precision"]) for x in r] == [(16, "tiny", "fp32"), (32, "tiny", "fp32")]
    assert json.loads(out.read_text()) == r
    assert r[1]["step_GFLOPs"]["dense"] > 4 * r[0]["step_GFLOPs"]["dense"]  # 8× the voxels


@pytest.mark.slow  # a benchmark run
def test_traffic_counts_what_each_part_of_the_masked_step_moves_on_meta():
    (r,) = resenc.main(["--traffic", "--crop", "32", "--size", "tiny", "--batch", "1", "--amp", "bf16"])
    steps, parts = r["steps"], r["component_other_GB"]
    assert r["dtype"] == "bfloat16" and set(parts) == set(resenc.COMPONENTS)
    # the masked step moves more bytes outside its convolutions than the dense one; its densify adds 3³
    # convolutions, nothing else adds FLOPs
    assert steps["masked"]["other_GB"] > steps["dense"]["other_GB"] > 0
    assert r["component_conv_GFLOPs"]["densify_and_tokens"] > 0
    assert all(r["component_conv_GFLOPs"][p] == 0 for p in parts if p != "densify_and_tokens")
    assert all(parts[p] > 0 for p in parts) and steps["masking_GB"] > 0
    # the count is exact: the same step counts the same bytes twice
    again = resenc.traffic(32, "tiny", 1, dtype=__import__("torch").bfloat16)
    assert again["steps"]["masked"] == steps["masked"]


@pytest.mark.slow  # eight steps timed
def test_components_time_the_masked_step_without_each_part(tmp_path):
    r = resenc.main(["--crop", "16", "--size", "tiny", "--batch", "1", "--repeats", "1", "--swvit", "none",
                     "--device", "cpu", "--components", "--autograd-norm"])[0]
    assert set(r["component_s"]) == {*resenc.COMPONENTS, "masking", "masked_over_dense"}
    assert r["autograd_norm_over_dense"] > 0 and "masked_autograd_norm" in r["median_s"]
    assert {f"without_{p}" for p in resenc.COMPONENTS} <= set(r["median_s"])
    assert r["step_GFLOPs"]["without_densify_and_tokens"] < r["step_GFLOPs"]["masked"]
