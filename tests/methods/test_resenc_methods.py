"""method=mae|asa on model=resenc: the configs, the refusals, and the network each builds."""
from __future__ import annotations

from dataclasses import asdict

import pytest

from asa.api import load_config
from asa.methods import MethodContext, get_method
from asa.models.keys import encoder_keys


def _method(*overrides):
    cfg = load_config("pretrain", *overrides)
    cls = get_method(cfg.method.name)
    return cls(cfg.method, MethodContext(crop=32, channels=("t1",), batch_size=2, model=asdict(cfg.model)))


def test_mae_is_uniform_and_asa_attentive_on_resenc():
    mae, asa = _method("model=resenc", "model.size=tiny", "method=mae"), _method("model=resenc", "model.size=tiny", "method=asa")
    assert mae.build_network().loss_weighting == "uniform"
    net = asa.build_network()
    assert net.network_arch == "resenc_pretrain" and net.loss_weighting == "attentive"
    assert net.mirror_visible is None and not net.coord_channel  # symmetry off unless asked
    assert asa.probe_stride(net) == 8  # the probes' tokens: the bottleneck of a 32³ crop, strides 1, 2, 2, 2
    # the export keeps the keys the network declares (key_to_encoder, key_to_stem): its encoder module, whole
    prefixes = encoder_keys(net).prefixes
    assert prefixes == (f"{net.key_to_encoder}.", f"{net.key_to_stem}.")
    assert {k for k in net.state_dict() if k.startswith(prefixes)} == set(net.encoder_state_dict()) \
        == {f"encoder.{k}" for k in net.encoder.state_dict()}


def test_symmetry_options_reach_the_network():
    net = _method("model=resenc", "model.size=tiny", "method=asa", "model.mirror_visible=0.25",
                  "model.coord_channel=true").build_network()
    assert net.mirror_visible == 0.25 and net.coord_channel and net.network_kwargs["size"] == "tiny"


def test_model_resenc_is_nnunets_m_unless_a_size_is_named():
    assert load_config("pretrain", "model=resenc").model.size == "M"
    assert load_config("finetune", "model=resenc").model.size == "M"
    assert load_config("finetune", "model=resenc", "model.size=S").model.size == "S"


def test_the_sw_vit_path_is_unchanged():
    net = _method("model=tiny", "method=asa").build_network()
    assert net.network_arch == "asa_pretrain"
    assert _method("model=tiny", "method=mae").build_network().loss_weighting == "uniform"


@pytest.mark.parametrize("overrides, message", [
    (("model=resenc", "method=rpl"), "model.arch=resenc: method=rpl does not pretrain it .*method=asa or method=mae does"),
    (("model=tiny", "model.coord_channel=true"), r"has no option coord_channel; its options are the fields of its "
                                                 r"settings \(asa.models.NetworkSettings\)$"),
    (("model=tiny", "method.coord_channel=true"), r"method.coord_channel is now model.coord_channel \(with model=resenc\)"),
    (("model=resenc", "method.loss_weighting=focal_region"), "model=resenc takes uniform or attentive"),
    (("model=resenc", "model.mirror_visible=2"), r"model.mirror_visible=2: expected a number in \[0.0, 1.0\] or null"),
    (("model=resenc", "model.size=XL"), "model.size='XL': expected one of tiny, S, M, L"),
])
def test_refusals_name_the_option(overrides, message):
    with pytest.raises(ValueError, match=message):
        _method(*overrides)


def test_an_unknown_pretraining_arch_is_refused():
    with pytest.raises(ValueError, match="model.arch=vnet: asa-pretrain pretrains swvit, resenc"):
        load_config("pretrain", "model=resenc", "model.arch=vnet")


def test_nnssl_masking_and_the_papers_weight_unit_are_the_defaults_and_reach_the_network():
    net = _method("model=resenc", "method=asa", "model.size=tiny").build_network()
    # crop 32: nnssl's 16³ block (two per axis), SparK's densify, the attentive weight per 8³ unit
    assert (net.block, net.densify_form, net.weight_patch, net.weight_power) == (16, "spark", 8, 1.0)
    assert net.network_kwargs["mask_block"] == 16 and net.network_kwargs["weight_patch"] == 8
    earlier = _method("model=resenc", "method=asa", "model.size=tiny", "model.mask_block=null",
                      "model.densify=asa", "model.weight_patch=null", "model.weight_power=2").build_network()
    assert (earlier.block, earlier.densify_form, earlier.weight_patch, earlier.weight_power) == (8, "asa", 8, 2.0)


def test_the_mask_block_is_capped_at_half_the_crop():
    cfg = load_config("pretrain", "model=resenc", "model.size=tiny")
    cls = get_method(cfg.method.name)
    method = cls(cfg.method, MethodContext(crop=16, channels=("t1",), batch_size=2, model=asdict(cfg.model)))
    assert method.build_network().block == 8  # a 16³ crop holds two 8³ blocks per axis, not one 16³ block


def test_optim_nnssl_is_nnssls_sgd_recipe():
    cfg = load_config("pretrain", "model=resenc", "model.size=tiny", "optim=nnssl")
    o = cfg.optim
    assert (o.name, o.base_lr, o.scale_lr, o.weight_decay, o.momentum, o.nesterov, o.schedule, o.power) == (
        "sgd", 0.01, False, 3e-5, 0.99, True, "poly", 0.9)
    assert (cfg.trainer.clip_grad, cfg.trainer.warmup_epochs) == (12.0, 0.0)  # SparkTrainer's clip, no warm-up
    assert load_config("pretrain", "model=resenc", "optim=nnssl", "trainer=paper").trainer.warmup_epochs == 0.0
    assert cfg.model.densify == "spark"


METHOD_V6 = {"name": "asa", "in_channels": 1, "mask_ratio": 0.75, "loss_weighting": "attentive", "norm_pix_loss": False,
             "bins": 8, "normalize": "l2", "focal_beta": 1.0}


def test_a_resenc_run_written_before_nnssls_masking_reads_with_the_masking_it_trained_with():
    """A pretraining config of an earlier version (no mask_block, densify, weight_patch, weight_power) resumes
    with the earlier form, not with today's defaults, which would build another network, in the model section
    where these options live now; an SW-ViT run's model section gets none of them (its network never took them)."""
    from asa.api.configuration.compat import added_settings, current_config
    old = {"model": {"arch": "resenc", "size": "tiny", "lr_axis": 0},
           "method": {**METHOD_V6, "mirror_visible": None, "coord_channel": False}}
    read = current_config(old)
    model = read["model"]
    assert (model["mask_block"], model["densify"], model["weight_patch"], model["weight_power"]) == (
        None, "asa", None, 1.0)
    assert (model["mirror_visible"], model["coord_channel"]) == (None, False) and read["method"] == METHOD_V6
    added = added_settings(old)
    assert added["model.densify"] == "asa" and not any(key.startswith("method.") for key in added)
    for swvit in ({"arch": "swvit"}, {"embed_dim": 96}):
        read = current_config({**old, "model": swvit})
        assert read["model"] == swvit and read["method"] == METHOD_V6


def test_a_version_6_resenc_run_reads_its_masking_and_symmetry_from_the_model_section():
    """Version 7 moved the six options from method to model: a version-6 record's values move with them, and a
    model=resenc pretraining composed today builds the same network from them."""
    from asa.api.configuration.compat import current_config
    moved = {"mirror_visible": 0.25, "coord_channel": True, "mask_block": 8, "densify": "asa", "weight_patch": None,
             "weight_power": 2.0}
    old = {"version": 6, "model": {"arch": "resenc", "size": "tiny", "lr_axis": 0}, "method": {**METHOD_V6, **moved}}
    read = current_config(old)
    assert read["method"] == METHOD_V6 and read["model"] == {"arch": "resenc", "size": "tiny", "lr_axis": 0, **moved}
    today = _method("model=resenc", "model.size=tiny", "method=asa", *(f"model.{k}={'null' if v is None else v}"
                                                                      for k, v in moved.items()))
    assert today.network_kwargs() == {**{k: v for k, v in read["model"].items() if k != "arch"},
                                      **{k: v for k, v in METHOD_V6.items() if k not in ("name", "focal_beta",
                                                                                         "norm_pix_loss")},
                                      "img_size": 32}
