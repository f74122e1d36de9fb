from __future__ import annotations

import pytest
import torch

from asa.losses import AttentiveReconstructionLoss, masked_patch_weights


def test_weights_of_masked_patches_sum_to_one():
    mask = (torch.rand(4, 50) < 0.75).float()
    g = torch.rand(4, 50)
    g[1] = 0.0  # all Ḡ zero: uniform weights
    w = masked_patch_weights(mask, g)
    torch.testing.assert_close(w.sum(-1), torch.ones(4))
    assert (w[mask == 0] == 0).all()
    torch.testing.assert_close(w[1], mask[1] / mask[1].sum())
    torch.testing.assert_close(w[0], g[0] * mask[0] / (g[0] * mask[0]).sum())


def test_hand_computed_loss():
    pred = torch.zeros(1, 3, 2)
    target = torch.tensor([[[1.0, 1.0], [2.0, 0.0], [3.0, 3.0]]])  # per-patch MSE: 1, 2, 9
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    g = torch.tensor([[1.0, 3.0, 100.0]])  # p = 1/4, 3/4 over the masked patches
    loss, w = AttentiveReconstructionLoss("attentive")(pred, target, mask, g)
    assert loss.item() == pytest.approx(0.25 * 1 + 0.75 * 2)
    loss, _ = AttentiveReconstructionLoss("uniform")(pred, target, mask)
    assert loss.item() == pytest.approx((1 + 2) / 2)


def test_gradient_wrt_visible_predictions_is_zero():
    pred = torch.randn(2, 10, 8, requires_grad=True)
    mask = torch.zeros(2, 10)
    mask[:, ::2] = 1
    for weighting in ("attentive", "uniform"):
        loss, _ = AttentiveReconstructionLoss(weighting, norm_pix_loss=True)(
            pred, torch.randn(2, 10, 8), mask, torch.rand(2, 10)
        )
        (grad,) = torch.autograd.grad(loss, pred)
        assert (grad[mask == 0] == 0).all() and (grad[mask == 1] != 0).any()


def test_norm_pix_loss_normalises_targets():
    target = torch.randn(1, 4, 16) * 5 + 3
    pred = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
    loss, _ = AttentiveReconstructionLoss("uniform", norm_pix_loss=True)(pred, target, torch.ones(1, 4))
    assert loss.item() == pytest.approx(0.0, abs=1e-10)


def test_bad_weighting_and_missing_informativeness():
    with pytest.raises(ValueError, match="weighting"):
        AttentiveReconstructionLoss("focal")
    with pytest.raises(ValueError, match="informativeness"):
        AttentiveReconstructionLoss("attentive")(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2), torch.ones(1, 2))
