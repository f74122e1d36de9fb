"""Checkpoint writes the caller does not wait for (`CheckpointWriter`): the file holds the state as it was when
submitted, whatever the caller changes after; writes land in order, two at most wait in memory; a failed write is
raised by `wait` or the next `submit` (or returned by `close`)."""
from __future__ import annotations

import threading
from collections import OrderedDict

import pytest
import torch

import asa.io.checkpoint as checkpoint_module
from asa.io import CheckpointWriter, load_checkpoint


@pytest.fixture
def held(monkeypatch):
    """Writes wait for ``release`` (set by the test), so that the test acts while one is under way."""
    release = threading.Event()
    write = checkpoint_module.save_checkpoint

    def slow(path, state):
        assert release.wait(30), "the write was never released"
        return write(path, state)

    monkeypatch.setattr(checkpoint_module, "save_checkpoint", slow)
    return release


def test_the_file_holds_the_state_as_submitted_not_as_changed_after(tmp_path, held):
    weights = OrderedDict(w=torch.zeros(3), b=torch.ones(2))
    weights._metadata = OrderedDict({"": {"version": 2}})  # a state_dict's, read by load_state_dict
    history = [{"step": 1, "val/loss": 0.5}]
    writer = CheckpointWriter()
    writer.submit([tmp_path / "best.pt", tmp_path / "copy.pt"], {"model": weights, "history": history, "step": 1})
    weights["w"].add_(7.0)  # training goes on while the write waits
    history.append({"step": 2, "val/loss": 0.4})
    assert not (tmp_path / "best.pt").exists()
    held.set()
    writer.wait()
    for name in ("best.pt", "copy.pt"):
        saved = load_checkpoint(tmp_path / name)
        assert saved["step"] == 1 and saved["history"] == [{"step": 1, "val/loss": 0.5}]
        assert torch.equal(saved["model"]["w"], torch.zeros(3)) and torch.equal(saved["model"]["b"], torch.ones(2))
        assert saved["model"]._metadata == {"": {"version": 2}}


def test_writes_land_in_order_and_at_most_two_wait_in_memory(tmp_path, held):
    writer = CheckpointWriter()
    writer.submit([tmp_path / "a.pt"], {"n": torch.tensor(1)})
    writer.submit([tmp_path / "a.pt"], {"n": torch.tensor(2)}, then=lambda: (tmp_path / "after-2").touch())
    done = threading.Event()
    third = threading.Thread(target=lambda: (writer.submit([tmp_path / "a.pt"], {"n": torch.tensor(3)}), done.set()))
    third.start()
    assert not done.wait(0.3)  # two queued: the third waits for the oldest to be written
    held.set()
    third.join(30)
    writer.wait()
    assert int(load_checkpoint(tmp_path / "a.pt")["n"]) == 3 and (tmp_path / "after-2").is_file()


def test_a_failed_write_is_raised_by_wait_naming_the_file_and_the_writer_goes_on(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the checkpoint folder should be")
    writer = CheckpointWriter()
    writer.submit([blocker / "best.pt"], {"n": torch.tensor(1)})
    with pytest.raises(OSError, match="not-a-folder"):
        writer.wait()
    writer.wait()  # raised once
    writer.submit([blocker / "best.pt"], {"n": torch.tensor(1)})
    writer.close()
    writer.submit([blocker / "best.pt"], {"n": torch.tensor(1)})
    with pytest.raises(OSError, match="not-a-folder"):  # the next write raises the one before's error
        for _ in range(100):
            writer.submit([tmp_path / "later.pt"], {"n": torch.tensor(2)})
    writer.submit([blocker / "best.pt"], {"n": torch.tensor(1)})
    error = writer.close()
    assert isinstance(error, OSError) and "not-a-folder" in str(error)
    writer.submit([tmp_path / "best.pt"], {"n": torch.tensor(3)})
    writer.wait()
    assert int(load_checkpoint(tmp_path / "best.pt")["n"]) == 3
