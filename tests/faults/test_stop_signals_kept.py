"""A stop signal (SIGTERM) during asa-preprocess or asa-predict ends the job with 143 and says what it
kept (the finished cases stay), instead of "nothing to save"."""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import signal

import pytest
import torch

from asa.api import predict, preprocess
from asa.api.config import compose_config
from asa.cli.common import entry
from asa.data import get_task, write_demo_dataset
from asa.io import save_checkpoint
from asa.models import PRESETS, build_network, network_spec


def test_sigterm_during_preprocess_says_which_cases_are_kept(tmp_path, monkeypatch, capsys):
    import asa.data.store_writer as P

    real_run = P._run

    def run_then_stop(jobs, workers):  # the first case finishes, then the scheduler sends SIGTERM
        for i, result in enumerate(real_run(jobs, 0)):
            yield result
            if i == 0:
                os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(P, "_run", run_then_stop)
    store = tmp_path / "store"
    cfg = compose_config("preprocess", ["data=demo", "data.demo.cases=3", "data.demo.size=32",
                                        f"data.demo.cache_dir={tmp_path / 'cache'}", f"data.store={store}",
                                        "progress=false", "workers=1"])
    with pytest.raises(SystemExit) as stop:
        entry("asa-preprocess", preprocess, cfg)
    err = capsys.readouterr().err
    assert stop.value.code == 128 + signal.SIGTERM
    assert "nothing to save" not in err
    assert "stopped by SIGTERM (kept: 1 of 3 case(s) preprocessed in this run" in err
    assert len([p for p in (store / "cases").glob("*.json") if not p.name.startswith(".")]) == 1
    assert not (store / "run.lock").exists()  # the lock was given back on the way out
    monkeypatch.setattr(P, "_run", real_run)
    report = preprocess(cfg)  # the rerun processes the rest only
    assert len(report.processed) == 2 and report.unchanged == 1


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])  # Ctrl-C as SIGTERM
def test_a_stop_signal_during_predict_says_which_predictions_are_kept(signum, code, tmp_path, monkeypatch, capsys):
    segmentation = importlib.import_module("asa.api.tasks.segmentation")  # the segmentation task's prediction
    data = write_demo_dataset("brats", tmp_path / "brats", cases=3, size=16, seed=0)
    task = get_task("brats")
    tiny = {k: v for k, v in PRESETS["tiny"].items() if not k.startswith("decoder")}
    net = build_network({"arch": "swvit_unetr", "kwargs": dict(img_size=16, in_channels=len(task.channels),
                                                      out_channels=task.num_outputs, **tiny)})
    ckpt = save_checkpoint(tmp_path / "a.pt", {"model": net.state_dict(), "network": network_spec(net),
                                               "config": {"task": dataclasses.asdict(task)}})
    real, calls = segmentation.predict_case, []

    def stop_at_the_second(*args, **kwargs):
        calls.append(args)
        if len(calls) == 2:
            os.kill(os.getpid(), signum)  # after the first case is written and recorded
        return real(*args, **kwargs)

    monkeypatch.setattr(segmentation, "predict_case", stop_at_the_second)
    out = tmp_path / "preds"
    cfg = compose_config("predict", [f"checkpoint={ckpt}", f"input={data}", f"output={out}", "device=cpu", "amp=off"])
    with pytest.raises(SystemExit) as stop:
        entry("asa-predict", predict, cfg)
    err = capsys.readouterr().err
    assert stop.value.code == code and "nothing to save" not in err and "Traceback" not in err
    assert f"stopped by {signum.name} (kept: 1 of 3 prediction(s) written in this run to {out}, recorded in " \
           "predictions.json; continue " in err and "resume=true" in err
    assert len(json.loads((out / "predictions.json").read_text())["cases"]) == 1
