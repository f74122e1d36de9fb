from __future__ import annotations

import pytest
import torch

from asa.losses import SegmentationLoss


def test_ignored_voxels_do_not_change_the_loss_or_get_gradient():
    logits = torch.randn(2, 2, 6, 6, 6, requires_grad=True)
    target = torch.randint(0, 2, (2, 1, 6, 6, 6))
    target[:, :, :2] = -1  # WMH label 2 -> ignore
    loss_fn = SegmentationLoss(multilabel=False)
    loss = loss_fn(logits, target)
    loss.backward()
    assert (logits.grad[:, :, :2] == 0).all() and (logits.grad[:, :, 2:] != 0).any()
    other = logits.detach().clone()
    other[:, :, :2] = torch.randn(2, 2, 2, 6, 6) * 10
    torch.testing.assert_close(loss_fn(other, target), loss.detach())


def test_confident_correct_predictions_score_near_zero():
    target = torch.randint(0, 3, (1, 1, 8, 8, 8))
    onehot = torch.nn.functional.one_hot(target[:, 0], 3).permute(0, 4, 1, 2, 3).float()
    assert SegmentationLoss(False)(onehot * 40 - 20, target) < 1e-3
    regions = (torch.rand(1, 3, 8, 8, 8) > 0.5).float()
    assert SegmentationLoss(True)(regions * 40 - 20, regions) < 1e-3
    assert SegmentationLoss(True)(20 - regions * 40, regions) > 1.0


def test_perfect_prediction_with_ignored_voxels_has_zero_loss():
    # hand-computed: half the voxels ignored (target -1), a saturated correct prediction elsewhere;
    # the ignored voxels must count as neither background nor foreground in Dice, and not in CE
    target = torch.zeros(1, 1, 4, 4, 4, dtype=torch.long)
    target[:, :, :, :2] = 1
    target[:, :, 2:] = -1  # 50 % ignored
    logits = torch.zeros(1, 2, 4, 4, 4)
    logits[:, 1] = torch.where(target[:, 0] == 1, 200.0, -200.0)  # softmax exactly one-hot in float32
    logits[:, 1][target[:, 0] == -1] = 200.0  # whatever is predicted in the ignored half
    loss = SegmentationLoss(multilabel=False)(logits, target)
    assert loss.item() == 0.0


def test_dice_leaves_the_background_out_as_nnunet_and_counts_it_on_request():
    # hand-computed: 8 of 64 voxels class 1, a saturated all-background prediction. Dice of class 1 is 0
    # (loss 1); background's is 2·56 / (64 + 56) = 14/15 (loss 1/15). MONAI's smoothing (1e-5) is below the tolerance.
    target = torch.zeros(1, 1, 4, 4, 4, dtype=torch.long)
    target[:, :, :2, :2, :2] = 1
    logits = torch.zeros(1, 2, 4, 4, 4)
    logits[:, 0] = 200.0
    ce = torch.nn.functional.cross_entropy(logits, target[:, 0])
    nnunet, old = SegmentationLoss(False), SegmentationLoss(False, dice_background=True)
    assert (nnunet(logits, target) - ce).item() == pytest.approx(1.0, abs=1e-5)
    assert (old(logits, target) - ce).item() == pytest.approx((1.0 + 1 / 15) / 2, abs=1e-5)
    # regions (multilabel) have no background channel: the option changes nothing
    regions = (torch.rand(1, 3, 4, 4, 4) > 0.5).float()
    pred = torch.randn(1, 3, 4, 4, 4)
    assert SegmentationLoss(True)(pred, regions) == SegmentationLoss(True, dice_background=True)(pred, regions)
