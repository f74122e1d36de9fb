"""method=mae|asa on model=resenc: the configs, the refusals, and the network each builds."""
from __future__ import annotations

from dataclasses import asdict

import pytest

from asa.api import load_config
from asa.methods import MethodContext, get_method


def _method(*overrides):
    cfg = load_config("pretrain", *overrides)
    cls = get_method(cfg.method.name)
    return cls(cfg.method, MethodContext(crop=32, channels=("t1",), batch_size=2, model=asdict(cfg.model)))


def test_mae_is_uniform_and_asa_attentive_on_resenc():
    mae, asa = _method("model=resenc", "method=mae"), _method("model=resenc", "method=asa")
    assert mae.build_network().loss_weighting == "uniform"
    net = asa.build_network()
    assert net.network_arch == "resenc_pretrain" and net.loss_weighting == "attentive"
    assert net.mirror_visible is None and not net.coord_channel  # symmetry off unless asked
    assert asa.probe_patch_size is None and asa.encoder_prefixes == ("encoder.",)


def test_symmetry_options_reach_the_network():
    net = _method("model=resenc", "method=asa", "method.mirror_visible=0.25", "method.coord_channel=true",
                  "model.size=tiny").build_network()
    assert net.mirror_visible == 0.25 and net.coord_channel and net.network_kwargs["size"] == "tiny"


def test_the_sw_vit_path_is_unchanged():
    net = _method("model=tiny", "method=asa").build_network()
    assert net.network_arch == "asa_pretrain"
    assert _method("model=tiny", "method=mae").build_network().loss_weighting == "uniform"


@pytest.mark.parametrize("overrides, message", [
    (("model=resenc", "method=rpl"), "model=resenc: method=rpl does not pretrain it"),
    (("model=tiny", "method.coord_channel=true"), "method.coord_channel=True: an option of model=resenc"),
    (("model=resenc", "method.loss_weighting=focal_region"), "model=resenc takes uniform or attentive"),
    (("model=resenc", "method.mirror_visible=2"), r"method.mirror_visible=2.0: expected a number in \[0.0, 1.0\] or null"),
    (("model=resenc", "model.size=XL"), "model.size='XL': expected one of tiny, S, M, L"),
])
def test_refusals_name_the_option(overrides, message):
    with pytest.raises(ValueError, match=message):
        _method(*overrides)


def test_an_unknown_pretraining_arch_is_refused():
    with pytest.raises(ValueError, match="model.arch=vnet: asa-pretrain pretrains swvit, resenc"):
        load_config("pretrain", "model=resenc", "model.arch=vnet")
