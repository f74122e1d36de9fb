"""RAT presets (region attention, focal region loss): compose, state their differences, train end to end."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from asa.api import finetune, pretrain
from asa.api.config import compose_config
from asa.data import discover, load_volume
from asa.eval.predict import Predictor, predict_cases
from asa.train import load_checkpoint

PRESETS = {  # experiment: (model.region_attention, mae.loss_weighting)
    "rat_msa": ("alternate", "uniform"),
    "focal_region": ("none", "focal_region"),
    "rat_asa": ("alternate", "attentive"),
}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_state_only_their_differences(name):
    base = OmegaConf.to_container(compose_config("pretrain", []), resolve=True)
    cfg = OmegaConf.to_container(compose_config("pretrain", [f"experiment={name}"]), resolve=True)
    assert (cfg["model"]["region_attention"], cfg["mae"]["loss_weighting"]) == PRESETS[name]
    assert cfg["data"]["regions"]["source"] == "cluster" and cfg["mae"]["pos_mode"] == "mirror"
    for c in (cfg, base):
        c["model"].pop("region_attention"), c["mae"].pop("loss_weighting"), c["data"]["regions"].pop("source")
    assert cfg == base


def test_region_options_need_region_maps(tmp_path):
    cfg = compose_config("pretrain", ["model.region_attention=all", f"output_dir={tmp_path}", "device=cpu"])
    with pytest.raises(ValueError, match="model.region_attention=all need"):
        pretrain(cfg)


@pytest.mark.slow
def test_rat_presets_pretrain_then_finetune(tmp_path):
    cache = tmp_path / "cache"
    common = ["trainer=smoke", "device=cpu", f"data.demo.cache_dir={cache}", "data.demo.size=40"]
    out = tmp_path / "pretrain"
    result = pretrain(compose_config("pretrain", [
        "experiment=rat_asa", f"output_dir={out}", "data.size=32", "data.demo.cases=4", *common]))
    assert result.nonfinite_steps == 0
    export = load_checkpoint(out / "checkpoints" / "encoder.pt")
    assert export["network"]["kwargs"]["region_attention"] == "alternate"
    ft = tmp_path / "finetune"
    result = finetune(compose_config("finetune", [
        "data=ibsr", "data.demo.cases=5", "data.split.ratios=[3,1,1]", "data.patch_size=32", "data.num_workers=0",
        "model.region_attention=alternate", f"model.pretrained={out / 'checkpoints' / 'encoder.pt'}",
        "data.regions.source=cluster", "loss.focal_weight=1.0", f"output_dir={ft}", *common]))
    assert result.nonfinite_steps == 0 and result.best_metric is not None
    # asa-predict's path rebuilds the network and its region source from the checkpoint
    predictor = Predictor.from_checkpoint(ft / "checkpoints" / "best.pt", device=torch.device("cpu"))
    assert predictor.model.uses_regions and predictor.regions.source == "cluster"
    case = discover("ibsr", next((cache / "demo").glob("ibsr-*")))[0]
    written = predict_cases(predictor, [case], tmp_path / "pred", progress=False)
    pred = load_volume(written[0], label=True)
    assert pred.array.shape == load_volume(case.label, label=True).array.shape and pred.array.max() > 0
