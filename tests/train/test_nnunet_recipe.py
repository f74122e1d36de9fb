"""optim=nnunet: nnU-Net's fine-tuning recipe for a CNN (PretrainedTrainer), as the run builds it — the
optimiser, the peak lr pretrained and from scratch, the warm-up and poly schedule (hand-computed lr), the
gradient clip and deep supervision off; optim=adamw stays asa's recipe."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import Dataset

from asa.api.configuration.checks import as_config
from asa.api.config import compose_config
from asa.api.machinery.networks import build_from_config
from asa.api.machinery.training import optimizer_and_config
from asa.models import capabilities
from asa.train import Engine
from asa.train.distributed import DistEnv

CROP = 32


class _Items(Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> dict:
        return {"image": torch.zeros(1, CROP, CROP, CROP)}


def _run(arch: str, pretrained: str | None, optim: str = "nnunet"):
    size = ["model.size=tiny"] if arch == "resenc" else []
    cfg = as_config(compose_config("finetune", [f"model={arch}", *size, f"optim={optim}", f"data.crop={CROP}",
                                                "trainer.epochs=50", "trainer.batch_size=2"]), "finetune")
    model = build_from_config(cfg.model, cfg.segmenter, in_channels=1, out_channels=3, crop=CROP)
    cfg.model.pretrained = pretrained  # only whether the encoder starts from a file decides the lr
    optimizer, lr, train_cfg = optimizer_and_config(cfg, model, DistEnv())
    return cfg, model, optimizer, lr, train_cfg


@pytest.mark.parametrize("arch", ["resenc", "dynunet"])
@pytest.mark.parametrize("pretrained, peak", [(None, 1e-2), ("encoder.pt", 1e-3)])
def test_nnunet_recipe_builds_nnunets_optimiser_schedule_clip_and_no_deep_supervision(arch, pretrained, peak, tmp_path):
    cfg, model, optimizer, lr, train_cfg = _run(arch, pretrained)
    assert isinstance(optimizer, torch.optim.SGD) and lr == pytest.approx(peak)
    for group in optimizer.param_groups:  # one lr for the whole network: no encoder multiplier
        assert (group["lr"], group["momentum"], group["nesterov"]) == (pytest.approx(peak), 0.99, True)
        assert group.get("lr_scale", 1.0) == 1.0
        assert group["weight_decay"] in (pytest.approx(3e-5), 0.0)  # norms and biases undecayed
    assert sorted(g["weight_decay"] for g in optimizer.param_groups) == [0.0, 3e-5]  # the config's 3.0e-5 exactly
    assert train_cfg.clip_grad == 12.0 and (train_cfg.schedule, train_cfg.power) == ("poly", 0.9)
    # deep supervision off: training returns one full-resolution output, and the loss wraps none
    assert cfg.model.deep_supervision is False and capabilities(model).deep_supervision == 0
    out = model.train()(torch.zeros(1, 1, CROP, CROP, CROP))
    assert isinstance(out, torch.Tensor) and out.shape == (1, 3, CROP, CROP, CROP)
    # the schedule the engine runs: 4 items / batch 2 × 50 epochs = 100 steps, warm-up 5 % = 5 steps
    engine = Engine(model, optimizer, lambda *a: None, config=train_cfg, lr=lr, out_dir=tmp_path)
    engine._prepare(_Items())
    assert (engine.total_steps, engine.warmup_steps) == (100, 5)
    hand = {0: peak * 1 / 5, 2: peak * 3 / 5, 4: peak, 5: peak,
            52: peak * (1 - 47 / 95) ** 0.9,  # t = (52 − 5) / 95: 0.5409 × peak
            99: peak * (1 / 95) ** 0.9}
    for step, want in hand.items():
        assert engine._lr_at(step) == pytest.approx(want, rel=1e-9)
    assert engine._lr_at(52) == pytest.approx(0.54094 * peak, rel=1e-4)


def test_adamw_recipe_is_kept_beside_it():
    cfg, model, optimizer, lr, train_cfg = _run("resenc", None, optim="adamw")
    assert isinstance(optimizer, torch.optim.AdamW) and lr == pytest.approx(1e-3)
    assert train_cfg.clip_grad == 1.0 and cfg.model.deep_supervision is True and cfg.optim.scratch_base_lr is None
    assert capabilities(model).deep_supervision > 0


def test_nnunet_recipe_on_an_swvit_names_the_option_it_lacks():
    with pytest.raises(ValueError, match="model.deep_supervision"):
        as_config(compose_config("finetune", ["optim=nnunet"]), "finetune")
