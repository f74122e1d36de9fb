from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from asa.losses import FocalRegionLoss


def test_hand_computed_value():
    pred = torch.zeros(2, 4)
    target = torch.tensor([[1.0, 3.0, 2.0, 0.0], [4.0, 4.0, 1.0, 1.0]])
    regions = torch.tensor([[0, 0, 1, 1], [0, 0, 7, 7]])
    # region means: sample 0: 2, 1; sample 1: 4, 1 -> batch max 4 -> w = 0.5, 0.25, 1, 0.25
    loss, w = FocalRegionLoss(beta=2.0)(pred, target, regions)
    torch.testing.assert_close(w, torch.tensor([[0.5, 0.5, 0.25, 0.25], [1.0, 1.0, 0.25, 0.25]]))
    expected = (1 * 2 + 3 * 2 + 2 * 1.5 + 0 + 4 * 3 + 4 * 3 + 1 * 1.5 + 1 * 1.5) / 8
    assert loss.item() == pytest.approx(expected)


def test_mask_restricts_the_mean_and_the_region_means():
    pred = torch.zeros(1, 4)
    target = torch.tensor([[2.0, 100.0, 1.0, 1.0]])
    regions = torch.tensor([[0, 0, 1, 1]])
    mask = torch.tensor([[1.0, 0.0, 1.0, 1.0]])  # the 100 is not in the loss
    loss, w = FocalRegionLoss(beta=1.0)(pred, target, regions, mask)
    torch.testing.assert_close(w, torch.tensor([[1.0, 0.0, 0.5, 0.5]]))
    assert loss.item() == pytest.approx((2 * 2 + 1 * 1.5 + 1 * 1.5) / 3)


def test_beta_zero_is_l1():
    pred, target = torch.randn(2, 3, 8, 8, 8), torch.randn(2, 3, 8, 8, 8)
    regions = torch.randint(0, 4, (2, 1, 8, 8, 8))
    loss, _ = FocalRegionLoss(beta=0.0)(pred, target, regions)
    torch.testing.assert_close(loss, F.l1_loss(pred, target))


def test_gradient_flows_through_the_error_only():
    pred = torch.randn(2, 16, requires_grad=True)
    target = torch.randn(2, 16)
    regions = torch.randint(0, 3, (2, 16))
    loss, w = FocalRegionLoss(beta=1.0)(pred, target, regions)
    (grad,) = torch.autograd.grad(loss, pred)
    # with w constant, d/dpred mean(|pred - target| (1 + w)) = sign(pred - target) (1 + w) / n
    torch.testing.assert_close(grad, torch.sign(pred - target).detach() * (1 + w) / pred.numel())
    assert not w.requires_grad


def test_weights_lie_in_unit_interval_and_max_region_gets_one():
    e = torch.rand(3, 50) * 5
    regions = torch.randint(0, 5, (3, 50))
    _, w = FocalRegionLoss()(e, torch.zeros_like(e), regions)
    assert w.min() >= 0 and w.max() == pytest.approx(1.0)


def test_bad_input():
    with pytest.raises(ValueError, match="beta"):
        FocalRegionLoss(beta=-1)
    with pytest.raises(ValueError, match="integer"):
        FocalRegionLoss()(torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="shape"):
        FocalRegionLoss()(torch.zeros(1, 2), torch.zeros(1, 3), torch.zeros(1, 2, dtype=torch.long))
