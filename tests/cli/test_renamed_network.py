"""The SW-ViT U-Net segmenter was the network ``asa`` (the package's name) and is ``swvit_unetr`` now:
files written before read under the new name, a config naming the old one is refused naming the new."""

from __future__ import annotations

import pytest
import torch
import yaml

from asa.api import finetune, load_config
from asa.api.checks import validate
from asa.api.config import compose_config
from asa.data import write_demo_dataset
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
def test_a_run_written_under_the_old_name_resumes(tmp_path):
    root = write_demo_dataset("ibsr", tmp_path / "ibsr", cases=4, size=24, seed=1)

    def config(steps: int, resume: bool):
        cfg = load_config("finetune", "data=ibsr", "trainer=smoke", "model=tiny", "optim=sgd")
        cfg.output_dir, cfg.device, cfg.seed, cfg.resume = str(tmp_path / "run"), "cpu", 0, resume
        cfg.data.root, cfg.data.num_workers, cfg.data.crop = str(root), 0, 16
        cfg.data.split.ratios = [3, 1, 0]
        cfg.trainer.max_steps, cfg.trainer.epochs = steps, steps
        return cfg

    finetune(config(2, False))
    run = tmp_path / "run"
    for ckpt in (run / "checkpoints").glob("*.pt"):  # the run as the version before the rename wrote it
        state = load_checkpoint(ckpt)
        if "network" in state:
            state["network"] = {**state["network"], "arch": "asa"}
        if "config" in state:
            state["config"]["model"]["arch"] = "asa"
        save_checkpoint(ckpt, state)
    saved = yaml.safe_load((run / "config.yaml").read_text())
    saved["model"]["arch"] = "asa"
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    result = finetune(config(4, True))
    assert result.step == 4
    assert network_spec(build_network(load_checkpoint(run / "checkpoints" / "last.pt")["network"]))["arch"] == \
        "swvit_unetr"
