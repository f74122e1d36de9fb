"""Typed settings per network: every network a fine-tuning run config may name registers a
`NetworkSettings` dataclass with it; the ``model`` section is checked against the settings of the
network it names and jobs read it as that dataclass."""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml
from monai.networks.nets import UNETR, SwinUNETR
from torch import nn

from asa.api.configuration.checks import as_config, network_settings
from asa.api.configuration.compat import current_config
from asa.api.configuration.schema import CONFIG_VERSION
from asa.api.config import compose_config, load_config
from asa.api.machinery.networks import build_from_config
from asa.models import (NETWORK_SETTINGS, NETWORKS, SWIN_SIZES, NetworkSettings, SASwinSettings, SWViTSettings, UNETRSettings,
                        network_spec, record_spec, register_network)
from asa.models.registry import NETWORK_KINDS, RECORDS
from asa.train.checkpoint import IncompatibleCheckpointError, check_compatible

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

# the callable whose keyword defaults a network's settings restate: MONAI's for the networks that pass
# their keyword arguments on to it, else the registered builder
DEFAULTS_OF = {"unetr": UNETR, "swin_unetr": SwinUNETR}
SWIN = {"swin_unetr", "swin_case"}  # their sizes are SwinUNETR's published ones (SWIN_SIZES), not MONAI's defaults


def _signature_defaults(build) -> dict:
    target = build.__init__ if inspect.isclass(build) else build
    return {name: p.default for name, p in inspect.signature(target).parameters.items()
            if p.default is not inspect.Parameter.empty}


@pytest.mark.parametrize("arch", sorted(set(NETWORK_SETTINGS) - {"swvit_unetr", "case_head", "sa_swin"}))
def test_the_settings_defaults_are_the_networks_own(arch):
    """A field's default is the one the network would take without it, so a run config that leaves a
    field out builds the network it built before the settings existed."""
    defaults = _signature_defaults(DEFAULTS_OF.get(arch, NETWORKS[arch]))
    settings = NETWORK_SETTINGS[arch](arch=arch).options()
    if arch in SWIN:
        assert {k: settings.pop(k) for k in SWIN_SIZES} == {k: list(v) if isinstance(v, tuple) else v
                                                            for k, v in SWIN_SIZES.items()}
    wrong = {k: (v, defaults[k]) for k, v in settings.items()
             if k in defaults and list(v if isinstance(v, (list, tuple)) else [v])
             != list(defaults[k] if isinstance(defaults[k], (list, tuple)) else [defaults[k]])}
    assert wrong == {}
    assert set(settings) <= set(defaults)  # every field is a keyword argument of the network


def test_the_sw_vit_and_sa_swin_settings_default_to_their_networks():
    from asa.models import ASASegmenter, EncoderSettings, SASwin
    sw = SWViTSettings(arch="swvit_unetr")
    enc = EncoderSettings()
    assert {k: getattr(sw, k) for k in ("patch_size", "embed_dim", "depth", "num_heads", "window_size", "mlp_ratio",
                                        "shift_mask", "rel_pos_bias", "grad_checkpointing", "region_attention")} == \
        {k: getattr(enc, k) for k in ("patch_size", "embed_dim", "depth", "num_heads", "window_size", "mlp_ratio",
                                      "shift_mask", "rel_pos_bias", "grad_checkpointing", "region_attention")}
    assert sw.dropout == _signature_defaults(ASASegmenter)["dropout"] and sw.saca == "none"
    sa = SASwinSettings(arch="sa_swin")
    assert (sa.lr_axis, sa.symmetry_mlp_ratio) == (0, _signature_defaults(SASwin)["symmetry_mlp_ratio"])


def test_every_configurable_network_is_a_fine_tuning_network():
    assert {NETWORK_KINDS[a] for a in NETWORK_SETTINGS} == {"segmentation", "case"}
    assert "asa_pretrain" not in NETWORK_SETTINGS  # pretraining networks are built by their methods


@pytest.mark.parametrize("preset", sorted(p.stem for p in (CONFIGS / "finetune" / "model").glob("*.yaml")))
def test_model_presets_compose_to_their_typed_settings_and_state_only_differences(preset):
    cfg = load_config("finetune", f"model={preset}")
    cls = NETWORK_SETTINGS[cfg.model.arch]
    assert type(cfg.model) is cls
    stated = yaml.safe_load((CONFIGS / "finetune" / "model" / f"{preset}.yaml").read_text()) or {}
    defaults = dataclasses.asdict(cls(arch=cfg.model.arch))
    assert [k for k, v in stated.items() if k != "defaults" and defaults.get(k) == v] == []


@pytest.mark.parametrize("overrides, match", [
    (["model=unetr", "+model.pos_mode=mirror"],
     r"^model.pos_mode=mirror: model arch 'unetr' has no such option; it takes arch, pretrained, hidden_size, "),
    (["model=sa_swin", "experiment=asa_saca"], r"^model.saca=encoder: model arch 'sa_swin' has no such option"),
    (["model=tiny", "+model.decoder_dim=32"], r"^model.decoder_dim=32: model arch 'swvit_unetr' has no such option"),
    (["model.depth=four"], r"^model.depth=four: Value 'four' of type 'str' could not be converted to Integer$"),
    (["model=dynunet", "model.deep_supervision=maybe"], r"^model.deep_supervision=maybe: Value 'maybe' is not a valid bool"),
    (["model.region_attention=al"], r"^model.region_attention='al': expected one of none, alternate, all"),
    (["model.arch=nonet"], r"^model.arch=nonet: no network of that name takes a run config's model section; expected "
                           r"one of .*unetr"),
])
def test_the_model_section_is_checked_against_its_networks_settings(overrides, match):
    cfg = compose_config("finetune", overrides)  # composes: the section is a mapping until validated
    with pytest.raises(ValueError, match=match):
        as_config(cfg, "finetune")


def test_typed_settings_reach_the_network():
    cfg = load_config("finetune", "model=unetr", "model.feature_size=8", "model.hidden_size=48", "model.mlp_dim=96",
                      "model.num_heads=2")
    assert isinstance(cfg.model, UNETRSettings) and cfg.model.feature_size == 8
    assert as_config(cfg, "finetune").model == cfg.model  # a typed config passes the door unchanged
    net = build_from_config(cfg.model, {}, in_channels=1, out_channels=2, crop=32)
    kwargs = network_spec(net)["kwargs"]
    assert kwargs["feature_size"] == 8 and kwargs["qkv_bias"] is False and kwargs["proj_type"] == "conv"
    assert net.vit.patch_embedding.patch_embeddings.out_channels == 48
    # a mapping is typed the same way; a dataclass of another network's settings is refused
    assert network_settings({"arch": "unetr", "feature_size": 8}) == UNETRSettings(arch="unetr", feature_size=8)
    with pytest.raises(ValueError, match=r"model.arch=unetr: the model section holds another network's options "
                                         r"\(model.patch_size, .*choose the network with model=unetr"):
        network_settings(SWViTSettings(arch="unetr", embed_dim=48))
    with pytest.raises(ValueError, match=r"model.foo=1: model arch 'unetr' has no such option"):
        network_settings({"arch": "unetr", "foo": 1})


@dataclass
class _WideSettings(NetworkSettings):
    width: int = 4


class _Wide(nn.Module):
    def __init__(self, *, img_size, in_channels, out_channels, width=4):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv3d(in_channels, width, 3, padding=1), nn.Conv3d(width, out_channels, 1))
        record_spec(self, "test_wide", dict(img_size=img_size, in_channels=in_channels, out_channels=out_channels,
                                            width=width))

    def forward(self, x):
        return self.conv(x)


@pytest.fixture
def wide_network():
    register_network("test_wide", kind="segmentation", settings=_WideSettings)(_Wide)
    yield
    RECORDS.pop("test_wide", None)


def test_a_network_registered_from_outside_is_checked_and_built_by_its_settings(wide_network):
    cfg = load_config("finetune", "trainer=smoke")
    cfg.model = {"arch": "test_wide", "width": "6"}  # a mapping, as an API caller may give it
    cfg = as_config(cfg, "finetune")
    assert cfg.model == _WideSettings(arch="test_wide", width=6)  # typed: "6" -> 6
    net = build_from_config(cfg.model, {}, in_channels=1, out_channels=3, crop=16)
    assert net.conv[0].out_channels == 6 and net(torch.zeros(1, 1, 16, 16, 16)).shape == (1, 3, 16, 16, 16)
    with pytest.raises(ValueError, match=r"model.depth=2: model arch 'test_wide' has no such option; it takes arch, "
                                         r"pretrained, width$"):
        as_config(dataclasses.replace(cfg, model={"arch": "test_wide", "depth": 2}), "finetune")
    with pytest.raises(ValueError, match=r"takes no pretrained encoder"):
        build_from_config(_WideSettings(arch="test_wide", pretrained="enc.pt"), {}, in_channels=1, out_channels=3,
                          crop=16)


def test_a_saved_run_config_is_read_with_settings_added_since_at_their_defaults():
    """A run folder written before the typed settings: its model section states only what the preset stated
    (and null symmetry settings for every network); it resumes under the settings it built with."""
    now = {"segmenter": {}, "model": dataclasses.asdict(UNETRSettings(arch="unetr", feature_size=8))}
    saved = {"segmenter": {}, "model": {"arch": "unetr", "pretrained": None, "pos_mode": None, "lr_axis": None,
                                        "feature_size": 8, "hidden_size": 768, "mlp_dim": 3072, "num_heads": 12,
                                        "norm_name": "instance", "res_block": True}}
    assert current_config(saved)["model"] == now["model"]
    check_compatible(saved, now, ["model"], current=current_config)
    # a setting that changed, or one the network no longer has with a value, still stops the resume
    with pytest.raises(IncompatibleCheckpointError, match=r"model.feature_size: x has 16, config has 8"):
        check_compatible({**saved, "model": {**saved["model"], "feature_size": 16}}, now, ["model"], source="x",
                         current=current_config)
    with pytest.raises(IncompatibleCheckpointError, match=r"model.pos_mode: x has 'mirror', config has '<missing>'"):
        check_compatible({**saved, "model": {**saved["model"], "pos_mode": "mirror"}}, now, ["model"], source="x",
                         current=current_config)
    # a renamed network is read under its name now; a pretraining config (no segmenter) is left as it is
    assert current_config({"segmenter": {}, "model": {"arch": "asa"}})["model"]["arch"] == "swvit_unetr"
    assert current_config({"model": {"embed_dim": 48}}) == {"version": CONFIG_VERSION, "model": {"embed_dim": 48}}
