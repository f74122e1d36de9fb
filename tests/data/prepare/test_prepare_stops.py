"""asa-prepare stopped during an ANTs registration (its own process): SIGTERM and SIGINT end it within seconds, not
when the registration ends (51.6 s and 33.2 s after the signal on a 64^3 input when ITK held the main thread), with
its scratch removed (its ended workers' too) and no ANTs process left; SIGKILL leaves a scratch folder named by its
host and process, which the next start removes while another live run's stays."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from asa.data.prepare.child import in_child
from asa.data.prepare.stages import remove_dead_scratch

_MAIN = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "  # Ctrl-C as in a terminal
         "from asa.cli.prepare import main; sys.exit(main(sys.argv[1:]))")


def _descendants(pid: int) -> list[int]:
    """The processes below ``pid`` (Linux's /proc): its workers, their ANTs children."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError):
            continue
    found, below = [], [pid]
    while below:
        found += (below := [child for child, parent in parents.items() if parent in below])
    return found


def _gone(pid: int) -> bool:
    """Whether ``pid`` has ended (a zombie too: ended, its parent gone or not yet reaping it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@pytest.mark.slow  # N4 and the start of a registration onto the 1 mm template
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process tree from Linux's /proc")
# one run per signal, and each place a stop can find the ANTs call: Ctrl-C in a lone process waiting on its ANTs child
# (`in_child` ends the child on whatever the stop raises there), a scheduler's SIGTERM in the parent of two workers,
# SIGKILL (no handler runs: the child dies with its parent). SIGTERM to a lone process would take the first run's path
# again: both signals raise in the parent (asa.cli.interrupted), and test_prepare_refusals stops a lone process by
# SIGTERM mid-case (its line, 143)
@pytest.mark.parametrize("signum, code, workers", [(signal.SIGINT, 130, 1), (signal.SIGKILL, -9, 1),
                                                   (signal.SIGTERM, 143, 2)])
def test_a_stop_during_the_registration_ends_it_within_seconds(signum, code, workers, tmp_path, monkeypatch,
                                                               built_once):
    pytest.importorskip("ants")
    pytest.importorskip("nilearn")
    from asa.data import write_demo_dataset

    # two template subjects, one for each of two workers (one process is stopped in the first), written once for
    # every signal (asa-prepare only reads them)
    raw = built_once("prepare-stops", lambda folder: write_demo_dataset(
        "bids", folder, cases=2, size=64, seed=0, anatomy=True))
    scratch, said = tmp_path / "tmp", tmp_path / "stderr.txt"
    scratch.mkdir()
    with said.open("w") as err:
        run = subprocess.Popen([sys.executable, "-c", _MAIN, str(raw), str(tmp_path / "out"), "--brain", "none",
                                "--spacing", "1", "--box", "template", "--no-progress", "--workers", str(workers)],
                               env={**os.environ, "TMPDIR": str(scratch)}, stderr=err)
    try:
        deadline = time.monotonic() + 300
        while not list(scratch.glob("asa-prepare-*/t1")):  # the T1's registration starts (a minute at 1 mm)
            assert run.poll() is None and time.monotonic() < deadline, said.read_text()[-2000:]
            time.sleep(0.05)
        time.sleep(1.0)
        children = _descendants(run.pid)
        sent = time.monotonic()
        os.kill(run.pid, signum)
        assert run.wait(timeout=60) == code
        waited = time.monotonic() - sent
    finally:
        if run.poll() is None:
            run.kill()
    assert waited < 15, f"{waited:.1f} s after the signal"  # SLURM's KillWait: 30 s
    deadline = time.monotonic() + 10  # a parent killed outright takes its ANTs process along (PR_SET_PDEATHSIG)
    while not all(_gone(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert children and all(_gone(pid) for pid in children)
    left = [p.name for p in scratch.iterdir()]
    if signum != signal.SIGKILL:
        assert left == [] and said.read_text().strip().splitlines()[-1].endswith(f"exit {code}")
        return
    assert len(left) == 1 and left[0].startswith(f"asa-prepare-{socket.gethostname()}-{run.pid}-")
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    assert [p.name for p in remove_dead_scratch()] == left and not any(scratch.iterdir())


def test_the_next_start_removes_only_the_scratch_of_processes_gone(tmp_path, monkeypatch):
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead, host = int(ended.stdout), socket.gethostname()
    folders = {"killed": f"asa-prepare-{host}-{dead}-k3j9x_2a", "live": f"asa-prepare-{host}-{os.getpid()}-a8b7c6d5",
               "other host": f"asa-prepare-{host}x-{dead}-q1w2e3r4", "unnamed": "asa-prepare-z9y8x7w6"}
    for name in folders.values():
        (tmp_path / name / "t1").mkdir(parents=True)
        (tmp_path / name / "t1" / "affine_0GenericAffine.mat").write_bytes(b"left")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert remove_dead_scratch() == [tmp_path / folders["killed"]]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(v for k, v in folders.items() if k != "killed")


@pytest.mark.slow  # asa-prepare's child process, started and killed
def test_the_child_outlives_ctrl_c_and_errors_and_its_death_fails_only_the_call():
    """Ctrl-C reaches a terminal's whole process group: the child ignores it (its parent decides). A call's exception
    is raised here with its type and the child goes on; a child that dies (out of memory) fails that call with a
    RuntimeError, and the next call starts another."""
    pytest.importorskip("ants")
    first = in_child(os.getpid)
    assert first != os.getpid()
    os.kill(first, signal.SIGINT)
    with pytest.raises(ValueError, match="invalid literal for int"):
        in_child(int, "x")
    assert in_child(os.getpid) == first
    with pytest.raises(RuntimeError, match=r"_exit ended with its process \(exit code 3\)"):
        in_child(os._exit, 3)
    assert in_child(os.getpid) not in (first, os.getpid())
