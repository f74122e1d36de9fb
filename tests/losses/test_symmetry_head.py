from __future__ import annotations

import math

import pytest
import torch

from asa.losses import inpainting_loss, nt_xent, rotation_loss, symmetry_loss


def test_rotation_loss_hand_computed():
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [2.0, 0.0, 0.0, 0.0]])
    labels = torch.tensor([1, 0])
    expected = (math.log(4) + (-2 + math.log(math.exp(2) + 3))) / 2
    assert rotation_loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)


def test_nt_xent_hand_computed():
    # views: z1 = (e1, e2), z2 = (e1, e2): positive similarity 1, the other pair orthogonal
    z1 = torch.tensor([[1.0, 0.0], [0.0, 3.0]])  # scale does not matter (cosine)
    z2 = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    t = 0.5
    # anchor e1: candidates (other 3 embeddings) cosines e2:0, e1:1, e2:0 -> -1/t + log(e^{1/t} + 2)
    expected = -1 / t + math.log(math.exp(1 / t) + 2)
    assert nt_xent(z1, z2, t).item() == pytest.approx(expected, rel=1e-6)
    # opposite views: cos -1 to the positive
    z3 = torch.tensor([[-1.0, 0.0], [0.0, -1.0]])
    expected = 1 / t + math.log(math.exp(-1 / t) + 2)
    assert nt_xent(z1, z3, t).item() == pytest.approx(expected, rel=1e-6)


def test_nt_xent_bad_input():
    assert nt_xent(torch.randn(1, 4), torch.randn(1, 4)).item() == pytest.approx(0.0, abs=1e-6)  # no negative
    with pytest.raises(ValueError, match="same shape"):
        nt_xent(torch.randn(2, 4), torch.randn(3, 4))
    with pytest.raises(ValueError, match="temperature"):
        nt_xent(torch.randn(2, 4), torch.randn(2, 4), 0.0)


def test_inpainting_loss_hand_computed():
    rec = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    target = torch.tensor([[1.5, 2.0], [2.0, 4.0]])
    assert inpainting_loss(rec, target).item() == pytest.approx((0.5 + 0 + 1 + 0) / 4)


def test_symmetry_loss_hand_computed():
    g = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    gm = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # cos 1, cos 0

    def bce(logit: float, target: float) -> float:
        p = 1 / (1 + math.exp(-logit))
        return -(target * math.log(p) + (1 - target) * math.log(1 - p))

    healthy = (bce(1.0, 1.0) + bce(0.0, 1.0)) / 2  # y = 0: target 1 − y = 1
    assert symmetry_loss(g, gm).item() == pytest.approx(healthy, rel=1e-6)
    assert symmetry_loss(g, gm, torch.zeros(2)).item() == pytest.approx(healthy, rel=1e-6)
    mixed = (bce(1.0, 0.0) + bce(0.0, 1.0)) / 2  # first subject diseased: target 0
    assert symmetry_loss(g, gm, torch.tensor([1.0, 0.0])).item() == pytest.approx(mixed, rel=1e-6)
