"""Run directories keep their history: refusals change nothing, one writer per run, honest endings,
bad volumes stopped before the first step. Tiny runs (trainer=smoke, 32^3) on CPU."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra.errors import HydraException
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from asa.api import finetune
from asa.api import pretrain
from asa.api.machinery.rundir import LOCK_NAME, RunDirError, RunLock
from asa.data import write_demo_dataset
from asa.io import load_checkpoint
from asa.train import IncompatibleCheckpointError
from asa.api.config import compose_config
from tests.fixtures.runs import child_env, pretrain_overrides
from tests.fixtures.volumes import damage




@pytest.fixture(scope="module")
def demo_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("demo-cache")


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _cli(module: str, args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=child_env(),
                          timeout=300, **kwargs)


@pytest.mark.slow
def test_rerun_refused_resume_refused_overwrite_moves_aside(tmp_path, demo_cache):
    out = tmp_path / "run"
    pretrain(compose_config("pretrain", pretrain_overrides(out, demo_cache)))
    before = snapshot(out)
    assert not (out / LOCK_NAME).exists()  # released at the end

    proc = _cli("asa.cli.pretrain", pretrain_overrides(out, demo_cache))  # the same command again
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "already holds a run" in proc.stderr and "resume=true" in proc.stderr
    assert f"output_dir={out}-new" in proc.stderr and "resume=false" not in proc.stderr
    assert "step " not in proc.stderr  # stopped before any training
    assert snapshot(out) == before  # every file byte-identical, nothing added

    with pytest.raises(IncompatibleCheckpointError) as info:  # a refused resume leaves config.yaml alone
        pretrain(compose_config("pretrain", pretrain_overrides(out, demo_cache, "resume=true", "model.depth=2")))
    assert "model.depth" in str(info.value) and "resume=false" not in str(info.value)
    assert snapshot(out) == before

    pretrain(compose_config("pretrain", pretrain_overrides(out, demo_cache, "overwrite=true")))
    moved = [p for p in tmp_path.iterdir() if p.name.startswith("run.replaced-")]
    assert len(moved) == 1 and snapshot(moved[0]) == before  # the old run, intact, under a new name
    assert (out / "checkpoints" / "last.pt").is_file() and not (out / "config_history.yaml").exists()

    pretrain(compose_config("pretrain", pretrain_overrides(out, demo_cache, "resume=true", "trainer.max_steps=3",
                                                   "trainer.epochs=2")))
    history = (out / "config_history.yaml").read_text()
    assert "trainer.max_steps" in history and "was: 2" in history and "now: 3" in history
    assert "max_steps: 2" in (out / "config.yaml").read_text()  # the record of the run's start stays


def test_stale_lock_is_taken_over_and_a_live_one_refuses(tmp_path, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = RunLock(tmp_path)
    lock.path.write_text('{"host": "%s", "pid": %d, "started": "then", "command": "x"}'
                         % (os.uname().nodename, dead.pid))
    lock.acquire("asa-pretrain")
    assert "taking over the stale lock" in capsys.readouterr().err
    assert str(os.getpid()) in lock.path.read_text()
    other = RunLock(tmp_path)
    with pytest.raises(RunDirError, match=f"pid {os.getpid()} on this host"):
        other.acquire("asa-pretrain")
    lock.release()
    assert not lock.path.exists()


@pytest.mark.slow
def test_sigterm_stops_early_without_export_and_a_second_job_is_refused(tmp_path, demo_cache):
    out = tmp_path / "run"
    args = pretrain_overrides(out, demo_cache, "trainer.max_steps=null", "trainer.epochs=200", "trainer.progress=true",
                      "trainer.log_every=1")
    log = tmp_path / "stderr.log"
    with open(log, "w") as err:  # stderr is a file, as under a scheduler: plain lines, no bar
        proc = subprocess.Popen([sys.executable, "-m", "asa.cli.pretrain", *args], stdout=subprocess.PIPE,
                                stderr=err, text=True, env=child_env())
        deadline = time.time() + 120
        while "step 2/" not in log.read_text() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        with pytest.raises(RunDirError, match=f"in use by another job: pid {proc.pid}"):
            pretrain(compose_config("pretrain", pretrain_overrides(out, demo_cache, "resume=auto")))
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=120)
    text = log.read_text()
    assert proc.returncode == 128 + signal.SIGTERM, text[-2000:]
    plain = [ln for ln in text.splitlines() if ln.startswith("step 1/")]
    assert plain and all(k in plain[0] for k in ("loss", "lr", "samples/s", "ETA"))
    assert "\r" not in text  # no progress bar redraws in a log file
    step = load_checkpoint(out / "checkpoints" / "last.pt")["step"]
    assert f"stopped early at step {step}" in text and "resume=true" in text
    assert not (out / "checkpoints" / "encoder.pt").exists() and "finished" not in text
    assert not (out / LOCK_NAME).exists()


@pytest.mark.slow
def test_damaged_volumes_stop_before_the_first_step_or_are_skipped(tmp_path):
    root = write_demo_dataset("brats", tmp_path / "brats", cases=7, size=32, seed=0)
    faults = damage(root)
    args = ["data=brats", f"data.root={root}", "model=tiny", "trainer=smoke", "device=cpu", "data.crop=32",
            "data.num_workers=0", "trainer.batch_size=1"]
    out = tmp_path / "error"
    proc = _cli("asa.cli.finetune", [*args, f"output_dir={out}"])
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "step " not in proc.stderr
    for path, words in faults.values():
        assert any(str(path) in ln and words in ln for ln in proc.stderr.splitlines()), (path, proc.stderr)
    assert "data.on_bad_case=skip" in proc.stderr and not (out / "config.yaml").exists()

    out = tmp_path / "skip"
    result = finetune(compose_config("finetune", [*args, f"output_dir={out}", "data.on_bad_case=skip"]))
    assert result.step >= 1
    skipped = json.loads((out / "bad_cases.json").read_text())["skipped"]
    assert sorted(s["id"] for s in skipped) == sorted(faults)
    events = EventAccumulator(str(out / "tb"))
    events.Reload()  # fine-tuning panels on a validation case, one labelled tag per row
    assert {"finetune/1_image", "finetune/2_label", "finetune/3_prediction"} <= set(events.Tags()["images"])


def test_a_bad_trainer_value_stops_before_anything_is_written(tmp_path, demo_cache):
    out = tmp_path / "run"
    with pytest.raises(HydraException) as info:  # refused while composing, naming the key
        compose_config("pretrain", pretrain_overrides(out, demo_cache, "trainer.epochs=ten"))
    assert "trainer.epochs" in f"{info.value} {info.value.__cause__}"
    cfg = compose_config("pretrain", pretrain_overrides(out, demo_cache))
    cfg.trainer.mode = "up"  # a value of the right type that the engine refuses
    with pytest.raises(ValueError, match="trainer.mode"):
        pretrain(cfg)
    assert not out.exists() or not any(out.iterdir())


def test_resume_is_decided_and_checked_once_by_the_run_directory(tmp_path, monkeypatch):
    """prepare_run_dir picks the checkpoint (resume=true|auto|PATH), checks it and reads it once; the
    engine continues from that read instead of deciding and loading again."""
    import asa.train.resume
    from asa.api.machinery.rundir import prepare_run_dir
    from asa.io import save_checkpoint
    from asa.train import TrainConfig
    from asa.train.distributed import DistEnv

    from tests.train.toy import ToyData, make_engine

    cfg, out = {"model": {"width": 16}}, tmp_path / "run"

    def run_dir(resume, run_config=cfg):
        return prepare_run_dir(out, app="toy", resume=resume, overwrite=False, run_config=run_config,
                               compat_keys=["model"], env=DistEnv())

    with pytest.raises(RunDirError, match=r"resume=true but .*last.pt does not exist"):
        run_dir(True)
    fresh = run_dir("auto")  # nothing to continue: a fresh run
    assert fresh.resume is None
    train = TrainConfig(epochs=1, batch_size=2, progress=False, log_every=1, max_steps=2)
    make_engine(out, config=train).fit(ToyData())
    fresh.release()

    reads = []
    real = asa.train.resume.load_checkpoint
    monkeypatch.setattr(asa.train.resume, "load_checkpoint", lambda *a, **k: reads.append(a[0]) or real(*a, **k))
    resumed = run_dir("auto")
    assert resumed.resume.path == out / "checkpoints" / "last.pt" and resumed.resume.state["step"] == 2
    engine = make_engine(out, config=TrainConfig(**{**train.__dict__, "max_steps": 4}))
    engine.resume = resumed.resume
    assert engine.fit(ToyData()).step == 4
    assert reads == [out / "checkpoints" / "last.pt"]  # read once, by the check
    resumed.release()

    with pytest.raises(IncompatibleCheckpointError, match=r"model\.width: .* has 16, config has 32"):
        run_dir(True, {"model": {"width": 32}})
    save_checkpoint(tmp_path / "other.pt", {"config": cfg, "model": {}})
    with pytest.raises(ValueError, match="not an asa training checkpoint"):
        run_dir(str(tmp_path / "other.pt"))
    with pytest.raises(RunDirError, match="no such checkpoint file"):
        run_dir(str(tmp_path / "missing.pt"))
