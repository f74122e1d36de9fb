"""A run folder that cannot be written any more while the run trains (a read-only bind mount over it, a quota, its
permissions taken): the run stops with one line naming the folder, the OS error, the step, the last.pt that is intact
and the command that resumes, exit 1; TensorBoard's writer thread prints no traceback first; the lock is removed where
the folder lets it be, and said to stay where it does not; last.pt resumes once the folder can be written again.

The tests run as root in CI, where chmod does not stop writes: the folder turns read-only after a training step by
refusing, inside it, what asa creates files and folders with (`tempfile.mkstemp`, `os.open` with O_CREAT, `Path.mkdir`)
and TensorBoard's writes to its open event file (with ``unlink``: removing files too, as a read-only mount does)."""

from __future__ import annotations

import errno
import os
import re
import tempfile
from pathlib import Path

import pytest
from tensorboard.summary.writer import record_writer

import asa.train.engine as engine
from asa.api import pretrain
from asa.api.config import compose_config
from asa.cli.common import EXIT_FAILED, entry
from asa.io import load_checkpoint
from tests.fixtures.runs import pretrain_overrides



class ReadOnlyAfter:
    """Turns ``folder`` read-only once the training has taken ``step`` steps (``unlink``: removals refused too)."""

    def __init__(self, folder: Path, step: int, unlink: bool, monkeypatch) -> None:
        self.folder, self.on, self.armed = folder, False, True
        real_mkstemp, real_mkdir, real_open, real_unlink = tempfile.mkstemp, Path.mkdir, os.open, os.unlink
        real_write, real_step = record_writer.RecordWriter.write, engine.Engine._train_step

        def refuse(path) -> None:
            if self.on and (Path(path).absolute() == folder or folder in Path(path).absolute().parents):
                raise OSError(errno.EROFS, "Read-only file system", str(path))

        def mkstemp(*args, dir=None, **kwargs):
            refuse(dir or ".")
            return real_mkstemp(*args, dir=dir, **kwargs)

        def mkdir(path, *args, **kwargs):
            if not path.exists():
                refuse(path)
            return real_mkdir(path, *args, **kwargs)

        def os_open(path, flags, *args, **kwargs):
            if flags & os.O_CREAT:
                refuse(path)
            return real_open(path, flags, *args, **kwargs)

        def os_unlink(path, *args, **kwargs):
            if unlink:
                refuse(path)
            return real_unlink(path, *args, **kwargs)

        def write(writer, data):  # TensorBoard's thread, on the event file it opened before
            refuse(folder / "tb")
            return real_write(writer, data)

        def train_step(eng, *args, **kwargs):
            out = real_step(eng, *args, **kwargs)
            self.on = self.on or (self.armed and eng.step >= step)
            return out

        for owner, name, fn in ((tempfile, "mkstemp", mkstemp), (Path, "mkdir", mkdir), (os, "open", os_open),
                                (os, "unlink", os_unlink), (record_writer.RecordWriter, "write", write),
                                (engine.Engine, "_train_step", train_step)):
            monkeypatch.setattr(owner, name, fn)


@pytest.fixture(scope="module")
def demo_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("demo-cache")


@pytest.mark.parametrize("unlink", [pytest.param(False, id="files-removable", marks=pytest.mark.slow),
                                    pytest.param(True, id="read-only-mount")])
def test_a_run_folder_turned_read_only_stops_the_run_in_one_line(tmp_path, demo_cache, capsys, monkeypatch, unlink):
    out = tmp_path / "run"
    args = pretrain_overrides(out, demo_cache, "trainer.epochs=4", "trainer.max_steps=8", "trainer.ckpt_every=1",
                      "trainer.panel_every=0")
    folder = ReadOnlyAfter(out, 3, unlink, monkeypatch)
    with pytest.raises(SystemExit) as stop:
        entry("asa-pretrain", pretrain, compose_config("pretrain", args))
    err = capsys.readouterr().err
    assert stop.value.code == EXIT_FAILED, err
    assert "Traceback" not in err and "Exception in thread" not in err and "warning" not in err, err
    said = [ln for ln in err.splitlines() if ln.startswith("[asa-pretrain]")]
    assert len(said) == 1, err
    found = re.fullmatch(
        rf"\[asa-pretrain\] error: training stopped at step (\d+): its folder {out} could not be written "
        rf"\({out}/(tb|checkpoints): read-only file system\); {out}/checkpoints/last\.pt of step (\d+) is intact; once "
        rf"the folder can be written, resume with: asa-pretrain resume=true"
        rf"( \(run\.lock stays: the next run on this host takes it over, this process having ended\))?", said[0])
    assert found, said[0]
    stopped, saved = int(found[1]), int(found[3])
    assert 1 <= saved < stopped <= 4 and load_checkpoint(out / "checkpoints" / "last.pt")["step"] == saved
    assert (out / "run.lock").exists() == unlink == bool(found[4])
    assert not [p.name for p in (out / "checkpoints").iterdir() if p.name != "last.pt" and "best" not in p.name]

    folder.on = folder.armed = False  # writable again
    if unlink:  # the lock names this (live) test process; a new process takes over the lock of one that ended
        (out / "run.lock").unlink()
    with pytest.raises(SystemExit) as stop:
        entry("asa-pretrain", pretrain, compose_config("pretrain", [*args, "resume=true"]))
    assert stop.value.code == 0, capsys.readouterr().err
    assert f"resumed from {out}/checkpoints/last.pt at step {saved}" in capsys.readouterr().err
    assert load_checkpoint(out / "checkpoints" / "last.pt")["step"] == 8 and not (out / "run.lock").exists()
