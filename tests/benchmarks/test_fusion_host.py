"""benchmarks.fusion_host: a step's host time on meta tensors, alone and fused, each K's row and its arithmetic."""
from __future__ import annotations

import json

import pytest
import torch

from benchmarks.fusion_host import META, main, step_fn


def test_each_k_gets_a_row_whose_per_unit_time_is_the_fused_step_over_k(tmp_path):
    out = tmp_path / "host.json"
    assert main(["--ks", "1", "3", "--size", "tiny", "--crop", "16", "--repeats", "1", "--json", str(out)]) == 0
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


def test_the_fused_step_dispatches_as_many_operators_for_any_number_of_units():
    """The host's share of a fused step does not grow with K: its forward, loss and backward dispatch the same
    operators for 2 units as for 6 (stacking each parameter one op, each unit's gradient a view of one unbind), so
    that the count a unit-step falls as 1/K. The update stays each unit's own, counted apart."""
    from asa.models.cnn.resenc import resenc_unet
    from asa.train.fused import Stacked
    from asa.train.step import OptimizerStep
    from benchmarks.fusion_host import count_ops

    data = {"x": torch.empty(1, 1, 32, 32, 32, device=META), "y": torch.empty(1, 32, 32, 32, dtype=torch.long,
                                                                             device=META)}
    counts = {}
    for k in (2, 6):
        units = [resenc_unet(img_size=32, in_channels=1, out_channels=2, size="tiny").to(META) for _ in range(k)]
        steps = [OptimizerStep(torch.optim.AdamW(u.parameters()), amp="off", device=META, accum_steps=1,
                               clip_grad=1.0) for u in units]
        stacked = Stacked(units, step_fn)
        counts[k] = count_ops(lambda: stacked.accumulate(steps, [data]))
        graded = [[p.grad.shape == p.shape for p in u.parameters() if p.grad is not None] for u in units]
        assert all(g == graded[0] for g in graded) and len(graded[0]) > 10 and all(graded[0])  # each unit's own
    assert counts[2] == counts[6] > 100


def test_a_row_counts_each_units_update_and_one_read_for_the_group(tmp_path):
    """ops_fused_per_unit = (the fused forward and backward + the K units' updates) / K, ops_alone = one forward and
    backward + one update: the fused forward and backward's count, the same for 2 units as for 4, shared by K; the
    updates' one host read shared by K."""
    from benchmarks.fusion_host import Update, measure

    update = Update(first=12, each=10, reads=1)
    rows = [measure(k, size="tiny", crop=32, batch=1, in_channels=1, out_channels=2, repeats=1, update=update)
            for k in (2, 4)]
    fused_2, fused_4 = rows[0]["ops_fused_per_unit"], rows[1]["ops_fused_per_unit"]
    assert 2 * fused_2 - 22 == 4 * fused_4 - 42  # the forward and backward alone: one count shared by K
    assert rows[0]["ops_alone"] == rows[1]["ops_alone"] > 12
    assert [(r["reads_alone"], r["reads_fused_per_unit"]) for r in rows] == [(1, 0.5), (1, 0.25)]


def test_the_updates_are_counted_on_units_of_the_shapes_and_read_the_device_once():
    """Counted, not assumed: a second unit adds its own update's operators (clipping, AdamW: more than a handful),
    and one and two units' updates read the device once."""
    from benchmarks.fusion_host import _update

    update = _update(size="tiny", crop=16, batch=1, in_channels=1, out_channels=2)
    assert update.reads == 1
    assert update.first > update.each > 5


@pytest.mark.slow  # counted with their arithmetic on CPU units (about 10 CPU-s)
def test_a_validation_round_of_k_units_dispatches_about_what_one_unit_alone_does(tmp_path, capsys):
    """The K units validated as one (`asa.models.units.Units`): the case is cut and blended once and the networks run
    as one vmapped forward a pass, so two more units add their own Dice and softmax, a few operators each, not a
    round each; the windows' transfers are the group's."""
    out = tmp_path / "host.json"
    assert main(["--ks", "2", "4", "--size", "tiny", "--crop", "16", "--repeats", "1", "--validation", "20", "20", "24",
                 "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["validation_case"] == [20, 20, 24]
    rows = {r["k"]: r for r in doc["rows"]}
    alone = rows[2]["val_ops_alone"]
    assert rows[4]["val_ops_alone"] == alone > 100
    totals = {k: rows[k]["val_ops_fused_per_unit"] * k for k in rows}
    assert 0 < totals[4] - totals[2] < 0.1 * 2 * alone  # validated one after another: 2 × alone more
    assert rows[4]["val_reads_fused_per_unit"] < rows[2]["val_reads_fused_per_unit"] < rows[2]["val_reads_alone"]
    with pytest.raises(SystemExit):
        main(["--ks", "1", "--size", "tiny", "--crop", "16", "--validation", "20", "12", "24"])
    assert "--validation 20 12 24: expected a case at least the crop (16)" in capsys.readouterr().err


@pytest.mark.slow  # two whole steps of four tiny networks, each timed and profiled: tens of seconds on a loaded CPU
def test_the_profile_splits_a_whole_step_by_family_and_the_fused_convolutions_are_one_for_k_units(tmp_path):
    """--profile on the CPU (the dry run of the GPU's): every unit-step's convolutions, norms and update appear, the
    K fused units run each of the unit's convolution operators once for all of them (a unit's share about 1/K, where
    K calls would give K times that: on a CPU the count holds each call's nested operators, and vmap's batching rule
    can nest one more aten::convolution in a forward call, 14 of 96 operators on an AVX2 machine), and each unit keeps
    its own update (as many update operators a unit fused as alone)."""
    out = tmp_path / "profile.json"
    assert main(["--ks", "3", "--profile", "--size", "tiny", "--crop", "16", "--in-channels", "1",
                 "--out-channels", "2", "--repeats", "1", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    (row,) = doc["rows"]
    assert doc["device"] == "cpu" and row["k"] == 3 and row["alone_wall_ms"] > 0 and row["fused_wall_ms_per_unit"] > 0
    alone, fused = row["alone_kernels"], row["fused_kernels_per_unit"]
    assert {"convolution", "norm", "update (clipping, AdamW)"} <= alone.keys() & fused.keys()
    assert alone["convolution"] > 0 and 0.9 < fused["convolution"] * 3 / alone["convolution"] < 1.5
    assert fused["update (clipping, AdamW)"] == alone["update (clipping, AdamW)"] > 0
    assert row["alone_device_ms"].keys() == alone.keys() and row["fused_device_ms_per_unit"].keys() == fused.keys()
    assert row["device_bound_unit_steps_per_s"] == round(1e3 / sum(row["fused_device_ms_per_unit"].values()), 1)


def test_profile_and_validation_are_refused_together(capsys):
    with pytest.raises(SystemExit):
        main(["--ks", "2", "--profile", "--validation", "40", "40", "40"])
    assert "--profile and --validation" in capsys.readouterr().err


def test_a_step_s_kernels_fall_in_the_family_of_what_they_do():
    """CUDA kernels' names as the profiler reports them on one Hopper GPU, and CPU operators: cuDNN's batch norm
    and layout transposes apart from its convolutions, the clipping's norm with the update."""
    from benchmarks.compile_ab import family
    from benchmarks.fusion_host import STEP_FAMILIES

    named = {"sm90_xmma_fprop_implicit_gemm_f16f16_f16f32_nhwc": "convolution",
             "sm90_xmma_wgrad_implicit_gemm_indexed": "convolution", "aten::mkldnn_convolution": "convolution",
             "cudnn::bn_fw_tr_1C11_kernel_NCHW": "norm", "batch_norm_collect_statistics_kernel": "norm",
             "cudnn::engines_precompiled::nchwToNhwcKernel": "layout (cuDNN's transposes)",
             "multi_tensor_apply_kernel<LpNormFunctor>": "update (clipping, AdamW)",
             "aten::_foreach_norm": "update (clipping, AdamW)", "cunn_SoftMaxForward": "loss",
             "vectorized_elementwise_kernel<copy_kernel_cuda>": "copy / cast",
             "aten::leaky_relu": "other elementwise / reduce"}
    assert {name: family(name, STEP_FAMILIES) for name in named} == named
