"""asa-torchrun's rendezvous: a node waits a bounded time for nodes that never come (torchrun's own timeouts, asa's
defaults within 5 minutes), a rendezvous that times out or loses its store ends in one line naming where and for
whom, exit 1, and the resume command the workers print keeps the rendezvous options. The slow tests run real agents
on 127.0.0.1 with a tiny worker script: a lone node of two (c10d and static), and two nodes whose store host is
killed."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch.distributed.run
from torch.distributed import DistNetworkError, DistStoreError
from torch.distributed.elastic.rendezvous import RendezvousConnectionError, RendezvousTimeoutError

from asa.api.machinery import rundir
from asa.cli import launch
from tests.fixtures.runs import child_env

LAUNCH = [sys.executable, "-m", "asa.cli.launch"]


@pytest.mark.parametrize("backend, conf, expected", [
    ("c10d", "", "join_timeout=300"),
    ("c10d", "is_host=false", "is_host=false,join_timeout=300"),
    ("c10d", "read_timeout=5, join_timeout=20", "read_timeout=5, join_timeout=20"),  # the user's wait stands
    ("static", "", "timeout=150"),
    ("static", "timeout=20", "timeout=20"),
    ("etcd", "", ""),  # another backend: its own timeouts
])
def test_the_wait_is_bounded_unless_rdzv_conf_sets_it(backend, conf, expected):
    assert launch.bounded_wait(backend, conf) == expected


def test_no_node_waits_more_than_five_minutes_by_default():
    """c10d: the join timeout; static: node 0 waits the store's timeout, another node up to twice it (torch's
    store retries its connection once, measured: timeout=4 gave up after about 9 s)."""
    assert launch.WAIT_S["c10d"][1] <= 300 and 2 * launch.WAIT_S["static"][1] <= 300


def _args(backend: str, **given) -> argparse.Namespace:
    defaults = dict(rdzv_backend=backend, rdzv_endpoint="", rdzv_id="none", rdzv_conf="", master_addr="127.0.0.1",
                    master_port=29500, node_rank=0, nnodes="2")
    return argparse.Namespace(**{**defaults, **given})


def _caused(err: BaseException, cause: BaseException) -> BaseException:
    err.__cause__ = cause
    return err


@pytest.mark.parametrize("args, err, line", [
    (_args("c10d", rdzv_endpoint="node0:29400", rdzv_id="77", rdzv_conf="join_timeout=20"), RendezvousTimeoutError(),
     "[asa-torchrun] c10d rendezvous at node0:29400 (rdzv_id 77), one of --nnodes=2: waited --rdzv_conf "
     "join_timeout=20 s for the other nodes to join and they did not all come; exit 1"),
    (_args("c10d", rdzv_endpoint="node0:29400", rdzv_id="77", nnodes="2:4"),
     _caused(RendezvousConnectionError("The connection to the C10d store has failed. See inner exception for details."),
             DistNetworkError("Failed to recv, got 0 bytes. Connection was likely closed.\nException raised from")),
     "[asa-torchrun] c10d rendezvous at node0:29400 (rdzv_id 77), one of --nnodes=2:4: its store did not answer: "
     "Failed to recv, got 0 bytes. Connection was likely closed.; exit 1"),
    (_args("static", master_addr="node0", node_rank=1, rdzv_conf="timeout=150"),
     DistNetworkError("The client socket has timed out after 150000ms while trying to connect to (node0, 29500)."),
     "[asa-torchrun] static rendezvous at node0:29500, node_rank 1 of --nnodes=2: waited up to --rdzv_conf "
     "timeout=150 s for node_rank 0, which hosts its store: The client socket has timed out after 150000ms while trying "
     "to connect to (node0, 29500).; exit 1"),
    (_args("static", rdzv_endpoint="node0:29501", nnodes="4", rdzv_conf="timeout=60"),
     DistStoreError("Timed out after 61 seconds waiting for clients. 2/4 clients joined."),
     "[asa-torchrun] static rendezvous at node0:29501, node_rank 0 of --nnodes=4: waited up to --rdzv_conf "
     "timeout=60 s for node_ranks 1-3 to connect: Timed out after 61 seconds waiting for clients. 2/4 clients joined.; "
     "exit 1"),
])
def test_a_failed_rendezvous_is_one_line_naming_where_and_for_whom(args, err, line):
    assert launch.rendezvous_failure(args, err) == line


def test_the_launcher_hands_its_rendezvous_options_to_the_resume_command(monkeypatch, capsys):
    """What the workers would see, with torchrun's run in-process: the rendezvous options as given (both spellings,
    none of the others), the resume command made of them, the bounded wait, and a timed-out rendezvous in one line."""
    seen = {}

    def rendezvous(args):
        seen["env"], seen["conf"] = os.environ[launch.LAUNCH_ENV], args.rdzv_conf
        seen["resume"] = rundir.launcher("asa-pretrain")
        raise RendezvousTimeoutError

    monkeypatch.setattr(torch.distributed.run, "run", rendezvous)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # as torchrun tells a worker of two nodes of two processes
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.delenv(launch.LAUNCH_ENV, raising=False)
    code = launch.main(["--nnodes=2", "--nproc-per-node", "2", "--rdzv-backend", "c10d", "--rdzv_endpoint=node0:29400",
                        "--rdzv_id=job 7", "--max_restarts=0", "-m", "asa.cli.pretrain", "data=demo"])
    options = "--rdzv_backend=c10d --rdzv_endpoint=node0:29400 '--rdzv_id=job 7'"
    assert seen == {"env": options, "conf": "join_timeout=300",
                    "resume": f"asa-torchrun --nnodes=2 --nproc_per_node=2 {options} -m asa.cli.pretrain"}
    assert code == 1 and capsys.readouterr().err == (
        "[asa-torchrun] c10d rendezvous at node0:29400 (rdzv_id job 7), one of --nnodes=2: waited --rdzv_conf "
        "join_timeout=300 s for the other nodes to join and they did not all come; exit 1\n")
    assert launch.LAUNCH_ENV not in os.environ


# a worker that says it started, with the rendezvous options it was handed and torch's C++ log level (the launcher
# quiets its own, not theirs), then waits to be stopped
WORKER = """
import os, pathlib, sys, time
pathlib.Path(sys.argv[1], "rank" + os.environ["RANK"]).write_text(
    os.environ["ASA_TORCHRUN_RENDEZVOUS"] + "|" + os.environ.get("TORCH_CPP_LOG_LEVEL", "unset"))
time.sleep(120)
"""


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _agent(tmp_path, options: list[str], name: str) -> subprocess.Popen:
    (tmp_path / "worker.py").write_text(WORKER)
    with open(tmp_path / f"{name}.log", "w") as err:
        return subprocess.Popen([*LAUNCH, "--nnodes=2", "--nproc_per_node=1", *options, str(tmp_path / "worker.py"),
                                 str(tmp_path)], stdout=subprocess.DEVNULL, stderr=err, env=child_env())


def _last_line(text: str) -> str:
    return text.rstrip().splitlines()[-1]


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["c10d", "static"])
def test_a_lone_node_says_where_it_waited_for_whom_within_the_wait_set(tmp_path, backend):
    """Node 0 never starts: the other gives up after the wait set (c10d 4 s; static 3 s, tried twice), in one line."""
    port = _port()
    options = {"c10d": ["--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}", "--rdzv_id=lone",
                        "--local_addr=127.0.0.1", "--rdzv_conf=join_timeout=4"],
               "static": ["--node_rank=1", "--master_addr=127.0.0.1", f"--master_port={port}", "--rdzv_conf=timeout=3"]}
    start = time.monotonic()
    agent = _agent(tmp_path, options[backend], "lone")
    code = agent.wait(timeout=150)  # torchrun's own waits: 600 s (c10d), 900 s tried twice (static)
    took, text = time.monotonic() - start, (tmp_path / "lone.log").read_text()
    assert code == 1 and "Traceback" not in text, text[-3000:]
    assert text.rstrip().splitlines() == [{
        "c10d": f"[asa-torchrun] c10d rendezvous at 127.0.0.1:{port} (rdzv_id lone), one of --nnodes=2: waited "
                "--rdzv_conf join_timeout=4 s for the other nodes to join and they did not all come; exit 1",
        "static": f"[asa-torchrun] static rendezvous at 127.0.0.1:{port}, node_rank 1 of --nnodes=2: waited up to "
                  f"--rdzv_conf timeout=3 s for node_rank 0, which hosts its store: The client socket has timed out "
                  f"after 3000ms while trying to connect to (127.0.0.1, {port}).; exit 1"}[backend]]  # torch's C++ log quiet
    assert took >= 3 and not list(tmp_path.glob("rank*"))  # it waited, and no worker started


@pytest.mark.slow
def test_a_killed_store_host_ends_the_other_node_in_one_line(tmp_path):
    """Two c10d nodes on 127.0.0.1 (the first agent hosts the store); SIGKILL to it: the survivor stops its worker and
    says which store stopped answering, exit 1. The workers were handed the rendezvous options as given."""
    port = _port()
    options = ["--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}", f"--rdzv_id=asa-{port}",
               "--local_addr=127.0.0.1"]
    host, other, orphans = _agent(tmp_path, options, "host"), None, []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and host.poll() is None:  # the store listens: the other agent joins it
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        other = _agent(tmp_path, options, "other")
        while len(list(tmp_path.glob("rank*"))) < 2 and time.monotonic() < deadline and other.poll() is None:
            time.sleep(0.2)
        assert sorted(p.read_text() for p in tmp_path.glob("rank*")) == [" ".join(options) + "|unset"] * 2
        orphans = [int(p) for p in open(f"/proc/{host.pid}/task/{host.pid}/children").read().split()]
        host.send_signal(signal.SIGKILL)
        code = other.wait(timeout=120)
        text = (tmp_path / "other.log").read_text()
        assert code == 1 and "Traceback" not in text, text[-3000:]
        assert _last_line(text).startswith(f"[asa-torchrun] c10d rendezvous at 127.0.0.1:{port} (rdzv_id asa-{port}), "
                                           "one of --nnodes=2: its store did not answer: "), text[-3000:]
    finally:
        for agent in (host, other):
            if agent is not None and agent.poll() is None:
                agent.kill()
        for pid in orphans:  # the killed agent's worker, which no agent stops
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
