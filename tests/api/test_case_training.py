"""Case-level fine-tuning pieces: class weights, the loss, the monitor defaults."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from asa.api.tasks.case import CaseLoss, case_metrics_of, class_weights, default_monitor


def test_class_weights_are_inverse_frequency():
    # 6 cases: 3 of class 0, 2 of class 1, 1 of class 2 -> N / (K n_k) = 6/9, 6/6, 6/3
    torch.testing.assert_close(class_weights([0, 0, 0, 1, 1, 2], 3), torch.tensor([2 / 3, 1.0, 2.0]))
    torch.testing.assert_close(class_weights([0, 1, 0, 1], 2), torch.ones(2))
    with pytest.raises(ValueError, match=r"class\(es\) \[2\]"):
        class_weights([0, 1], 3)


def test_weighted_cross_entropy_matches_the_weighted_mean_by_hand():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    target = torch.tensor([0, 1, 1])
    w = torch.tensor([2.0, 0.5])
    per_case = -F.log_softmax(logits, 1)[torch.arange(3), target]
    expected = (w[target] * per_case).sum() / w[target].sum()
    torch.testing.assert_close(CaseLoss("binary", weights=w)(logits, target), expected)


def test_regression_loss_is_on_standardised_values():
    pred, true = torch.tensor([[70.0], [80.0]]), torch.tensor([60.0, 80.0])
    # shift 70, scale 10: standardised errors (0 - (-1)) and 0 -> MSE 0.5
    assert CaseLoss("continuous", shift=70.0, scale=10.0)(pred, true).item() == pytest.approx(0.5)
    # Huber with delta 0.5 on an error of 1: 0.5 * (1 - 0.5 / 2) = 0.375 and 0 -> mean 0.1875
    huber = CaseLoss("continuous", regression="huber", delta=0.5, shift=70.0, scale=10.0)
    assert huber(pred, true).item() == pytest.approx(0.1875)
    with pytest.raises(ValueError, match="task.regression"):
        CaseLoss("continuous", regression="l1")


def test_default_monitors_follow_the_metric_direction():
    assert default_monitor("binary") == ("val/balanced_accuracy", "max")
    assert default_monitor("multiclass") == ("val/balanced_accuracy", "max")
    assert default_monitor("continuous") == ("val/mae", "min")
    assert "auroc" in case_metrics_of("binary") and "r2" in case_metrics_of("continuous")
