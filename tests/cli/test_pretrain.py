"""asa-pretrain end to end on tiny demo phantoms (CPU, 32^3 crops, a few steps)."""
from __future__ import annotations

import json

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from asa.api import pretrain as run
from asa.api.configuration.schema import CONFIG_VERSION
from asa.io import load_checkpoint
from asa.train import IncompatibleCheckpointError
from asa.api.config import compose_config
from asa.io import load_export_safetensors
from tests.fixtures.runs import child_env, pretrain_overrides

pytestmark = pytest.mark.slow  # every test here runs asa-pretrain end to end


@pytest.fixture(scope="module")
def demo_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("demo-cache")


def test_smoke_run_writes_outputs_then_resumes(tmp_path, demo_cache):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "asa.cli.pretrain", *pretrain_overrides(out, demo_cache)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=child_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert str(out) in proc.stdout  # says where its outputs are
    ckpts = out / "checkpoints"
    for name in ("last.pt", "best.pt", "encoder.pt"):
        assert (ckpts / name).is_file(), name
    assert (out / "config.yaml").is_file() and (out / "splits.json").is_file()
    assert list((out / "tb").glob("events.out.tfevents.*"))
    last = load_checkpoint(ckpts / "last.pt")
    assert last["step"] == 2 and last["config"]["model"]["pos_mode"] == "mirror"
    assert not (out / ".hydra").exists()

    proc = subprocess.run(cmd + ["resume=true", "trainer.max_steps=3", "trainer.epochs=3"], capture_output=True, text=True, env=child_env(),
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from" in proc.stderr
    assert load_checkpoint(ckpts / "last.pt")["step"] == 3


@pytest.mark.parametrize("experiment, pos_mode, weighting", [
    ("mae", "none", "uniform"), ("a_ssl", "none", "attentive"), ("spe_ssl", "mirror", "uniform"),
    ("asa", "mirror", "attentive"),
])
def test_each_experiment_preset_trains(tmp_path, demo_cache, experiment, pos_mode, weighting):
    cfg = compose_config("pretrain", pretrain_overrides(tmp_path, demo_cache, f"experiment={experiment}"))
    result = run(cfg)
    assert result.step == 2 and result.best_metric is not None and result.nonfinite_steps == 0
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert (ckpt["config"]["model"]["pos_mode"], ckpt["config"]["method"]["loss_weighting"]) == (pos_mode, weighting)
    export = load_checkpoint(tmp_path / "checkpoints" / "encoder.pt")
    assert export["network"] == ckpt["network"] and ckpt["network"]["arch"] == "asa_pretrain"
    assert export["network"]["kwargs"]["pos_mode"] == pos_mode and export["network"]["kwargs"]["img_size"] == [32] * 3
    assert export["encoder"] and all(k.startswith("encoder.") for k in export["encoder"])
    portable = load_export_safetensors(tmp_path / "checkpoints" / "encoder.safetensors")  # the same export, no pickle
    assert portable["network"] == export["network"] and portable["step"] == export["step"]
    assert all(torch.equal(portable["encoder"][k], v) for k, v in export["encoder"].items())


@pytest.mark.parametrize("device, workers", [("cpu", 0), ("cpu", 2), pytest.param("cuda", 2, marks=pytest.mark.gpu)])
def test_resume_is_bit_exact_through_the_cli(tmp_path, demo_cache, device, workers):
    """On CUDA: fp16 + GradScaler, pinned-memory batches moved with non_blocking copies, the AR
    weights' index_add_ and deterministic kernels (trainer.deterministic, the default)."""
    def weights(out: Path) -> dict:
        return load_checkpoint(out / "checkpoints" / "last.pt")["model"]

    # 4 optimisation steps over an epoch of 4 steps (batch 1) vs 2 steps, then resume for 2 more
    extra = ("trainer.batch_size=1", "trainer.epochs=2", "trainer.warmup_steps=1", "optim.base_lr=0.05",
             f"data.num_workers={workers}")
    run(compose_config("pretrain", pretrain_overrides(tmp_path / "a", demo_cache, *extra, "trainer.max_steps=4", device=device)))
    run(compose_config("pretrain", pretrain_overrides(tmp_path / "b", demo_cache, *extra, "trainer.max_steps=2", device=device)))
    run(compose_config("pretrain", pretrain_overrides(tmp_path / "b", demo_cache, *extra, "trainer.max_steps=4",
                                              "resume=true", device=device)))
    a, b = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)
    if device == "cuda":
        assert load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")["scaler"]["scale"] > 0  # fp16 ran


@pytest.mark.parametrize("workers", [0, 2])
def test_augmentation_on_the_device_trains_as_on_the_cpu(tmp_path, demo_cache, workers):
    """data.augment_on=device: the loader draws intensity changes and flips, the engine applies them
    after the transfer; the weights after 3 steps are those of augment_on=cpu, bit for bit."""
    extra = ("trainer.batch_size=2", "trainer.max_steps=3", "data.augment=true", "data.flip_axes=[0,2]",
             f"data.num_workers={workers}", "probe.every=0")
    for where in ("cpu", "device"):
        run(compose_config("pretrain", pretrain_overrides(tmp_path / where, demo_cache, *extra, f"data.augment_on={where}")))
    a, b = (load_checkpoint(tmp_path / w / "checkpoints" / "last.pt")["model"] for w in ("cpu", "device"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    if workers == 0:  # nothing to augment: the option changes nothing
        none = run(compose_config("pretrain", pretrain_overrides(tmp_path / "none", demo_cache, "trainer.max_steps=1",
                                                         "data.augment=false", "data.augment_on=device")))
        assert none.step == 1


def test_resume_with_another_model_is_refused(tmp_path, demo_cache):
    run(compose_config("pretrain", pretrain_overrides(tmp_path, demo_cache)))
    cfg = compose_config("pretrain", pretrain_overrides(tmp_path, demo_cache, "resume=true", "model.depth=2",
                                                "experiment=mae"))
    with pytest.raises(IncompatibleCheckpointError) as info:
        run(cfg)
    msg = str(info.value)
    assert "model.depth: " in msg and "model.pos_mode" in msg and "method.loss_weighting" in msg



def test_resume_of_a_run_with_the_old_mae_block_names_the_moved_keys(tmp_path, demo_cache):
    """A run folder written before method.* (its config holds 0.1.0's mae: block) is refused on resume,
    naming where each old key went; nothing is read into the new places."""
    run(compose_config("pretrain", pretrain_overrides(tmp_path, demo_cache)))
    last = tmp_path / "checkpoints" / "last.pt"
    state = load_checkpoint(last)
    config = state["config"]
    method = config.pop("method")
    config["mae"] = {"pos_mode": config["model"].pop("pos_mode"), "loss_weighting": method["loss_weighting"]}
    config["method"] = method["name"]
    torch.save(state, last)
    with pytest.raises(IncompatibleCheckpointError) as info:
        run(compose_config("pretrain", pretrain_overrides(tmp_path, demo_cache, "resume=true")))
    msg = str(info.value)
    assert "mae.pos_mode is now model.pos_mode" in msg and "mae.loss_weighting is now method.loss_weighting" in msg
    assert "<missing>" not in msg


def test_resume_of_a_run_written_with_data_cache_dir_reads_it_without_the_key(tmp_path, demo_cache, capsys):
    """A run folder written before data.cache_dir was removed (its config.yaml and checkpoints hold the
    key) resumes: the key never changed a number (the cached crops were the same fp32 crops), so it is
    left out, said in one line, and the config history records that it is gone."""
    import yaml

    run(compose_config("pretrain", pretrain_overrides(tmp_path, demo_cache)))
    record = tmp_path / "config.yaml"
    old = yaml.safe_load(record.read_text())
    old["data"]["cache_dir"] = "/somewhere"  # as an earlier asa wrote it
    record.write_text(yaml.safe_dump(old, sort_keys=False))
    last = tmp_path / "checkpoints" / "last.pt"
    state = load_checkpoint(last)
    state["config"]["data"]["cache_dir"] = "/somewhere"
    torch.save(state, last)
    capsys.readouterr()
    result = run(compose_config("pretrain", pretrain_overrides(tmp_path, demo_cache, "resume=true", "trainer.max_steps=3",
                                                       "trainer.epochs=3")))
    assert result.step == 3
    said = [ln for ln in capsys.readouterr().err.splitlines() if "data.cache_dir" in ln]
    assert said == [f"[asa] {last} was written by an earlier asa; read without data.cache_dir='/somewhere' "
                    "(removed since: the store is the one preprocessing cache: write one with asa-preprocess (the "
                    "same data options and data.store=DIR), then train with data.store=DIR)"]
    assert "cache_dir" not in load_checkpoint(last)["config"]["data"]
    assert yaml.safe_load(record.read_text()) == old  # config.yaml stays as first written
    history = yaml.safe_load((tmp_path / "config_history.yaml").read_text())
    assert history[-1]["changes"]["data.cache_dir"] == {"was": "/somewhere", "now": "<missing>"}


def test_a_run_written_with_the_masking_options_in_its_method_resumes_as_it_was(tmp_path, demo_cache, capsys):
    """A SW-ViT run of version 6 (its method section holding the masked CNN's six masking and symmetry options,
    at their defaults, which its network never took) stopped at step 2 resumes: they are read out of the method
    section (version 7 has them in a resenc model section), nothing is said added, and it ends with the weights
    of a run never stopped."""
    import yaml

    extra = ("trainer.batch_size=1", "trainer.epochs=2", "probe.every=0")
    run(compose_config("pretrain", pretrain_overrides(tmp_path / "full", demo_cache, *extra, "trainer.max_steps=4")))
    out = tmp_path / "old"
    run(compose_config("pretrain", pretrain_overrides(out, demo_cache, *extra, "trainer.max_steps=2")))
    record = out / "config.yaml"
    old = yaml.safe_load(record.read_text())
    old["version"] = 6  # as version 6 wrote them: the masked CNN's options in every masked autoencoder's method
    old["method"] |= {"mirror_visible": None, "coord_channel": False, "mask_block": 16, "densify": "spark",
                      "weight_patch": 8, "weight_power": 1.0}
    record.write_text(yaml.safe_dump(old, sort_keys=False))
    for ckpt in (out / "checkpoints").glob("*.pt"):
        state = load_checkpoint(ckpt)
        if "config" in state:
            state["config"] |= {"version": 6, "method": dict(old["method"])}
            torch.save(state, ckpt)
    capsys.readouterr()
    assert run(compose_config("pretrain", pretrain_overrides(out, demo_cache, *extra, "trainer.max_steps=4",
                                                     "resume=true"))).step == 4
    last = out / "checkpoints" / "last.pt"
    assert not [ln for ln in capsys.readouterr().err.splitlines() if "added since" in ln]
    assert load_checkpoint(last)["config"]["version"] == CONFIG_VERSION and "mask_block" not in load_checkpoint(
        last)["config"]["method"]
    a, b = (load_checkpoint(d / "checkpoints" / "last.pt")["model"] for d in (tmp_path / "full", out))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_encoder_export_loads_into_the_segmenter(tmp_path, demo_cache):
    from asa.models import ASASegmenter, PRESETS

    run(compose_config("pretrain", pretrain_overrides(tmp_path, demo_cache)))
    sizes = {k: PRESETS["tiny"][k] for k in ("embed_dim", "depth", "num_heads", "window_size")}
    seg = ASASegmenter(img_size=32, in_channels=4, out_channels=3, **sizes)
    report = seg.load_pretrained(tmp_path / "checkpoints" / "encoder.pt", verbose=False)
    assert report.loaded and not report.unexpected
    # the run records its cohort (every split case with its image digests), and the export carries it
    cohort = json.loads((tmp_path / "cohort.json").read_text())
    splits = json.loads((tmp_path / "splits.json").read_text())
    assert set(cohort["cases"]) == {i for part in ("train", "val", "test") for i in splits[part]}
    assert all(case["images"]["t1"].startswith("sha256:") for case in cohort["cases"].values())
    from asa.data.cohort import carried_cohort

    state = load_checkpoint(tmp_path / "checkpoints" / "encoder.pt")
    assert state["cohort"]["summary"]["cases"] == len(cohort["cases"])  # the summary; the list beside it
    carried = carried_cohort(state, "encoder.pt", tmp_path / "checkpoints")
    assert {c for c, v in carried["cases"].items()} == set(cohort["cases"])


def test_export_step_exports_the_encoder_of_that_step(tmp_path, demo_cache):
    # the smoke trainer's 2 steps, the encoder of step 1 exported (asa-study's noise control at its arm's step)
    run(compose_config("pretrain", pretrain_overrides(tmp_path, demo_cache, "export_step=1")))
    ckpts = tmp_path / "checkpoints"
    export, kept, last = (load_checkpoint(ckpts / name) for name in ("encoder.pt", "kept_00000001.pt", "last.pt"))
    assert (export["step"], kept["step"], last["step"]) == (1, 1, 2)
    assert export["encoder"] and all(torch.equal(v, kept["model"][k]) for k, v in export["encoder"].items())
    assert not all(torch.equal(v, last["model"][k]) for k, v in export["encoder"].items())  # step 2 moved it


def test_export_step_past_the_run_is_refused_before_training(tmp_path, demo_cache):
    proc = subprocess.run([sys.executable, "-m", "asa.cli.pretrain",
                           *pretrain_overrides(tmp_path / "run", demo_cache, "export_step=5")],
                          capture_output=True, text=True, env=child_env(), timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "kept step(s) [5] (trainer.keep_steps, or asa-pretrain's export_step) after the run's last step 2" in proc.stderr
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()
