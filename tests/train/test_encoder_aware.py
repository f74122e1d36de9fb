"""Encoder-aware fine-tuning: per-block learning rates (hand-computed), encoder freeze (bit-identical)."""
from __future__ import annotations

import pytest
import torch

from asa.train import Engine, TrainConfig, build_optimizer, check_training_checkpoint
from asa.train.optim import describe_lr
from tests.fixtures.training import Volumes, segmentation_step, tiny_segmenter
from tests.train.toy import ToyNet



def _lr_of(opt: torch.optim.Optimizer, net: torch.nn.Module, lr: float) -> dict[str, float]:
    """name -> lr the engine sets at peak (lr × the group's lr_scale)."""
    ids = {id(p): n for n, p in net.named_parameters()}
    return {ids[id(p)]: lr * g.get("lr_scale", 1.0) for g in opt.param_groups for p in g["params"]}


def test_layer_decay_gives_the_hand_computed_lr_per_block():
    net = tiny_segmenter()
    lrs = _lr_of(build_optimizer(net, name="sgd", lr=0.01, weight_decay=3e-5, encoder_lr_scale=0.5, layer_decay=0.5),
                 net, 0.01)
    # depth 4: block i at 0.5 · 0.5^(4 − i), patch embedding at 0.5 · 0.5^5, final norm 0.5, decoder 1
    assert lrs["encoder.blocks.0.attn.qkv.weight"] == pytest.approx(0.01 * 0.5 * 0.5**4)
    assert lrs["encoder.blocks.1.mlp.linear1.weight"] == pytest.approx(0.01 * 0.5 * 0.5**3)
    assert lrs["encoder.blocks.3.norm1.bias"] == pytest.approx(0.01 * 0.5 * 0.5**1)
    assert lrs["encoder.patch_embed.proj.weight"] == pytest.approx(0.01 * 0.5 * 0.5**5)
    assert lrs["encoder.norm.weight"] == pytest.approx(0.01 * 0.5)
    assert lrs["head.conv.conv.weight"] == pytest.approx(0.01)
    assert lrs["up0.transp_conv.conv.weight"] == pytest.approx(0.01)
    assert len(lrs) == len(list(net.parameters()))  # every parameter in exactly one group


def test_sa_swin_layer_decay_counts_swin_blocks_over_the_stages():
    from asa.models import SASwin

    torch.manual_seed(0)
    net = SASwin(1, 2, feature_size=12, depths=(1, 2, 1, 1), num_heads=(1, 1, 2, 4))  # 5 blocks: L = 6
    lrs = _lr_of(build_optimizer(net, name="sgd", lr=0.01, weight_decay=0.0, encoder_lr_scale=0.5, layer_decay=0.5),
                 net, 0.01)
    assert lrs["swinViT.patch_embed.proj.weight"] == pytest.approx(0.01 * 0.5 * 0.5**6)
    assert lrs["swinViT.layers1.0.blocks.0.attn.qkv.weight"] == pytest.approx(0.01 * 0.5 * 0.5**5)
    assert lrs["swinViT.layers1.0.downsample.reduction.weight"] == pytest.approx(0.01 * 0.5 * 0.5**5)
    assert lrs["swinViT.layers2.0.blocks.1.mlp.linear1.weight"] == pytest.approx(0.01 * 0.5 * 0.5**3)
    assert lrs["swinViT.layers4.0.blocks.0.norm1.weight"] == pytest.approx(0.01 * 0.5 * 0.5**1)
    assert lrs["symmetry.saca.q.weight"] == lrs["encoder10.layer.conv1.conv.weight"] == pytest.approx(0.01)
    assert len(lrs) == len(list(net.parameters()))
    opt = build_optimizer(net, name="sgd", lr=0.01, weight_decay=0.0, freeze_encoder_epochs=2)
    frozen = {id(p) for g in opt.param_groups if g.get("freeze_epochs") == 2 for p in g["params"]}
    assert frozen == {id(p) for n, p in net.named_parameters() if n.startswith("swinViT.")}


def test_defaults_keep_one_lr_and_the_weight_decay_split():
    net = tiny_segmenter()
    opt = build_optimizer(net, name="sgd", lr=0.01, weight_decay=3e-5)
    assert all("lr_scale" not in g and "freeze_epochs" not in g for g in opt.param_groups)
    assert [g["weight_decay"] for g in opt.param_groups] == [3e-5, 0.0]


def test_encoder_options_need_an_encoder_and_valid_values():
    with pytest.raises(ValueError, match="encoder_layer_id"):
        build_optimizer(ToyNet(), name="sgd", lr=0.01, weight_decay=0.0, layer_decay=0.75)
    with pytest.raises(ValueError, match="layer_decay"):
        build_optimizer(tiny_segmenter(), name="sgd", lr=0.01, weight_decay=0.0, layer_decay=1.5)
    with pytest.raises(ValueError, match="freeze_encoder_epochs"):
        build_optimizer(tiny_segmenter(), name="sgd", lr=0.01, weight_decay=0.0, freeze_encoder_epochs=-1)


def test_describe_lr_states_the_rule():
    lr, text = describe_lr(1.5e-4, 2, True)
    assert lr == pytest.approx(1.5e-4 * 2 / 256) and "× global batch 2 / 256 = 1.17e-06" in text
    assert describe_lr(3e-3, 2, False)[0] == 3e-3


def test_frozen_encoder_is_bit_identical_for_k_epochs_then_trains(tmp_path):
    net = tiny_segmenter()
    start = {k: v.clone() for k, v in net.state_dict().items()}
    opt = build_optimizer(net, name="sgd", lr=0.05, weight_decay=3e-5, freeze_encoder_epochs=2)
    cfg = TrainConfig(epochs=3, batch_size=2, progress=False, log_every=1, ckpt_every=1000, panel_every=0, amp="off")
    engine = Engine(net, opt, segmentation_step, config=cfg, lr=0.05, out_dir=tmp_path)
    engine.cfg = TrainConfig(**{**cfg.__dict__, "max_steps": 4})  # 2 steps/epoch: stop after epoch 2
    engine.fit(Volumes())
    enc = [k for k in start if net.encoder_layer_id(k) is not None]
    dec = [k for k in start if net.encoder_layer_id(k) is None and start[k].is_floating_point()]
    assert enc and all(torch.equal(net.state_dict()[k], start[k]) for k in enc)
    assert any(not torch.equal(net.state_dict()[k], start[k]) for k in dec)
    engine.cfg = cfg
    engine.resume = check_training_checkpoint(tmp_path / "checkpoints" / "last.pt", {}, ())
    engine.fit(Volumes())  # epoch 3: the encoder trains
    assert any(not torch.equal(net.state_dict()[k], start[k]) for k in enc)
