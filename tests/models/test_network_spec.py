"""Network specs: every network asa builds rebuilds from ``{"arch", "kwargs"}`` alone."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from asa.io import load_checkpoint, save_checkpoint
from asa.api.machinery.networks import build_from_config
from asa.models import (ASA, NETWORKS, PRESETS, ASASegmenter, architectures, build_network, encoder_keys,
                        network_spec, record_spec, register_network)
from asa.models import family, registry, road

TINY = {k: PRESETS["tiny"][k] for k in ("embed_dim", "depth", "num_heads", "window_size")}
SPECS = {
    "swvit_unetr": dict(img_size=32, in_channels=2, out_channels=3, pos_mode="paper", lr_axis=1, spe_frame="crop", **TINY),
    "asa_pretrain": dict(img_size=32, decoder_dim=24, decoder_depth=1, decoder_num_heads=2, mask_ratio=0.5, **TINY),
    "resenc": dict(img_size=32, in_channels=2, out_channels=3, size="tiny", coord_channel=True),
    "resenc_pretrain": dict(img_size=32, size="tiny", mirror_visible=0.2, loss_weighting="uniform"),
    "unetr": dict(img_size=32, in_channels=2, out_channels=3, feature_size=8, hidden_size=48, mlp_dim=96, num_heads=3),
    "dynunet": dict(img_size=32, in_channels=2, out_channels=3, spacing=[1.0, 1.0, 2.0]),
    "swin_unetr": dict(img_size=64, in_channels=2, out_channels=3, feature_size=12, depths=[1, 1, 1, 1]),  # /32
    "sa_swin": dict(img_size=64, in_channels=2, out_channels=3, feature_size=12, depths=[1, 1, 1, 1]),
    "sa_swin_pretrain": dict(in_channels=1, feature_size=12, depths=[1, 1, 1, 1], contrastive_dim=16,
                             symmetry_dim=8),
    "rpl_pretrain": dict(img_size=48, pairs=2, hidden_dim=16, **TINY),
    "jigsaw_pretrain": dict(img_size=48, grid=2, permutations=10, puzzles=2, hidden_dim=16, **TINY),
    "case_head": dict(img_size=32, in_channels=2, out_channels=3, pooling="attention", hidden_dim=16, lr_axis=1, **TINY),
    "vit_case": dict(img_size=32, in_channels=2, out_channels=3, patch_size=8, hidden_size=48, mlp_dim=96, num_layers=2,
                     num_heads=3, pooling="attention", hidden_dim=16, target_shift=70.0, target_scale=9.0),
    "swin_case": dict(img_size=32, in_channels=2, out_channels=1, feature_size=12, depths=[1, 1, 1, 1], hidden_dim=16),
    "primus": dict(img_size=32, in_channels=2, out_channels=3, size="tiny", pos_mode="mirror", lr_axis=1),
    "primus_pretrain": dict(img_size=32, size="tiny", decoder_depth=1, mask_ratio=0.5, loss_weighting="uniform"),
}
SPECS["encoder"] = dict(network={"arch": "swvit_unetr", "kwargs": {**SPECS["swvit_unetr"], "img_size": 64}})  # model folders
# the input edge of the networks whose spec has no img_size: a model folder's encoder takes its crop, SA-Swin's
# pretraining network any multiple of 32 (a forward at 64³ took 6 s, at 32³ 1 s)
EDGE = {"encoder": 64, "sa_swin_pretrain": 32}
# every network asa itself registers (networks registered from outside, e.g. by tests, are theirs to check)
ASA_NETWORKS = sorted(name for name, build in NETWORKS.items() if build.__module__.startswith("asa."))
# the flat keys the specs of the ASA networks hold: a spec written with them rebuilds
ENCODER_KEYS = {"img_size", "in_channels", "patch_size", "embed_dim", "depth", "num_heads", "window_size", "mlp_ratio",
                "pos_mode", "lr_axis", "shift_mask", "rel_pos_bias", "grad_checkpointing", "region_attention"}
SPEC_KEYS = {
    ASA: ENCODER_KEYS | {"decoder_dim", "decoder_depth", "decoder_num_heads", "mask_ratio", "loss_weighting",
                         "norm_pix_loss", "bins", "normalize", "focal_beta", "saca"},
    ASASegmenter: ENCODER_KEYS | {"out_channels", "feature_size", "norm_name", "dropout", "spe_frame",
                                  "reference_grid", "input_skip", "saca"},
}


# seconds each on a CPU (64³ Swin crops, DynUNet's depth, Jigsaw's puzzles): left out of the fast lane
SLOW_ROUND_TRIPS = {"sa_swin", "sa_swin_pretrain", "swin_unetr", "swin_case", "dynunet", "jigsaw_pretrain"}


@pytest.mark.parametrize("arch", [pytest.param(a, marks=pytest.mark.slow) if a in SLOW_ROUND_TRIPS else a
                                  for a in ASA_NETWORKS])
def test_a_spec_round_trips_through_a_checkpoint(tmp_path, arch):
    if arch not in SPECS:
        pytest.fail(f"registered network {arch!r} has no round-trip case in SPECS")
    pretraining = arch in architectures("pretraining")  # forward draws masks / views: compared under one seed
    torch.manual_seed(0)
    net = build_network({"arch": arch, "kwargs": SPECS[arch]}).eval()
    spec = network_spec(net)
    size = SPECS[arch].get("img_size") or EDGE[arch]
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
    x = torch.randn(2 if arch == "sa_swin_pretrain" else 1, 1 if pretraining else 2, size, size, size)
    with torch.no_grad():
        if pretraining:
            torch.manual_seed(2)
            a = net(x)
            torch.manual_seed(2)
            b = again(x)
            assert torch.equal(a.loss, b.loss)
        else:
            assert torch.equal(again(x), net(x))


@pytest.mark.parametrize("cls", [ASA, ASASegmenter])
def test_asa_specs_hold_every_setting_resolved(cls):
    net = cls(img_size=(32, 32, 32), **TINY)
    kwargs = network_spec(net)["kwargs"]
    assert set(kwargs) == SPEC_KEYS[cls]
    assert kwargs["img_size"] == [32, 32, 32] and kwargs["pos_mode"] == "mirror" and kwargs["lr_axis"] == 0
    if cls is ASASegmenter:
        assert kwargs["reference_grid"] == [4, 4, 4]  # None resolved to the network's own grid
    with pytest.raises(TypeError, match="unexpected keyword argument 'dept'"):
        cls(img_size=32, dept=4)


def test_config_nulls_are_resolved_in_the_spec(tmp_path):
    torch.manual_seed(0)
    mae = ASA(img_size=32, pos_mode="paper", lr_axis=2, decoder_dim=24, decoder_depth=1, decoder_num_heads=2, **TINY)
    save_checkpoint(tmp_path / "enc.pt", {"encoder": mae.encoder_state_dict(), "network": network_spec(mae)})
    net = build_from_config({"pretrained": str(tmp_path / "enc.pt"), "pos_mode": None, "lr_axis": None, **TINY}, {},
                            in_channels=1, out_channels=2, crop=None)
    kwargs = network_spec(net)["kwargs"]
    assert (kwargs["img_size"], kwargs["pos_mode"], kwargs["lr_axis"]) == ([32, 32, 32], "paper", 2)
    assert "pretrained" not in kwargs and torch.equal(net.encoder.blocks[0].attn.qkv.weight,
                                                      mae.encoder.blocks[0].attn.qkv.weight)


def test_bad_specs_and_foreign_networks():
    assert set(ASA_NETWORKS) == {"swvit_unetr", "unetr", "swin_unetr", "sa_swin", "dynunet", "asa_pretrain", "sa_swin_pretrain",
                                 "case_head", "vit_case", "swin_case", "rpl_pretrain", "jigsaw_pretrain", "resenc",
                                 "resenc_pretrain", "encoder", "primus", "primus_pretrain"}
    assert {"swvit_unetr", "unetr", "swin_unetr", "sa_swin"} <= set(architectures("segmentation"))
    assert ASASegmenter.key_to_encoder == ASA.key_to_encoder == "encoder"  # declared by the network
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
    case = build_network({"arch": "case_head", "kwargs": SPECS["case_head"]})  # an SW-ViT, but a case network
    with pytest.raises(ValueError, match="'case_head' network, not an ASA encoder"):
        recorded_pretraining({"network": network_spec(case)}, "case.pt")
    puzzle = build_network({"arch": "rpl_pretrain", "kwargs": SPECS["rpl_pretrain"]})  # the shared encoder
    assert recorded_pretraining({"network": network_spec(puzzle)}, "rpl.pt") == {
        "img_size": (48, 48, 48), "patch_size": 8, "pos_mode": "mirror", "lr_axis": 0}


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
                              crop=None)
    with pytest.raises(ValueError, match=rf"checkpoint {tmp_path / 'last.pt'}: records no network spec"):
        export_encoder(tmp_path / "last.pt", tmp_path / "export.pt")
    assert not (tmp_path / "export.pt").exists()



class _Toy(nn.Module):
    """A network from outside asa: a 1x1x1 convolution with an encoder module ``stem``."""

    key_to_encoder, key_to_stem, keys_to_in_proj = "stem", "stem", ("stem",)

    def __init__(self, *, channels: int = 2) -> None:
        super().__init__()
        self.stem = nn.Conv3d(1, channels, 1)
        record_spec(self, "toy", {"channels": channels})


def test_a_network_registered_from_its_own_file_builds_saves_and_rebuilds(monkeypatch, tmp_path):
    for name in ("toy", "plain"):  # gone again after the test
        monkeypatch.setitem(registry.RECORDS, name, None)
        monkeypatch.delitem(registry.RECORDS, name)
    register_network("toy", kind="pretraining")(_Toy)
    net = build_network({"arch": "toy", "kwargs": {"channels": 3}})
    assert network_spec(net) == {"arch": "toy", "kwargs": {"channels": 3}}
    assert encoder_keys(net).prefixes == ("stem.",) and "toy" in architectures("pretraining")
    save_checkpoint(tmp_path / "toy.pt", {"network": network_spec(net), "model": net.state_dict()})
    again = build_network(load_checkpoint(tmp_path / "toy.pt")["network"])
    assert isinstance(again, _Toy) and again.stem.out_channels == 3
    register_network("toy", kind="pretraining")(_Toy)  # the same builder again: no-op
    with pytest.raises(ValueError, match="'toy' is registered already"):
        register_network("toy", kind="pretraining")(lambda **kw: _Toy(**kw))
    with pytest.raises(ValueError, match="kind must be one of"):
        register_network("toy2", kind="detection")
    with pytest.raises(TypeError, match=r"task= is kind= now"):  # the earlier name, refused naming the new one
        register_network("toy2", task="segmentation")
    register_network("plain", kind="segmentation")(lambda **kw: nn.Linear(kw["width"], 2))  # records nothing
    plain = build_network({"arch": "plain", "kwargs": {"width": 4}})  # records the spec it was built from
    assert network_spec(plain) == {"arch": "plain", "kwargs": {"width": 4}}


def test_each_network_is_one_record_and_the_tables_are_its_columns():
    records = registry.registered_networks()
    assert set(records) == set(NETWORKS) and all(NETWORKS[n] is r.builder for n, r in records.items())
    assert {n: r.kind for n, r in records.items()} == dict(registry.NETWORK_KINDS)
    assert registry.case_counterpart("swvit_unetr") == "case_head"
    with pytest.raises(TypeError):  # the views are read-only: a network is added by registering it
        NETWORKS["x"] = nn.Identity  # type: ignore[index]


_OUTSIDE = '''
from torch import nn
from asa.models import register_network

@register_network("outside_seg", kind="segmentation")
class Outside(nn.Module):
    key_to_encoder, key_to_stem, keys_to_in_proj = "body", "body", ("body",)

    def __init__(self, *, img_size, in_channels, out_channels):
        super().__init__()
        self.body = nn.Conv3d(in_channels, out_channels, 1)
'''


def test_an_installed_package_declares_its_networks_in_the_entry_point_group(monkeypatch, tmp_path):
    import importlib.metadata

    (tmp_path / "outside_networks.py").write_text(_OUTSIDE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry.RECORDS, "_read", False)  # read the group again, as a fresh process does
    entries = {"asa.networks": [importlib.metadata.EntryPoint("outside", "outside_networks:Outside", "asa.networks")]}
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: entries.get(group, []))
    monkeypatch.setitem(registry.RECORDS, "outside_seg", None)  # gone again after the test
    monkeypatch.delitem(registry.RECORDS, "outside_seg")
    assert "outside_seg" in architectures("segmentation")
    net = build_network({"arch": "outside_seg", "kwargs": {"img_size": 8, "in_channels": 2, "out_channels": 3}})
    assert encoder_keys(net).module == "body"
    assert net.body.out_channels == 3 and network_spec(net)["arch"] == "outside_seg"
    entries["asa.networks"] = [importlib.metadata.EntryPoint("bad", "outside_networks:register_network", "asa.networks")]
    monkeypatch.setattr(registry.RECORDS, "_read", False)
    with pytest.raises(TypeError, match="entry point of asa.networks: .* is neither a module nor a builder registered"):
        registry.registered_networks()


def test_a_masked_network_declares_the_family_it_pretrains_and_its_model_section():
    from asa.models.cnn.masked import ResEncPretrainModel
    from asa.models.primus.masked import PrimusPretrainModel
    from asa.models.swvit.mae import PretrainModelConfig

    assert family.masked_network("resenc") == "resenc_pretrain" and family.masked_network("swvit") == "asa_pretrain"
    assert family.pretrain_model_sections() == {"swvit": PretrainModelConfig, "resenc": ResEncPretrainModel,
                                                "primus": PrimusPretrainModel}
    assert family.masked_network("dynunet") is None
    # a file of the network or of its family's masked twin initialises its encoder; another network's does not
    assert road.pretrains("resenc", "resenc") and road.pretrains("resenc_pretrain", "resenc")
    assert road.pretrains("asa_pretrain", "swvit_unetr") and road.pretrains("asa_pretrain", "case_head")
    assert not road.pretrains("asa_pretrain", "resenc") and not road.pretrains(None, "resenc")
    # the options a builder takes: its signature's, and what it gathers in **kwargs as it declares
    assert {"mirror_visible", "coord_channel"} <= registry.keyword_options("resenc_pretrain")
    assert {"patch_size", "norm_pix_loss"} <= registry.keyword_options("asa_pretrain")
    assert "mirror_visible" not in registry.keyword_options("asa_pretrain")
    with pytest.raises(ValueError, match="masked and pretrain_settings come together"):
        family.Family("half_declared", masked="resenc_pretrain")
    with pytest.raises(TypeError, match="pretrain_settings must be a dataclass"):
        family.Family("odd", masked="resenc_pretrain", pretrain_settings=int)
    with pytest.raises(ValueError, match="family 'resenc' is declared already"):
        family.register_family(family.Family("resenc"))


def test_a_resenc_file_of_another_network_is_refused_naming_the_twin(tmp_path):
    net = build_network({"arch": "resenc", "kwargs": {"img_size": 32, "in_channels": 1, "out_channels": 2}})
    blob = {"model": {}, "network": {"arch": "asa_pretrain", "kwargs": {}}}
    with pytest.raises(ValueError, match="a file of network 'asa_pretrain'; model=resenc takes a file of resenc or of "
                                         "its masked twin resenc_pretrain"):
        net.load_pretrained(tmp_path / "x.pt", checkpoint=blob)


def test_what_a_pretraining_file_sets_for_a_network():
    """The crop a file was made for (a published checkpoint's recommended one, else the input size asa recorded)
    and a published checkpoint's topology beyond the settings' options; nothing from another network's file."""
    topology = {"features": [32, 64], "strides": [1, 2], "blocks": [1, 1], "decoder_convs": [1]}
    asa_file = {"network": {"arch": "resenc_pretrain", "kwargs": {"img_size": [48, 48, 48], "size": "S", **topology}}}
    assert road.file_settings(asa_file, "resenc", {"size"}) == road.FileSettings(48, {})
    published = {"network": {"arch": "resenc", "kwargs": {"img_size": [160] * 3, "in_channels": 1, "out_channels": 1,
                                                          "size": "L", "lr_axis": 0, **topology}},
                 "foreign": {"crop": 128}}
    assert road.file_settings(published, "resenc", {"size", "lr_axis"}) == road.FileSettings(128, topology)
    assert road.file_settings(asa_file, "dynunet", set()) == road.FileSettings(None, {})
    assert road.file_settings({"network": {"arch": "asa_pretrain", "kwargs": {"img_size": 64}}},
                                "swvit_unetr", set()).crop == 64
