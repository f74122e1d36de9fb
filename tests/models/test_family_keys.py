"""A family owns its encoder's keys and the road from a file to its network: the keys are read off the network's
own declaration (dynamic-network-architectures' ``key_to_encoder``, ``key_to_stem``, ``keys_to_in_proj``) where it
has one, else the family's; `network_from_file` is the one road, whatever the family."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from asa.models import build_network
from asa.models.family import EncoderKeys, Family, families, network_from_file

RESENC = {"img_size": 32, "in_channels": 1, "out_channels": 2, "size": "tiny"}


def test_keys_are_read_off_the_networks_declaration():
    net = build_network({"arch": "resenc", "kwargs": RESENC})
    keys = families()["resenc"].encoder_keys(net)
    assert keys == EncoderKeys("encoder.stages", "encoder.stem", tuple(net.keys_to_in_proj))
    assert keys.prefixes == ("encoder.stages.", "encoder.stem.")
    # the declared keys are the encoder module's, every tensor of it and nothing else
    assert set(keys.state(net)) == {f"encoder.{k}" for k in net.encoder.state_dict()}
    assert keys.in_proj_weights[0] in keys.state(net)
    # the keys the family's nnU-Net form states for files read before a network is built are the declared ones
    assert families()["resenc"].nnunet.keys == keys


def test_a_family_declares_the_keys_of_networks_that_declare_none():
    swvit = families()["swvit"]
    assert swvit.encoder_keys().prefixes == ("encoder.",)
    assert swvit.encoder_keys(nn.Linear(2, 2)) is swvit.keys  # a module declaring nothing: the family's
    with pytest.raises(ValueError, match=r"family 'bare' declares no encoder keys"):
        Family("bare").encoder_keys()


def test_a_stem_beside_the_encoder_adds_its_prefix():
    assert EncoderKeys("eva", "down_projection", ("down_projection.proj",)).prefixes == ("eva.", "down_projection.")
    assert EncoderKeys("encoder", "encoder.patch_embed").prefixes == ("encoder.",)


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
