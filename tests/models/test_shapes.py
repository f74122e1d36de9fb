"""Shape tables (arguments, input shape, expected output shapes) for the networks, and their bad arguments."""
from __future__ import annotations

import pytest
import torch

from asa.models import ASA, PRESETS, ASASegmenter, build_segmentation_network

TINY = PRESETS["tiny"]
ENC = {k: v for k, v in TINY.items() if not k.startswith("decoder")}

# ASA: (kwargs, input shape) -> pred [B, N, C·s³], mask/weights [B, N], N = (D/8)(H/8)(W/8)
ASA_CASES = [
    (dict(img_size=32), (2, 1, 32, 32, 32), 64, 512),
    (dict(img_size=(32, 48, 16)), (1, 1, 32, 48, 16), 4 * 6 * 2, 512),
    (dict(img_size=32, in_channels=2), (1, 2, 32, 32, 32), 64, 1024),
    (dict(img_size=32, pos_mode="none", loss_weighting="uniform"), (1, 1, 32, 32, 32), 64, 512),
    (dict(img_size=32, norm_pix_loss=True, mask_ratio=0.5), (3, 1, 32, 32, 32), 64, 512),
]


@pytest.mark.parametrize("kwargs, shape, tokens, values", ASA_CASES)
def test_asa_shapes(kwargs, shape, tokens, values):
    out = ASA(**{**TINY, **kwargs})(torch.randn(shape))
    b = shape[0]
    assert out.loss.shape == () and torch.isfinite(out.loss)
    assert out.pred.shape == (b, tokens, values)
    assert out.mask.shape == out.weights.shape == (b, tokens)
    masked = round(kwargs.get("mask_ratio", 0.75) * tokens)
    assert (out.mask.sum(1) == masked).all()


# segmentation networks: (arch, kwargs, input shape, out_channels) -> logits [B, K, D, H, W]
SEG_CASES = [
    ("swvit_unetr", dict(ENC), (1, 1, 32, 32, 32), 2),
    ("swvit_unetr", dict(ENC, img_size=(32, 16, 48)), (2, 4, 32, 16, 48), 3),
    ("swvit_unetr", dict(ENC, feature_size=8, pos_mode="none"), (1, 2, 32, 32, 32), 4),
    ("unetr", dict(feature_size=8, hidden_size=48, mlp_dim=96, num_heads=3), (1, 1, 32, 32, 32), 2),
    pytest.param("swin_unetr", dict(feature_size=12, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1]), (1, 2, 64, 64, 64), 3,
                 marks=pytest.mark.slow),  # a 64³ crop: seconds on a CPU
]


@pytest.mark.parametrize("arch, kwargs, shape, out_channels", SEG_CASES)
def test_segmentation_shapes(arch, kwargs, shape, out_channels):
    kwargs = dict(kwargs)
    img_size = kwargs.pop("img_size", shape[2:])
    net = build_segmentation_network(arch, img_size=tuple(img_size), in_channels=shape[1],
                                     out_channels=out_channels, **kwargs).eval()
    with torch.no_grad():
        assert net(torch.randn(shape)).shape == (shape[0], out_channels, *shape[2:])


@pytest.mark.parametrize("make, match", [
    (lambda: ASA(**{**TINY, "img_size": 30}), "divisible by patch_size"),
    (lambda: ASA(**{**TINY, "img_size": 32, "mask_ratio": 1.0}), "mask_ratio"),
    (lambda: ASA(**{**TINY, "img_size": 8, "mask_ratio": 0.75}), "no visible or no masked"),
    (lambda: ASASegmenter(**{**ENC, "img_size": 32, "patch_size": 16}), "patch_size 8"),
    (lambda: ASASegmenter(**{**ENC, "img_size": 32, "depth": 3}), "at least 4 blocks"),
    (lambda: build_segmentation_network("vnet", img_size=(32,) * 3, in_channels=1, out_channels=2), "unknown"),
])
def test_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_wrong_input_shape_is_refused():
    with pytest.raises(ValueError, match="expects input"):
        ASA(**{**TINY, "img_size": 32})(torch.randn(1, 1, 32, 32, 16))
    with pytest.raises(ValueError, match="expects input"):
        ASASegmenter(**{**ENC, "img_size": 32})(torch.randn(1, 2, 32, 32, 32))
