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


@pytest.mark.parametrize("override, match", [("amp=fp16", "amp=fp16 needs a CUDA device"), ("amp=fp8", "amp='fp8'"),
                                             ("threads=0", "threads=0")])
def test_predict_precision_and_threads_are_checked_first(tmp_path, override, match):
    from asa.cli.predict import run

    cfg = compose_config("predict", [f"checkpoint={tmp_path / 'none.pt'}", f"input={tmp_path}",
                                     f"output={tmp_path / 'out'}", "device=cpu", override])
    with pytest.raises(ValueError, match=match):
        run(cfg)


def test_trainer_precision_threads_compile_defaults():
    cfg = compose_config("finetune", [])
    assert (cfg.trainer.amp, cfg.trainer.threads, cfg.trainer.compile) == ("auto", None, False)
    cfg = compose_config("predict", ["checkpoint=c", "input=i", "output=o"])
    assert (cfg.amp, cfg.threads, cfg.compile) == ("auto", None, False)
