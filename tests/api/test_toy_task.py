"""A fine-tuning task registered from outside the package (here: the tests) is what asa-finetune,
asa-predict, asa-evaluate and asa-probe run for the ``data.task`` it claims: no job forks on the task's
name. The toy task's target is the brain's share of each crop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from asa.api import FinetuneTask, compose_config, evaluate, finetune, predict, probe, register_finetune_task
from asa.api.common import cases_of_split
from asa.api.tasks import FINETUNE_TASKS, ProbeTargets, finetune_task
from asa.data import discover, write_demo_dataset
from asa.eval.frozen import pooled_features, prepare_cases
from asa.eval.probe_cv import case_probes
from asa.io import atomic_write_json, save_checkpoint

TOY = "toy_brain_share"


def brain_share(cases, size: int) -> list[float]:
    """Each case's brain voxels over its crop's voxels (the pretraining crop, `prepare_cases`)."""
    images = prepare_cases(cases, size=(size,) * 3, channels=["t1"])
    return [float(b.float().mean()) for b in images.brain]


class ToyTask(FinetuneTask):
    name = TOY
    calls: list[tuple[str, object]] = []

    @classmethod
    def claims(cls, data_task: str) -> bool:
        return data_task == TOY

    def finetune(self, cfg):
        self.calls.append(("finetune", cfg))
        return {"task": self.name, "output_dir": cfg.output_dir}

    def predict(self, cfg, state, checkpoint, inputs, setup):
        self.calls.append(("predict", state["config"]["task"]))
        cases = discover("bids", Path(inputs), require_labels=False)
        out = Path(str(cfg.output))
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "shares.json", dict(zip([c.id for c in cases], brain_share(cases, 32))))
        return [out / "shares.json"]

    def evaluate(self, cfg):
        self.calls.append(("evaluate", cfg.data.task))
        predicted = json.loads((Path(str(cfg.pred)) / "shares.json").read_text())
        cases = discover("bids", Path(str(cfg.data.root)), require_labels=False)
        truth = dict(zip([c.id for c in cases], brain_share(cases, 32)))
        return {"max_error": max(abs(predicted[k] - truth[k]) for k in truth), "n": len(truth)}

    def probe_targets(self, cfg, root, layout):
        cases = cases_of_split(discover(layout, root, require_labels=False), cfg.split_file, str(cfg.subset),
                               where=str(root))
        values = brain_share(cases, 32)

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


def test_a_registered_task_claims_its_name_and_leaves_the_others(toy):
    assert isinstance(finetune_task(TOY), toy)
    assert finetune_task("case").name == "case" and finetune_task("brats").name == "segmentation"
    with pytest.raises(ValueError, match="registered already"):
        register_finetune_task(type("Other", (ToyTask,), {}))


def test_every_job_runs_the_task_that_claims_data_task(toy, tmp_path):
    root = write_demo_dataset("bids", tmp_path / "bids", cases=6, size=36, seed=0)
    fit = finetune(compose_config("finetune", ["data=targets", f"data.task={TOY}", f"data.root={root}",
                                               f"output_dir={tmp_path / 'run'}"]))
    assert fit == {"task": TOY, "output_dir": str(tmp_path / "run")}
    assert toy.calls[0][0] == "finetune" and toy.calls[0][1].data.task == TOY  # the checked, typed config

    ckpt = save_checkpoint(tmp_path / "best.pt", {"config": {"task": {"name": TOY}}, "model": {}})
    written = predict(compose_config("predict", [f"checkpoint={ckpt}", f"input={root}", f"output={tmp_path / 'pred'}"]))
    assert written == [tmp_path / "pred" / "shares.json"] and toy.calls[-1] == ("predict", {"name": TOY})

    summary = evaluate(compose_config("evaluate", ["data=targets", f"data.task={TOY}", f"data.root={root}",
                                                   f"pred={tmp_path / 'pred'}", f"output={tmp_path / 'eval'}"]))
    assert summary == {"max_error": 0.0, "n": 6} and toy.calls[-1] == ("evaluate", TOY)


def test_the_probes_fit_the_task_s_target(toy, tmp_path):
    root = write_demo_dataset("bids", tmp_path / "bids", cases=8, size=36, seed=1)
    torch.manual_seed(0)
    record = probe(compose_config("probe", ["encoders=[random:tiny]", "data=targets", f"data.task={TOY}",
                                            f"data.root={root}", f"output={tmp_path / 'probe'}", "device=cpu",
                                            "folds=2", "bootstrap=20", "knn_k=2"]))
    assert record["target"] == {"column": "brain share", "kind": "continuous"}
    assert record["table"] == ["ridge/r2", "ridge/mae", "knn/r2", "knn/mae"] and record["data"]["n"] == 8
    assert (tmp_path / "probe" / "probe.json").is_file()
