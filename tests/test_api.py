"""The typed Python API: typed configs in, the same jobs the console scripts run."""
from __future__ import annotations

import dataclasses
import json

import pytest
from omegaconf import OmegaConf

from asa.api import (EvaluateConfig, FinetuneConfig, PredictConfig, PretrainConfig, compose_config, evaluate,
                     finetune, load_config, predict, pretrain)
from asa.data import write_demo_dataset
from asa.io import load_checkpoint
from asa.train import TrainerSettings


@pytest.mark.parametrize("name, kind", [("pretrain", PretrainConfig), ("finetune", FinetuneConfig),
                                        ("predict", PredictConfig), ("evaluate", EvaluateConfig)])
def test_load_config_gives_the_typed_defaults_of_the_console_script(name, kind):
    overrides = {"predict": ["checkpoint=c.pt", "input=in", "output=out"], "evaluate": ["output=out"]}.get(name, [])
    cfg = load_config(name, *overrides)
    assert isinstance(cfg, kind) and dataclasses.is_dataclass(cfg)
    composed = OmegaConf.to_container(compose_config(name, overrides), resolve=True)
    assert OmegaConf.to_container(OmegaConf.structured(cfg)) == composed  # same values, typed
    if name in ("pretrain", "finetune"):
        assert isinstance(cfg.trainer, TrainerSettings)


def test_jobs_check_their_config():
    cfg = load_config("pretrain")
    with pytest.raises(TypeError, match="expected an asa.api.PretrainConfig"):
        pretrain(load_config("finetune"))
    cfg.trainer = {"epochs": 1}  # not a TrainConfig
    with pytest.raises((ValueError, TypeError)):
        pretrain(cfg)
    with pytest.raises(ValueError, match="trainer.epocs"):
        pretrain(compose_config("pretrain", ["+trainer.epocs=3"]))


@pytest.mark.slow
def test_pretrain_finetune_predict_evaluate_from_python(tmp_path):
    """The notebook example of docs/python-api.md: four typed configs, no Hydra objects, no command line."""
    pre = load_config("pretrain", "model=tiny", "trainer=smoke")
    pre.output_dir = str(tmp_path / "pre")
    pre.device = "cpu"
    pre.probe.every = 0
    pre.data.crop, pre.data.demo.size, pre.data.demo.cases = 32, 40, 6
    pre.data.demo.cache_dir = str(tmp_path / "cache")
    assert pretrain(pre).step == 2
    encoder = tmp_path / "pre" / "checkpoints" / "encoder.pt"
    assert encoder.is_file()

    root = write_demo_dataset("ibsr", tmp_path / "ibsr", cases=5, size=40, seed=1)
    ft = load_config("finetune", "data=ibsr", "model=tiny", "trainer=smoke")
    ft.output_dir, ft.device = str(tmp_path / "ft"), "cpu"
    ft.data.root, ft.data.num_workers = str(root), 0
    ft.model.pretrained = str(encoder)
    ft.trainer.epochs = 2  # one step per epoch on the two training cases
    assert finetune(ft).step == 2
    ckpt = load_checkpoint(tmp_path / "ft" / "checkpoints" / "last.pt")
    assert ckpt["config"]["data"]["crop"] == 32  # the pretraining crop, recorded in encoder.pt

    pr = load_config("predict", f"checkpoint={tmp_path / 'ft' / 'checkpoints' / 'last.pt'}", f"input={root}",
                     f"output={tmp_path / 'pred'}", "device=cpu")
    assert len(predict(pr)) == 5

    ev = load_config("evaluate", "data=ibsr", f"output={tmp_path / 'eval'}")
    ev.data.root, ev.pred = str(root), str(tmp_path / "pred")
    ev.split_file, ev.subset = str(tmp_path / "ft" / "splits.json"), "test"
    summary = evaluate(ev)
    assert summary["n_cases"] == len(json.loads((tmp_path / "ft" / "splits.json").read_text())["test"])
    assert {"CSF", "GM", "WM"} <= set(summary)


def test_training_run_releases_the_run_folder_also_when_the_job_fails(tmp_path):
    from asa.api.machinery.run import TrainingRun
    from asa.api.machinery.rundir import LOCK_NAME

    cfg = OmegaConf.create({"device": "cpu", "output_dir": str(tmp_path / "run"), "resume": False,
                            "overwrite": False, "resume_must_match": ["model"]})
    with pytest.raises(RuntimeError, match="job failed"):
        with TrainingRun(cfg, "asa-pretrain") as run:
            assert run.env.world_size == 1 and run.dir is None
            run_dir = run.prepare_dir({"model": {"width": 16}})
            assert (run_dir.path / LOCK_NAME).is_file()  # held while the job runs
            raise RuntimeError("job failed")
    assert not (tmp_path / "run" / LOCK_NAME).exists()
    with TrainingRun(cfg, "asa-pretrain") as run:  # the folder is free again: a new job takes it
        run.prepare_dir({"model": {"width": 16}})
    assert not (tmp_path / "run" / LOCK_NAME).exists()


@pytest.mark.parametrize("local, world, resume", [
    (None, None, "asa-pretrain resume=true"),
    ("2", "2", "asa-torchrun --nproc_per_node=2 -m asa.cli.pretrain resume=true"),
    ("4", "8", "asa-torchrun --nnodes=2 --nproc_per_node=4 -m asa.cli.pretrain resume=true"),
])
def test_the_resume_line_is_the_command_that_resumes_under_torchrun(capsys, monkeypatch, local, world, resume):
    """Under torchrun the resume line names the launcher and its process count: the same script run as one
    process would continue on another schedule (its steps per epoch follow the world size)."""
    from types import SimpleNamespace

    from asa.api.machinery.training import training_ended
    from asa.train.distributed import DistEnv

    for name, value in (("LOCAL_WORLD_SIZE", local), ("WORLD_SIZE", world)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    env = DistEnv(world_size=int(world or 1), backend="gloo" if world else None)
    assert training_ended(SimpleNamespace(preempted=True, step=4, signal=15), env, "asa-pretrain") is False
    assert capsys.readouterr().err.rstrip().endswith(f"Resume with: {resume}")


def test_training_ended_says_how_to_resume_also_when_a_peer_rank_was_signalled(capsys):
    """A run stopped by a signal that reached another rank (signal number 0, unknown) prints the
    resume line instead of failing on the number; a finished run is marked finished."""
    from types import SimpleNamespace

    from asa.api.machinery.training import training_ended
    from asa.train.distributed import DistEnv

    stopped = SimpleNamespace(preempted=True, step=7, signal=0)
    assert training_ended(stopped, DistEnv(), "asa-finetune") is False
    err = capsys.readouterr().err
    assert "stopped early at step 7 (a stop signal on another rank); last.pt saved. Resume with:" in err
    assert training_ended(SimpleNamespace(preempted=True, step=3, signal=15), DistEnv(), "asa-pretrain",
                          unsaved=", no encoder.pt exported") is False
    assert "(SIGTERM); last.pt saved, no encoder.pt exported." in capsys.readouterr().err
    assert training_ended(SimpleNamespace(preempted=False, step=9, signal=None), DistEnv(), "asa-finetune") is True
