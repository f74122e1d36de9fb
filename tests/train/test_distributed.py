"""Multi-process tests: torchrun + gloo DDP equivalence, and SIGKILL mid-run then resume."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from asa.io import CheckpointError, load_checkpoint

TOY = str(Path(__file__).with_name("toy.py"))
REPO = str(Path(__file__).resolve().parents[2])


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", ASA_DIST_TIMEOUT_S="60")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH")) if p)  # test this checkout
    env.pop("RANK", None), env.pop("WORLD_SIZE", None), env.pop("LOCAL_RANK", None)
    return env


def _run(args: list[str], nproc: int = 1, timeout: float = 120) -> subprocess.CompletedProcess:
    if nproc == 1:
        cmd = [sys.executable, TOY, *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", TOY, *args]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def _weights(out: Path) -> dict:
    return load_checkpoint(out / "checkpoints" / "last.pt")["model"]


@pytest.mark.slow
def test_two_process_gloo_ddp_matches_one_process_on_the_same_global_batch(tmp_path):
    # fp32: with bf16 autocast the kernels round differently for batch 4 and batch 2 (~1e-4)
    common = ["--max-steps", "2", "--dropout", "0", "--amp", "off"]
    _run(["--out", str(tmp_path / "one"), "--batch-size", "4", *common])
    # both DDP runs in one launch (toy.py's --then): its two ranks start (import asa) once
    _run(["--out", str(tmp_path / "ddp"), "--batch-size", "2", *common, "--then",
          "--out", str(tmp_path / "ddp_acc"), "--batch-size", "1", "--accum", "2", *common], nproc=2)
    ref = _weights(tmp_path / "one")
    for name in ("ddp", "ddp_acc"):
        got = _weights(tmp_path / name)
        for k in ref:
            assert torch.allclose(ref[k], got[k], atol=1e-6), (name, k)
        ckpt = load_checkpoint(tmp_path / name / "checkpoints" / "last.pt")
        assert ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2
    assert not torch.equal(ref["fc1.weight"], torch.zeros_like(ref["fc1.weight"]))


@pytest.mark.slow
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_sigkill_mid_run_then_resume_continues_exactly(tmp_path, device):
    """On CUDA: fp16 autocast with its GradScaler (state in last.pt) and dropout from the CUDA RNG."""
    args = ["--max-steps", "14", "--ckpt-every", "1", "--dropout", "0.1", "--device", device]
    _run(["--out", str(tmp_path / "full"), *args])
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, TOY, "--out", str(out), "--sleep", "0.15", *args], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = out / "checkpoints" / "last.pt"
    deadline = time.time() + 60
    step = 0
    while time.time() < deadline and step < 4:
        time.sleep(0.05)
        try:
            step = load_checkpoint(last)["step"] if last.exists() else 0
        except CheckpointError:  # must never happen: writes are atomic
            raise
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    killed_at = load_checkpoint(last)["step"]
    assert 4 <= killed_at < 14
    res = _run(["--out", str(out), "--resume", "true", *args])
    assert '"step": 14' in res.stdout
    ref, got = _weights(tmp_path / "full"), _weights(out)
    for k in ref:
        assert torch.equal(ref[k], got[k]), k


@pytest.mark.slow
def test_sigterm_saves_last_checkpoint_and_stops_cleanly(tmp_path):
    args = ["--max-steps", "200", "--ckpt-every", "1000", "--sleep", "0.1", "--epochs", "30"]
    proc = subprocess.Popen([sys.executable, TOY, "--out", str(tmp_path), *args], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (tmp_path / "tb").exists() and time.time() < deadline:  # training has started
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "received SIGTERM" in stderr
    step = load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"]
    assert 0 < step < 200 and f'"step": {step}' in stdout


@pytest.mark.slow
def test_a_failing_rank_brings_the_job_down_with_a_message(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", TOY,
           "--out", str(tmp_path), "--max-steps", "6", "--fail-rank", "1"]
    start = time.time()
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=180)
    assert proc.returncode != 0
    assert "[asa] rank 1/2 failed: RuntimeError: injected failure" in proc.stderr
    assert time.time() - start < 120
