"""Shared test setup: deterministic, single-threaded-friendly CPU runs."""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import sys
import tempfile
from pathlib import Path

# every process the suite starts (console scripts, torchrun ranks, a study's units) imports asa, and every xdist
# worker rewrites the asserts of every test module: with PYTHONDONTWRITEBYTECODE set (as in some CI images) each
# would compile them again. The suite keeps their bytecode (in __pycache__, which git ignores): the fast lane on 2
# idle cores, 3 min 44 s with the variable set, 2 min 56 s without (the first run) and 2 min 44 s after
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False

import pytest  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from asa.api import finetune, load_config  # noqa: E402
from asa.data import write_demo_dataset  # noqa: E402
from asa.io import load_checkpoint, save_checkpoint  # noqa: E402


# pytest-xdist's workers share the machine's cores: each takes its share for torch's threads and for the processes
# its tests start (they inherit the variable), rather than every worker spinning threads on every core (the fast
# lane on 2 idle cores, -n 2, one run after the other: 3 min 56 s with 2 threads a worker, 3 min 22 s with 1)
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    # (macOS has no affinity: its cores)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, cores // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(scope="session")
def built_once(tmp_path_factory):
    """``built_once(name, build) -> folder``: the folder ``build(folder)`` writes, once in the whole run whichever
    xdist worker asks first (the others wait for it, then read it). Work stealing splits a module's tests between the
    workers, and a worker sets a module's fixtures up again each time it comes back to the module: a fixture of
    seconds (asa-prepare's registrations) was built three times a run. Tests only read the folder."""
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if "PYTEST_XDIST_WORKER" in os.environ else base) / "built-once"
    root.mkdir(exist_ok=True)

    def get(name: str, build) -> Path:
        folder, done = root / name, root / f"{name}.done"
        with open(root / f"{name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            if not done.exists():  # built where it stays (what it writes may name its own paths)
                shutil.rmtree(folder, ignore_errors=True)
                build(folder)
                done.touch()
        return folder

    return get


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # the slow tier first (a stable sort): its long tests start while the short ones can still fill the other
    # workers, instead of one of them running alone at the end of the whole suite
    items.sort(key=lambda item: "slow" not in item.keywords)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


class OldRun:
    """A tiny fine-tuning run (tiny SW-ViT U-Net, 16³ crops, 4 demo IBSR cases) in ``<tmp>/run``, for the
    tests that resume a run written by an earlier version: `train` runs or resumes it, `rewrite` edits
    what it saved (every checkpoint's run config and state, and config.yaml) into an older layout."""

    def __init__(self, tmp_path) -> None:
        self.root = write_demo_dataset("ibsr", tmp_path / "ibsr", cases=4, size=24, seed=1)
        self.dir = tmp_path / "run"

    def config(self, steps: int, resume: bool, *overrides: str):
        cfg = load_config("finetune", "data=ibsr", "trainer=smoke", "model=tiny", *overrides)
        cfg.output_dir, cfg.device, cfg.seed, cfg.resume = str(self.dir), "cpu", 0, resume
        cfg.data.root, cfg.data.num_workers, cfg.data.crop = str(self.root), 0, 16
        cfg.data.split.ratios = [3, 1, 0]
        cfg.trainer.max_steps, cfg.trainer.epochs = steps, steps
        cfg.trainer.panel_every = 0  # trainer=smoke draws a panel (a whole-case prediction) every epoch: not resumed state
        return cfg

    def train(self, steps: int, resume: bool, *overrides: str):
        return finetune(self.config(steps, resume, *overrides))

    def rewrite(self, config, state=None) -> None:
        """``config(run config) -> the older one`` on every checkpoint and config.yaml, without the version of its
        layout (written before run configs recorded one: read through every migration); ``state(checkpoint)``
        edits the rest of a checkpoint in place."""
        def older(saved: dict) -> dict:
            return {k: v for k, v in config(saved).items() if k != "version"}

        for ckpt in (self.dir / "checkpoints").glob("*.pt"):
            saved = load_checkpoint(ckpt)
            if "config" in saved:
                saved["config"] = older(saved["config"])
            if state is not None:
                state(saved)
            save_checkpoint(ckpt, saved)
        path = self.dir / "config.yaml"
        path.write_text(yaml.safe_dump(older(yaml.safe_load(path.read_text()))))


@pytest.fixture
def old_run(tmp_path) -> OldRun:
    return OldRun(tmp_path)


@pytest.fixture
def read_only(tmp_path, monkeypatch) -> Path:
    """``tmp_path / "ro"``: an existing folder on a (simulated) read-only file system. The tests run as root in CI,
    where chmod does not stop writes: the file system refuses where asa creates files and folders
    (`tempfile.mkstemp`, `Path.mkdir`, `os.open` with O_CREAT)."""
    ro = tmp_path / "ro"
    ro.mkdir()

    def inside(path) -> bool:
        path = Path(path).absolute()
        return path == ro or ro in path.parents

    def refuse(path):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    real_mkstemp, real_mkdir, real_open = tempfile.mkstemp, Path.mkdir, os.open

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and inside(dir):
            refuse(dir)
        return real_mkstemp(*args, dir=dir, **kwargs)

    def mkdir(self, *args, **kwargs):
        if inside(self) and not self.exists():
            refuse(self)
        return real_mkdir(self, *args, **kwargs)

    def os_open(path, flags, *args, **kwargs):
        if flags & os.O_CREAT and inside(path):
            refuse(path)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(Path, "mkdir", mkdir)
    monkeypatch.setattr(os, "open", os_open)
    return ro
