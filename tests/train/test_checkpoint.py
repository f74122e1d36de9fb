from __future__ import annotations

import os
import pickle
import random

import numpy as np
import pytest
import torch

from asa.io import CheckpointError, load_checkpoint, save_checkpoint
from asa.train import IncompatibleCheckpointError, capture_rng, check_compatible, fork_rng, restore_rng
from asa.train.checkpoint import prune_step_checkpoints


def _draw() -> tuple:
    return random.random(), float(np.random.rand()), float(np.random.randn()), torch.rand(3).tolist()


def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    np.random.randn()  # leaves a cached gaussian in numpy's state
    state = capture_rng()
    expected = _draw()
    save_checkpoint(tmp_path / "c.pt", {"rng": state, "w": torch.arange(3)})
    loaded = load_checkpoint(tmp_path / "c.pt")  # weights_only=True inside
    _draw()
    restore_rng(loaded["rng"])
    assert _draw() == expected
    assert torch.equal(loaded["w"], torch.arange(3))


def test_fork_rng_leaves_streams_untouched():
    state = capture_rng()
    a = _draw()
    restore_rng(state)
    with fork_rng(seed=5):
        first = _draw()
    with fork_rng(seed=5):
        assert _draw() == first  # seeded block repeats
    assert _draw() == a


def test_atomic_save_leaves_no_temporary_files(tmp_path):
    path = save_checkpoint(tmp_path / "sub" / "last.pt", {"step": 1})
    save_checkpoint(path, {"step": 2})
    assert load_checkpoint(path)["step"] == 2
    assert sorted(os.listdir(path.parent)) == ["last.pt"]


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))  # would create the marker file when unpickled


def test_pickle_payload_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.pt"
    torch.save({"model": {}, "extra": _Payload(str(marker))}, bad)
    with pytest.raises(CheckpointError, match=r"evil\.pt.*refused"):
        load_checkpoint(bad)
    assert not marker.exists()


def test_unreadable_and_missing_files_name_the_file(tmp_path):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a zip file")
    with pytest.raises(CheckpointError, match="broken.pt"):
        load_checkpoint(broken)
    with pytest.raises(CheckpointError, match="missing.pt: no such file"):
        load_checkpoint(tmp_path / "missing.pt")
    raw = tmp_path / "raw.pt"
    with open(raw, "wb") as f:
        pickle.dump({"a": 1}, f)  # plain pickle, not torch's zip format
    with pytest.raises(CheckpointError, match="raw.pt"):
        load_checkpoint(raw)


def test_check_compatible_names_every_differing_key():
    saved = {"model": {"embed_dim": 96, "depth": 2, "patch_size": 8}, "seed": 0}
    now = {"model": {"embed_dim": 192, "depth": 2, "window_size": 32}, "seed": 1}
    with pytest.raises(IncompatibleCheckpointError) as info:
        check_compatible(saved, now, ["model"], source="run/last.pt")
    msg = str(info.value)
    assert "model.embed_dim: run/last.pt has 96, config has 192" in msg
    assert "model.patch_size" in msg and "model.window_size" in msg
    assert "model.depth" not in msg and "seed" not in msg
    check_compatible(saved, {**saved, "seed": 3}, ["model"])  # other keys may change



def test_check_compatible_refuses_a_run_written_before_its_keys_moved():
    """An older run's config (data.patch_size, the segmenter's pos_mode) is never read into the new
    places: the refusal names each moved key and where it is now, not '<missing>' values."""
    moved = {"data.patch_size": "data.crop", "segmenter.pos_mode": "model.pos_mode"}.get
    saved = {"data": {"patch_size": 32, "task": "ibsr"}, "segmenter": {"pos_mode": "mirror"}}
    now = {"data": {"crop": 32, "task": "ibsr"}, "segmenter": {}, "model": {"pos_mode": "mirror"}}
    with pytest.raises(IncompatibleCheckpointError) as info:
        check_compatible(saved, now, ["data.crop", "segmenter"], source="run/last.pt", moved=moved)
    msg = str(info.value)
    assert "data.patch_size is now data.crop; segmenter.pos_mode is now model.pos_mode" in msg
    assert "<missing>" not in msg
    check_compatible({"data": {"crop": 32}}, now, ["data.crop"], moved=moved)  # a current run resumes


def test_check_compatible_reads_a_run_written_with_a_removed_key_without_it(capsys):
    """A key removed since (data.cache_dir) never changed a number: the run resumes, even where its
    section must match, and one line on stderr says the key was left out."""
    removed = {"data.cache_dir": "the store"}.get
    saved = {"data": {"crop": 32, "cache_dir": "/somewhere"}}
    now = {"data": {"crop": 32}}
    check_compatible(saved, now, ["data"], source="run/last.pt", moved={}.get, removed=removed)
    err = capsys.readouterr().err.splitlines()
    assert err == ["[asa] run/last.pt was written by an earlier asa; read without "
                   "data.cache_dir='/somewhere' (removed since: the store)"]
    with pytest.raises(IncompatibleCheckpointError, match="data.cache_dir"):  # without the table: a difference
        check_compatible(saved, now, ["data"], source="run/last.pt")


def test_prune_keeps_newest(tmp_path):
    for s in (1, 2, 10, 3):
        (tmp_path / f"step_{s:08d}.pt").write_bytes(b"")
    prune_step_checkpoints(tmp_path, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000003.pt", "step_00000010.pt"]


def test_random_bytes_are_reported_as_corrupt_not_as_a_security_refusal(tmp_path):
    # 300 draws: about 1 in 40 of them once read as a plain pickle (a stray STOP byte) or a torn file (an
    # undecodable string opcode)
    noise = tmp_path / "noise.pt"
    for seed in range(300):
        noise.write_bytes(np.random.default_rng(seed).bytes(4096))
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(noise)
        assert "unreadable or corrupt" in str(info.value) and "arbitrary code" not in str(info.value), seed
    torn = tmp_path / "torn.pt"
    torch.save({"w": torch.zeros(1000)}, torn)
    torn.write_bytes(torn.read_bytes()[:500])
    with pytest.raises(CheckpointError, match="unreadable or"):
        load_checkpoint(torn)

