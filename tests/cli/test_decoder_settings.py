"""The SW-ViT U-Net's decoder options are its network settings (``model.feature_size``, ``model.input_skip``,
``model.spe_frame``); ``segmenter.<key>`` is refused naming the new place, on any network, and a run
folder written before (the keys in a ``segmenter`` section) is read with them moved. The ``segmenter``
section keeps how a network that follows its pretraining keeps the file's grid."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass

import pytest
import torch
from hydra.errors import HydraException
from torch import nn

from asa.api import load_config
from asa.api.configuration.checks import as_config, validate
from asa.api.configuration.compat import current_config
from asa.api.config import compose_config
from asa.api.machinery.networks import build_case_network, build_from_config
from asa.cli.common import _compose_error
from asa.models import NetworkSettings, SWViTUNetSettings, record_spec, register_network
from asa.models.family import Family, register_family
from asa.models.registry import FAMILIES, RECORDS
from asa.models.swvit.family import SWViTRoad
from asa.train.checkpoint import IncompatibleCheckpointError, check_compatible
from tests.fixtures.runs import child_env


DECODER = {"feature_size": 8, "input_skip": "none", "spe_frame": "crop"}
TINY = ["model=tiny", "trainer=smoke", "data=ibsr"]


@pytest.mark.parametrize("preset", ["tiny", "unetr", "resenc"])
@pytest.mark.parametrize("key", sorted(DECODER))
def test_a_decoder_key_under_segmenter_is_refused_naming_its_new_place_whatever_the_network(preset, key):
    with pytest.raises(HydraException) as info:
        compose_config("finetune", [f"model={preset}", f"segmenter.{key}={DECODER[key]}"])
    error = info.value.__cause__ or info.value
    report = f"{info.value}\n    full_key: {getattr(error, 'full_key', '')}\n"
    assert _compose_error(report).endswith(f"— segmenter.{key} is now model.{key}")
    cfg = compose_config("finetune", [f"model={preset}", f"+segmenter.{key}={DECODER[key]}"])  # past Hydra...
    with pytest.raises(ValueError, match=rf"^asa-finetune: invalid option segmenter.{key}: "
                                         rf"segmenter.{key} is now model.{key}$"):
        validate(cfg, "finetune")  # ...not past validate


@pytest.mark.slow  # the console script in a child process
def test_model_unetr_segmenter_feature_size_on_the_console_exits_2_naming_model_feature_size(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "asa.cli.finetune", "model=unetr", "segmenter.feature_size=99",
                           f"output_dir={tmp_path / 'r'}"], capture_output=True, text=True, env=child_env(), timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("[asa-finetune] refused:"), lines
    assert lines[0].endswith("segmenter.feature_size is now model.feature_size")
    assert not (tmp_path / "r").exists()


def test_the_decoder_options_are_the_swvit_unets_settings_and_no_other_networks():
    cfg = as_config(load_config("finetune", *TINY, *(f"model.{k}={v}" for k, v in DECODER.items())), "finetune")
    assert isinstance(cfg.model, SWViTUNetSettings) and {k: getattr(cfg.model, k) for k in DECODER} == DECODER
    net = build_from_config(cfg.model, cfg.segmenter, in_channels=1, out_channels=4, crop=16)
    assert (net.feature_size, net.input_skip, net.spe_frame) == (8, "none", "crop")
    assert {k: net.network_kwargs[k] for k in DECODER} == DECODER  # the spec rebuilds the same decoder
    for preset, key in [("unetr", "spe_frame"), ("unetr", "input_skip"), ("dynunet", "feature_size")]:
        with pytest.raises(HydraException, match=rf"Could not override 'model.{key}'"):
            compose_config("finetune", [f"model={preset}", f"model.{key}={DECODER[key]}"])
    with pytest.raises(ValueError, match=r"^model.spe_frame=crop: model arch 'unetr' has "
                                         r"no such option; it takes arch, pretrained, "):
        as_config(load_config("finetune", "model=unetr", "+model.spe_frame=crop"), "finetune")
    with pytest.raises(ValueError, match=r"model.input_skip='fulll': expected one of full, none or a number in \[0, 1\]"):
        as_config(load_config("finetune", *TINY, "model.input_skip=fulll"), "finetune")


def test_a_case_run_refuses_a_decoder_option_its_case_network_lacks():
    settings = SWViTUNetSettings(arch="swvit_unetr", embed_dim=32, depth=2, num_heads=2, window_size=8)
    net = build_case_network(settings, in_channels=1, out_channels=2, crop=16, default_crop=16)  # defaults: fine
    assert "feature_size" not in net.network_kwargs
    with pytest.raises(ValueError, match=r"^model.feature_size=8: data.task=case builds the case network 'case_head', "
                                         r"which has no such option; it takes arch, pretrained, patch_size, "):
        build_case_network(SWViTUNetSettings(**{**vars(settings), "feature_size": 8}), in_channels=1, out_channels=2,
                           crop=16, default_crop=16)


def test_the_segmenter_options_are_refused_for_a_network_that_follows_no_pretraining_file():
    cfg = as_config(load_config("finetune", "model=unetr", "trainer=smoke"), "finetune")
    for key, value in [("allow_grid_change", True), ("reference_grid", [2, 2, 2])]:
        with pytest.raises(ValueError, match=rf"^segmenter.{key}={re.escape(str(value))}: model arch 'unetr' does not follow a "
                                             r"pretraining file's geometry"):
            build_from_config(cfg.model, {key: value}, in_channels=1, out_channels=2, crop=16)


def test_a_run_config_written_with_a_segmenter_section_is_read_with_the_decoder_in_the_model_section():
    old = {"spe_frame": "crop", "allow_grid_change": False, "reference_grid": [2, 2, 2], "feature_size": 8,
           "input_skip": "none"}
    saved = {"segmenter": old, "model": {"arch": "swvit_unetr", "embed_dim": 32}}
    read = current_config(saved)
    assert read["segmenter"] == {"allow_grid_change": False, "reference_grid": [2, 2, 2]}
    assert {k: read["model"][k] for k in DECODER} == DECODER and read["model"]["embed_dim"] == 32
    assert saved["segmenter"] == old  # a copy
    # a network that never read them (UNETR has a feature_size of its own): left out, its own kept
    unetr = current_config({"segmenter": old, "model": {"arch": "unetr", "feature_size": 4}})
    assert unetr["model"]["feature_size"] == 4 and "spe_frame" not in unetr["model"]
    assert "feature_size" not in unetr["segmenter"]
    # resumed: compared in the new places, a changed value named there
    now = {"segmenter": read["segmenter"], "model": read["model"]}
    check_compatible(saved, now, ["model", "segmenter"], current=current_config)
    with pytest.raises(IncompatibleCheckpointError, match=r"model.feature_size: x has 8, config has 16"):
        check_compatible(saved, {**now, "model": {**now["model"], "feature_size": 16}}, ["model", "segmenter"],
                         source="x", current=current_config)


@dataclass
class _FollowerSettings(NetworkSettings):
    width: int = 4


class _Follower(nn.Module):
    """A network from outside asa that follows its pretraining file's geometry: it takes the crop, the
    position code, the symmetric axis and the reference grid, and its own ``width``, nothing more."""

    def __init__(self, *, img_size, in_channels, out_channels, pos_mode, lr_axis, reference_grid, width=4):
        super().__init__()
        self.geometry = (tuple(img_size), pos_mode, lr_axis, reference_grid)
        self.net = nn.Sequential(nn.Conv3d(in_channels, width, 1), nn.Conv3d(width, out_channels, 1))
        record_spec(self, "test_follower", dict(img_size=list(img_size), in_channels=in_channels,
                                                out_channels=out_channels, pos_mode=pos_mode, lr_axis=lr_axis,
                                                reference_grid=reference_grid, width=width))

    def forward(self, x):
        return self.net(x)


@pytest.fixture
def follower():
    """The network in a family of its own whose road is the SW-ViT's (it follows its pretraining file)."""
    register_family(Family("test_follower", road=SWViTRoad()))
    register_network("test_follower", kind="segmentation", settings=_FollowerSettings, family="test_follower")(_Follower)
    yield
    RECORDS.pop("test_follower", None)
    FAMILIES.pop("test_follower", None)


def test_follows_pretraining_is_refused_naming_the_family_road():
    with pytest.raises(TypeError, match=r"follows_pretraining= is the family's road now"):
        register_network("test_old_follower", kind="segmentation", follows_pretraining=True)


def test_a_network_from_outside_that_follows_its_pretraining_gets_the_geometry_and_its_own_options(follower):
    net = build_from_config({"arch": "test_follower", "width": 6}, {}, in_channels=2, out_channels=3, crop=16)
    assert net.geometry == ((16, 16, 16), "mirror", 0, None) and net.net[0].out_channels == 6
    assert net(torch.zeros(1, 2, 16, 16, 16)).shape == (1, 3, 16, 16, 16)
    net = build_from_config({"arch": "test_follower"}, {"reference_grid": [2, 2, 2]}, in_channels=1,
                            out_channels=2, crop=16)
    assert net.geometry[3] == (2, 2, 2)


@pytest.mark.slow
def test_a_run_written_with_a_segmenter_section_resumes(old_run):
    overrides = ("optim=sgd", "model.feature_size=8")
    old_run.train(2, False, *overrides)

    def before(config: dict) -> dict:  # the layout of a run written before the decoder moved
        model = {k: v for k, v in config["model"].items() if k not in DECODER}
        moved = {k: config["model"][k] for k in DECODER}
        return {**config, "model": model, "segmenter": {**config["segmenter"], **moved}}

    old_run.rewrite(before)
    assert old_run.train(4, True, *overrides).step == 4
    with pytest.raises(IncompatibleCheckpointError, match=r"model.feature_size: .* has 8, config has 16"):
        old_run.train(5, True, "optim=sgd", "model.feature_size=16")


def test_the_decoder_settings_default_to_the_networks_own_defaults():
    import inspect

    from asa.models import ASASegmenter

    signature = inspect.signature(ASASegmenter).parameters
    assert {k: getattr(SWViTUNetSettings(arch="swvit_unetr"), k) for k in DECODER} == \
        {k: signature[k].default for k in DECODER}
