"""A checkpoint that would run code when loaded (a pickle calling ``os.system``, which torch 2.13's weights-only
unpickler words as ``unsupported GLOBAL posix.system whose module posix is blocked``) is refused on every path
that reads one: the message names the file and the callable and says nothing was run, and nothing was."""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import asa
from asa.api import compose_config, finetune, predict, probe
from asa.api.machinery.run import OptionError
from asa.cli.export import main as export_main
from asa.data import write_demo_dataset
from asa.io import CheckpointError, load_checkpoint


class _System:
    """Unpickled, it would run ``touch <marker>``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _refusal(path: Path) -> str:
    return (rf"checkpoint {re.escape(str(path))}: refused, nothing in it was run — "
            rf"(a plain pickle \(protocol \d, not a torch\.save archive\): )?it asks to call posix\.system")


@pytest.fixture
def payload(tmp_path) -> tuple[Path, Path]:
    """(a torch.save archive whose ``model`` runs the payload, the marker file it would create)."""
    marker, path = tmp_path / "pwned", tmp_path / "evil.pt"
    torch.save({"model": _System(marker), "encoder": {}, "network": {"arch": "resenc", "kwargs": {}}}, path)
    return path, marker


def test_the_wording_of_this_torch_is_the_one_matched(payload):
    path, marker = payload
    with pytest.raises(pickle.UnpicklingError, match="GLOBAL posix.system"):
        torch.load(path, weights_only=True)
    assert not marker.exists()


@pytest.mark.parametrize("kind, protocol", [("torch.save", None), ("pickle", 2), ("pickle", 0), ("pickle", 4),
                                            ("pickle", pickle.DEFAULT_PROTOCOL), ("top-level pickle", 5)])
def test_load_checkpoint_names_the_file_and_the_callable(tmp_path, kind, protocol):
    marker, path = tmp_path / "pwned", tmp_path / "evil.pt"
    if kind == "torch.save":
        torch.save({"model": _System(marker)}, path)
    else:  # a plain pickle: protocols 0, 4 and 5 (Python's default) used to be called "neither a torch.save
        # archive nor a pickle", since torch's weights-only loader stops at an opcode before it sees the callable
        obj = _System(marker) if kind == "top-level pickle" else {"model": _System(marker)}
        path.write_bytes(pickle.dumps(obj, protocol=protocol))
    with pytest.raises(CheckpointError, match=_refusal(path)) as err:
        load_checkpoint(path)
    assert "neither a torch.save archive nor a pickle" not in str(err.value)
    if kind != "torch.save" and protocol in (0, 4, 5):  # named a plain pickle by its protocol
        assert f"a plain pickle (protocol {protocol}, not a torch.save archive): it asks to call posix.system" \
            in str(err.value)
    assert not marker.exists()


def test_a_plain_pickle_of_plain_values_is_named_a_pickle(tmp_path):
    """A pickle of protocol 4 calls nothing, and torch's weights-only loader still cannot read it: the message
    says it is a pickle (not noise) and what the loader stopped at; text is still neither."""
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps({"model": {"w": [1.0, 2.0]}}, protocol=4))
    with pytest.raises(CheckpointError, match=rf"checkpoint {re.escape(str(path))}: a plain pickle \(protocol 4\), "
                                              r"not a torch\.save archive, that torch's weights-only loader cannot "
                                              r"read \(Unsupported operand 149\); nothing in it was run"):
        load_checkpoint(path)
    path.write_text("model: weights\n")
    with pytest.raises(CheckpointError, match=r"neither a torch\.save archive nor a pickle \(15 bytes"):
        load_checkpoint(path)


def test_load_encoder(payload):
    path, marker = payload
    with pytest.raises(CheckpointError, match=_refusal(path)):
        asa.load_encoder(path)
    assert not marker.exists()


def test_asa_export_refuses_with_exit_2_and_writes_nothing(payload, tmp_path, capsys):
    path, marker = payload
    assert export_main([str(path), str(tmp_path / "out")]) == 2
    assert re.search(_refusal(path), capsys.readouterr().err)
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_asa_predict_and_asa_probe(payload, tmp_path):
    path, marker = payload
    root = write_demo_dataset("ibsr", tmp_path / "ibsr", cases=1, size=24, seed=0)
    with pytest.raises(OptionError, match=_refusal(path)):
        predict(compose_config("predict", [f"checkpoint={path}", f"input={root}", f"output={tmp_path / 'pred'}",
                                           "device=cpu"]))
    with pytest.raises(OptionError, match=_refusal(path)):
        probe(compose_config("probe", [f"encoders=[{path}]", "data=targets", f"data.root={tmp_path}",
                                       f"output={tmp_path / 'probe'}", "device=cpu", "task=case", "task.target=age"]))
    assert not marker.exists() and not (tmp_path / "pred").exists() and not (tmp_path / "probe").exists()


def test_model_pretrained_and_resume(payload, old_run):
    path, marker = payload
    with pytest.raises(OptionError, match=_refusal(path)):
        old_run.train(1, False, f"model.pretrained={path}")
    assert not old_run.dir.exists()
    old_run.train(1, False)
    last = old_run.dir / "checkpoints" / "last.pt"
    last.write_bytes(path.read_bytes())
    with pytest.raises(OptionError, match=_refusal(last)):
        old_run.train(2, True)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [4, 5])
def test_no_torch_warning_precedes_the_refusal(tmp_path, protocol):
    """torch's weights-only loader warns of a pickle protocol other than 2 before it refuses the file: that warning
    (addressed to torch's developers) is not shown, so asa's refusal is the user's first line."""
    marker, path = tmp_path / "pwned", tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"model": _System(marker)}, protocol=protocol))
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        with pytest.raises(CheckpointError, match=_refusal(path)):
            load_checkpoint(path)
    assert [str(w.message) for w in said] == []
    assert not marker.exists()


@pytest.mark.slow  # asa-export's console script, in a child process
def test_the_console_s_first_line_is_the_refusal(tmp_path):
    marker, path = tmp_path / "pwned", tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"model": _System(marker)}, protocol=5))
    proc = subprocess.run([sys.executable, "-m", "asa.cli.export", str(path), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHONWARNINGS="always"))
    assert proc.returncode == 2, proc.stderr
    first = proc.stderr.strip().splitlines()[0]
    assert first.startswith("[asa-export] refused: ") and re.search(_refusal(path), first), proc.stderr
    assert not marker.exists() and not (tmp_path / "out").exists()
