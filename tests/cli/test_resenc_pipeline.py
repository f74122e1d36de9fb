"""asa-pretrain model=resenc -> asa-finetune model=resenc model.pretrained=... -> asa-predict through the Python
API on demo phantoms (CPU, 32^3 crops): the masked-convolution encoder reaches the fine-tuning network."""

from __future__ import annotations

import pytest
import torch

from asa.api import finetune, predict, pretrain
from asa.api.config import compose_config
from asa.data import discover, write_demo_dataset
from asa.io import load_checkpoint
from asa.models import build_network, load_weights


@pytest.mark.slow
@pytest.mark.parametrize("method, coord", [("asa", True), ("mae", False)])
def test_resenc_pretrain_finetune_predict(tmp_path, method, coord):
    pre = tmp_path / "pre"
    pretrain(compose_config("pretrain", [
        "model=resenc", "model.size=tiny", f"method={method}", f"model.coord_channel={str(coord).lower()}", "data.crop=32",
        "data.demo.size=40", "data.demo.cases=4", "trainer=smoke", "probe.every=0", f"output_dir={pre}",
        "device=cpu", "trainer.amp=off"]))
    export = load_weights(pre / "checkpoints" / "encoder.safetensors")
    assert export["network"]["arch"] == "resenc_pretrain"
    assert export["network"]["kwargs"]["loss_weighting"] == ("attentive" if method == "asa" else "uniform")
    assert all(k.startswith("encoder.") for k in export["encoder"])

    root = write_demo_dataset("ibsr", tmp_path / "data", cases=4, size=32, seed=3)
    run = tmp_path / "ft"
    result = finetune(compose_config("finetune", [
        "data=ibsr", f"data.root={root}", "model=resenc", "model.size=tiny", f"model.coord_channel={str(coord).lower()}",
        f"model.pretrained={pre / 'checkpoints' / 'encoder.safetensors'}", "data.crop=32", "trainer=smoke",
        "trainer.max_steps=1", f"output_dir={run}", "device=cpu", "data.num_workers=0", "trainer.amp=off"]))
    assert result.step == 1
    # before its first step the fine-tuning network held the export's encoder tensor for tensor: rebuild that
    spec = load_checkpoint(run / "checkpoints" / "last.pt")["network"]
    fresh = build_network(spec)
    fresh.load_pretrained(pre / "checkpoints" / "encoder.safetensors", verbose=False)
    for key, value in export["encoder"].items():
        assert torch.equal(fresh.state_dict()[key], value), key

    written = predict(compose_config("predict", [
        f"checkpoint={run / 'checkpoints' / 'last.pt'}", f"input={root}", f"output={tmp_path / 'pred'}",
        "device=cpu", "amp=off"]))
    assert sorted(p.name for p in written) == sorted(f"{c.id}.nii.gz" for c in discover("ibsr", root))
