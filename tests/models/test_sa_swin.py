from __future__ import annotations

import pytest
import torch

from asa.api.machinery.networks import build_from_config
from asa.models import SASwin, network_spec

TINY = dict(feature_size=12, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 4))


@pytest.fixture(scope="module")
def net() -> SASwin:
    torch.manual_seed(0)
    return SASwin(1, 3, **TINY).eval()


@pytest.mark.slow
def test_flipping_the_input_swaps_f_and_its_mirror(net):
    torch.manual_seed(1)
    x = torch.randn(1, 1, 64, 32, 32)  # bottleneck 2×1×1 tokens
    with torch.no_grad():
        f, f_mirror, z = net.bottleneck(x)
        f2, f_mirror2, z2 = net.bottleneck(x.flip(2))
        swapped = net.symmetry(f_mirror, f)
    torch.testing.assert_close(f2, f_mirror, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(f_mirror2, f, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(z2, swapped, atol=1e-5, rtol=1e-4)  # SACA(f̃, f): the roles exchanged
    assert (z2 - z).abs().max() > 1e-3  # and that differs from the unflipped layer output


def test_mirror_is_the_left_right_axis():
    x = torch.zeros(1, 1, 4, 4, 4)
    x[0, 0, 0, 1, 2] = 1.0  # leftmost slab along RAS axis 0
    assert SASwin(1, 2, **TINY).mirror(x)[0, 0, 3, 1, 2] == 1.0
    assert SASwin(1, 2, lr_axis=2, **TINY).mirror(x)[0, 0, 0, 1, 1] == 1.0


@pytest.mark.slow
def test_forward_shape_and_bad_input(net):
    with torch.no_grad():
        assert net(torch.randn(2, 1, 32, 32, 64)).shape == (2, 3, 32, 32, 64)
    with pytest.raises(ValueError, match="SASwin expects input"):
        net(torch.randn(1, 2, 32, 32, 32))
    with pytest.raises(ValueError, match="divisible"):
        net(torch.randn(1, 1, 48, 32, 32))
    with pytest.raises(ValueError, match="symmetry_heads"):
        SASwin(1, 2, symmetry_heads=5, **TINY)


def test_symmetry_layer_is_post_ln_self_attention_saca_mlp(net):
    torch.manual_seed(2)
    layer = net.symmetry
    f, g = torch.randn(2, 3, 192), torch.randn(2, 5, 192)
    with torch.no_grad():
        z = layer.norm1(f + layer.attn(f, f))
        z = layer.norm2(z + layer.saca(z, g))
        z = layer.norm3(z + layer.mlp(z))
        torch.testing.assert_close(layer(f, g), z)


def test_pretrained_encoder_loads_with_every_key_reported(tmp_path):
    torch.manual_seed(0)
    source = SASwin(1, 2, **TINY)
    encoder = {k: v for k, v in source.state_dict().items() if k.startswith("swinViT.")}
    torch.save({"encoder": {**encoder, "swinViT.extra.weight": torch.zeros(1)}}, tmp_path / "enc.pt")
    target = build_from_config({"arch": "sa_swin", **TINY}, {}, in_channels=4, out_channels=3, crop=64)
    assert target.lr_axis == 0  # SASwinSettings' default axis
    report = target.load_pretrained(tmp_path / "enc.pt", verbose=False)
    assert sorted(report.loaded) == sorted(encoder)
    assert report.missing == [] and report.unexpected == ["swinViT.extra.weight"]
    assert report.adapted == ["swinViT.patch_embed.proj.weight 1 -> 4 channels"]
    w = target.state_dict()["swinViT.patch_embed.proj.weight"]
    torch.testing.assert_close(w, encoder["swinViT.patch_embed.proj.weight"].repeat(1, 4, 1, 1, 1) / 4)
    torch.testing.assert_close(target.state_dict()["swinViT.layers4.0.blocks.0.mlp.linear1.weight"],
                               encoder["swinViT.layers4.0.blocks.0.mlp.linear1.weight"])
    other = SASwin(1, 2, feature_size=24, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 4))
    with pytest.raises(ValueError, match="shape mismatch"):
        other.load_pretrained(tmp_path / "enc.pt", verbose=False)


def test_the_symmetric_axis_and_position_mode_are_model_keys_of_the_networks_that_have_them():
    """model.lr_axis reaches SA-Swin (default 0, its settings' own); a network whose settings have no
    symmetric encoding or axis refuses model.pos_mode / model.lr_axis by name, set or null."""
    swin = build_from_config({"arch": "sa_swin", "lr_axis": 2, **TINY}, {}, in_channels=1, out_channels=2, crop=64)
    assert swin.lr_axis == 2 and network_spec(swin)["kwargs"]["lr_axis"] == 2
    assert build_from_config({"arch": "sa_swin", **TINY}, {}, in_channels=1, out_channels=2, crop=64).lr_axis == 0
    with pytest.raises(ValueError, match=r"model.pos_mode=None: model arch 'sa_swin' has no such option"):
        build_from_config({"arch": "sa_swin", "pos_mode": None, **TINY}, {}, in_channels=1, out_channels=2, crop=64)
    unetr = dict(arch="unetr", feature_size=8, hidden_size=48, mlp_dim=96, num_heads=2)
    for key, value in (("pos_mode", "none"), ("lr_axis", 1), ("lr_axis", None)):
        with pytest.raises(ValueError, match=rf"model.{key}={value}: model arch 'unetr' has no such option; it takes "
                                             r"arch, pretrained, hidden_size"):
            build_from_config({**unetr, key: value}, {}, in_channels=1, out_channels=2, crop=32)
