"""asa-study's planted bed and its asa arm: the arm's attentive weight is the one that varies at the study's crop
(4³ units, γ = 4), stated in every run so that a changed default changes no arm."""
from __future__ import annotations

import torch

from asa.api.config import compose_config
from asa.losses.reconstruction import weight_spread
from asa.models import build_network
from asa.study.runs import SCALES, Network, labeled_split


def _masked_twin(arm: str, crop: int = 32):
    network = Network("resenc", "tiny")
    cfg = compose_config("pretrain", [*network.pretrain(arm), "data=bids", f"data.crop={crop}"])
    kwargs = {k: v for k, v in cfg.model.items() if k not in ("arch", "name")}
    return build_network({"arch": "resenc_pretrain", "kwargs": {**kwargs, "img_size": crop,
                                                                 "loss_weighting": cfg.method.loss_weighting}})


def test_the_asa_arm_weighs_4_voxel_units_sharpened_and_mae_stays_uniform():
    network = Network("resenc", "tiny")
    assert {"model.weight_patch=4", "model.weight_power=4.0"} <= set(network.pretrain("asa"))
    assert {"model.weight_patch=4", "model.weight_power=4.0", "model.coord_channel=true"} <= set(
        network.pretrain("asa-coord"))
    assert "method.loss_weighting=uniform" in network.pretrain("mae")


def test_the_asa_arm_s_weights_vary_on_a_crop_without_background_and_mae_s_are_uniform():
    """A sphere's rim against flat tissue filling the crop (no background, as inside a brain): the arm's 4³ units
    raised to 4 weigh the rim apart from the interior (share < 0.8), mae's loss is uniform (share 1)."""
    torch.manual_seed(0)
    ax = torch.arange(32, dtype=torch.float32) - 15.5
    r = (ax[:, None, None] ** 2 + ax[None, :, None] ** 2 + ax[None, None, :] ** 2).sqrt()
    x = (1.0 + (r < 9).float() + 0.05 * torch.randn(32, 32, 32))[None, None].repeat(2, 1, 1, 1, 1)
    nets = {arm: _masked_twin(arm) for arm in ("mae", "asa")}
    assert (nets["asa"].weight_patch, nets["asa"].weight_power) == (4, 4.0)
    mask = nets["asa"].random_masking(2, x.device)
    for arm, net in nets.items():
        _, w = net.forward_loss(x, torch.zeros_like(x), mask)
        spread = weight_spread(w, net.weight_units(mask))
        if arm == "mae":
            assert spread["cv"] < 1e-5 and abs(spread["effective_share"] - 1) < 1e-5
        else:
            assert spread["effective_share"] < 0.8


def test_the_planted_scale_holds_its_split_and_the_positive_control_in_the_bed_s_28_labeled_cases():
    """The documented bed (28 labeled cases): 16 test and 4 validation cases, the positive control's 4 apart, and a
    training pool from which every draw takes N = 2; 25 cases would leave the control out (it needs 26)."""
    from types import SimpleNamespace

    scale = SCALES["planted"]
    split = labeled_split([SimpleNamespace(id=f"case_{i:03d}") for i in range(28)], scale, 0)
    assert (len(split.test), len(split.val), len(split.supervised)) == (16, 4, 4)
    assert len(split.pool) >= max(scale.cases) == 2
    assert not {*split.test, *split.val, *split.supervised} & set(split.pool)
    assert labeled_split([SimpleNamespace(id=f"case_{i:03d}") for i in range(25)], scale, 0).supervised == ()
