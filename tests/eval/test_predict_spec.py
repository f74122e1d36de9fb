"""asa-predict rebuilds the network from the checkpoint's network spec; a checkpoint without one is refused."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from asa.data import get_task
from asa.eval.predict import Predictor
from asa.models import PRESETS, build_network, network_spec
from asa.io import save_checkpoint

TINY = {k: v for k, v in PRESETS["tiny"].items() if not k.startswith("decoder")}


@pytest.fixture(scope="module")
def trained():
    """A tiny ASASegmenter for WMH (2 channels) and its checkpoint pieces."""
    task = get_task("wmh")
    torch.manual_seed(0)
    net = build_network({"arch": "asa", "kwargs": dict(img_size=32, in_channels=2, out_channels=task.num_outputs,
                                                      **TINY)}).eval()
    image = torch.randn(2, 40, 36, 32)
    with torch.no_grad():
        expected = Predictor(net, task, (32, 32, 32), torch.device("cpu"))(image, centre=(20.0, 18.0, 16.0))
    return net, task, image, expected


@pytest.mark.slow
def test_predictor_rebuilds_from_the_spec_without_config_keys(tmp_path, trained):
    net, task, image, expected = trained
    save_checkpoint(tmp_path / "best.pt", {"model": net.state_dict(), "network": network_spec(net),
                                           "config": {"task": dataclasses.asdict(task)}})
    predictor = Predictor.from_checkpoint(tmp_path / "best.pt", device=torch.device("cpu"))
    assert predictor.roi_size == (32, 32, 32) and predictor.task == task
    got = predictor(image, centre=(20.0, 18.0, 16.0))
    assert torch.equal(got, expected)


def test_a_checkpoint_without_a_spec_is_refused_naming_the_file(tmp_path, trained):
    """The run config alone (model, segmenter, data sections) no longer stands in for the spec."""
    net, task, _, _ = trained
    config = {"task": dataclasses.asdict(task), "data": {"patch_size": 32}, "model": {"arch": "asa", **TINY},
              "segmenter": {"pos_mode": "mirror", "lr_axis": 0, "feature_size": 16, "spe_frame": "brain"}}
    save_checkpoint(tmp_path / "nospec.pt", {"model": net.state_dict(), "config": config})
    with pytest.raises(ValueError, match=rf"checkpoint {tmp_path / 'nospec.pt'} is not a fine-tuning checkpoint "
                                         r"\(no segmentation network spec"):
        Predictor.from_checkpoint(tmp_path / "nospec.pt", device=torch.device("cpu"))


def test_a_pretraining_checkpoint_is_refused(tmp_path, trained):
    _, task, _, _ = trained
    spec = {"arch": "asa_pretrain", "kwargs": dict(img_size=32, **PRESETS["tiny"])}
    save_checkpoint(tmp_path / "pre.pt", {"model": {}, "network": spec, "config": {"task": dataclasses.asdict(task)}})
    with pytest.raises(ValueError, match="not a fine-tuning checkpoint"):
        Predictor.from_checkpoint(tmp_path / "pre.pt", device=torch.device("cpu"))
