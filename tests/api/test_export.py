"""asa-export: hub-ready model folders (model.safetensors, config.json, README.md) that
asa.load_encoder and asa-finetune model.pretrained read, written atomically; the refusals."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import monai
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import asa
from asa.api.export import export_model
from asa.api.machinery.run import OptionError
from asa.cli.export import main as export_main
from asa.io import CheckpointError, save_checkpoint
from asa.api.machinery.networks import build_from_config
from asa.models import ASA, PRESETS, build_network, load_weights, network_spec

ENCODER_SIZES = {k: PRESETS["tiny"][k] for k in ("embed_dim", "depth", "num_heads", "window_size")}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[ASA, Path]:
    """A pretraining run folder: checkpoints/last.pt as the engine writes it, and an evaluation summary."""
    root = tmp_path_factory.mktemp("run")
    torch.manual_seed(3)
    mae = ASA(img_size=32, **PRESETS["tiny"]).eval()
    config = {"method": {"name": "asa"}, "data": {"name": "demo", "layout": "bids", "channels": ["t1"], "size": 32,
                                                  "resample_mm": 1.0, "root": "/somewhere"}}
    (root / "checkpoints").mkdir()
    save_checkpoint(root / "checkpoints" / "last.pt", {"model": mae.state_dict(), "network": network_spec(mae),
                                                       "step": 7, "config": config, "history": [{"val/loss": 0.5}]})
    (root / "eval").mkdir()
    (root / "eval" / "summary.json").write_text(json.dumps(
        {"task": "brats", "n_cases": 2, "names": ["WT"], "WT": {"Dice": {"mean": 0.8}, "HD95": {"mean": 3.0},
                                                                 "NSD": {"mean": 0.9}}}))
    return mae, root / "checkpoints" / "last.pt"


def test_export_then_load_encoder_gives_identical_tensors(run, tmp_path):
    mae, ckpt = run
    out = export_model(ckpt, tmp_path / "model", license="apache-2.0")
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    front = (out / "README.md").read_text().split("---")[1]  # an encoder: a feature extractor, no results to index
    assert "pipeline_tag: image-feature-extraction" in front and "model-index" not in front
    tensors = load_file(str(out / "model.safetensors"))
    own = {k: v for k, v in mae.state_dict().items() if k.startswith("encoder.")}
    assert tensors.keys() == own.keys() and all(torch.equal(tensors[k], own[k]) for k in own)
    encoder = asa.load_encoder(out)
    assert not encoder.training
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        assert torch.equal(encoder(x), mae.encoder.encode(x))
    config = json.loads((out / "config.json").read_text())
    assert config["source_network"] == network_spec(mae) and config["asa_format"] == "asa.model_folder"
    assert (config["method"], config["crop"], config["patch_size"], config["spacing_mm"]) == ("asa", [32] * 3, 8,
                                                                                              [1.0] * 3)
    assert config["data"] == {"name": "demo", "layout": "bids", "channels": ["t1"], "size": 32, "resample_mm": 1.0}
    assert config["orientation"] == "RAS+" and config["asa_version"] == asa.__version__
    # the software that wrote the folder, as the installed distributions name their versions
    assert config["software"]["torch"] == torch.__version__ and config["software"]["numpy"] == np.__version__
    assert config["software"]["monai"] == monai.__version__ and set(config["software"]) == {
        "python", "torch", "monai", "numpy", "dynamic-network-architectures"}
    assert config["source"] == {"file": "last.pt", "step": 7} and config["license"] == "apache-2.0"
    assert config["metrics"]["validation"] == {"val/loss": 0.5}
    assert config["metrics"]["eval"]["mean"] == {"WT": {"Dice": 0.8, "HD95": 3.0, "NSD": 0.9}}
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlicense: apache-2.0\nlibrary_name: asa\n") and "## Intended use" in card
    assert "- data: demo (layout bids), channels t1" in card and '"NSD": 0.9' in card
    assert f"exported with python {platform.python_version()}, torch {torch.__version__}, monai {monai.__version__}" in card


def test_finetuning_loads_the_folder(run, tmp_path):
    mae, ckpt = run
    out = export_model(ckpt, tmp_path / "model")
    state = load_weights(out)
    assert state["network"] == network_spec(mae) and state["step"] == 7
    # model.pretrained=OUT_DIR: crop and position code from the folder's spec, the encoder's weights loaded
    net = build_from_config({"pretrained": str(out), "pos_mode": None, "lr_axis": None, **ENCODER_SIZES}, {},
                            in_channels=2, out_channels=3, crop=None)
    assert net.img_size == (32, 32, 32)
    assert torch.equal(net.encoder.blocks[1].attn.qkv.weight, mae.encoder.blocks[1].attn.qkv.weight)
    assert torch.equal(net.encoder.norm.weight, mae.encoder.norm.weight)
    # a folder re-exports to the same weights and configuration
    again = export_model(out, tmp_path / "again", license="other")
    assert json.loads((again / "config.json").read_text())["source_network"] == network_spec(mae)
    assert torch.equal(load_file(str(again / "model.safetensors"))["encoder.norm.weight"], mae.encoder.norm.weight)


def test_refusals(run, tmp_path, capsys):
    _, ckpt = run
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert export_main([str(ckpt), str(out)]) == 2  # an existing non-empty folder
    assert "notes.txt" in capsys.readouterr().err and (out / "notes.txt").read_text() == "keep me"
    assert export_main([str(tmp_path / "missing.pt"), str(tmp_path / "x")]) == 2
    assert "no such file" in capsys.readouterr().err and not (tmp_path / "x").exists()
    scratch = build_network({"arch": "dynunet", "kwargs": dict(img_size=32, in_channels=1, out_channels=2)})
    save_checkpoint(tmp_path / "cnn.pt", {"model": scratch.state_dict(), "network": network_spec(scratch)})
    assert export_main([str(tmp_path / "cnn.pt"), str(tmp_path / "y")]) == 2  # no registered encoder
    assert "dynunet" in capsys.readouterr().err and not (tmp_path / "y").exists()
    with pytest.raises(OptionError, match="licence id"):
        export_model(ckpt, tmp_path / "z", license="my licence")
    # overwrite replaces an earlier export only, moving its files aside
    (out / "notes.txt").unlink()
    assert export_main([str(ckpt), str(out)]) == 0
    assert export_main([str(ckpt), str(out)]) == 2 and "--overwrite" in capsys.readouterr().err
    assert export_main([str(ckpt), str(out), "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("busy.replaced-")]
    assert len(aside) == 1 and sorted(p.name for p in aside[0].iterdir()) == ["README.md", "config.json",
                                                                              "model.safetensors"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left behind
    # an empty folder is fine without --overwrite
    (tmp_path / "empty").mkdir()
    assert export_main([str(ckpt), str(tmp_path / "empty")]) == 0


def test_bad_folders_are_named(run, tmp_path):
    _, ckpt = run
    out = export_model(ckpt, tmp_path / "model")
    (out / "config.json").unlink()
    with pytest.raises(CheckpointError, match="no config.json"):
        asa.load_encoder(out)
    (out / "config.json").write_text(json.dumps({"asa_format": "asa.model_folder", "network": {"arch": "unetr"}}))
    with pytest.raises(CheckpointError, match="differs"):
        load_weights(out)


def test_hub_ids_need_huggingface_hub(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_hub(name, *args, **kwargs):
        if name == "huggingface_hub":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_hub)
    with pytest.raises(CheckpointError, match="needs huggingface_hub"):
        load_weights("hf://someone/asa-base")
    with pytest.raises(ValueError, match="not a hub id"):
        from asa.io.hub import resolve_hub_id

        resolve_hub_id("hf://nothing")


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_an_overwrite_never_touches_a_run_folder(run, tmp_path, capsys):
    mae, ckpt = run
    folder = tmp_path / "run"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "last.pt").write_bytes(ckpt.read_bytes())
    (folder / "config.yaml").write_text("seed: 0\n")
    before = _listing(folder)
    # the run folder itself, holding the checkpoint: refused, naming what it holds, nothing moved
    assert export_main([str(folder / "checkpoints" / "last.pt"), str(folder), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "did not write (checkpoints, config.yaml)" in err and "nothing was written" in err
    assert _listing(folder) == before and sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_the_working_folder_as_out_dir(run, tmp_path, monkeypatch, capsys):
    _, ckpt = run
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    assert export_main([str(ckpt), "."]) == 0
    assert export_main([str(ckpt), ".", "--overwrite"]) == 0  # the folder stays, its old files go beside it
    assert "moved the previous README.md, config.json, model.safetensors" in capsys.readouterr().err
    assert sorted(p.name for p in here.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert [p.name.split("-")[0] for p in tmp_path.iterdir() if p.name != "here"] == ["here.replaced"]
    asa.load_encoder(here)


def test_config_json_alone_builds_the_network_of_the_weights(run, tmp_path):
    """config.json's network is the encoder alone: built from it, model.safetensors loads strictly."""
    mae, ckpt = run
    out = export_model(ckpt, tmp_path / "model")
    config = json.loads((out / "config.json").read_text())
    net = build_network(config["network"])
    net.load_state_dict(load_file(str(out / "model.safetensors")), strict=True)
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        assert torch.equal(net.eval()(x), mae.encoder.encode(x))


def test_the_card_of_a_demo_run_says_demo_phantoms(tmp_path):
    torch.manual_seed(0)
    seg = build_network({"arch": "swvit_unetr", "kwargs": dict(img_size=32, in_channels=4, out_channels=3,
                                                               **ENCODER_SIZES)})
    config = {"data": {"name": "brats", "layout": "brats", "root": None, "store": None}, "task": {"name": "segmentation"},
              "segmenter": {}}
    save_checkpoint(tmp_path / "best.pt", {"model": seg.state_dict(), "network": network_spec(seg), "config": config})
    out = export_model(tmp_path / "best.pt", tmp_path / "model")
    card = (out / "README.md").read_text()
    assert "- data: demo phantoms (generated by asa, not scans) (layout brats)" in card
    config = json.loads((out / "config.json").read_text())
    assert config["data"]["demo_phantoms"] is True
    build_network(config["network"]).load_state_dict(load_file(str(out / "model.safetensors")), strict=True)


def test_the_card_front_matter_follows_the_hub_conventions(tmp_path):
    torch.manual_seed(0)
    seg = build_network({"arch": "swvit_unetr", "kwargs": dict(img_size=32, in_channels=4, out_channels=3,
                                                               **ENCODER_SIZES)})
    run = tmp_path / "run"
    config = {"data": {"name": "brats", "layout": "brats", "root": "/home/me/brats", "store": None},
              "task": {"name": "brats", "channels": ["t1", "t1ce", "t2", "flair"]}, "segmenter": {},
              "model": {"pretrained": "/home/me/enc/encoder.pt"}}
    save_checkpoint(run / "checkpoints" / "best.pt", {"model": seg.state_dict(), "network": network_spec(seg),
                                                      "config": config})
    # an asa-evaluate summary in the run folder: two outputs with mean Dice 0.8 and 0.6 on 5 cases
    (run / "eval_test").mkdir(parents=True)
    (run / "eval_test" / "summary.json").write_text(json.dumps({
        "task": "brats", "n_cases": 5, "names": ["TC", "WT"],
        "TC": {"Dice": {"mean": 0.8}}, "WT": {"Dice": {"mean": 0.6}}}))
    out = export_model(run / "checkpoints" / "best.pt", tmp_path / "model", base_model="someone/asa-encoder",
                       datasets=["someone/brats-demo"])
    card = (out / "README.md").read_text()
    front = card.split("---")[1]
    assert "pipeline_tag: image-segmentation" in front and "base_model: someone/asa-encoder" in front
    assert "datasets:\n- someone/brats-demo" in front
    index = json.loads(next(line for line in front.splitlines() if line.startswith("model-index: "))[13:])
    metric = index[0]["results"][0]["metrics"][0]
    assert metric["type"] == "dice" and metric["value"] == pytest.approx(0.7)
    assert index[0]["results"][0]["dataset"]["split"] == "eval_test"
    assert "- encoder: fine-tuned from [someone/asa-encoder](https://huggingface.co/someone/asa-encoder)" in card
    assert "/home/me" not in card
    # a bad id is refused before anything is written
    with pytest.raises(Exception, match="--base-model 'not a repo'"):
        export_model(run / "checkpoints" / "best.pt", tmp_path / "bad", base_model="not a repo")
    assert not (tmp_path / "bad").exists()
