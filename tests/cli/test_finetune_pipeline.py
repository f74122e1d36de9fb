"""fine-tune -> predict -> evaluate end to end on demo phantoms in the BraTS, IBSR and WMH layouts
(non-RAS files on disk), on CPU with the tiny model and 32^3 crops."""
from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from asa.api import evaluate
from asa.api import finetune
from asa.api import predict
from asa.data import discover, get_task, write_demo_dataset
from asa.io import load_checkpoint
from asa.models import ASA, PRESETS, network_spec
from asa.api.config import compose_config

LAYOUTS = [("brats", 5, {1, 2, 4}), ("ibsr", 5, {1, 2, 3}), ("wmh", 5, {1})]


@pytest.fixture(scope="module")
def encoder_export(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("pretrained") / "encoder.pt"
    mae = ASA(img_size=32, **PRESETS["tiny"])
    torch.save({"encoder": mae.encoder_state_dict(), "network": network_spec(mae)}, path)  # as export_encoder writes
    return path


def _finetune(root: Path, out: Path, name: str, *extra: str):
    cfg = compose_config("finetune", [
        f"data={name}", f"data.root={root}", "model=tiny", "trainer=smoke", f"output_dir={out}", "device=cpu",
        "data.num_workers=0", "trainer.epochs=2", *extra,
    ])
    return finetune(cfg)


@pytest.mark.slow
@pytest.mark.parametrize("name, cases, foreground", LAYOUTS)
def test_finetune_predict_evaluate(tmp_path, encoder_export, name, cases, foreground):
    root = write_demo_dataset(name, tmp_path / "data", cases=cases, size=40, seed=1)
    out = tmp_path / "run"
    result = _finetune(root, out, name, f"model.pretrained={encoder_export}")
    assert result.step == 2
    ckpt = load_checkpoint(out / "checkpoints" / "last.pt")
    assert ckpt["config"]["outputs"]["name"] == name and ckpt["config"]["task"]["name"] == "segmentation"
    assert ckpt["config"]["model"]["pos_mode"] == "mirror"  # null resolved from the pretrained export
    assert ckpt["config"]["data"]["crop"] == 32  # null: the pretraining crop recorded in the export
    assert ckpt["config"]["segmenter"]["reference_grid"] == [4, 4, 4]
    assert (out / "checkpoints" / "best.pt").is_file() and (out / "splits.json").is_file()

    preds = tmp_path / "pred"  # the test cases only (split_file), as asa-evaluate scores them
    written = predict(compose_config("predict", [
        f"checkpoint={out / 'checkpoints' / 'best.pt'}", f"input={root}", f"output={preds}", "device=cpu",
        f"split_file={out / 'splits.json'}", "subset=test",
    ]))
    test_ids = set(json.loads((out / "splits.json").read_text())["test"])
    found = [c for c in discover(name, root) if c.id in test_ids]
    assert found and sorted(p.name for p in written) == sorted(f"{c.id}.nii.gz" for c in found)
    task = get_task(name)
    for case in found:
        ref = nib.load(case.images[task.channels[0]])
        got = nib.load(preds / f"{case.id}.nii.gz")
        assert got.shape == ref.shape and np.allclose(got.affine, ref.affine)
        assert nib.aff2axcodes(got.affine) == nib.aff2axcodes(ref.affine) != ("R", "A", "S")
        assert set(np.unique(np.asarray(got.dataobj)).tolist()) <= {0, *foreground}

    summary = evaluate(compose_config("evaluate", [
        f"data={name}", f"data.root={root}", f"pred={preds}", f"output={tmp_path / 'eval'}",
        f"split_file={out / 'splits.json'}", "subset=test",
    ]))
    split = json.loads((out / "splits.json").read_text())
    assert summary["n_cases"] == len(split["test"]) >= 1
    assert set(task.output_names) <= set(summary)
    for metric in ("Dice", "HD95"):
        assert all(np.isfinite(summary[n][metric]["mean"]) for n in task.output_names)
    assert (tmp_path / "eval" / "per_case.csv").read_text().startswith("case_id,Dice_")


def test_scratch_rows_and_pretrained_position_mode(tmp_path, encoder_export):
    root = write_demo_dataset("brats", tmp_path / "data", cases=4, size=32, seed=2)
    from omegaconf import OmegaConf

    from asa.api.machinery.networks import build_from_config

    brats = dict(in_channels=4, out_channels=3, crop=32)

    for experiment, pos_mode in (("baseline", "none"), ("spe_only", "mirror")):
        cfg = compose_config("finetune", ["model=tiny", f"experiment={experiment}", f"data.root={root}"])
        net = build_from_config(OmegaConf.to_container(cfg.model), OmegaConf.to_container(cfg.segmenter), **brats)
        assert torch.equal(net.encoder.pos_embed[0], net.encoder.pos_embed[3 * 16]) == (pos_mode == "mirror")
    # pos_mode null follows the pretrained encoder's (the export records pos_mode: mirror)
    cfg = compose_config("finetune", ["model=tiny", f"model.pretrained={encoder_export}"])
    net = build_from_config(OmegaConf.to_container(cfg.model), OmegaConf.to_container(cfg.segmenter), **brats)
    assert net.pos_mode == "mirror"
    assert torch.equal(net.encoder.pos_embed[0], net.encoder.pos_embed[3 * 16])
    assert net.encoder.patch_embed.proj.weight.shape[1] == 4


def test_pretrained_weights_for_a_baseline_are_rejected_clearly(encoder_export):
    from asa.api.machinery.networks import build_from_config

    with pytest.raises(ValueError, match="model arch 'unetr' takes no pretrained encoder"):
        build_from_config({"arch": "unetr", "pretrained": str(encoder_export)}, {}, in_channels=1, out_channels=4,
                          crop=32)


@pytest.mark.parametrize("model, size", [("unetr", 32), ("swin_unetr", 64)])  # SwinUNETR downsamples by 32
@pytest.mark.slow
def test_monai_baselines_build_from_their_configs(model, size):
    from omegaconf import OmegaConf

    from asa.api.machinery.networks import build_from_config

    cfg = compose_config("finetune", [f"model={model}"])
    net = build_from_config(OmegaConf.to_container(cfg.model), OmegaConf.to_container(cfg.segmenter),
                            in_channels=2, out_channels=2, crop=size).eval()
    with torch.no_grad():
        assert net(torch.zeros(1, 2, size, size, size)).shape == (1, 2, size, size, size)


def _mean_scalars(tb: Path, *tags: str) -> list[float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tb))
    events.Reload()
    return [float(np.mean([e.value for e in events.Scalars(t)])) for t in tags]


@pytest.mark.slow  # two 10-step runs of the tiny model at 32^3
def test_default_recipe_moves_a_pretrained_encoder_and_the_paper_sgd_does_not(tmp_path, encoder_export):
    """10 steps from a pretrained encoder: under the default recipe (optim=adamw) the encoder's relative
    update is at least 0.05 of the decoder's; under the paper's one-lr SGD it is below 1/30."""
    root = write_demo_dataset("ibsr", tmp_path / "data", cases=4, size=40, seed=1)
    ratios = {}
    for recipe in ("adamw", "sgd"):
        out = tmp_path / recipe
        cfg = compose_config("finetune", [
            "data=ibsr", f"data.root={root}", "model=tiny", f"output_dir={out}", "device=cpu", "data.num_workers=0",
            f"model.pretrained={encoder_export}", f"optim={recipe}", "trainer.max_steps=10", "trainer.epochs=10",
            "trainer.log_every=5", "trainer.panel_every=0", "trainer.progress=false", "trainer.amp=off",
            "data.split.ratios=[1.0,0.0,0.0]",
        ])
        assert finetune(cfg).step == 10
        enc, dec = _mean_scalars(out / "tb", "train/rel_update/encoder", "train/rel_update/decoder")
        ratios[recipe] = enc / dec
    assert ratios["adamw"] >= 0.05, ratios
    assert ratios["sgd"] < 1 / 30, ratios
