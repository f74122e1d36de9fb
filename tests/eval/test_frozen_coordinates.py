"""A residual encoder pretrained with the coordinate channel is probed with it: the frozen encoder (asa-probe) and
the pretraining probe (the masked twin's tokens) read the image channels and the mirror-symmetric coordinate
|x − x_mid| / (X/2) beside them, as the twin does in training."""

from __future__ import annotations

import torch

from asa.eval.frozen import load_frozen
from asa.io import save_checkpoint
from asa.models import build_network, families
from asa.models.registry import network_spec


def _twin(tmp_path, coord: bool):
    torch.manual_seed(0)
    net = build_network({"arch": "resenc_pretrain", "kwargs": {"img_size": 32, "in_channels": 2, "size": "tiny",
                                                               "coord_channel": coord}}).eval()
    path = save_checkpoint(tmp_path / f"coord{int(coord)}.pt", {"network": network_spec(net), "model": net.state_dict(),
                                                              "step": 1})
    return net, path


def test_a_coordinate_channel_encoder_reads_the_channel_in_asa_probe_and_in_the_pretraining_probe(tmp_path):
    net, path = _twin(tmp_path, coord=True)
    frozen = load_frozen(path)
    assert frozen.in_channels == 2 and frozen.size == (32, 32, 32)  # the probes feed the image channels
    x = torch.randn(2, 2, 32, 32, 32)
    # the channel by hand: voxel centres 0.5 … 31.5 on axis 0 (lr_axis), |c − 16| / 16
    code = ((torch.arange(32) + 0.5 - 16).abs() / 16).view(1, 1, 32, 1, 1).expand(2, 1, 32, 32, 32)
    assert float(code[0, 0, 0, 0, 0]) == 15.5 / 16 and float(code[0, 0, 15, 0, 0]) == 0.5 / 16
    with torch.no_grad():
        by_hand = frozen.module(torch.cat([x, code], 1))[-1].flatten(2).transpose(1, 2)
        without = frozen.module(torch.cat([x, torch.zeros_like(code)], 1))[-1].flatten(2).transpose(1, 2)
        twin = families()["resenc"].face.twin_tokens(net, x)
    tokens = frozen.tokens(x)
    assert tokens.shape == (2, 64, 64)  # 4³ bottleneck voxels of the tiny plan, 64 channels
    torch.testing.assert_close(tokens, by_hand)
    torch.testing.assert_close(twin, tokens)  # the pretraining probe and asa-probe read the same tokens
    assert (tokens - without).abs().max() > 1e-3  # the channel reaches the tokens


def test_an_encoder_without_the_channel_reads_the_image_channels_alone(tmp_path):
    net, path = _twin(tmp_path, coord=False)
    frozen = load_frozen(path)
    x = torch.randn(1, 2, 32, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(frozen.tokens(x), frozen.module(x)[-1].flatten(2).transpose(1, 2))
        torch.testing.assert_close(families()["resenc"].face.twin_tokens(net, x), frozen.tokens(x))
