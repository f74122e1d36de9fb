"""asa-predict, asa-probe, asa-preprocess and asa-evaluate refuse an output folder they cannot write (exit 2, one line
naming the option), before any work, as asa-pretrain / asa-finetune refuse their output_dir.

The read-only file system is simulated (the ``read_only`` fixture of tests/conftest.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from asa.api import predict, preprocess, probe
from asa.api.config import compose_config
from asa.cli.common import EXIT_REFUSED, entry
from asa.data import get_task, write_demo_dataset
from asa.io import save_checkpoint
from asa.models import PRESETS, build_network, network_spec


def _refused(app: str, run, cfg, capsys, option: str, folder: Path) -> None:
    with pytest.raises(SystemExit) as stop:
        entry(app, run, cfg)
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith(f"[{app}]")]
    assert stop.value.code == EXIT_REFUSED, lines
    assert len(lines) == 1 and lines[0].startswith(f"[{app}] refused: {option}={folder}: cannot write there "
                                                   "(read-only file system; a read-only folder?)"), lines
    assert "Errno" not in lines[0]


@pytest.fixture(scope="module")
def brats(tmp_path_factory):
    base = tmp_path_factory.mktemp("ro-predict")
    data = write_demo_dataset("brats", base / "brats", cases=2, size=16, seed=0)
    task = get_task("brats")
    tiny = {k: v for k, v in PRESETS["tiny"].items() if not k.startswith("decoder")}
    torch.manual_seed(0)
    net = build_network({"arch": "swvit_unetr", "kwargs": dict(img_size=16, in_channels=len(task.channels),
                                                      out_channels=task.num_outputs, **tiny)})
    ckpt = save_checkpoint(base / "a.pt", {"model": net.state_dict(), "network": network_spec(net),
                                           "config": {"task": dataclasses.asdict(task)}})
    return data, ckpt


@pytest.mark.parametrize("sub", ["", "preds"])  # the read-only folder itself, or a folder to create in it
def test_predict_refuses_a_read_only_output(brats, read_only, capsys, sub):
    data, ckpt = brats
    out = read_only / sub if sub else read_only
    cfg = compose_config("predict", [f"checkpoint={ckpt}", f"input={data}", f"output={out}", "device=cpu", "amp=off"])
    _refused("asa-predict", predict, cfg, capsys, "output", out)


def test_probe_refuses_a_read_only_output_before_probing(tmp_path, read_only, capsys, monkeypatch):
    import importlib

    case_task = importlib.import_module("asa.api.tasks.case")  # the case task's probes
    data = write_demo_dataset("bids", tmp_path / "bids", cases=6, size=32, seed=0, targets=True)
    monkeypatch.setattr(case_task, "case_probes", lambda *a, **k: pytest.fail("probed before checking the output"))
    out = read_only / "probe"
    cfg = compose_config("probe", ["encoders=[random:tiny]", "data=targets", f"data.root={data}", f"output={out}",
                                   "device=cpu", "folds=2", "bootstrap=10", "knn_k=2", "task=case", "task.target=age", "crop=32"])
    _refused("asa-probe", probe, cfg, capsys, "output", out)


def test_preprocess_refuses_a_read_only_store(tmp_path, read_only, capsys):
    store = read_only / "store"
    cfg = compose_config("preprocess", ["data=demo", "data.demo.cases=2", "data.demo.size=32",
                                        f"data.demo.cache_dir={tmp_path / 'cache'}", f"data.store={store}",
                                        "progress=false", "workers=1"])
    _refused("asa-preprocess", preprocess, cfg, capsys, "data.store", store)
    assert not store.exists()


def test_evaluate_refuses_a_read_only_output_before_scoring(brats, tmp_path, read_only, capsys, monkeypatch):
    import importlib

    segmentation = importlib.import_module("asa.api.tasks.segmentation")  # the segmentation task's scoring
    data, _ = brats
    monkeypatch.setattr(segmentation, "evaluate_cases", lambda *a, **k: pytest.fail("scored before checking the output"))
    out = read_only / "eval"
    cfg = compose_config("evaluate", ["data=brats", f"data.root={data}", f"pred={data}", f"output={out}"])
    from asa.api import evaluate

    _refused("asa-evaluate", evaluate, cfg, capsys, "output", out)


def test_export_refuses_a_read_only_out_dir(read_only, tmp_path, capsys):
    """It used to end with exit 1 and a raw OSError, as the other scripts no longer do."""
    from asa.cli.export import main as export_main

    source = tmp_path / "encoder.pt"
    source.write_bytes(b"")  # refused before it is read
    assert export_main([str(source), str(read_only / "model")]) == EXIT_REFUSED
    assert capsys.readouterr().err.strip() == (f"[asa-export] refused: OUT_DIR={read_only / 'model'}: cannot write "
                                               "there (read-only file system; a read-only folder?); choose another "
                                               "OUT_DIR")
    assert not (read_only / "model").exists()
