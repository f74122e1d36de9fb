"""asa-finetune model=dynunet -> asa-predict -> asa-evaluate through the Python API on demo phantoms
(CPU, 32^3 crops): the nnU-Net-planned CNN baseline runs the same pipeline as every network."""

from __future__ import annotations

import numpy as np
import pytest

from asa.api import evaluate, finetune, predict
from asa.api.config import compose_config
from asa.data import discover, write_demo_dataset
from asa.io import load_checkpoint
from asa.models import build_network, capabilities


@pytest.mark.slow
def test_dynunet_finetune_predict_evaluate(tmp_path):
    root = write_demo_dataset("brats", tmp_path / "data", cases=4, size=32, seed=3)
    out = tmp_path / "run"
    result = finetune(compose_config("finetune", [
        "data=brats", f"data.root={root}", "model=dynunet", "data.crop=32", "trainer=smoke", f"output_dir={out}",
        "device=cpu", "data.num_workers=0", "trainer.epochs=1", "trainer.amp=off",  # fp32: CPU bf16 convs are slow
    ]))
    assert result.step >= 1 and result.nonfinite_steps == 0
    ckpt = load_checkpoint(out / "checkpoints" / "last.pt")
    spec = ckpt["network"]
    assert spec["arch"] == "dynunet" and spec["kwargs"]["strides"] == [[1, 1, 1]] + [[2, 2, 2]] * 3
    net = build_network(spec)
    net.load_state_dict(ckpt["model"])
    assert capabilities(net).deep_supervision == 2

    preds = tmp_path / "pred"
    written = predict(compose_config("predict", [
        f"checkpoint={out / 'checkpoints' / 'last.pt'}", f"input={root}", f"output={preds}", "device=cpu", "amp=off",
    ]))
    assert sorted(p.name for p in written) == sorted(f"{c.id}.nii.gz" for c in discover("brats", root))
    summary = evaluate(compose_config("evaluate", [
        "data=brats", f"data.root={root}", f"pred={preds}", f"output={tmp_path / 'eval'}",
        f"split_file={out / 'splits.json'}", "subset=test",
    ]))
    assert summary["n_cases"] >= 1
    for name in ("WT", "TC", "ET"):
        for metric in ("Dice", "HD95", "NSD"):
            assert np.isfinite(summary[name][metric]["mean"])
