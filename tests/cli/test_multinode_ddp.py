"""DDP across nodes, run for real: two asa-torchrun agents on this host joined as two nodes (``--nnodes=2
--nproc_per_node=1``, a c10d rendezvous on 127.0.0.1, gloo on the CPU) train as one node with two processes does, loss
for loss and weight for weight, for asa-pretrain (SW-ViT and ResEnc) and asa-finetune. A SIGTERM to one rank stops both
nodes with 143, and the last.pt they saved resumes on one node with two processes (and one node's on two nodes), ending
where the uninterrupted run ends; a resume on another global batch is refused unless asked."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
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


def _run(nodes: int, module: str, args: list[str], log: Path, stop_after: int | None = None) -> tuple[list[int], str]:
    """Run to the end (or, with ``stop_after``, SIGTERM one rank once that step is logged); the agents' exit codes and
    what they printed."""
    agents = _agents(nodes, module, args, log)
    logs = [log.with_suffix(f".{i}.log") for i in range(len(agents))]
    if stop_after is not None:
        deadline = time.time() + 240
        while not any(f"step {stop_after}/" in p.read_text() for p in logs) and time.time() < deadline \
                and all(a.poll() is None for a in agents):
            time.sleep(0.05)
        agent = agents[-1].pid  # the last agent's rank (the second node's, or one node's second process)
        ranks = [int(p) for p in Path(f"/proc/{agent}/task/{agent}/children").read_text().split()
                 if module.encode() in Path(f"/proc/{p}/cmdline").read_bytes()]
        os.kill(max(ranks), signal.SIGTERM)
    codes = [a.wait(timeout=300) for a in agents]
    return codes, "".join(p.read_text() for p in logs)


def _losses(text: str) -> dict[int, str]:
    """{step: the loss rank 0 logged}."""
    return {int(s): loss for s, loss in re.findall(r"^step (\d+)/\d+ epoch \d+: loss (\S+),", text, flags=re.M)}


def _weights_equal(a: Path, b: Path, steps: int = STEPS) -> None:
    x, y = load_checkpoint(a / "checkpoints" / "last.pt"), load_checkpoint(b / "checkpoints" / "last.pt")
    assert x["step"] == y["step"] == steps and x["world_size"] == y["world_size"] == 2
    assert x["model"].keys() == y["model"].keys()
    for key, value in x["model"].items():
        assert torch.equal(value, y["model"][key]), key


def _pretrain(out: Path, demo: Path, model: str, steps: int = STEPS) -> list[str]:
    # 10 phantoms: 8 training cases, 4 steps per epoch on two ranks, so the 3 steps stay inside the first epoch
    return [f"model={model}", "data=demo", "data.demo.size=40", "data.demo.cases=10", f"data.demo.cache_dir={demo}",
            "data.crop=32", "probe.every=0", "trainer.epochs=2", f"trainer.max_steps={steps}", f"output_dir={out}"]


# the stopped runs' length: a tiny SW-ViT step takes about 0.05 s on idle cores, so a SIGTERM sent once step 1 is
# logged must still find steps to stop: with 3 it once arrived after the last (saved at step 3, nothing to resume)
STOPPED = 8  # the whole schedule (2 epochs of 4 steps), the second epoch's start crossed on either topology


def test_swvit_pretraining_across_two_nodes_stops_and_resumes_on_either_topology(tmp_path):
    """Two runs cross over: one starts on two nodes, is stopped by one rank's SIGTERM and resumes on one node; the
    other the reverse. Their losses agree step for step (the steps before the stop on one topology, those after it on
    the other) and they end with the same weights."""
    demo, ends = tmp_path / "demo", {}
    for first, then in ((2, 1), (1, 2)):
        out, log = tmp_path / f"from{first}", tmp_path / f"from{first}"
        codes, text = _run(first, "asa.cli.pretrain", _pretrain(out, demo, "tiny", STOPPED), log, stop_after=1)
        assert codes == [143] * len(codes), text[-3000:]
        saved = load_checkpoint(out / "checkpoints" / "last.pt")["step"]
        assert 1 <= saved < STOPPED, text[-3000:]
        codes, rest = _run(then, "asa.cli.pretrain", [*_pretrain(out, demo, "tiny", STOPPED), "resume=true"],
                           tmp_path / f"resumed{first}")
        assert codes == [0] * len(codes), rest[-3000:]
        assert f"resumed from {out}/checkpoints/last.pt at step {saved}" in rest
        ends[first] = {**{s: v for s, v in _losses(text).items() if s <= saved}, **_losses(rest)}
    assert sorted(ends[2]) == list(range(1, STOPPED + 1)) and ends[2] == ends[1]
    _weights_equal(tmp_path / "from2", tmp_path / "from1", STOPPED)

    # the same run on one process: another global batch (2 -> 1), refused before anything is written
    with pytest.raises(IncompatibleCheckpointError, match=re.escape(
            f"cannot resume from {tmp_path}/from2/checkpoints/last.pt: its global batch was 2 (trainer.batch_size=1 × 2 "
            "process(es) × trainer.accum_steps=1), this start's is 1 (trainer.batch_size=1 × 1 process(es) × "
            "trainer.accum_steps=1)")):
        pretrain(compose_config("pretrain", [*COMMON, *_pretrain(tmp_path / "from2", demo, "tiny", STOPPED),
                                             "resume=true"]))


@pytest.mark.parametrize("kind", ["resenc-pretrain", "resenc-finetune"])
def test_two_nodes_train_as_one_node_with_two_processes(tmp_path, kind):
    module = "asa.cli.pretrain" if kind == "resenc-pretrain" else "asa.cli.finetune"
    if kind == "resenc-pretrain":
        args = lambda out: [*_pretrain(out, tmp_path / "demo", "resenc"), "model.size=tiny"]  # noqa: E731
    else:
        root = write_demo_dataset("ibsr", tmp_path / "ibsr", cases=10, size=32, seed=3)
        args = lambda out: ["model=resenc", "model.size=tiny", "data=ibsr", f"data.root={root}",  # noqa: E731
                            "data.crop=32", "data.num_workers=0", "trainer.epochs=2", f"trainer.max_steps={STEPS}",
                            f"output_dir={out}"]
    runs = {nodes: (_agents(nodes, module, args(tmp_path / f"nodes{nodes}"), tmp_path / f"nodes{nodes}"),
                    tmp_path / f"nodes{nodes}") for nodes in (1, 2)}  # side by side (the demo phantoms: written once)
    losses = {}
    for nodes, (agents, log) in runs.items():
        codes = [a.wait(timeout=300) for a in agents]
        text = "".join(log.with_suffix(f".{i}.log").read_text() for i in range(len(agents)))
        assert codes == [0] * nodes, text[-3000:]
        losses[nodes] = _losses(text)
    assert sorted(losses[2]) == list(range(1, STEPS + 1)) and losses[2] == losses[1]
    _weights_equal(tmp_path / "nodes2", tmp_path / "nodes1")
