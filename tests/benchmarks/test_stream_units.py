"""benchmarks.stream_units: K units in one process, each its own dense kernels; its bit check, and what a CPU runs."""
from __future__ import annotations

import json

import pytest
import torch

from benchmarks.stream_units import Group, exactness, main, units_of

SHAPES = dict(size="tiny", crop=16, in_channels=1, out_channels=2)
CPU = torch.device("cpu")


def _batches(n: int) -> list[dict]:
    from benchmarks.fusion_host import batch_of

    return [batch_of(batch=1, crop=16, in_channels=1, out_channels=2, device=CPU, seed=s) for s in range(n)]


def test_units_trained_in_turn_in_one_process_equal_each_trained_alone_bit_for_bit():
    group = Group(units_of(3, SHAPES, device=CPU, amp="off"), "eager", CPU)
    before = [next(net.parameters()).detach().clone() for net, _ in group.units]
    assert exactness(group, _batches(2)) == 0.0
    # the check compared units that trained, from distinct initial weights
    after = [next(net.parameters()).detach() for net, _ in group.units]
    assert all(not torch.equal(b, a) for b, a in zip(before, after))
    assert not torch.equal(after[0], after[1])


class _OneUnitOff(Group):
    """A group whose second unit's learning rate is not its own: what the check must see."""

    def step(self, batch):
        for g in self.units[1][1].optimizer.param_groups:
            g["lr"] = 2e-3
        return super().step(batch)


def test_the_bit_check_sees_a_unit_trained_otherwise_than_alone():
    diff = exactness(_OneUnitOff(units_of(2, SHAPES, device=CPU, amp="off"), "eager", CPU), _batches(2))
    assert diff > 1e-6


def test_streams_and_graphs_are_refused_without_cuda():
    for mode in ("streams", "graphs", "graph_streams"):
        with pytest.raises(ValueError, match=f"mode '{mode}' needs CUDA"):
            Group([], mode, CPU)
    with pytest.raises(ValueError, match="expected one of eager, streams"):
        Group([], "vmap", CPU)


def test_a_cpu_run_writes_the_eager_rows_and_leaves_out_the_cuda_modes(tmp_path):
    out = tmp_path / "units.json"
    assert main(["--ks", "2", "--size", "tiny", "--crop", "16", "--in-channels", "1", "--seconds", "0",
                 "--warmup", "0", "--check-steps", "1", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["left_out"] == ["graph_streams", "graphs", "streams"]
    assert doc["alone"]["k"] == 1 and doc["alone"]["unit_steps_per_s"] > 0
    assert doc["alone"]["max_abs_diff"] == 0.0  # two copies trained alone: the kernels repeat themselves
    (row,) = doc["rows"]
    assert (row["k"], row["mode"], row["max_abs_diff"]) == (2, "eager", 0.0) and row["unit_steps_per_s"] > 0
