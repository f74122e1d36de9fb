"""Network specs: every network asa builds rebuilds from ``{"arch", "kwargs"}`` alone."""

from __future__ import annotations

import inspect

import pytest
import torch

from asa.io import load_checkpoint, save_checkpoint
from asa.models import ASA, NETWORKS, ASASegmenter, build_from_config, build_network, network_spec

TINY = dict(embed_dim=48, depth=4, num_heads=3, window_size=8)
SPECS = {
    "asa": dict(img_size=32, in_channels=2, out_channels=3, pos_mode="paper", lr_axis=1, spe_frame="crop", **TINY),
    "asa_pretrain": dict(img_size=32, decoder_dim=24, decoder_depth=1, decoder_num_heads=2, mask_ratio=0.5, **TINY),
    "unetr": dict(img_size=32, in_channels=2, out_channels=3, feature_size=8, hidden_size=48, mlp_dim=96, num_heads=3),
    "swin_unetr": dict(img_size=64, in_channels=2, out_channels=3, feature_size=12, depths=[1, 1, 1, 1]),  # /32
    "sa_swin": dict(img_size=64, in_channels=2, out_channels=3, feature_size=12, depths=[1, 1, 1, 1]),
    "sa_swin_pretrain": dict(in_channels=1, feature_size=12, depths=[1, 1, 1, 1], contrastive_dim=16,
                             symmetry_dim=8),
    "case_head": dict(img_size=32, in_channels=2, out_channels=3, pooling="attention", hidden_dim=16, lr_axis=1, **TINY),
}
PRETRAINING = ("asa_pretrain", "sa_swin_pretrain")  # forward draws masks / views: compared under one seed


def test_every_registered_network_has_a_round_trip_case():
    """Every network asa can build (and so save) is covered by the spec round trip below."""
    assert set(SPECS) == set(NETWORKS)


@pytest.mark.parametrize("arch", sorted(SPECS))
def test_a_spec_round_trips_through_a_checkpoint(tmp_path, arch):
    torch.manual_seed(0)
    net = build_network({"arch": arch, "kwargs": SPECS[arch]}).eval()
    spec = network_spec(net)
    size = SPECS[arch].get("img_size", 64)
    assert spec is not None and spec["arch"] == arch
    if "img_size" in SPECS[arch]:
        assert list(spec["kwargs"]["img_size"]) == [size] * 3
    save_checkpoint(tmp_path / "c.pt", {"network": spec, "model": net.state_dict()})  # weights-only loadable
    state = load_checkpoint(tmp_path / "c.pt")
    assert state["network"] == spec
    torch.manual_seed(1)
    again = build_network(state["network"]).eval()
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in net.state_dict().items()}
    again.load_state_dict(state["model"])
    assert network_spec(again) == spec
    x = torch.randn(2 if arch == "sa_swin_pretrain" else 1, 1 if arch in PRETRAINING else 2, size, size, size)
    with torch.no_grad():
        if arch in PRETRAINING:
            torch.manual_seed(2)
            a = net(x)
            torch.manual_seed(2)
            b = again(x)
            assert torch.equal(a.loss, b.loss)
        else:
            assert torch.equal(again(x), net(x))


@pytest.mark.parametrize("cls", [ASA, ASASegmenter])
def test_asa_specs_hold_every_constructor_argument_resolved(cls):
    net = cls(img_size=(32, 32, 32), **TINY)
    kwargs = network_spec(net)["kwargs"]
    assert set(kwargs) == set(inspect.signature(cls).parameters)
    assert kwargs["img_size"] == [32, 32, 32] and kwargs["pos_mode"] == "mirror" and kwargs["lr_axis"] == 0
    if cls is ASASegmenter:
        assert kwargs["reference_grid"] == [4, 4, 4]  # None resolved to the network's own grid


def test_config_nulls_are_resolved_in_the_spec(tmp_path):
    torch.manual_seed(0)
    mae = ASA(img_size=32, pos_mode="paper", lr_axis=2, decoder_dim=24, decoder_depth=1, decoder_num_heads=2, **TINY)
    save_checkpoint(tmp_path / "enc.pt", {"encoder": mae.encoder_state_dict(), "network": network_spec(mae)})
    net = build_from_config({"pretrained": str(tmp_path / "enc.pt"), **TINY}, {"pos_mode": None, "lr_axis": None},
                            in_channels=1, out_channels=2, patch_size=None)
    kwargs = network_spec(net)["kwargs"]
    assert (kwargs["img_size"], kwargs["pos_mode"], kwargs["lr_axis"]) == ([32, 32, 32], "paper", 2)
    assert "pretrained" not in kwargs and torch.equal(net.encoder.blocks[0].attn.qkv.weight,
                                                      mae.encoder.blocks[0].attn.qkv.weight)


def test_bad_specs_and_foreign_networks():
    assert set(NETWORKS) == {"asa", "unetr", "swin_unetr", "sa_swin", "asa_pretrain", "sa_swin_pretrain",
                             "case_head"}
    with pytest.raises(ValueError, match="unknown arch 'vnet'"):
        build_network({"arch": "vnet", "kwargs": {}})
    with pytest.raises(ValueError, match="'arch': name, 'kwargs'"):
        build_network({"arch": "asa"})
    with pytest.raises(ValueError, match="needs kwargs.img_size"):
        build_network({"arch": "unetr", "kwargs": {"in_channels": 1, "out_channels": 2}})
    assert network_spec(torch.nn.Linear(2, 2)) is None


def test_an_sa_swin_pretraining_file_is_not_read_as_an_asa_encoder():
    from asa.models import recorded_pretraining

    head = build_network({"arch": "sa_swin_pretrain", "kwargs": SPECS["sa_swin_pretrain"]})
    with pytest.raises(ValueError, match="'sa_swin_pretrain' network, not an ASA encoder"):
        recorded_pretraining({"network": network_spec(head)}, "sah.pt")


def test_a_pretrained_file_without_a_spec_is_refused_naming_it(tmp_path):
    """No run-config fallback: a pretraining file, its export and the export step all need the spec."""
    from asa.train.pretrain import export_encoder

    torch.manual_seed(0)
    mae = ASA(img_size=32, decoder_dim=24, decoder_depth=1, decoder_num_heads=2, **TINY)
    config = {"data": {"size": 32}, "model": {"patch_size": 8}, "mae": {"pos_mode": "mirror", "lr_axis": 0}}
    save_checkpoint(tmp_path / "last.pt", {"model": mae.state_dict(), "config": config})
    save_checkpoint(tmp_path / "enc.pt", {"encoder": mae.encoder_state_dict(), "config": {"img_size": 32}})
    for name in ("last.pt", "enc.pt"):
        with pytest.raises(ValueError, match=rf"{tmp_path / name}: records no network spec"):
            ASASegmenter(img_size=32, **TINY).load_pretrained(tmp_path / name, verbose=False)
        with pytest.raises(ValueError, match=rf"{tmp_path / name}: records no network spec"):
            build_from_config({"pretrained": str(tmp_path / name), **TINY}, {}, in_channels=1, out_channels=2,
                              patch_size=None)
    with pytest.raises(ValueError, match=rf"checkpoint {tmp_path / 'last.pt'}: records no network spec"):
        export_encoder(tmp_path / "last.pt", tmp_path / "export.pt")
    assert not (tmp_path / "export.pt").exists()
