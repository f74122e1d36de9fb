from __future__ import annotations

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
