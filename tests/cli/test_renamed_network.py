"""The SW-ViT U-Net segmenter was the network ``asa`` (the package's name) and is ``swvit_unetr`` now:
files written before read under the new name, a config naming the old one is refused naming the new."""

from __future__ import annotations

import pytest
import torch

from asa.api.configuration.checks import validate
from asa.api.config import compose_config
from asa.io import load_checkpoint, save_checkpoint
from asa.models import ASASegmenter, build_network, load_encoder, network_spec

TINY = dict(embed_dim=32, depth=4, num_heads=2, window_size=8, feature_size=4)


@pytest.mark.parametrize("entry, overrides", [("finetune", ["data=ibsr", "model.arch=asa"]),
                                              ("finetune", ["data=targets", "model.arch=asa"])])
def test_the_old_name_in_a_config_is_refused_naming_the_new(entry, overrides):
    with pytest.raises(ValueError, match=r"invalid option model.arch=asa: renamed; it is now model.arch=swvit_unetr$"):
        validate(compose_config(entry, overrides), entry)
    validate(compose_config(entry, overrides[:1] + ["model.arch=swvit_unetr"]), entry)


def test_a_file_with_the_old_name_rebuilds_the_same_network(tmp_path):
    torch.manual_seed(0)
    net = build_network({"arch": "swvit_unetr", "kwargs": dict(img_size=16, in_channels=1, out_channels=2, **TINY)})
    old_spec = {**network_spec(net), "arch": "asa"}  # what a checkpoint written before the rename records
    save_checkpoint(tmp_path / "best.pt", {"model": net.state_dict(), "network": old_spec})
    state = load_checkpoint(tmp_path / "best.pt")
    again = build_network(state["network"])
    again.load_state_dict(state["model"])
    assert isinstance(again, ASASegmenter) and network_spec(again)["arch"] == "swvit_unetr"
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        assert torch.equal(net.eval()(x), again.eval()(x))
    encoder = load_encoder(tmp_path / "best.pt")  # the encoder of an old file too
    assert all(torch.equal(v, net.state_dict()["encoder." + k]) for k, v in encoder.encoder.state_dict().items())


@pytest.mark.slow
def test_a_run_written_under_the_old_name_resumes(old_run):
    old_run.train(2, False, "optim=sgd")

    def network(state: dict) -> None:  # the run as the version before the rename wrote it
        if "network" in state:
            state["network"] = {**state["network"], "arch": "asa"}

    old_run.rewrite(lambda config: {**config, "model": {**config["model"], "arch": "asa"}}, network)
    assert old_run.train(4, True, "optim=sgd").step == 4
    run = old_run.dir
    assert network_spec(build_network(load_checkpoint(run / "checkpoints" / "last.pt")["network"]))["arch"] == \
        "swvit_unetr"
