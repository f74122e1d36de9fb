"""`asa.train.step.apply_steps`: the updates of units trained as one read the device once, whatever their number, and
leave every unit where its own `OptimizerStep.apply` leaves it: the same weights, optimiser state and values, a skip
(a NaN loss, a NaN gradient) its own unit's alone."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from asa.train.optim import build_optimizer
from asa.train.step import OptimizerStep, apply_steps
from benchmarks.fusion_host import HostReads


def _unit(seed: int) -> tuple[nn.Module, OptimizerStep]:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 2))
    return net, OptimizerStep(build_optimizer(net, name="adamw", lr=1e-2, weight_decay=0.01), amp="off",
                              device=torch.device("cpu"), accum_steps=2, clip_grad=0.5)


def _step_fn(poison: str):
    """A squared-error step with a logged value; ``poison``: "loss" makes the loss NaN, "grad" only its gradient."""

    def step_fn(net, batch):
        out = net(batch)
        loss = out.pow(2).mean() + (math.nan if poison == "loss" else 0.0)
        if poison == "grad":  # 0 × sqrt(0): a finite loss whose gradient is 0 × inf, NaN, in every weight
            loss = loss + 0.0 * torch.sqrt(out.abs() - out.abs()).sum()
        return loss, {"abs": out.detach().abs().mean()}

    return step_fn


def _accumulate(net, step, poison=""):
    batches = [torch.randn(4, 6, generator=torch.Generator().manual_seed(m)) for m in range(2)]
    return step.accumulate(net, _step_fn(poison), batches, distributed=False)


def _state(net, step) -> list[torch.Tensor]:
    tensors = [p.detach().clone() for p in net.parameters()]
    for state in step.optimizer.state.values():
        tensors += [v.clone() for v in state.values() if isinstance(v, torch.Tensor)]
    return tensors


@pytest.mark.parametrize("k", [1, 4])
def test_the_units_updates_read_the_device_once(k):
    units = [_unit(seed) for seed in range(k)]
    accs = [_accumulate(net, step) for net, step in units]
    with HostReads() as reads:
        values = apply_steps([(step, 0, acc) for (_, step), acc in zip(units, accs)])
    assert reads.n == 1
    assert not {"item", "tolist"} & set(torch.Tensor.__dict__)  # torch.Tensor left as found (its C base holds them)
    assert len(values) == k and all(v.grad_norm is not None and v.nonfinite == 0 for v in values)


def test_each_unit_ends_where_its_own_update_leaves_it_a_skip_its_own_alone():
    """Two steps of four units (the second's loss NaN at the first step, the third's gradient NaN), against each unit
    stepped alone: the same values (exactly) and bit-identical weights and AdamW state."""
    poisons = {"first": ["", "loss", "grad", ""], "second": ["", "", "", ""]}
    skipped = {"first": [(0, False), (1, True), (0, True), (0, False)], "second": [(0, False)] * 4}
    alone, together = [_unit(seed) for seed in range(4)], [_unit(seed) for seed in range(4)]
    for step, step_poisons in poisons.items():
        took_alone = [s.apply(0, _accumulate(net, s, p)) for (net, s), p in zip(alone, step_poisons)]
        accs = [_accumulate(net, s, p) for (net, s), p in zip(together, step_poisons)]
        took = apply_steps([(s, 0, acc) for (_, s), acc in zip(together, accs)])
        assert [(v.nonfinite, v.grad_norm is None) for v in took] == skipped[step]
        assert not any(math.isnan(v.loss) for v in took)  # a NaN loss counts as 0 in the mean
        assert took == took_alone
    for (net_a, step_a), (net_b, step_b) in zip(alone, together):
        assert all(torch.equal(a, b) for a, b in zip(_state(net_a, step_a), _state(net_b, step_b), strict=True))


def test_a_skipped_unit_keeps_its_weights_while_the_others_move():
    units = [_unit(seed) for seed in range(3)]
    before = [copy.deepcopy(net.state_dict()) for net, _ in units]
    accs = [_accumulate(net, step, p) for (net, step), p in zip(units, ["", "loss", "grad"])]
    took = apply_steps([(step, 0, acc) for (_, step), acc in zip(units, accs)])
    assert [(v.nonfinite, v.grad_norm is None) for v in took] == [(0, False), (1, True), (0, True)]
    moved = [any(not torch.equal(t, before[k][n]) for n, t in net.state_dict().items())
             for k, (net, _) in enumerate(units)]
    assert moved == [True, False, False]
    assert all(p.grad is None for net, _ in units for p in net.parameters())  # every unit's gradients dropped
