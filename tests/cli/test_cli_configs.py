"""Every fine-tuning / prediction / evaluation config composes; every console script answers --help."""
from __future__ import annotations

import itertools
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from asa.train.config_files import compose_config

SEG_DATA = ["brats", "ibsr", "wmh", "msd"]
SEG_MODELS = ["tiny", "small", "base", "unetr", "swin_unetr"]


@pytest.mark.parametrize("data, model", list(itertools.product(SEG_DATA, SEG_MODELS)))
def test_finetune_configs_compose(data, model):
    cfg = compose_config("finetune", [f"data={data}", f"model={model}"])
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["data"]["task"] == data and resolved["optim"]["name"] == "sgd"
    assert resolved["model"]["arch"] == ("asa" if model in ("tiny", "small", "base") else model)
    assert resolved["model"]["pretrained"] is None


@pytest.mark.parametrize("experiment, pos_mode", [("baseline", "none"), ("spe_only", "mirror")])
def test_finetune_table4_rows(experiment, pos_mode):
    cfg = compose_config("finetune", [f"experiment={experiment}"])
    assert cfg.segmenter.pos_mode == pos_mode and cfg.model.pretrained is None  # scratch rows


def test_predict_and_evaluate_configs_compose():
    cfg = compose_config("predict", ["checkpoint=c.pt", "input=[a.nii.gz,b.nii.gz]", "output=o"])
    assert list(cfg.input) == ["a.nii.gz", "b.nii.gz"] and cfg.overlap == 0.5 and not cfg.tta
    for data in SEG_DATA:
        cfg = compose_config("evaluate", ["pred=p", "output=o", f"data={data}"])
        assert cfg.data.task == data


def test_pretraining_refuses_fine_tuning_baselines():
    from asa.cli.pretrain import _model_kwargs

    with pytest.raises(ValueError, match="fine-tuning baseline"):
        _model_kwargs(compose_config("pretrain", ["model=unetr"]))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["pretrain", "finetune", "predict", "evaluate"])
def test_console_scripts_help(name):
    proc = subprocess.run([sys.executable, "-m", f"asa.cli.{name}", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"asa-{name}" in proc.stdout and "Usage" in proc.stdout
