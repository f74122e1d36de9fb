"""A fine-tuning task registered from outside the package (here: the tests) is what asa-finetune,
asa-predict, asa-evaluate and asa-probe run for the ``data.task`` it claims: no job forks on the task's
name. The toy task's target is the brain's share of each crop; it trains a small convolutional regressor
through the shared skeleton (`FinetuneTask.finetune`), and ``task.width`` (its own setting) is the
regressor's number of channels."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn
from torch.utils.data import Dataset

from asa.api import FinetuneTask, compose_config, evaluate, finetune, load_config, predict, probe, register_finetune_task
from asa.api.tasks.case import CaseTask, Settings as CaseSettings
from asa.api.machinery.dataset import cases_of_split
from asa.api.machinery.run import OptionError
from asa.api.tasks import FINETUNE_TASKS, ProbeTargets, TaskSettings, finetune_task
from asa.data import discover, write_demo_dataset
from asa.eval.frozen import pooled_features, prepare_cases
from asa.eval.probe_cv import case_probes
from asa.io import atomic_write_json, load_checkpoint

TOY = "toy_brain_share"
SIZE = 16  # the crop edge the toy regressor sees


def brain_share(cases, size: int = SIZE) -> tuple[torch.Tensor, list[float]]:
    """([n, 1, size³] images, each case's brain voxels over its crop's voxels), on the pretraining crop."""
    prepared = prepare_cases(cases, size=(size,) * 3, channels=["t1"])
    return prepared.images, [float(b.float().mean()) for b in prepared.brain]


def regressor(width: int) -> nn.Module:
    """[B, 1, S, S, S] -> [B]: one strided convolution of ``width`` channels, pooled, then a linear map."""
    return nn.Sequential(nn.Conv3d(1, width, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool3d(1),
                         nn.Flatten(), nn.Linear(width, 1), nn.Flatten(0))


class Shares(Dataset):
    def __init__(self, cases) -> None:
        self.images, self.shares = brain_share(cases)

    def __len__(self) -> int:
        return len(self.shares)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "share": torch.tensor(self.shares[i])}


@dataclass
class ToySettings(TaskSettings):
    name: str = TOY
    width: int = 4  # channels of the regressor's convolution


class ToyTask(FinetuneTask):
    name = TOY
    Settings = ToySettings
    calls: list[tuple[str, object]] = []

    @classmethod
    def claims(cls, data_task: str) -> bool:
        return data_task == TOY

    def check(self, run):
        self.calls.append(("finetune", run.cfg))
        if run.cfg.task.width < 1:
            raise ValueError(f"task.width={run.cfg.task.width}: expected at least 1")
        run.cfg.trainer.monitor, run.cfg.trainer.mode = "val/mae", "min"  # recorded in the saved config

    def build_network(self, run, splits):
        run.crop = SIZE
        return regressor(run.cfg.task.width), {"name": TOY, "width": run.cfg.task.width}

    def datasets(self, run, splits):
        return Shares(splits["train"]), Shares(splits["val"]) if splits["val"] else None

    def training_step(self, run):
        return lambda model, batch: (nn.functional.mse_loss(model(batch["image"]), batch["share"]), {})

    def validator(self, run, dataset):
        def validate(model):
            return {"mae": float((model(dataset.images) - torch.tensor(dataset.shares)).abs().mean())}

        return validate

    def predict(self, cfg, state, checkpoint, inputs, setup):
        self.calls.append(("predict", state["config"]["outputs"]))
        model = regressor(state["config"]["outputs"]["width"])
        model.load_state_dict(state["model"])
        cases = discover("bids", Path(inputs), require_labels=False)
        with torch.no_grad():
            shares = model(brain_share(cases)[0]).tolist()
        out = Path(str(cfg.output))
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "shares.json", dict(zip([c.id for c in cases], shares)))
        return [out / "shares.json"]

    def evaluate(self, cfg):
        self.calls.append(("evaluate", cfg.data.task))
        predicted = json.loads((Path(str(cfg.pred)) / "shares.json").read_text())
        cases = discover("bids", Path(str(cfg.data.root)), require_labels=False)
        truth = dict(zip([c.id for c in cases], brain_share(cases)[1]))
        return {"max_error": max(abs(predicted[k] - truth[k]) for k in truth), "n": len(truth)}

    def probe_targets(self, cfg, root, layout):
        cases = cases_of_split(discover(layout, root, require_labels=False), cfg.split_file, str(cfg.subset),
                               where=str(root))
        values = brain_share(cases, 32)[1]

        def score(enc, groups, common):
            features = pooled_features(enc, prepare_cases(cases, size=enc.size, channels=["t1"]))
            return case_probes(features, values, kind="continuous", groups=groups, **common), features

        return ProbeTargets(cases, {"column": "brain share", "kind": "continuous"}, "continuous", score)


@pytest.fixture
def toy(tmp_path):
    register_finetune_task(ToyTask)
    ToyTask.calls.clear()
    yield ToyTask
    FINETUNE_TASKS.pop(TOY, None)


def _finetune_config(root: Path, out: Path, *extra: str):
    return compose_config("finetune", ["data=targets", f"data.task={TOY}", f"data.root={root}", "trainer=smoke",
                                       "trainer.max_steps=3", "trainer.epochs=3", "trainer.batch_size=2",
                                       "data.split.ratios=[4,2,0]", "data.num_workers=0", "device=cpu",
                                       f"output_dir={out}", *extra])


def test_a_registered_task_claims_its_name_and_leaves_the_others(toy):
    assert isinstance(finetune_task(TOY), toy)
    assert finetune_task("case").name == "case" and finetune_task("brats").name == "segmentation"
    with pytest.raises(ValueError, match="registered already"):
        register_finetune_task(type("Other", (ToyTask,), {}))


def test_the_task_trains_through_the_skeleton_with_its_own_option(toy, tmp_path):
    root = write_demo_dataset("bids", tmp_path / "bids", cases=6, size=SIZE + 4, seed=0)
    result = finetune(_finetune_config(root, tmp_path / "run", f"task={TOY}", "task.width=3"))
    assert result.step == 3 and all(h["loss"] == h["loss"] for h in result.history if "loss" in h)
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["task"] == {"name": TOY, "width": 3}  # the task's settings, as the run read them
    assert saved["outputs"] == {"name": TOY, "width": 3} and saved["trainer"]["monitor"] == "val/mae"
    best = load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")
    assert best["model"]["0.weight"].shape == (3, 1, 3, 3, 3)  # task.width=3 set what was trained
    assert not torch.equal(best["model"]["0.weight"], _initial(3))  # and it was trained
    assert toy.calls[0][0] == "finetune" and toy.calls[0][1].task == ToySettings(width=3)
    assert [h for h in result.history if "val/mae" in h]  # validated by the task's validator


def _initial(width: int) -> torch.Tensor:
    torch.manual_seed(0)  # the skeleton seeds with cfg.seed before building
    return regressor(width)[0].weight.detach()


def test_an_unknown_task_option_is_refused_naming_it(toy, tmp_path):
    root = tmp_path / "none"
    with pytest.raises(ValueError, match="task.x"):
        load_config("finetune", "data=targets", f"data.task={TOY}", f"task={TOY}", "task.x=1")
    with pytest.raises(OptionError, match=rf"task.x=1: task {TOY} has no such option; it takes width"):
        finetune(_finetune_config(root, tmp_path / "run", f"task={TOY}", "+task.x=1"))
    with pytest.raises(OptionError, match="task.width=0: expected at least 1"):
        finetune(_finetune_config(root, tmp_path / "run", f"task={TOY}", "task.width=0"))
    assert not (tmp_path / "run").exists()  # refused before the run folder was touched


def test_every_job_runs_the_task_that_claims_data_task(toy, tmp_path):
    root = write_demo_dataset("bids", tmp_path / "bids", cases=6, size=SIZE + 4, seed=0)
    fit = finetune(_finetune_config(root, tmp_path / "run"))  # data.task alone: the toy's default settings
    assert fit.step == 3 and toy.calls[0][1].task == ToySettings()

    ckpt = tmp_path / "run" / "checkpoints" / "last.pt"
    written = predict(compose_config("predict", [f"checkpoint={ckpt}", f"input={root}", f"output={tmp_path / 'pred'}"]))
    assert written == [tmp_path / "pred" / "shares.json"] and toy.calls[-1] == ("predict", {"name": TOY, "width": 4})

    summary = evaluate(compose_config("evaluate", ["data=targets", f"data.task={TOY}", f"data.root={root}",
                                                   f"pred={tmp_path / 'pred'}", f"output={tmp_path / 'eval'}"]))
    assert summary["n"] == 6 and 0 <= summary["max_error"] < 1 and toy.calls[-1] == ("evaluate", TOY)


def test_the_probes_fit_the_task_s_target(toy, tmp_path):
    root = write_demo_dataset("bids", tmp_path / "bids", cases=8, size=36, seed=1)
    torch.manual_seed(0)
    record = probe(compose_config("probe", ["encoders=[random:tiny]", "data=targets", f"data.task={TOY}",
                                            f"data.root={root}", f"output={tmp_path / 'probe'}", "device=cpu",
                                            "folds=2", "bootstrap=20", "knn_k=2"]))
    assert record["target"] == {"column": "brain share", "kind": "continuous"}
    assert record["table"] == ["ridge/r2", "ridge/mae", "knn/r2", "knn/mae"] and record["data"]["n"] == 8
    assert (tmp_path / "probe" / "probe.json").is_file()


@dataclass
class MyCaseSettings(CaseSettings):
    name: str = "my_case"


class MyCaseTask(CaseTask):
    """A plug-in case task: the built-in one's jobs under its own name."""

    name = "my_case"
    Settings = MyCaseSettings


def test_a_plug_in_case_task_s_checkpoints_record_its_own_name_and_predict_as_it(tmp_path):
    register_finetune_task(MyCaseTask)
    try:
        root = write_demo_dataset("bids", tmp_path / "bids", cases=6, size=32, seed=0, targets=True)
        finetune(compose_config("finetune", [
            "data=targets", "data.task=my_case", "task=my_case", "task.target=age", f"data.root={root}", "model=tiny",
            "data.crop=32", "trainer=smoke", "trainer.max_steps=1", "data.split.ratios=[4,2,0]", "data.num_workers=0",
            "device=cpu", f"output_dir={tmp_path / 'run'}"]))
        ckpt = tmp_path / "run" / "checkpoints" / "last.pt"
        assert load_checkpoint(ckpt)["config"]["outputs"]["name"] == "my_case"
        assert isinstance(finetune_task("my_case"), MyCaseTask) and not MyCaseTask.claims("case")
        written = predict(compose_config("predict", [f"checkpoint={ckpt}", f"input={root}", "device=cpu",
                                                     f"output={tmp_path / 'pred'}", "crops=centre"]))
        assert written == [tmp_path / "pred" / "predictions.csv"] and len(written[0].read_text().splitlines()) == 7
    finally:
        FINETUNE_TASKS.pop("my_case", None)
