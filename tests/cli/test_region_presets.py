"""RAT presets (region attention, focal region loss): compose, state their differences, train end to end."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from asa.api import finetune, pretrain
from asa.api.config import compose_config, load_config
from asa.data import discover, load_volume
from asa.eval.predict import Predictor, predict_cases
from asa.io import load_checkpoint
from asa.models import capabilities

PRESETS = {  # experiment: (model.region_attention, method.loss_weighting)
    "rat_msa": ("alternate", "uniform"),
    "focal_region": ("none", "focal_region"),
    "rat_asa": ("alternate", "attentive"),
}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_state_only_their_differences(name):
    base = OmegaConf.to_container(compose_config("pretrain", []), resolve=True)
    cfg = OmegaConf.to_container(compose_config("pretrain", [f"experiment={name}"]), resolve=True)
    assert (cfg["model"]["region_attention"], cfg["method"]["loss_weighting"]) == PRESETS[name]
    assert cfg["data"]["regions"]["source"] == "cluster" and cfg["model"]["pos_mode"] == "mirror"
    for c in (cfg, base):
        c["model"].pop("region_attention"), c["method"].pop("loss_weighting"), c["data"]["regions"].pop("source")
    assert cfg == base


def test_region_options_need_region_maps(tmp_path):
    out = tmp_path / "run"
    cfg = compose_config("pretrain", ["model.region_attention=all", "data.regions.source=none", f"output_dir={out}",
                                      "device=cpu"])
    with pytest.raises(ValueError, match="model.region_attention=all need"):
        pretrain(cfg)
    assert not out.exists()


def test_region_source_defaults_to_auto():
    for entry in ("pretrain", "finetune"):
        assert compose_config(entry, [])["data"]["regions"]["source"] == "auto"


@pytest.mark.parametrize("entry,extra", [
    ("finetune", ["data=brats"]), ("finetune", ["data=ibsr", "task.focal_weight=1.0"]), ("pretrain", []),
])
@pytest.mark.parametrize("layout", ["alternate", "all"])
def test_label_regions_refused_with_region_attention_before_anything_is_written(tmp_path, entry, extra, layout):
    """The case's own label as the R-MSA partition would show the network the target (issue #20.1)."""
    out = tmp_path / "run"
    cfg = compose_config(entry, [*extra, f"model.region_attention={layout}", "data.regions.source=label",
                                 f"output_dir={out}", "device=cpu", f"data.demo.cache_dir={tmp_path / 'cache'}"])
    run = finetune if entry == "finetune" else pretrain
    with pytest.raises(ValueError, match=rf"data.regions.source=label .*model.region_attention={layout} feeds the "
                                         r"region map into the network.*Use data.regions.source=cluster"):
        run(cfg)
    assert not out.exists() and not (tmp_path / "cache").exists()  # refused before any file or demo data


def test_region_source_helper_says_what_auto_chose(capsys):
    from asa.api.machinery.dataset import region_source
    from asa.train.distributed import DistEnv

    data = load_config("finetune", "data=ibsr").data
    assert region_source(data, [], network=None, env=DistEnv()) is None
    regions = region_source(data, ["task.focal_weight=1.0"], network=None, env=DistEnv())
    assert regions.source == "cluster"
    assert "data.regions.source=auto: task.focal_weight=1.0 need(s) region maps; using cluster" in capsys.readouterr().err
    label = load_config("finetune", "data=ibsr", "data.regions.source=label").data
    assert region_source(label, ["task.focal_weight=1.0"], network=None, env=DistEnv()).source == "label"
    assert capsys.readouterr().err == ""  # an explicit source is used as given


def test_predictor_refuses_a_checkpoint_fed_label_regions(tmp_path):
    """A checkpoint trained with label regions in its network (before the refusal) is not used to predict."""
    import dataclasses

    from asa.data import get_task
    from asa.io import save_checkpoint
    from asa.models import ASASegmenter, network_spec

    net = ASASegmenter(img_size=32, out_channels=4, region_attention="alternate", feature_size=8, embed_dim=24,
                       depth=4, num_heads=2, window_size=8)
    config = {"task": dataclasses.asdict(get_task("ibsr")), "segmenter": {}, "data": {"regions": {"source": "label"}}}
    path = tmp_path / "best.pt"
    save_checkpoint(path, {"model": net.state_dict(), "network": network_spec(net), "config": config})
    with pytest.raises(ValueError, match=rf"checkpoint {path}: data.regions.source=label .*region attention"):
        Predictor.from_checkpoint(path, device=torch.device("cpu"))
    config["data"]["regions"]["source"] = "cluster"
    save_checkpoint(path, {"model": net.state_dict(), "network": network_spec(net), "config": config})
    assert Predictor.from_checkpoint(path, device=torch.device("cpu")).regions.source == "cluster"


@pytest.mark.slow
def test_label_regions_accepted_for_the_loss_only_focal_term(tmp_path):
    out = tmp_path / "run"
    result = finetune(compose_config("finetune", [
        "data=ibsr", "data.demo.cases=4", "data.demo.size=32", "data.crop=32", "data.num_workers=0",
        "data.split.ratios=[3,1,0]", "data.regions.source=label", "task.focal_weight=1.0", "trainer=smoke",
        "device=cpu", f"data.demo.cache_dir={tmp_path / 'cache'}", f"output_dir={out}"]))
    assert result.nonfinite_steps == 0 and result.step >= 1
    assert load_checkpoint(out / "checkpoints" / "last.pt")["config"]["data"]["regions"]["source"] == "label"


@pytest.mark.slow
def test_rat_presets_pretrain_then_finetune(tmp_path):
    cache = tmp_path / "cache"
    common = ["trainer=smoke", "device=cpu", f"data.demo.cache_dir={cache}", "data.demo.size=40"]
    out = tmp_path / "pretrain"
    result = pretrain(compose_config("pretrain", [
        "experiment=rat_asa", f"output_dir={out}", "data.crop=32", "data.demo.cases=4", *common]))
    assert result.nonfinite_steps == 0
    export = load_checkpoint(out / "checkpoints" / "encoder.pt")
    assert export["network"]["kwargs"]["region_attention"] == "alternate"
    ft = tmp_path / "finetune"
    result = finetune(compose_config("finetune", [
        "data=ibsr", "data.demo.cases=5", "data.split.ratios=[3,1,1]", "data.crop=32", "data.num_workers=0",
        "model.region_attention=alternate", f"model.pretrained={out / 'checkpoints' / 'encoder.pt'}",
        "task.focal_weight=1.0", f"output_dir={ft}", *common]))  # data.regions.source=auto: cluster
    assert result.nonfinite_steps == 0 and result.best_metric is not None
    assert load_checkpoint(ft / "checkpoints" / "best.pt")["config"]["data"]["regions"]["source"] == "cluster"
    # asa-predict's path rebuilds the network and its region source from the checkpoint
    predictor = Predictor.from_checkpoint(ft / "checkpoints" / "best.pt", device=torch.device("cpu"))
    assert capabilities(predictor.model).regions and predictor.regions.source == "cluster"
    case = discover("ibsr", next((cache / "demo").glob("ibsr-*")))[0]
    written = predict_cases(predictor, [case], tmp_path / "pred", progress=False)
    pred = load_volume(written[0], label=True)
    assert pred.array.shape == load_volume(case.label, label=True).array.shape and pred.array.max() > 0
