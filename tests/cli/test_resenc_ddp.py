"""model=resenc under DDP: two gloo ranks through asa-torchrun pretrain and fine-tune for several steps (a
parameter outside the loss stops DistributedDataParallel at the second step), and a pretraining run stopped
by SIGTERM resumes to the weights of the uninterrupted run, bit for bit."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from asa.data import write_demo_dataset
from asa.io import load_checkpoint
from tests.fixtures.runs import child_env


pytestmark = pytest.mark.slow
LAUNCH = [sys.executable, "-m", "asa.cli.launch", "--standalone", "--nproc_per_node=2", "-m"]
COMMON = ["model=resenc", "model.size=tiny", "data.crop=32", "device=cpu", "trainer.amp=off", "trainer.batch_size=1",
          "trainer.panel_every=0", "trainer.log_every=1", "trainer.progress=false"]


def _pretrain(out: Path, demo: Path, *extra: str) -> list[str]:
    # 6 phantoms: 4 training cases, 2 steps per epoch on 2 ranks; 4 steps cross an epoch and a validation
    return [*LAUNCH, "asa.cli.pretrain", *COMMON, "method=asa", "data=demo", "data.demo.size=40", "data.demo.cases=6",
            f"data.demo.cache_dir={demo}", "probe.every=0", "trainer.epochs=3", "trainer.max_steps=4",
            f"output_dir={out}", *extra]


def _state(out: Path) -> dict:
    return load_checkpoint(out / "checkpoints" / "last.pt")


def test_resenc_pretraining_on_two_ranks_stopped_by_sigterm_resumes_bit_identical(tmp_path):
    demo = tmp_path / "demo"
    full = subprocess.run(_pretrain(tmp_path / "full", demo), capture_output=True, text=True, env=child_env(), timeout=300)
    assert full.returncode == 0, full.stderr[-4000:]
    ref = _state(tmp_path / "full")
    assert ref["step"] == 4 and ref["world_size"] == 2 and len(ref["rng"]) == 2

    out, log = tmp_path / "stopped", tmp_path / "stderr.log"
    with open(log, "w") as err:
        proc = subprocess.Popen(_pretrain(out, demo), stdout=subprocess.DEVNULL, stderr=err, text=True, env=child_env())
        deadline = time.time() + 150
        while "step 1/" not in log.read_text() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)  # to torchrun, as a scheduler does; it forwards it to the ranks
        proc.wait(timeout=120)
    assert proc.returncode == 143, log.read_text()[-4000:]
    assert 1 <= _state(out)["step"] < 4
    resumed = subprocess.run(_pretrain(out, demo, "resume=true"), capture_output=True, text=True, env=child_env(),
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    got = _state(out)
    assert got["step"] == 4 and got["model"].keys() == ref["model"].keys()
    for key, value in ref["model"].items():
        assert torch.equal(value, got["model"][key]), key
    heads = [k for k in ref["model"] if k.startswith("decoder.seg_layers.")]
    assert len(heads) == 6  # the unused heads are kept under nnU-Net's keys, frozen


def test_resenc_fine_tuning_on_two_ranks_trains_several_steps(tmp_path):
    root = write_demo_dataset("ibsr", tmp_path / "data", cases=6, size=32, seed=3)
    out = tmp_path / "ft"
    cmd = [*LAUNCH, "asa.cli.finetune", *COMMON, "data=ibsr", f"data.root={root}", "trainer=smoke",
           "trainer.epochs=3", "trainer.max_steps=3", "data.num_workers=0", f"output_dir={out}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=child_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    state = _state(out)
    assert state["step"] == 3 and state["world_size"] == 2
    assert state["network"]["kwargs"]["deep_supervision"]  # two supervised outputs, the lowest head left out
