"""One source for a network's encoder keys: every network with an encoder declares them as dynamic-network-architectures'
networks do (``key_to_encoder``, ``key_to_stem``, ``keys_to_in_proj``), and the lr split, `asa.load_encoder` and the
encoder export read them off the network; `network_from_file` is the one road from a file, whatever the family."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import asa
from asa.io import save_checkpoint
from asa.models import build_network, network_spec, register_network, registered_networks
from asa.models.family import families, has_encoder
from asa.models.road import network_from_file
from asa.models.keys import EncoderKeys, encoder_keys
from asa.models.portable import encoder_export
from asa.train.updates import encoder_names

RESENC = {"img_size": 32, "in_channels": 1, "out_channels": 2, "size": "tiny"}


def test_keys_are_read_off_the_networks_declaration():
    net = build_network({"arch": "resenc", "kwargs": RESENC})
    keys = encoder_keys(net)
    assert keys == EncoderKeys("encoder.stages", "encoder.stem", tuple(net.keys_to_in_proj))
    assert keys.prefixes == ("encoder.stages.", "encoder.stem.")
    # the declared keys are the encoder module's, every tensor of it and nothing else
    assert set(keys.state(net)) == {f"encoder.{k}" for k in net.encoder.state_dict()}
    assert keys.in_proj_weights[0] in keys.state(net)
    # the keys the family's nnU-Net form states for files read before a network is built are the declared ones
    assert families()["resenc"].nnunet.keys == keys


SW_VIT = {"embed_dim": 48, "depth": 4, "num_heads": 2}
SWIN = {"img_size": 64, "in_channels": 1, "feature_size": 12}
VIT = {"img_size": 32, "in_channels": 1, "out_channels": 2, "hidden_size": 48, "mlp_dim": 96, "num_heads": 2}
SPECS = {  # every network with an encoder, tiny
    "asa_pretrain": {"img_size": 32, "decoder_dim": 32, "decoder_depth": 1, "decoder_num_heads": 2, **SW_VIT},
    "swvit_unetr": {"img_size": 32, "in_channels": 1, "out_channels": 2, **SW_VIT},
    "case_head": {"img_size": 32, "in_channels": 1, "out_channels": 2, **SW_VIT},
    "rpl_pretrain": {"img_size": 48, "jitter": 0, **SW_VIT},
    "jigsaw_pretrain": {"img_size": 48, "jitter": 0, **SW_VIT},
    "sa_swin": {**SWIN, "out_channels": 2},
    "swin_unetr": {**SWIN, "out_channels": 2},
    "swin_case": {**SWIN, "out_channels": 2},
    "sa_swin_pretrain": {"in_channels": 1, "feature_size": 12},
    "unetr": {**VIT, "feature_size": 8},
    "vit_case": VIT,
    "resenc": {**RESENC, "coord_channel": True},
    "resenc_pretrain": {"img_size": 32, "size": "tiny", "coord_channel": True},
    "primus": {"img_size": 32, "in_channels": 1, "out_channels": 2, "size": "tiny"},
    "primus_pretrain": {"img_size": 32, "size": "tiny"},
}


def test_every_network_with_an_encoder_is_covered():
    assert set(SPECS) == {name for name in registered_networks() if has_encoder(name)} - {"encoder"}
    assert not has_encoder("dynunet")
    with pytest.raises(ValueError, match=r"network 'dynunet' declares no encoder"):
        encoder_keys(build_network({"arch": "dynunet", "kwargs": {"img_size": 32, "in_channels": 1, "out_channels": 2}}))


@pytest.mark.parametrize("arch", sorted(SPECS))
def test_the_lr_split_the_export_and_load_encoder_read_the_declared_keys(arch, tmp_path):
    """The keys the network declares select its encoder (and stem) once: the lr split's parameters, the encoder
    export's tensors and what `asa.load_encoder` loads are the same keys."""
    torch.manual_seed(0)
    net = build_network({"arch": arch, "kwargs": SPECS[arch]})
    keys = encoder_keys(net)
    state = keys.state(net)
    assert keys.in_proj_weights and all(key in state for key in keys.in_proj_weights)
    if keys.module:  # one module holds encoder and stem: the declared keys are every tensor of it
        assert set(state) == {f"{keys.module}.{k}" for k in net.get_submodule(keys.module).state_dict()}
    assert encoder_names(net) == {n for n, _ in net.named_parameters() if n in state}
    save_checkpoint(tmp_path / "last.pt", {"network": network_spec(net), "model": net.state_dict()})
    export = encoder_export(tmp_path / "last.pt")
    assert set(export["encoder"]) == set(state)
    save_checkpoint(tmp_path / "encoder.pt", {**export, "encoder": {k: v + 1 for k, v in export["encoder"].items()}})
    asa.load_encoder(tmp_path / "encoder.pt", verbose=False)  # every declared tensor present and fitting
    extra = {**export["encoder"], f"{keys.prefixes[0]}stray.weight": torch.zeros(1)}
    save_checkpoint(tmp_path / "stray.pt", {**export, "encoder": extra})
    with pytest.raises(ValueError, match="do not fit"):
        asa.load_encoder(tmp_path / "stray.pt", verbose=False)


def test_a_network_declares_its_keys_not_its_registration():
    with pytest.raises(TypeError, match=r"encoder= is the network's own declaration now \(key_to_encoder"):
        register_network("keyless", kind="segmentation", encoder="encoder")
    with pytest.raises(ValueError, match=r"network 'Linear' declares no encoder"):
        encoder_keys(nn.Linear(2, 2))
    assert encoder_names(nn.Linear(2, 2)) is None


def test_a_stem_beside_the_encoder_adds_its_prefix():
    assert EncoderKeys("eva", "down_projection", ("down_projection.proj",)).prefixes == ("eva.", "down_projection.")
    assert EncoderKeys("encoder", "encoder.patch_embed").prefixes == ("encoder.",)
    assert EncoderKeys("body", "body").prefixes == ("body.",)  # a stem that is the encoder adds none
    assert EncoderKeys("eva", "down_projection").module == ""  # the network itself holds both
    assert EncoderKeys("encoder.stages", "encoder.stem").module == "encoder"
    assert EncoderKeys("encoder.stages", "encoder.stages.0").module == "encoder"  # PlainConvUNet's


def test_loading_takes_every_encoder_tensor_and_nothing_else():
    net = build_network({"arch": "resenc", "kwargs": RESENC})
    keys = EncoderKeys.declared(net)
    update = {k: torch.full_like(v, 0.5) for k, v in keys.state(net).items()}
    # nnU-Net's decoder holds the encoder too (decoder.encoder.*: the same tensors): its own are the rest
    decoder = {k: v.clone() for k, v in net.state_dict().items() if k.startswith("decoder.")
               and not k.startswith("decoder.encoder.")}
    keys.load(net, update)
    assert all(torch.equal(v, torch.full_like(v, 0.5)) for v in keys.state(net).values())
    assert all(torch.equal(net.state_dict()[k], v) for k, v in decoder.items())
    with pytest.raises(RuntimeError, match="missing"):
        keys.load(net, dict(list(update.items())[1:]))
    with pytest.raises(RuntimeError, match="outside the encoder"):
        keys.load(net, {**update, "decoder.x": torch.zeros(1)})


def test_one_road_for_every_family():
    """The resenc family takes the plain road (the segmenter options of following a file refused on it, naming
    them); the SW-ViT's road takes them."""
    net = network_from_file("resenc", None, options={"size": "tiny"}, crop=32, default_crop=None,
                            channels={"in_channels": 1, "out_channels": 2})
    assert net.network_arch == "resenc" and net.img_size == (32, 32, 32)
    with pytest.raises(ValueError, match=r"^segmenter.allow_grid_change=True: model arch 'resenc' does not follow"):
        network_from_file("resenc", None, options={"size": "tiny"}, crop=32, default_crop=None,
                          channels={"in_channels": 1, "out_channels": 2}, follow={"allow_grid_change": True})
    with pytest.raises(ValueError, match="the crop size is unknown"):
        network_from_file("resenc", None, options={"size": "tiny"}, crop=None, default_crop=None,
                          channels={"in_channels": 1, "out_channels": 2})
    swvit = network_from_file("swvit_unetr", None, options={"embed_dim": 24, "depth": 4, "num_heads": 2,
                                                            "feature_size": 8}, crop=16, default_crop=None,
                              channels={"in_channels": 1, "out_channels": 2}, follow={"reference_grid": [2, 2, 2]})
    assert list(swvit.network_kwargs["reference_grid"]) == [2, 2, 2] and swvit.network_kwargs["pos_mode"] == "mirror"
