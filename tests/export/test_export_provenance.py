"""Both formats carry the card's provenance: a segmenter fine-tuned from a pretrained encoder names that encoder,
its pretraining cohort's digest (the one the model folder's config.json states) and the licence, in ``model.onnx``'s
metadata and in the nnU-Net results folder's dataset.json and checkpoint."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from asa.api import finetune, pretrain  # noqa: E402
from asa.api.config import compose_config  # noqa: E402
from asa.api.export import export_model  # noqa: E402
from asa.formats.onnx import ONNX_FILE  # noqa: E402
from asa.data import write_demo_dataset  # noqa: E402
from asa.formats.onnx import onnx_record  # noqa: E402
from asa.io import load_checkpoint  # noqa: E402


@pytest.mark.slow  # a pipeline: pretraining, fine-tuning and both exports
def test_exports_carry_encoder_cohort_and_licence(tmp_path):
    pre = tmp_path / "pre"
    pretrain(compose_config("pretrain", [
        "model=resenc", "model.size=tiny", "method=mae", "data.crop=32", "data.demo.size=40", "data.demo.cases=4",
        "trainer=smoke", "probe.every=0", f"output_dir={pre}", "device=cpu", "trainer.amp=off"]))
    encoder = pre / "checkpoints" / "encoder.safetensors"
    root = write_demo_dataset("brats", tmp_path / "data", cases=4, size=32, seed=3)
    finetune(compose_config("finetune", [
        "data=brats", f"data.root={root}", "model=resenc", "model.size=tiny", f"model.pretrained={encoder}",
        "data.crop=32", "trainer=smoke", "trainer.max_steps=1", f"output_dir={tmp_path / 'ft'}", "device=cpu",
        "data.num_workers=0", "trainer.amp=off"]))
    last = tmp_path / "ft" / "checkpoints" / "last.pt"

    onnx_folder = export_model(last, tmp_path / "onnx", format="onnx", license="cc-by-4.0")
    stated = json.loads((onnx_folder / "config.json").read_text())["pretraining_cohort"]
    results = export_model(last, tmp_path / "nnunet", format="nnunet-results", license="cc-by-4.0")
    carried = {"onnx": onnx_record(onnx_folder / ONNX_FILE)["provenance"],
               "dataset.json": json.loads((results / "dataset.json").read_text())["asa"],
               "checkpoint": load_checkpoint(results / "fold_all" / "checkpoint_final.pth")["asa"]}
    for where, prov in carried.items():
        assert prov["license"] == "cc-by-4.0", where
        assert prov["pretraining_cohort"]["digest"] == stated["digest"], where
        assert "encoder.safetensors" in prov["encoder"] and "scratch" not in prov["encoder"], where
        assert prov["task"] == "brats" and prov["source"]["file"] == "last.pt", where
    assert stated["digest"] in (results / "README.md").read_text()
