"""A user's Ctrl-C (SIGINT) is a stop like a scheduler's SIGTERM in every console script: what the docs
promise is kept, one line says so (with the resume command where there is one), exit 130, no
``KeyboardInterrupt`` traceback. Ctrl-C during asa-predict: tests/faults/test_stop_signals_kept.py, with SIGTERM."""
from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import time

import pytest

from asa.api.config import compose_config
from asa.cli.common import entry
from asa.data import write_demo_dataset
from asa.io import load_checkpoint
from tests.fixtures.runs import child_env, encoder_checkpoint, pretrain_overrides, probe_overrides



@pytest.mark.slow
def test_ctrl_c_during_pretraining_saves_last_pt_and_the_resume_continues(tmp_path):
    out, cache = tmp_path / "run", tmp_path / "cache"
    args = pretrain_overrides(out, cache, "trainer.max_steps=null", "trainer.epochs=200", "trainer.log_every=1",
                      "data.num_workers=1")
    log = tmp_path / "stderr.log"
    with open(log, "w") as err:  # its own process group, as a terminal's foreground job: the loader's worker gets it too
        proc = subprocess.Popen([sys.executable, "-m", "asa.cli.pretrain", *args], stdout=subprocess.DEVNULL,
                                stderr=err, env=child_env(), start_new_session=True)
        deadline = time.time() + 120
        while "step 3/" not in log.read_text() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=120)
    text = log.read_text()
    assert proc.returncode == 128 + signal.SIGINT, text[-2000:]
    assert "Traceback" not in text and "KeyboardInterrupt" not in text
    step = load_checkpoint(out / "checkpoints" / "last.pt")["step"]
    said = [ln for ln in text.splitlines() if "Resume with:" in ln]
    assert len(said) == 1 and f"stopped early at step {step} (SIGINT); last.pt saved" in said[0]
    assert said[0].endswith("resume=true") and not (out / "checkpoints" / "encoder.pt").exists()
    proc = subprocess.run([sys.executable, "-m", "asa.cli.pretrain", *args[:-1], "resume=true",
                           f"trainer.max_steps={step + 1}"], capture_output=True, text=True, env=child_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"at step {step} (epoch" in proc.stderr  # resumed where the Ctrl-C left it
    assert load_checkpoint(out / "checkpoints" / "last.pt")["step"] == step + 1


@pytest.mark.parametrize("module, target", [("asa.cli.demo_data", "data.write_demo_dataset"),
                                            ("asa.cli.prepare", "prepare")])
def test_ctrl_c_in_a_script_without_hydra_is_one_line_and_130(module, target, tmp_path, monkeypatch, capsys):
    cli = importlib.import_module(module)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(f"{module}.{target}", interrupted)
    argv = {"asa.cli.demo_data": ["--layout", "ibsr", "--out", str(tmp_path / "d")],
            "asa.cli.prepare": [str(tmp_path), str(tmp_path / "p")]}[module]
    assert cli.main(argv) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "stopped by SIGINT (" in err[0] and err[0].endswith("exit 130")


def test_ctrl_c_during_probe_says_nothing_was_written(tmp_path, monkeypatch, capsys):
    probe_module = importlib.import_module("asa.api.probe")  # asa.api.probe is also the function

    root = write_demo_dataset("bids", tmp_path / "bids", cases=6, size=32, seed=0, targets=True)
    real, calls = probe_module._probe_one, []

    def ctrl_c_at_the_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(probe_module, "_probe_one", ctrl_c_at_the_second)
    out = tmp_path / "out"
    a, b = encoder_checkpoint(tmp_path / "a.pt", 1), encoder_checkpoint(tmp_path / "b.pt", 2)
    cfg = compose_config("probe", probe_overrides(root, out, a, b, extra=["task=case", "task.target=age", "folds=2"]))
    with pytest.raises(SystemExit) as stop:
        entry("asa-probe", probe_module.probe, cfg)
    err = capsys.readouterr().err
    assert stop.value.code == 130 and "Traceback" not in err
    assert f"stopped by SIGINT (kept: nothing written to output={out}: 1 of 2 encoder(s) probed" in err
    assert not out.exists() or not any(out.iterdir())
