from __future__ import annotations

import pytest
import torch
from torch import nn

from asa.models import PRESETS, build_segmentation_network, channels_last_inference

TINY = {k: v for k, v in PRESETS["tiny"].items() if not k.startswith("decoder")}

NETWORKS = [  # (arch, kwargs, input shape)
    ("swvit_unetr", dict(TINY), (2, 4, 32, 32, 32)),
    ("swvit_unetr", dict(TINY, norm_name=("instance", {"affine": True})), (1, 2, 32, 32, 32)),
    ("unetr", dict(feature_size=8, hidden_size=48, mlp_dim=96, num_heads=3), (1, 1, 32, 32, 32)),
    pytest.param("swin_unetr", dict(feature_size=12, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1]), (1, 2, 64, 64, 64),
                 marks=pytest.mark.slow),  # a 64³ crop: SwinUNETR's bottleneck needs it
]


@pytest.mark.parametrize("arch, kwargs, shape", NETWORKS)
def test_channels_last_layout_keeps_weights_and_outputs(arch, kwargs, shape):
    torch.manual_seed(0)
    net = build_segmentation_network(arch, img_size=shape[2:], in_channels=shape[1], out_channels=3, **kwargs).eval()
    x = torch.randn(shape)
    with torch.no_grad():
        before = net(x)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    norms = sum(isinstance(m, nn.InstanceNorm3d) for m in net.modules())
    assert norms > 0
    assert channels_last_inference(net) == norms
    assert not any(isinstance(m, nn.InstanceNorm3d) for m in net.modules())
    after_state = net.state_dict()
    assert after_state.keys() == state.keys()  # checkpoints load and save as before
    assert all(torch.equal(after_state[k], v) for k, v in state.items())
    convs = [m.weight for m in net.modules() if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d))]
    assert all(w.is_contiguous(memory_format=torch.channels_last_3d) for w in convs)
    with torch.no_grad():
        after = net(x)
    # GroupNorm(C, C) sums in another order than InstanceNorm3d: fp32 rounding, up to ~1.4e-4 on SwinUNETR's
    # outputs depending on the thread count left by earlier tests (a wrong layout differs by O(1))
    torch.testing.assert_close(after, before, atol=5e-4, rtol=5e-4)


def test_affine_instance_norm_becomes_the_same_group_norm():
    norm = nn.InstanceNorm3d(4, affine=True, eps=1e-3)
    nn.init.normal_(norm.weight), nn.init.normal_(norm.bias)
    holder = nn.Sequential(norm)
    x = torch.randn(2, 4, 5, 6, 7)
    expected = norm(x)
    channels_last_inference(holder)
    assert isinstance(holder[0], nn.GroupNorm) and holder[0].num_groups == 4 and holder[0].eps == 1e-3
    assert holder[0].weight is norm.weight and holder[0].bias is norm.bias
    torch.testing.assert_close(holder[0](x), expected)


def test_instance_norm_with_running_statistics_is_left_alone():
    holder = nn.Sequential(nn.InstanceNorm3d(4, track_running_stats=True))
    assert channels_last_inference(holder) == 0
    assert isinstance(holder[0], nn.InstanceNorm3d)
