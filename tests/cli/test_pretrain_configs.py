"""Every Hydra config composes, presets match the models, experiment files differ only where they should."""
from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from asa.models import PRESETS
from asa.train import TrainConfig
from asa.train.config_files import compose_config, config_path

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _names(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


EXPERIMENTS = {"mae": ("none", "uniform"), "a_ssl": ("none", "attentive"), "spe_ssl": ("mirror", "uniform"),
               "asa": ("mirror", "attentive")}


def test_groups_are_complete():
    assert {"base", "small", "tiny"} <= set(_names("model"))
    assert {"demo", "adni", "oasis", "brats", "ibsr", "wmh", "msd"} <= set(_names("data"))
    assert {"adamw", "sgd"} <= set(_names("optim"))
    assert {"default", "smoke"} <= set(_names("trainer"))
    assert set(EXPERIMENTS) <= set(_names("experiment"))


@pytest.mark.parametrize("model, trainer, optim", list(itertools.product(sorted(PRESETS), _names("trainer"), _names("optim"))))
def test_model_trainer_optim_compose(model, trainer, optim):
    cfg = compose_config("pretrain", [f"model={model}", f"trainer={trainer}", f"optim={optim}"])
    assert OmegaConf.to_container(cfg.model) == {**OmegaConf.to_container(cfg.model), **PRESETS[model]}
    TrainConfig.from_dict({**OmegaConf.to_container(cfg.trainer), "schedule": cfg.optim.schedule})
    assert optim.startswith(cfg.optim.name)  # adamw_demo is AdamW with the demo lr


@pytest.mark.parametrize("data", _names("data"))
def test_every_data_preset_composes(data):
    cfg = compose_config("pretrain", [f"data={data}", "data.root=/some/root"])
    assert cfg.data.name == data
    for key in ("layout", "root", "on_bad_case", "cache_dir", "num_workers", "split"):
        assert key in cfg.data, (data, key)
    assert "seed" in cfg.data.split and "ratios" in cfg.data.split
    if "task" in cfg.data:  # fine-tuning presets: the pretraining crop by default, demo phantoms in the same layout
        assert cfg.data.patch_size is None and cfg.data.demo.layout == cfg.data.layout
    else:  # pretraining presets: the paper's augmentation (the brain-centred crop only) by default
        assert cfg.data.size > 0 and list(cfg.data.channels) == ["t1"] and cfg.data.augment is False


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_experiments_state_only_their_differences(name):
    base = OmegaConf.to_container(compose_config("pretrain", []), resolve=True)
    cfg = OmegaConf.to_container(compose_config("pretrain", [f"experiment={name}"]), resolve=True)
    assert (cfg["mae"]["pos_mode"], cfg["mae"]["loss_weighting"]) == EXPERIMENTS[name]
    for key in ("pos_mode", "loss_weighting"):
        cfg["mae"].pop(key), base["mae"].pop(key)
    assert cfg == base


def test_required_root_and_defaults():
    cfg = compose_config("pretrain", ["data=adni"])
    assert OmegaConf.is_missing(cfg.data, "root")
    default = compose_config("pretrain", [])
    assert (default.data.name, default.data.size, default.model.embed_dim) == ("demo", 64, PRESETS["tiny"]["embed_dim"])
    assert default.device == "auto" and default.resume is False and "${" not in str(default.output_dir)


def test_config_path_points_at_real_files():
    path = config_path()
    assert path.startswith("pkg://") or (Path(path) / "pretrain.yaml").is_file()


def test_help_lists_groups_and_usage():
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, "-m", "asa.cli.pretrain", "--help"], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "asa-pretrain" in proc.stdout
    section = proc.stdout.split("== Config groups")[1].split("==\n")[1].split("== ")[0]
    groups = {line.split(":")[0]: line for line in section.splitlines() if ":" in line}
    assert all(name in groups["experiment"] for name in EXPERIMENTS)
    assert all(name in groups["model"] for name in PRESETS)


def test_bids_preset_and_its_named_presets():
    generic = OmegaConf.to_container(compose_config("pretrain", ["data=bids", "data.root=/r"]).data)
    for name in ("adni", "oasis"):
        named = OmegaConf.to_container(compose_config("pretrain", [f"data={name}", "data.root=/r"]).data)
        assert named == {**generic, "name": name}


def test_demo_data_learns_at_its_batch_and_real_data_keeps_the_paper_rule():
    demo = compose_config("pretrain", [])
    assert (demo.optim.name, demo.optim.scale_lr, demo.optim.base_lr) == ("adamw", False, 3e-3)
    assert demo.optim.betas == [0.9, 0.95] and demo.optim.weight_decay == 0.05
    paper = compose_config("pretrain", ["data=adni"])
    assert (paper.optim.scale_lr, paper.optim.base_lr) == (True, 1.5e-4)
    assert compose_config("pretrain", ["optim=adamw"]).optim.scale_lr is True  # the command line still wins


def test_finetune_defaults_are_the_papers():
    cfg = compose_config("finetune", [])
    assert (cfg.optim.encoder_lr_scale, cfg.optim.layer_decay, cfg.optim.freeze_encoder_epochs) == (1.0, 1.0, 0)
    assert cfg.segmenter.input_skip == "full"
    assert compose_config("pretrain", []).probe.every == 1


@pytest.mark.parametrize("overrides, lr, warned", [(["optim=adamw"], 1.5e-4 * 2 / 256, True), ([], 3e-3, False)])
def test_effective_lr_is_printed_with_its_rule(capsys, overrides, lr, warned):
    from asa.cli.common import optimizer_and_config
    from asa.models import ASA
    from asa.train.distributed import DistEnv

    cfg = compose_config("pretrain", overrides)
    model = ASA(img_size=16, **PRESETS["tiny"])
    optimizer, got, _ = optimizer_and_config(cfg, model, DistEnv())
    err = capsys.readouterr().err
    assert got == pytest.approx(lr) and optimizer.param_groups[0]["lr"] == pytest.approx(lr)
    assert "peak learning rate" in err and ("× global batch 2 / 256 = 1.17e-06" in err) == warned
    assert ("below 1e-05" in err) == warned
