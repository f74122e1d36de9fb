"""asa-finetune with data.task=case: classification and regression heads on demo phantoms with targets."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from asa.api import evaluate, finetune, predict
from asa.api.config import compose_config
from asa.api.machinery.rundir import RunDirError
from asa.api.machinery.run import OptionError
from asa.data import discover, read_targets, write_demo_dataset
from asa.io import load_checkpoint
from asa.models import ASA, PRESETS, ASACaseHead, build_network, network_spec


@pytest.fixture(scope="module")
def bids(tmp_path_factory) -> Path:
    root = write_demo_dataset("bids", tmp_path_factory.mktemp("data") / "bids", cases=8, size=32, seed=0, targets=True)
    # one subject without a diagnosis (and no sessions.tsv that would give one): reported and skipped, never imputed
    table = root / "participants.tsv"
    lines = table.read_text().splitlines()
    header = lines[0].split("\t")
    at = next(i for i, line in enumerate(lines[1:], 1)
              if not (root / line.split("\t")[0] / f"{line.split(chr(9))[0]}_sessions.tsv").exists())
    row = lines[at].split("\t")
    row[header.index("diagnosis")] = "n/a"
    lines[at] = "\t".join(row)
    table.write_text("\n".join(lines) + "\n")
    return root


def _skipped(root: Path) -> str:
    return next(line.split("\t")[0] for line in (root / "participants.tsv").read_text().splitlines() if "n/a" in line)


def _finetune(root: Path, out: Path, *extra: str):
    cfg = compose_config("finetune", [
        "data=targets", "task=case", f"data.root={root}", "model=tiny", "trainer=smoke", f"output_dir={out}", "device=cpu",
        "data.num_workers=0", "trainer.epochs=2", "trainer.max_steps=3", "data.split.ratios=[4,3,0]", *extra,
    ])
    return finetune(cfg)


@pytest.mark.parametrize("target, kind, monitor, outputs", [("diagnosis", "multiclass", "val/balanced_accuracy", 3),
                                                            ("age", "continuous", "val/mae", 1)])
@pytest.mark.slow
def test_a_tiny_case_run_writes_checkpoints_that_rebuild_the_head(tmp_path, bids, capsys, target, kind, monitor, outputs):
    torch.manual_seed(0)
    mae = ASA(img_size=32, **PRESETS["tiny"])
    export = tmp_path / "encoder.pt"
    torch.save({"encoder": mae.encoder_state_dict(), "network": network_spec(mae)}, export)
    out = tmp_path / "run"
    result = _finetune(bids, out, f"task.target={target}", f"model.pretrained={export}", "task.head.pooling=attention",
                       "trainer.amp=off")  # validation in fp32, as asa-predict runs
    assert result.step == 3
    logged = [h for h in result.history if monitor in h]
    assert logged and all(isinstance(h[monitor], float) for h in logged)
    ckpt = load_checkpoint(out / "checkpoints" / "best.pt")
    task, config = ckpt["config"]["outputs"], ckpt["config"]
    assert task["name"] == "case" and task["kind"] == kind and task["target"] == target
    assert (config["trainer"]["monitor"], config["trainer"]["mode"]) == (monitor, "min" if kind == "continuous" else "max")
    net = build_network(ckpt["network"])
    assert isinstance(net, ASACaseHead) and net.out_channels == outputs and net.pool is not None
    net.load_state_dict(ckpt["model"])
    assert net(torch.zeros(1, 1, 32, 32, 32)).shape == (1, outputs)
    targets = json.loads((out / "targets.json").read_text())
    splits = json.loads((out / "splits.json").read_text())
    used = set(splits["train"]) | set(splits["val"]) | set(splits["test"])
    if target == "diagnosis":
        assert task["classes"] == ["AD", "CN", "MCI"]
        skipped = _skipped(bids)
        assert list(targets["skipped"]) == [skipped] and skipped not in used and len(used) == 7
        assert "skipped (no target, nothing imputed)" in capsys.readouterr().err
    else:  # every subject has an age; the head outputs years (shift / scale of the training ages)
        assert len(used) == 8 and net.target_scale > 1 and 40 < net.target_shift < 95
    # predict -> evaluate on the validation cases scores best.pt as validation did
    split = ["split_file=" + str(out / "splits.json"), "subset=val"]
    written = predict(compose_config("predict", [f"checkpoint={out / 'checkpoints' / 'best.pt'}", f"input={bids}",
                                                 f"output={tmp_path / 'pred'}", "device=cpu", *split]))
    header, *rows = written[0].read_text().splitlines()
    assert header == ("case_id,prediction" + ("".join(f",p_{c}" for c in task["classes"]) if outputs > 1 else ""))
    assert sorted(r.split(",")[0] for r in rows) == sorted(splits["val"])
    summary = evaluate(compose_config("evaluate", [f"pred={tmp_path / 'pred'}", "data=targets", f"data.root={bids}",
                                                   "task=case", f"task.target={target}", f"output={tmp_path / 'eval'}", *split]))
    saved = json.loads((tmp_path / "eval" / "summary.json").read_text())
    metric = monitor.removeprefix("val/")
    best = next(h for h in result.history if h["step"] == result.best_step)
    assert saved["metrics"][metric]["value"] == pytest.approx(best[monitor], abs=1e-3)
    assert saved["metrics"][metric]["ci_low"] <= saved["metrics"][metric]["value"] <= saved["metrics"][metric]["ci_high"]
    assert summary["n"] == len(splits["val"]) and saved["target"] == target


def test_encoder_aware_options_apply_to_the_case_head(tmp_path, bids):
    """optim.freeze_encoder_epochs leaves the pretrained encoder bit-exact while the head trains."""
    torch.manual_seed(0)
    mae = ASA(img_size=32, **PRESETS["tiny"])
    export = tmp_path / "encoder.pt"
    torch.save({"encoder": mae.encoder_state_dict(), "network": network_spec(mae)}, export)
    out = tmp_path / "run"
    _finetune(bids, out, "task.target=age", f"model.pretrained={export}", "optim.freeze_encoder_epochs=5",
              "optim.layer_decay=0.5", "optim.encoder_lr_scale=0.1")
    state = load_checkpoint(out / "checkpoints" / "last.pt")
    for key, value in mae.encoder_state_dict().items():
        assert torch.equal(state["model"][key], value), key
    torch.manual_seed(0)
    fresh = build_network(state["network"]).state_dict()
    assert any(not torch.equal(state["model"][k], fresh[k]) for k in fresh if k.startswith("mlp."))
    scales = sorted({g["lr_scale"] for g in state["optimizer"]["param_groups"]})
    depth = PRESETS["tiny"]["depth"]
    assert scales[0] == pytest.approx(0.1 * 0.5 ** (depth + 1)) and scales[-1] == 1.0  # patch embedding .. head


def test_case_runs_refuse_what_they_cannot_honour(tmp_path, bids):
    with pytest.raises(OptionError, match="data.task=case needs task.target"):
        _finetune(bids, tmp_path / "a", "task.target=null")
    with pytest.raises(OptionError, match="trainer.monitor=val/dice_x"):
        _finetune(bids, tmp_path / "b", "task.target=age", "trainer.monitor=val/dice_x")
    with pytest.raises(OptionError, match="set trainer.mode=min"):
        _finetune(bids, tmp_path / "c", "task.target=age", "trainer.monitor=val/rmse", "trainer.mode=max")
    with pytest.raises(OptionError, match=r"model.arch=unetr: .*model=vit_case\|swin_case.*unetr is a segmentation network"):
        _finetune(bids, tmp_path / "d", "task.target=age", "model=unetr")
    with pytest.raises(ValueError, match="task.head.pooling='max': expected one of mean, attention"):
        _finetune(bids, tmp_path / "e", "task.target=age", "task.head.pooling=max")
    with pytest.raises(ValueError, match="model.pretrained=.*'vit_case' takes no pretrained encoder"):
        _finetune(bids, tmp_path / "f", "task.target=age", "model=vit_case", "data.crop=32",
                  f"model.pretrained={tmp_path / 'x.pt'}")
    with pytest.raises(ValueError, match="data.crop=40: model arch swin_case needs a crop that is a multiple of 32"):
        _finetune(bids, tmp_path / "g", "task.target=age", "model=swin_case", "data.crop=40")
    with pytest.raises(OptionError, match="task.crops"):
        _finetune(bids, tmp_path / "h", "task.target=age", "task.crops=all")
    assert not any((tmp_path / n).exists() for n in "abcdefh")  # refused before the run folder was touched


@pytest.mark.slow
def test_a_regression_head_learns_age_better_than_the_mean(tmp_path):
    """From scratch on 16 training phantoms (32^3), held-out MAE well below predicting the training mean
    (30 epochs: about 0.73 of the mean's MAE from epoch 10 on; 60 gave 0.62 at twice the time)."""
    root = write_demo_dataset("bids", tmp_path / "data", cases=24, size=32, seed=0, targets=True)
    out = tmp_path / "run"
    cfg = compose_config("finetune", [
        "data=targets", f"data.root={root}", "task=case", "task.target=age", "data.crop=32", "data.split.ratios=[16,8,0]",
        "data.num_workers=0", "model=tiny", "optim.name=adamw", "optim.base_lr=1e-3", "optim.weight_decay=0.05",
        "optim.schedule=cosine", "trainer.epochs=30",
        "trainer.batch_size=4", "trainer.amp=off", "trainer.val_every=10", "trainer.progress=false",
        "trainer.panel_every=0", f"output_dir={out}", "device=cpu",
    ])
    result = finetune(cfg)
    ages = read_targets(root, "age").for_cases(discover("bids", root)).values
    splits = json.loads((out / "splits.json").read_text())
    train, val = [ages[i] for i in splits["train"]], [ages[i] for i in splits["val"]]
    mean_mae = sum(abs(a - sum(train) / len(train)) for a in val) / len(val)
    assert result.best_metric < 0.8 * mean_mae, (result.best_metric, mean_mae)


@pytest.mark.gpu
def test_a_case_run_on_cuda_with_fp16_predicts_what_the_cpu_predicts(tmp_path, bids):
    """The case head trains under fp16 autocast on CUDA (finite, its steps taken) and asa-predict of
    its best.pt on CUDA writes the CPU's predictions and probabilities to rounding."""
    out = tmp_path / "run"
    result = _finetune(bids, out, "task.target=diagnosis", "device=cuda", "trainer.amp=fp16", "task.head.pooling=attention")
    assert result.step == 3 and all(torch.isfinite(torch.tensor(h["train/loss"])) for h in result.history
                                    if "train/loss" in h)
    ckpt = out / "checkpoints" / "best.pt"
    rows = {}
    for device in ("cpu", "cuda"):
        written = predict(compose_config("predict", [f"checkpoint={ckpt}", f"input={bids}", f"output={tmp_path / device}",
                                                     f"device={device}", f"split_file={out / 'splits.json'}", "subset=val"]))
        rows[device] = {r.split(",")[0]: r.split(",")[1:] for r in written[0].read_text().splitlines()[1:]}
    assert rows["cpu"].keys() == rows["cuda"].keys() and rows["cpu"]
    for case, cpu in rows["cpu"].items():
        cuda = rows["cuda"][case]
        assert cuda[0] == cpu[0] or max(float(p) for p in cpu[1:]) - sorted(float(p) for p in cpu[1:])[-2] < 1e-3
        assert [float(p) for p in cuda[1:]] == pytest.approx([float(p) for p in cpu[1:]], abs=2e-3)


BASELINES = {  # tiny sizes: seconds on a CPU
    "vit_case": ["model=vit_case", "model.patch_size=8", "model.hidden_size=48", "model.mlp_dim=96",
                 "model.num_layers=2", "model.num_heads=3"],
    "swin_case": ["model=swin_case", "model.feature_size=12", "model.depths=[1,1,1,1]"],
}


@pytest.mark.parametrize("arch", sorted(BASELINES))
@pytest.mark.slow
def test_a_monai_baseline_fine_tunes_predicts_and_evaluates_under_the_case_recipe(tmp_path, bids, arch):
    """MONAI's ViT / SwinViT under the same head: checkpoints rebuild from themselves, the encoder-aware
    options apply (frozen encoder bit-exact, layer-wise lr scales), and asa-evaluate of asa-predict's
    output scores best.pt as validation did."""
    out = tmp_path / "run"
    torch.manual_seed(0)
    result = _finetune(bids, out, "task.target=diagnosis", "data.crop=32", "trainer.amp=off",
                       "task.head.pooling=attention", "optim.freeze_encoder_epochs=5", "optim.layer_decay=0.5",
                       "optim.scratch_encoder_lr_scale=0.1", *BASELINES[arch])  # a baseline starts from scratch
    ckpt = load_checkpoint(out / "checkpoints" / "best.pt")
    net = build_network(ckpt["network"])
    assert ckpt["network"]["arch"] == arch and net.pool is not None and net.out_channels == 3
    net.load_state_dict(ckpt["model"])
    encoder = "vit." if arch == "vit_case" else "swinViT."
    torch.manual_seed(0)  # the run's initial weights (the task seeds before building)
    initial = build_network({**ckpt["network"], "kwargs": {**ckpt["network"]["kwargs"], "target_shift": 0.0}}).state_dict()
    last_pt = load_checkpoint(out / "checkpoints" / "last.pt")  # the optimiser's state: last.pt's, not best.pt's
    last = last_pt["model"]
    assert all(torch.equal(last[k], initial[k]) for k in initial if k.startswith(encoder))  # frozen
    assert any(not torch.equal(last[k], initial[k]) for k in initial if k.startswith("mlp."))  # the head trained
    scales = sorted({g["lr_scale"] for g in last_pt["optimizer"]["param_groups"]})
    assert scales[0] == pytest.approx(0.1 * 0.5 ** net.num_encoder_layers) and scales[-1] == 1.0
    split = ["split_file=" + str(out / "splits.json"), "subset=val"]
    predict(compose_config("predict", [f"checkpoint={out / 'checkpoints' / 'best.pt'}", f"input={bids}",
                                       f"output={tmp_path / 'pred'}", "device=cpu", *split]))
    evaluate(compose_config("evaluate", [f"pred={tmp_path / 'pred'}", "data=targets", f"data.root={bids}",
                                         "task=case", "task.target=diagnosis", f"output={tmp_path / 'eval'}", *split]))
    saved = json.loads((tmp_path / "eval" / "summary.json").read_text())
    best = next(h for h in result.history if h["step"] == result.best_step)
    assert saved["metrics"]["balanced_accuracy"]["value"] == pytest.approx(best["val/balanced_accuracy"], abs=1e-3)


@pytest.mark.slow
def test_multi_session_data_grid_crops_and_subject_split(tmp_path):
    """Volumes larger than the crop (48^3, crop 32: 27 crops a case) with two sessions per subject: the
    split keeps a subject's sessions together, validation averages over the crops exactly as
    asa-predict (crops=grid) writes, and crops=centre predicts something else."""
    root = write_demo_dataset("bids", tmp_path / "data", cases=8, size=48, seed=0, targets=True)
    for i in range(1, 9, 2):  # the subjects with a ses-M00 session get a second one (a copy) with its own row
        sub = f"sub-DEMO{i:03d}"
        (root / sub / "ses-M12" / "anat").mkdir(parents=True)
        (root / sub / "ses-M12" / "anat" / f"{sub}_ses-M12_T1w.nii.gz").write_bytes(
            (root / sub / "ses-M00" / "anat" / f"{sub}_ses-M00_T1w.nii.gz").read_bytes())
        table = root / sub / f"{sub}_sessions.tsv"
        header, row = table.read_text().splitlines()[:2]
        table.write_text(f"{header}\n{row}\n" + row.replace("ses-M00", "ses-M12") + "\n")
    out = tmp_path / "run"
    result = _finetune(root, out, "task.target=age", "data.crop=32", "trainer.amp=off",
                       "data.split.ratios=[4,2,2]")
    splits = json.loads((out / "splits.json").read_text())
    assert splits["grouped_by"] == "subject" and sum(map(len, (splits[k] for k in ("train", "val", "test")))) == 12
    subject_of = lambda case: case.split("_")[0]  # noqa: E731
    parts = {}
    for name in ("train", "val", "test"):
        for case in splits[name]:
            assert parts.setdefault(subject_of(case), name) == name, case
    split = ["split_file=" + str(out / "splits.json"), "subset=val"]
    rows = {}
    for crops in ("grid", "centre"):
        written = predict(compose_config("predict", [f"checkpoint={out / 'checkpoints' / 'best.pt'}", f"input={root}",
                                                     f"output={tmp_path / crops}", "device=cpu", f"crops={crops}", *split]))
        rows[crops] = {r.split(",")[0]: float(r.split(",")[1]) for r in written[0].read_text().splitlines()[1:]}
    assert rows["grid"].keys() == rows["centre"].keys() and rows["grid"] != rows["centre"]
    evaluate(compose_config("evaluate", [f"pred={tmp_path / 'grid'}", "data=targets", f"data.root={root}",
                                         "task=case", "task.target=age", f"output={tmp_path / 'eval'}", *split]))
    saved = json.loads((tmp_path / "eval" / "summary.json").read_text())
    best = next(h for h in result.history if h["step"] == result.best_step)
    assert saved["metrics"]["mae"]["value"] == pytest.approx(best["val/mae"], abs=1e-3)
    sessions_share_a_subject = len({subject_of(c) for c in splits["val"]}) < len(splits["val"])
    assert saved["bootstrap"]["resampled"] == ("subjects" if sessions_share_a_subject else "cases")


def test_a_case_prediction_stopped_by_a_signal_is_resumed_to_what_one_run_writes(tmp_path, bids, monkeypatch, capsys):
    """asa-predict of a case head keeps the rows written before SIGTERM, recorded in predictions.json, and
    ``resume=true`` predicts the others: predictions.csv then holds every case, as one uninterrupted run writes."""
    import signal

    import asa.api.tasks.case as case_task
    from asa.cli.common import entry

    out = tmp_path / "run"
    _finetune(bids, out, "task.target=age", "model=vit_case", "data.crop=32", "model.patch_size=8",
              "model.hidden_size=24", "model.mlp_dim=48", "model.num_layers=1", "model.num_heads=2", "trainer.max_steps=1")
    ckpt = out / "checkpoints" / "last.pt"

    def cfg(output: Path, *extra: str):
        return compose_config("predict", [f"checkpoint={ckpt}", f"input={bids}", f"output={output}", "device=cpu",
                                          "crops=centre", *extra])

    whole = predict(cfg(tmp_path / "whole"))[0].read_text()
    real, calls = case_task.case_row, []

    def stop_at_the_third(*args, **kwargs):
        calls.append(args)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(case_task, "case_row", stop_at_the_third)
    with pytest.raises(SystemExit) as stop:
        entry("asa-predict", predict, cfg(tmp_path / "pred"))
    assert stop.value.code == 128 + signal.SIGTERM
    assert "(kept: 2 of 8 prediction(s) written in this run" in capsys.readouterr().err
    manifest = json.loads((tmp_path / "pred" / "predictions.json").read_text())
    assert len(manifest["cases"]) == 2 and len((tmp_path / "pred" / "predictions.csv").read_text().splitlines()) == 3
    with pytest.raises(RunDirError, match="already holds predictions"):  # neither resume nor overwrite: refused
        predict(cfg(tmp_path / "pred"))
    monkeypatch.setattr(case_task, "case_row", real)
    written = predict(cfg(tmp_path / "pred", "resume=true"))
    assert written == [tmp_path / "pred" / "predictions.csv"]
    assert sorted(written[0].read_text().splitlines()) == sorted(whole.splitlines())
    manifest = json.loads((tmp_path / "pred" / "predictions.json").read_text())
    assert len(manifest["cases"]) == 8 and manifest["runs"][-1]["kept"] == 2 and manifest["runs"][-1]["written"] == 6
