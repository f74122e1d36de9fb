"""DDP across nodes, run for real: two asa-torchrun agents on this host joined as two nodes (``--nnodes=2
--nproc_per_node=1``, a c10d rendezvous on 127.0.0.1, gloo on the CPU) train as one node with two processes does, loss
for loss and weight for weight, for asa-pretrain (SW-ViT and ResEnc) and asa-finetune (ResEnc). A SIGTERM to one rank
stops every node with 143, and the last.pt they saved resumes on one node with two processes (and one node's on two
nodes), ending bit for bit where the uninterrupted run ends; a resume on another global batch is refused unless asked.
ResEnc trains several steps across an epoch under DDP: its heads outside the loss are kept, frozen (a trainable
parameter outside the loss stops DistributedDataParallel at its second step)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from asa.api import pretrain
from asa.api.config import compose_config
from asa.data import write_demo_dataset
from asa.io import load_checkpoint
from asa.train import IncompatibleCheckpointError
from tests.fixtures.runs import child_env

pytestmark = pytest.mark.slow
LAUNCH = [sys.executable, "-m", "asa.cli.launch"]
COMMON = ["device=cpu", "trainer.amp=off", "trainer.batch_size=1", "trainer.panel_every=0", "trainer.log_every=1",
          "trainer.progress=false"]
STEPS = 3


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _agents(nodes: int, module: str, args: list[str], log: Path) -> list[subprocess.Popen]:
    """``nodes`` == 1: one agent, two processes; 2: two agents of one process each, joined by a c10d rendezvous."""
    if nodes == 1:
        topology = [["--standalone", "--nproc_per_node=2"]]
    else:
        port = _port()
        topology = [["--nnodes=2", "--nproc_per_node=1", "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}",
                     f"--rdzv_id=asa-{port}", "--local_addr=127.0.0.1"]] * 2
    agents = []
    for i, how in enumerate(topology):
        with open(log.with_suffix(f".{i}.log"), "w") as err:
            agents.append(subprocess.Popen([*LAUNCH, *how, "-m", module, *COMMON, *args], stdout=subprocess.DEVNULL,
                                           stderr=err, env=child_env()))
    return agents


def _ended(agents: list[subprocess.Popen], log: Path) -> tuple[list[int], str]:
    """The agents' exit codes once they have ended, and what they printed."""
    codes = [a.wait(timeout=300) for a in agents]
    return codes, "".join(log.with_suffix(f".{i}.log").read_text() for i in range(len(agents)))


def _run(nodes: int, module: str, args: list[str], log: Path, stop_after: int | None = None) -> tuple[list[int], str]:
    """Run to the end (or, with ``stop_after``, SIGTERM one rank once that step is logged); the agents' exit codes and
    what they printed."""
    agents = _agents(nodes, module, args, log)
    if stop_after is not None:
        logs = [log.with_suffix(f".{i}.log") for i in range(len(agents))]
        deadline = time.time() + 240
        while not any(f"step {stop_after}/" in p.read_text() for p in logs) and time.time() < deadline \
                and all(a.poll() is None for a in agents):
            time.sleep(0.05)
        agent = agents[-1].pid  # the last agent's rank (the second node's, or one node's second process)
        ranks = [int(p) for p in Path(f"/proc/{agent}/task/{agent}/children").read_text().split()
                 if module.encode() in Path(f"/proc/{p}/cmdline").read_bytes()]
        os.kill(max(ranks), signal.SIGTERM)
    return _ended(agents, log)


def _losses(text: str) -> dict[int, str]:
    """{step: the loss rank 0 logged}."""
    return {int(s): loss for s, loss in re.findall(r"^step (\d+)/\d+ epoch \d+: loss (\S+),", text, flags=re.M)}


def _weights_equal(a: Path, b: Path, steps: int = STEPS) -> None:
    x, y = load_checkpoint(a / "checkpoints" / "last.pt"), load_checkpoint(b / "checkpoints" / "last.pt")
    assert x["step"] == y["step"] == steps and x["world_size"] == y["world_size"] == 2
    assert x["model"].keys() == y["model"].keys()
    for key, value in x["model"].items():
        assert torch.equal(value, y["model"][key]), key


def _pretrain(out: Path, demo: Path, model: str, steps: int = STEPS, cases: int = 10) -> list[str]:
    # 10 phantoms: 8 training cases, 4 steps per epoch on two ranks, so 3 steps stay inside the first epoch; 6 phantoms:
    # 2 steps per epoch, so 4 steps cross an epoch and its validation
    return [f"model={model}", "data=demo", "data.demo.size=40", f"data.demo.cases={cases}",
            f"data.demo.cache_dir={demo}", "data.crop=32", "probe.every=0", "trainer.epochs=2",
            f"trainer.max_steps={steps}", f"output_dir={out}"]


def _stopped_and_resumed(tmp_path: Path, args: Callable[[Path], list[str]], steps: int, *, reference: int,
                         stopped: int) -> tuple[Path, Path]:
    """asa-pretrain with ``args(output_dir)`` run to the end on ``reference`` nodes, side by side with the same run on
    ``stopped`` nodes, which one rank's SIGTERM stops once step 1 is logged (every node exits 143) and which then
    resumes on ``reference`` nodes: the two end with the same losses step for step (those before the stop from the
    other topology) and the same weights. Returns their folders (uninterrupted, stopped and resumed)."""
    module = "asa.cli.pretrain"
    ref, out = tmp_path / f"nodes{reference}", tmp_path / f"stopped{stopped}"
    agents = _agents(reference, module, args(ref), ref)  # side by side: the demo phantoms are written once
    codes, text = _run(stopped, module, args(out), out, stop_after=1)
    assert codes == [143] * stopped, text[-3000:]
    saved = load_checkpoint(out / "checkpoints" / "last.pt")["step"]
    assert 1 <= saved < steps, text[-3000:]
    codes, rest = _run(reference, module, [*args(out), "resume=true"], tmp_path / "resumed")
    assert codes == [0] * reference, rest[-3000:]
    assert f"resumed from {out}/checkpoints/last.pt at step {saved}" in rest
    codes, whole = _ended(agents, ref)
    assert codes == [0] * reference, whole[-3000:]
    losses = _losses(whole)
    assert sorted(losses) == list(range(1, steps + 1))
    assert {**{s: v for s, v in _losses(text).items() if s <= saved}, **_losses(rest)} == losses
    _weights_equal(ref, out, steps)
    return ref, out


# the stopped runs' length: a tiny SW-ViT step takes about 0.05 s on idle cores, so a SIGTERM sent once step 1 is
# logged must still find steps to stop: with 3 it once arrived after the last (saved at step 3, nothing to resume)
STOPPED = 8  # the whole schedule (2 epochs of 4 steps), the second epoch's start crossed


def test_swvit_pretraining_stopped_on_two_nodes_resumes_on_one_as_if_never_stopped(tmp_path):
    """Stopped on two nodes by one rank's SIGTERM and resumed on one node with two processes, a SW-ViT run ends as the
    run on one node never stopped does (the reverse, stopped on one node and resumed on two: the ResEnc test below)."""
    demo = tmp_path / "demo"
    _, out = _stopped_and_resumed(tmp_path, lambda out: _pretrain(out, demo, "tiny", STOPPED), STOPPED, reference=1,
                                  stopped=2)

    # the same run on one process: another global batch (2 -> 1), refused before anything is written
    with pytest.raises(IncompatibleCheckpointError, match=re.escape(
            f"cannot resume from {out}/checkpoints/last.pt: its global batch was 2 (trainer.batch_size=1 × 2 "
            "process(es) × trainer.accum_steps=1), this start's is 1 (trainer.batch_size=1 × 1 process(es) × "
            "trainer.accum_steps=1)")):
        pretrain(compose_config("pretrain", [*COMMON, *_pretrain(out, demo, "tiny", STOPPED), "resume=true"]))


def test_resenc_pretraining_stopped_on_one_node_resumes_on_two_as_if_never_stopped(tmp_path):
    """ResEnc pretraining for 4 steps (6 phantoms: they cross an epoch and a validation) on two nodes, uninterrupted,
    ends as the same run stopped on one node with two processes by one rank's SIGTERM and resumed on two nodes does,
    bit for bit; last.pt holds every rank's RNG state and all 6 segmentation heads."""
    demo, steps = tmp_path / "demo", 4
    ref, out = _stopped_and_resumed(
        tmp_path, lambda out: [*_pretrain(out, demo, "resenc", steps, cases=6), "model.size=tiny", "method=asa"], steps,
        reference=2, stopped=1)  # ASA's attentive loss on the masked ResEnc, as asa's own method
    states = [load_checkpoint(d / "checkpoints" / "last.pt") for d in (ref, out)]
    assert [len(s["rng"]) for s in states] == [2, 2]  # one per rank, the second node's too
    heads = [k for k in states[0]["model"] if k.startswith("decoder.seg_layers.")]
    assert len(heads) == 6  # the unused heads are kept under nnU-Net's keys, frozen


def test_resenc_fine_tuning_on_two_nodes_trains_as_on_one_node_with_two_processes(tmp_path):
    """ResEnc fine-tuning with deep supervision for 3 steps (6 IBSR phantoms: 3 training cases, so the steps cross an
    epoch) on two nodes and on one node with two processes, side by side: the same losses and weights."""
    root = write_demo_dataset("ibsr", tmp_path / "ibsr", cases=6, size=32, seed=3)
    args = lambda out: ["model=resenc", "model.size=tiny", "data=ibsr", f"data.root={root}",  # noqa: E731
                        "data.crop=32", "data.num_workers=0", "trainer.epochs=3", f"trainer.max_steps={STEPS}",
                        f"output_dir={out}"]
    runs = {nodes: _agents(nodes, "asa.cli.finetune", args(tmp_path / f"nodes{nodes}"), tmp_path / f"nodes{nodes}")
            for nodes in (1, 2)}
    losses = {}
    for nodes, agents in runs.items():
        codes, text = _ended(agents, tmp_path / f"nodes{nodes}")
        assert codes == [0] * nodes, text[-3000:]
        losses[nodes] = _losses(text)
    assert sorted(losses[2]) == list(range(1, STEPS + 1)) and losses[2] == losses[1]
    _weights_equal(tmp_path / "nodes2", tmp_path / "nodes1")
    network = load_checkpoint(tmp_path / "nodes2" / "checkpoints" / "last.pt")["network"]
    assert network["kwargs"]["deep_supervision"]  # two supervised outputs, the lowest head left out
