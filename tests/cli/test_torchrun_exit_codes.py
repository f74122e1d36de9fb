"""Exit codes hold under torchrun through asa-torchrun (asa.cli.launch): SIGTERM -> 143 after saving
last.pt, a refused run -> 2, a finished run -> 0 even when a stop signal comes after it finished. torchrun
itself runs asa-pretrain to its end too, writing what one process would."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest
from omegaconf import OmegaConf

from asa.cli.common import EXIT_FAILED, EXIT_FINISHED, EXIT_REFUSED, entry
from asa.cli.launch import job_exit_code
from asa.cli.status import STATUS_ENV, read_statuses
from asa.cli.launch import main as torchrun_main
from asa.io import load_checkpoint
from asa.train.preemption import mark_finished
from tests.fixtures.runs import child_env, pretrain_overrides



@pytest.mark.parametrize("recorded, failures, launcher_signal, expected", [
    ({0: 0, 1: 0}, {}, None, 0),
    ({0: 0, 1: 0}, {}, signal.SIGTERM, 0),          # the signal came after every worker had finished
    ({0: 143, 1: 143}, {}, signal.SIGTERM, 143),   # stopped by SIGTERM after saving last.pt
    ({0: 138, 1: 138}, {0: 138, 1: 138}, None, 138),
    ({0: 2, 1: 2}, {0: 2, 1: 2}, None, 2),          # rank 0 refused, the others stopped with it
    ({0: 1, 1: 2}, {0: 1, 1: 2}, None, 1),          # a failure wins over a refusal
    ({0: 143}, {1: -9}, signal.SIGTERM, 143),       # rank 1 killed before it could record: 137 < 143
    ({}, {0: -9, 1: -9}, None, 137),                # OOM-killed workers: 128 + 9
    ({}, {}, signal.SIGTERM, 143),                  # torchrun stopped before any worker recorded
])
def test_job_exit_code(recorded, failures, launcher_signal, expected):
    assert job_exit_code(recorded, failures, launcher_signal) == expected


def test_help_says_what_it_is_and_its_exit_codes_before_torchruns_help(capsys):
    with pytest.raises(SystemExit) as done:
        torchrun_main(["--help"])
    assert done.value.code == 0
    head, torchrun = capsys.readouterr().out.split("torchrun's help:\n")
    assert head.startswith("asa-torchrun: torchrun (torch.distributed.run) for asa's console scripts")
    for code, meaning in ((EXIT_FINISHED, "finished"), (EXIT_FAILED, "failed"), (EXIT_REFUSED, "refused")):
        assert re.search(rf"^  {code} +{meaning}", head, flags=re.M), (code, head)
    assert f"{128 + signal.SIGTERM} for SIGTERM, {128 + signal.SIGUSR1} for SIGUSR1" in head
    assert torchrun.startswith("usage: ") and "--nproc-per-node" in torchrun  # torchrun's own, after asa's


@pytest.fixture(autouse=True)
def _keep_signal_handlers():
    """`entry` ignores stop signals once a job is done (the process is about to end): undo it here."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGUSR1)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def test_a_stop_signal_after_training_finished_exits_0(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(STATUS_ENV, str(tmp_path))
    monkeypatch.setenv("RANK", "1")

    def job(cfg):
        mark_finished()  # what pretrain / finetune do once fit returned
        os.kill(os.getpid(), signal.SIGTERM)  # e.g. torchrun or the scheduler, during the encoder export
        return None

    with pytest.raises(SystemExit) as stop:
        entry("asa-test", job, OmegaConf.create({}))
    assert stop.value.code == 0 and read_statuses(tmp_path) == {1: 0}
    assert "received SIGTERM after the run had finished" in capsys.readouterr().err


def test_a_stop_signal_before_training_exits_143_and_records_it(tmp_path, monkeypatch):
    monkeypatch.setenv(STATUS_ENV, str(tmp_path))
    monkeypatch.setenv("RANK", "0")

    def job(cfg):
        os.kill(os.getpid(), signal.SIGTERM)  # during the data checks, before any checkpoint
        time.sleep(5)
        raise AssertionError("the signal should have stopped the job")

    with pytest.raises(SystemExit) as stop:
        entry("asa-test", job, OmegaConf.create({}))
    assert stop.value.code == 143 and read_statuses(tmp_path) == {0: 143}


@pytest.mark.slow
def test_two_gloo_workers_finish_under_torchrun_then_a_new_run_there_is_refused_2(tmp_path):
    """Two gloo workers run asa-pretrain to its end under torchrun itself (the scripts need no wrapper) and write what
    one process would: one TensorBoard file (rank 0's), the encoder export, and every rank's RNG state in last.pt. The
    same run started again there through asa-torchrun is refused by rank 0, the other rank stopping with it: exit 2,
    the command that continues the run, and the folder left as it was."""
    out = tmp_path / "run"
    # one launch and one relaunch: the refusal of a new run in a folder holding one does not depend on whether that
    # run finished or was stopped (rundir._check looks at the checkpoints there); SIGTERM -> 143 and its resume
    # command: test_two_ranks_sigterm_as_their_loader_workers_start_exits_143
    args = ["--standalone", "--nproc_per_node=2", "-m", "asa.cli.pretrain",
            *pretrain_overrides(out, tmp_path / "demo", "trainer.batch_size=1")]
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", *args], capture_output=True, text=True,
                          env=child_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ckpt = load_checkpoint(out / "checkpoints" / "last.pt")
    assert ckpt["step"] == 2 and ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2
    assert (out / "checkpoints" / "encoder.pt").is_file()
    assert len(list((out / "tb").glob("events.out.tfevents.*"))) == 1  # rank 0 only
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    proc = subprocess.run([sys.executable, "-m", "asa.cli.launch", *args], capture_output=True, text=True,
                          env=child_env(), timeout=150)  # a new run there: refused
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "already holds a run" in proc.stderr and "Traceback" not in proc.stderr
    assert "rank 0 refused the run" in proc.stderr  # rank 1 waited for rank 0's checks and stopped cleanly
    assert "continue that run:  asa-torchrun --nproc_per_node=2 -m asa.cli.pretrain " in proc.stderr
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before



# Imported by every Python process of the job (on PYTHONPATH): the first DataLoader worker of a validation loader
# (its dataset is not the training loader's SeededItems; the validation loader starts its workers once, at the first
# validation, after the training steps of the first epoch) sends SIGTERM to torchrun (its parent's parent) right
# after torch set its worker signal handlers and before `worker_init_fn`, then waits there, so that torchrun's
# killpg reaches the ranks' workers as they start.
_SIGTERM_AS_WORKERS_START = """
import os, signal, sys, time
from torch.utils.data._utils import signal_handling

_original = signal_handling._set_worker_signal_handlers


def _set_then_stop(*args):
    _original(*args)
    dataset = sys._getframe(1).f_locals.get("dataset")  # the worker loop's
    if dataset is None or type(dataset).__name__ == "SeededItems":  # a training loader's worker
        return
    try:
        os.close(os.open(os.environ["ASA_TEST_MARK"], os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return
    with open(f"/proc/{os.getppid()}/stat") as stat:  # the rank's parent: torchrun
        launcher = int(stat.read().rsplit(")", 1)[1].split()[1])
    os.kill(launcher, signal.SIGTERM)
    time.sleep(3)


signal_handling._set_worker_signal_handlers = _set_then_stop
"""


@pytest.mark.slow
def test_two_ranks_sigterm_as_their_loader_workers_start_exits_143(tmp_path):
    out, hook = tmp_path / "run", tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(_SIGTERM_AS_WORKERS_START)
    env = child_env()
    env["PYTHONPATH"] = os.pathsep.join([str(hook), env["PYTHONPATH"]])
    env.update(ASA_TEST_MARK=str(tmp_path / "signalled"))
    cmd = [sys.executable, "-m", "asa.cli.launch", "--standalone", "--nproc_per_node=2", "-m", "asa.cli.pretrain",
           *pretrain_overrides(out, tmp_path / "demo", "trainer.batch_size=1", "trainer.max_steps=null", "trainer.epochs=100",
                       "trainer.log_every=1", "probe.every=0", "data.num_workers=2")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert (tmp_path / "signalled").exists(), proc.stderr[-3000:]  # the hook fired
    assert proc.returncode == 143, proc.stderr[-3000:]
    assert "exited unexpectedly" not in proc.stderr and "killed by signal" not in proc.stderr
    assert load_checkpoint(out / "checkpoints" / "last.pt")["step"] >= 2
    # rank 0's resume command names the launcher and the job's processes, then the run's own overrides
    assert "Resume with: asa-torchrun --nproc_per_node=2 -m asa.cli.pretrain data=demo" in proc.stderr
    assert proc.stderr.split("Resume with: ")[1].splitlines()[0].endswith(" resume=true")
