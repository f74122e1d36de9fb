from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch

from asa.api.machinery.networks import build_case_network
from asa.models import ASA, PRESETS, ASACaseHead, ASASegmenter, build_network, network_spec
from asa.models.swvit.encoder import ENCODER_PREFIX, EncoderSettings

ENC = {k: v for k, v in PRESETS["tiny"].items() if not k.startswith("decoder")}


@pytest.mark.parametrize("pooling", ["mean", "attention"])
@pytest.mark.parametrize("in_channels,out_channels", [(1, 3), (2, 1)])
def test_shapes(pooling, in_channels, out_channels):
    net = ASACaseHead(img_size=32, in_channels=in_channels, out_channels=out_channels, pooling=pooling, hidden_dim=16,
                      **ENC)
    assert net(torch.randn(2, in_channels, 32, 32, 32)).shape == (2, out_channels)
    offsets = torch.tensor([[0, 0, 0], [1, -1, 0]])
    assert net(torch.randn(2, in_channels, 32, 32, 32), offsets).shape == (2, out_channels)
    with pytest.raises(ValueError, match="expects input"):
        net(torch.randn(1, in_channels, 40, 40, 40))


def test_mean_pooling_is_the_token_mean_and_attention_pooling_a_convex_combination():
    net = ASACaseHead(img_size=32, pooling="attention", **ENC)
    tokens = torch.randn(2, 64, ENC["embed_dim"])
    pooled = net.pool_tokens(tokens)
    weights = net.pool.score(net.pool.norm(tokens)).softmax(1)
    torch.testing.assert_close(pooled, (weights * tokens).sum(1))
    assert torch.allclose(weights.sum(1), torch.ones(2, 1))
    mean = ASACaseHead(img_size=32, pooling="mean", **ENC)
    torch.testing.assert_close(mean.pool_tokens(tokens), tokens.mean(1))


def test_bad_options():
    with pytest.raises(ValueError, match="task.head.pooling"):
        ASACaseHead(img_size=32, pooling="max", **ENC)
    with pytest.raises(ValueError, match="region_attention"):
        ASACaseHead(img_size=32, **{**ENC, "region_attention": "all"})


def test_spec_round_trip_rebuilds_the_same_network():
    torch.manual_seed(0)
    net = ASACaseHead(img_size=32, out_channels=3, pooling="attention", hidden_dim=24, **ENC)
    spec = network_spec(net)
    assert spec["arch"] == "case_head"
    own = set(inspect.signature(ASACaseHead).parameters) - {"encoder"}  # + the encoder's settings (**encoder)
    assert set(spec["kwargs"]) == own | {f.name for f in dataclasses.fields(EncoderSettings)}
    assert spec["kwargs"]["img_size"] == [32, 32, 32] and spec["kwargs"]["reference_grid"] == [4, 4, 4]
    rebuilt = build_network(spec)
    assert type(rebuilt) is ASACaseHead and network_spec(rebuilt) == spec
    rebuilt.load_state_dict(net.state_dict())
    x = torch.randn(1, 1, 32, 32, 32)
    net.eval(), rebuilt.eval()
    torch.testing.assert_close(rebuilt(x), net(x))


@pytest.mark.parametrize("export", [False, True])
def test_pretrained_encoder_loads_bit_exactly_with_the_segmenters_keys(tmp_path, export):
    torch.manual_seed(0)
    mae = ASA(img_size=32, pos_mode="paper", lr_axis=2, **PRESETS["tiny"])
    path = tmp_path / "ckpt.pt"
    if export:
        torch.save({"encoder": mae.encoder_state_dict(), "network": network_spec(mae)}, path)
    else:
        torch.save({"model": {f"module.{k}": v for k, v in mae.state_dict().items()}, "network": network_spec(mae)}, path)
    seg_keys = {k for k in ASASegmenter(img_size=32, **ENC).state_dict() if k.startswith(ENCODER_PREFIX)}
    torch.manual_seed(1)
    net = build_case_network({"arch": "case_head", "pretrained": str(path), **ENC}, in_channels=1, out_channels=2,
                          crop=None, default_crop=64)
    head_keys = {k for k in net.state_dict() if k.startswith(ENCODER_PREFIX)}
    assert head_keys == seg_keys == set(mae.encoder_state_dict())
    for key, value in mae.encoder_state_dict().items():
        assert torch.equal(net.state_dict()[key], value), key
    # the file's grid, position code and mirrored axis are the network's (nulls resolved from the file)
    kwargs = network_spec(net)["kwargs"]
    assert (kwargs["img_size"], kwargs["pos_mode"], kwargs["lr_axis"]) == ([32, 32, 32], "paper", 2)
    # a crop on another grid than the pretraining grid is refused
    with pytest.raises(ValueError, match="patch grid"):
        build_case_network({"pretrained": str(path), **ENC}, in_channels=1, out_channels=2, crop=40,
                        default_crop=64)


def test_encoder_layers_are_numbered_for_layer_decay():
    net = ASACaseHead(img_size=32, **ENC)
    assert net.encoder_layer_id("encoder.patch_embed.proj.weight") == 0
    assert net.encoder_layer_id("encoder.blocks.1.attn.qkv.weight") == 2
    assert net.encoder_layer_id("encoder.norm.weight") == net.num_encoder_layers == ENC["depth"] + 1
    assert net.encoder_layer_id("mlp.1.weight") is None


def test_swin_case_takes_an_sa_swin_pretraining_file_bit_exactly(tmp_path):
    torch.manual_seed(0)
    sah = build_network({"arch": "sa_swin_pretrain", "kwargs": dict(in_channels=1, feature_size=12, depths=[1, 1, 1, 1],
                                                                      contrastive_dim=16, symmetry_dim=8)})
    torch.save({"model": sah.state_dict(), "network": network_spec(sah)}, tmp_path / "sah.pt")
    torch.manual_seed(1)
    net = build_case_network({"arch": "swin_case", "pretrained": str(tmp_path / "sah.pt"), "feature_size": 12,
                           "depths": [1, 1, 1, 1]}, in_channels=1, out_channels=2, crop=32, default_crop=64)
    own = {k: v for k, v in net.state_dict().items() if k.startswith("swinViT.")}
    assert own and all(torch.equal(v, sah.state_dict()[k]) for k, v in own.items())
    # layer ids as SA-Swin's: patch embedding 0, one per Swin block, None for the head
    assert net.encoder_layer_id("swinViT.patch_embed.proj.weight") == 0 and net.encoder_layer_id("mlp.1.weight") is None
    assert {net.encoder_layer_id(n) for n, _ in net.named_parameters()} == {None, 0, 1, 2, 3, 4}
