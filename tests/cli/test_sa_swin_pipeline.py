"""SA-Swin end to end on demo phantoms (CPU, tiny SwinViT; 32^3 pretraining crops, 64^3 fine-tuning crops
since SwinUNETR's bottleneck needs more than one voxel): asa-pretrain experiment=sa_swin ->
asa-finetune model=sa_swin from its encoder export (the safetensors file) -> asa-predict -> asa-evaluate."""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from asa.api import evaluate, finetune, predict, pretrain
from asa.api.config import compose_config
from asa.methods import get_method
from asa.data import discover, write_demo_dataset
from asa.io import load_checkpoint

SIZES = ["feature_size=12", "depths=[1,1,1,1]", "num_heads=[1,1,2,4]"]


@pytest.mark.slow
def test_sa_swin_pretrain_finetune_predict_evaluate(tmp_path):
    pre = tmp_path / "pre"
    result = pretrain(compose_config("pretrain", [
        "experiment=sa_swin", "trainer=smoke", f"output_dir={pre}", "device=cpu", "data.crop=32",
        "data.demo.size=40", "data.demo.cases=6", f"data.demo.cache_dir={tmp_path / 'cache'}",
        "method.drop_patch=8", *(f"method.{s}" for s in SIZES),
    ]))
    assert result.step == 2
    export = load_checkpoint(pre / "checkpoints" / "encoder.pt")
    assert export["encoder"] and all(k.startswith("swinViT.") for k in export["encoder"])
    assert (pre / "tb").is_dir()

    root = write_demo_dataset("brats", tmp_path / "data", cases=4, size=64, seed=1)
    out = tmp_path / "ft"
    result = finetune(compose_config("finetune", [
        "data=brats", f"data.root={root}", "model=sa_swin", "trainer=smoke", f"output_dir={out}", "device=cpu",
        "data.crop=64", "data.num_workers=0", "trainer.epochs=2", f"model.pretrained={pre}/checkpoints/encoder.safetensors",
        *(f"model.{s}" for s in SIZES),
    ]))
    assert result.step == 2
    ckpt = load_checkpoint(out / "checkpoints" / "last.pt")
    assert ckpt["config"]["model"]["arch"] == "sa_swin"
    start = export["encoder"]["swinViT.layers4.0.blocks.0.mlp.linear1.weight"]
    tuned = ckpt["model"]["swinViT.layers4.0.blocks.0.mlp.linear1.weight"]
    assert start.shape == tuned.shape and (start - tuned).abs().max() < 0.1  # started from the export

    preds = tmp_path / "pred"
    written = predict(compose_config("predict", [
        f"checkpoint={out / 'checkpoints' / 'best.pt'}", f"input={root}", f"output={preds}", "device=cpu",
    ]))
    found = discover("brats", root)
    assert sorted(p.name for p in written) == sorted(f"{c.id}.nii.gz" for c in found)
    got = nib.load(preds / f"{found[0].id}.nii.gz")
    assert got.shape == nib.load(found[0].images["t1"]).shape
    assert set(np.unique(np.asarray(got.dataobj)).tolist()) <= {0, 1, 2, 4}

    summary = evaluate(compose_config("evaluate", [
        "data=brats", f"data.root={root}", f"pred={preds}", f"output={tmp_path / 'eval'}",
        f"split_file={out / 'splits.json'}", "subset=test",
    ]))
    assert summary["n_cases"] == len(json.loads((out / "splits.json").read_text())["test"]) >= 1
    assert all(np.isfinite(summary[n]["Dice"]["mean"]) for n in ("WT", "TC", "ET"))


def test_an_unknown_method_is_refused_naming_the_known_ones(tmp_path):
    with pytest.raises(Exception, match="method/byol"):  # Hydra lists the method group's options
        compose_config("pretrain", [f"output_dir={tmp_path}", "method=byol"])
    with pytest.raises(ValueError, match="method=byol: no such pretraining method; expected one of asa, jigsaw, mae, rpl, sa_swin"):
        get_method("byol")
