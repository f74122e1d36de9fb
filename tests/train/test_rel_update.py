"""Whether the encoder learns: the relative update ‖Δw‖/‖w‖ of encoder and decoder, per optimiser step,
hand-computed for one SGD step, logged to TensorBoard, moving with optim.encoder_lr_scale as expected."""
from __future__ import annotations

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from asa.models import build_network
from asa.train import Engine, TrainConfig, build_optimizer
from asa.train.updates import REL_UPDATE_KEYS, RelativeUpdate, encoder_split, update_gap_note
from tests.fixtures.training import ENC, Volumes, segmentation_step, tiny_segmenter
from tests.train.toy import ToyNet



def test_one_step_matches_the_hand_computed_norm_ratio():
    a, b = torch.nn.Parameter(torch.tensor([3.0, 4.0])), torch.nn.Parameter(torch.tensor([[0.0, 12.0]]))
    monitor = RelativeUpdate({"encoder": [a, b], "decoder": [b]})
    monitor.before()
    with torch.no_grad():
        a += torch.tensor([0.3, 0.0])
        b += torch.tensor([[0.0, -0.4]])
    got = monitor.after()
    # ‖Δ‖ = ‖(0.3, 0, 0, -0.4)‖ = 0.5, ‖w‖ = ‖(3, 4, 0, 12)‖ = 13; decoder: 0.4 / 12
    assert float(got["train/rel_update/encoder"]) == pytest.approx(0.5 / 13)
    assert float(got["train/rel_update/decoder"]) == pytest.approx(0.4 / 12)
    with pytest.raises(RuntimeError, match="before"):
        monitor.after()


@pytest.mark.parametrize("arch, kwargs, module", [
    ("swvit_unetr", dict(img_size=16, out_channels=2, feature_size=4, **ENC), "encoder."),
    ("unetr", dict(img_size=16, in_channels=1, out_channels=2, feature_size=4, hidden_size=32, mlp_dim=64,
                   num_heads=2), "vit."),
])
def test_encoder_split_follows_the_registered_encoder(arch, kwargs, module):
    net = build_network({"arch": arch, "kwargs": kwargs})
    encoder, rest = encoder_split(net)
    names = {id(p): n for n, p in net.named_parameters()}
    assert encoder and all(names[id(p)].startswith(module) for p in encoder)
    assert rest and not any(names[id(p)].startswith(module) for p in rest)
    assert len(encoder) + len(rest) == len(list(net.parameters()))
    assert encoder_split(ToyNet()) is None and RelativeUpdate.of(ToyNet()) is None  # no registered encoder


def _first_step_updates(tmp_path, encoder_lr_scale: float) -> dict[str, float]:
    net = tiny_segmenter()
    opt = build_optimizer(net, name="sgd", lr=0.01, weight_decay=3e-5, encoder_lr_scale=encoder_lr_scale)
    cfg = TrainConfig(epochs=1, max_steps=1, batch_size=2, progress=False, log_every=1, ckpt_every=1000,
                      panel_every=0, amp="off")
    Engine(net, opt, segmentation_step, config=cfg, lr=0.01, out_dir=tmp_path).fit(Volumes())
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    return {k: events.Scalars(k)[0].value for k in REL_UPDATE_KEYS}


def test_logged_ratio_moves_with_encoder_lr_scale(tmp_path):
    """One SGD step from a zero momentum buffer moves every weight by lr·(1 + μ)·(g + λw): the encoder's
    relative update scales exactly with optim.encoder_lr_scale, the decoder's does not change."""
    one = _first_step_updates(tmp_path / "one", 1.0)
    scaled = _first_step_updates(tmp_path / "scaled", 300.0)
    enc, dec = REL_UPDATE_KEYS
    assert one[enc] > 0 and one[dec] > 0
    assert scaled[dec] == pytest.approx(one[dec], rel=1e-5)
    assert scaled[enc] == pytest.approx(300.0 * one[enc], rel=1e-3)
    # the paper's one-lr SGD starves the encoder: the console note fires; scaled up it does not
    assert update_gap_note(one) is not None and "optim=adamw" in update_gap_note(one)
    assert update_gap_note(scaled) is None


def test_gap_note_needs_both_values_and_ignores_a_frozen_encoder():
    enc, dec = REL_UPDATE_KEYS
    assert update_gap_note({dec: 0.1}) is None
    assert update_gap_note({enc: 0.0, dec: 0.1}) is None  # frozen (optim.freeze_encoder_epochs)
    assert update_gap_note({enc: 0.01, dec: 0.1}) is None  # 10×: within the 30× band
    assert "barely moves" in update_gap_note({enc: 0.001, dec: 0.1})


def test_warmup_fraction_spans_the_schedule_and_excludes_the_other_warmups(tmp_path):
    from asa.train.settings import TrainConfig as Settings

    with pytest.raises(ValueError, match="warmup_fraction"):
        Settings(warmup_fraction=0.05, warmup_epochs=1)
    with pytest.raises(ValueError, match="warmup_fraction"):
        Settings(warmup_fraction=1.0)
    net = tiny_segmenter()
    opt = build_optimizer(net, name="adamw", lr=1e-3, weight_decay=0.05)
    cfg = TrainConfig(epochs=20, max_steps=1, batch_size=2, progress=False, log_every=1, ckpt_every=1000,
                      panel_every=0, amp="off", warmup_fraction=0.05)
    engine = Engine(net, opt, segmentation_step, config=cfg, lr=1e-3, out_dir=tmp_path)
    engine.fit(Volumes())  # 2 steps per epoch: a schedule of 40 steps, 5 % of it = 2 warm-up steps
    assert (engine.total_steps, engine.warmup_steps) == (40, 2)


def test_encoder_lr_scale_follows_whether_the_encoder_is_pretrained():
    from asa.api.configuration.checks import as_config
    from asa.api.config import compose_config
    from asa.api.machinery.training import encoder_lr_scale

    scratch = as_config(compose_config("finetune", []), "finetune")
    pretrained = as_config(compose_config("finetune", ["model.pretrained=x.pt"]), "finetune")
    assert (encoder_lr_scale(scratch), encoder_lr_scale(pretrained)) == (1.0, 0.5)
    paper = as_config(compose_config("finetune", ["optim=sgd", "model.pretrained=x.pt"]), "finetune")
    assert encoder_lr_scale(paper) == 1.0
