"""The nnU-Net-planned DynUNet baseline: the plan against hand-computed plans, shapes, deep
supervision outputs with their loss, the recorded spec and bad arguments."""

from __future__ import annotations

import pytest
import torch

from asa.losses import DeepSupervisionLoss, SegmentationLoss
from asa.models import build_network, capabilities, network_spec
from asa.models.cnn.dynunet import plan_dynunet

I = (1, 1, 1)
T = (2, 2, 2)
K3 = (3, 3, 3)

# (crop, spacing mm) -> (kernels, strides, filters), worked by hand with the rule in plan_dynunet's docstring
PLANS = [
    # 128 -> 64 -> 32 -> 16 -> 8 -> 4: five pools (also the cap); filters 32..256, then capped at 320
    (128, 1.0, [K3] * 6, [I] + [T] * 5, [32, 64, 128, 256, 320, 320]),
    # 32 -> 16 -> 8 -> 4: three pools (4 is the floor: 4 < 2 * 4)
    (32, 1.0, [K3] * 4, [I] + [T] * 3, [32, 64, 128, 256]),
    # 96 -> 48 -> 24 -> 12 -> 6: four pools (6 < 8 stops)
    (96, 1.0, [K3] * 5, [I] + [T] * 4, [32, 64, 128, 256, 320]),
    # spacing (1, 1, 3): axis 2 is 3x the finest -> kernel 1, no pooling at first; after one pool the
    # spacing is (2, 2, 3), 1.5x: axis 2 joins (kernel 3, stride 2). Sizes 128,128,32 -> 64,64,32 ->
    # 32,32,16 -> 16,16,8 -> 8,8,4 -> 4,4,4 (axis 2 at 4 < 8 sits out the last pool)
    ((128, 128, 32), (1.0, 1.0, 3.0), [(3, 3, 1)] + [K3] * 5,
     [I, (2, 2, 1), T, T, T, (2, 2, 1)], [32, 64, 128, 256, 320, 320]),
    # 64^3 at (3, 1, 1) mm: axis 0 waits one pool; 64,64,64 -> 64,32,32 -> 32,16,16 -> 16,8,8 -> 8,4,4 ->
    # then only axis 0 fits (8 >= 8) but a single axis needs 3 * 4 = 12 voxels: stop at four pools
    (64, (3.0, 1.0, 1.0), [(1, 3, 3)] + [K3] * 4, [I, (1, 2, 2), T, T, T], [32, 64, 128, 256, 320]),
    # 16^3: 16 -> 8 -> 4: two pools
    (16, 1.0, [K3] * 3, [I, T, T], [32, 64, 128]),
]


@pytest.mark.parametrize("crop, spacing, kernels, strides, filters", PLANS)
def test_plan_matches_hand_computed_plans(crop, spacing, kernels, strides, filters):
    plan = plan_dynunet(crop, spacing)
    assert (plan.kernel_size, plan.strides, plan.filters) == (kernels, strides, filters)
    assert plan.num_pools == len(strides) - 1


def test_plan_caps():
    assert plan_dynunet(256, 1.0).num_pools == 5  # 256 could pool 6 times: capped at 5
    assert plan_dynunet(256, 1.0, max_pools=6).filters == [32, 64, 128, 256, 320, 320, 320]
    assert plan_dynunet(128, 1.0, min_feature_size=8).num_pools == 4  # 128 -> 8 with a floor of 8


def test_plan_bad_arguments():
    with pytest.raises(ValueError, match="spacing must be 3 positive"):
        plan_dynunet(32, (1.0, 1.0))
    with pytest.raises(ValueError, match="spacing must be 3 positive"):
        plan_dynunet(32, (1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match=r"halves axis 0 of the crop 3 time\(s\), so the crop's edge there must be divisible by 8, and 36 is not"):
        plan_dynunet(36, 1.0)  # 36 -> 18 -> 9, and 9 >= 8 asks for a third halving that 9 cannot take
    with pytest.raises(ValueError, match="img_size"):
        plan_dynunet((32, 32), 1.0)


@pytest.mark.slow
def test_forward_backward_with_deep_supervision_32():
    torch.manual_seed(0)
    net = build_network({"arch": "dynunet", "kwargs": dict(img_size=32, in_channels=2, out_channels=3)})
    assert capabilities(net).deep_supervision == 2  # 3 pools: full and 1/2 (1/4 would weigh 0 in nnU-Net)
    x = torch.randn(2, 2, 32, 32, 32)
    net.train()
    outs = net(x)
    assert isinstance(outs, list) and [tuple(o.shape) for o in outs] == [(2, 3, 32, 32, 32), (2, 3, 16, 16, 16)]
    target = torch.randint(0, 3, (2, 1, 32, 32, 32))
    loss = DeepSupervisionLoss(SegmentationLoss(multilabel=False), capabilities(net).deep_supervision)(outs, target)
    loss.backward()
    assert torch.isfinite(loss)
    heads = [p for n, p in net.named_parameters() if n.startswith("deep_supervision_heads")]
    assert heads and all(p.grad is not None and p.grad.abs().sum() > 0 for p in heads)  # the head is trained
    net.eval()
    with torch.no_grad():
        plain = net(x)
    assert isinstance(plain, torch.Tensor) and plain.shape == (2, 3, 32, 32, 32)  # predict gets plain logits


@pytest.mark.slow
def test_spec_records_the_plan_and_options():
    net = build_network({"arch": "dynunet", "kwargs": dict(img_size=(64, 64, 32), in_channels=1, out_channels=2,
                                                           spacing=(1.0, 1.0, 2.0), deep_supervision=False)})
    kwargs = network_spec(net)["kwargs"]
    assert kwargs["strides"] == [[1, 1, 1], [2, 2, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]]
    assert kwargs["kernel_size"][0] == [3, 3, 1] and kwargs["filters"] == [32, 64, 128, 256, 320]
    assert capabilities(net).deep_supervision == 0
    net.train()
    assert net(torch.randn(1, 1, 64, 64, 32)).shape == (1, 2, 64, 64, 32)  # one output without deep supervision
    with pytest.raises(ValueError, match="together"):
        build_network({"arch": "dynunet", "kwargs": dict(img_size=32, in_channels=1, out_channels=2,
                                                         kernel_size=[[3, 3, 3]] * 3)})
    with pytest.raises(ValueError, match="at least 2"):
        build_network({"arch": "dynunet", "kwargs": dict(img_size=8, in_channels=1, out_channels=2)})
