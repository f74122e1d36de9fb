"""The one atomic writer: contents, no leftovers, and file modes that follow the umask."""
from __future__ import annotations

import importlib.util
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from asa.io import atomic_path, atomic_write_json, atomic_write_text, default_file_mode


@pytest.fixture
def umask():
    """Set a umask for one test and restore the previous one."""
    saved = os.umask(0o022)
    os.umask(saved)
    yield lambda mask: os.umask(mask)
    os.umask(saved)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664), (0o077, 0o600)])
def test_mode_is_what_a_plain_open_gives(tmp_path, umask, mask, expected):
    umask(mask)
    assert default_file_mode() == expected
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    out = atomic_write_text(tmp_path / "a.txt", "hello\n")
    assert _mode(out) == _mode(plain) == expected
    assert out.read_text() == "hello\n"


def test_replaces_atomically_and_leaves_no_temporary_files(tmp_path):
    path = tmp_path / "sub" / "x.json"
    atomic_write_json(path, {"a": 1})
    atomic_write_json(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text("torn")
            raise RuntimeError("crash while writing")
    assert json.loads(path.read_text()) == {"a": 2}  # the previous file survives a failed write
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.json"]


def test_every_writer_delegates(tmp_path, umask):
    """Checkpoints, NIfTI outputs, evaluation results, the run config and the results table all get
    the umask's mode (they used to be 0600 or 0644 whatever the umask)."""
    import torch

    from asa.data import load_volume, save_volume, write_demo_dataset
    from asa.eval.evaluate import write_results
    from asa.io import save_checkpoint

    root = write_demo_dataset("ibsr", tmp_path / "data", cases=1, size=16, seed=0)
    image = next(root.rglob("*_ana_strip.nii.gz"))
    umask(0o007)
    files = [
        save_checkpoint(tmp_path / "c.pt", {"w": torch.zeros(2)}),
        save_volume(np.zeros((16, 16, 16), np.uint8), load_volume(image), tmp_path / "p.nii.gz"),
        *write_results({"names": ["A"], "per_case": [{"case_id": "x", "Dice_A": 1.0, "HD95_A": 0.0, "NSD_A": 1.0}]}, tmp_path / "ev"),
    ]
    spec = importlib.util.spec_from_file_location("rt", Path(__file__).resolve().parents[2] / "scripts" / "results_table.py")
    rt = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rt)
    summary = tmp_path / "s.json"
    summary.write_text(json.dumps({"names": ["A"], "A": {"Dice": {"mean": 0.5}, "HD95": {"mean": 1.0}}}))
    assert rt.main(["--run", f"x={summary}", "--out", str(tmp_path / "table")]) == 0
    files += [tmp_path / "table.md", tmp_path / "table.csv"]
    assert {f.name: oct(_mode(f)) for f in files} == {f.name: oct(0o660) for f in files}
