"""ASASegmenter options for transfer studies: input_skip, the encoder-zeroing switch, layer ids."""
from __future__ import annotations

import pytest
import torch

from asa.models import PRESETS, ASASegmenter

ENC = {k: v for k, v in PRESETS["tiny"].items() if not k.startswith("decoder")}


def _net(**kw) -> ASASegmenter:
    torch.manual_seed(0)
    return ASASegmenter(img_size=16, out_channels=2, feature_size=4, **{**ENC, **kw}).eval()


def _cut_encoder_paths(net: ASASegmenter) -> None:
    """Zero every weight through which encoder states enter the decoder: a decoder that ignores the
    encoder by construction."""
    with torch.no_grad():
        for block in (net.skip1, net.skip2, net.bottleneck):
            for name, p in block.named_parameters():
                if name.endswith("weight") and p.ndim == 5:
                    p.zero_()


def test_zeroing_changes_nothing_when_the_decoder_ignores_the_encoder():
    net = _net()
    _cut_encoder_paths(net)
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():
        normal = net(x)
        with net.zero_encoder_states():
            zeroed = net(x)
    torch.testing.assert_close(normal, zeroed)


def test_zeroing_removes_all_input_information_without_the_input_skip():
    net = _net(input_skip="none")
    assert net.skip0 is None
    a, b = torch.randn(1, 1, 16, 16, 16), torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        assert not torch.allclose(net(a), net(b))
        with net.zero_encoder_states():
            torch.testing.assert_close(net(a), net(b))  # the encoder was the only path from the image
        assert not net._zero_encoder  # the switch is restored on exit
        assert not torch.allclose(net(a), net(b))


def test_input_skip_scale_multiplies_the_full_resolution_features():
    full, half = _net(), _net(input_skip=0.5)
    half.load_state_dict(full.state_dict())
    x = torch.randn(1, 1, 16, 16, 16)
    torch.testing.assert_close(half._input_skip(x), 0.5 * full._input_skip(x))
    assert _net(input_skip="0.25").input_skip == 0.25


@pytest.mark.parametrize("bad", ["half", 1.5, -0.1, True])
def test_bad_input_skip(bad):
    with pytest.raises(ValueError, match="model.input_skip"):
        _net(input_skip=bad)


def test_encoder_layer_ids():
    net = _net()
    assert net.encoder_layer_id("encoder.patch_embed.proj.weight") == 0
    assert all(net.encoder_layer_id(n) is not None for n, _ in net.encoder.named_parameters(prefix="encoder"))
    assert net.encoder_layer_id("encoder.blocks.2.attn.qkv.weight") == 3
    assert net.encoder_layer_id("encoder.norm.weight") == net.num_encoder_layers == ENC["depth"] + 1
    assert net.encoder_layer_id("up0.transp_conv.conv.weight") is None
