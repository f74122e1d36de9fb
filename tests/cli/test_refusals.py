"""Bad options and values are refused before anything is written (exit 2, one line); errors name the
path and the cause (disk full, read-only folder); printed commands paste back correctly."""

from __future__ import annotations

import errno
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from asa.api import finetune, predict, pretrain
from asa.api.config import compose_config
from asa.api.machinery.run import OptionError
from asa.api.machinery.rundir import RunDirError, override
from asa.data import write_demo_dataset
from asa.io import WriteError, atomic_write_text, save_checkpoint
from tests.fixtures.console import run_each
from tests.fixtures.runs import child_env, pretrain_overrides



@pytest.fixture(scope="module")
def demo_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("demo-cache")


@pytest.mark.parametrize("extra, match", [
    (["model.pos_mode=mirrror"], r"^model.pos_mode='mirrror': expected one of mirror, paper, none"),
    (["method.normalize=l1"], r"^method.normalize='l1': expected one of l2, none"),  # was read at the first step only
    (["data.on_bad_case=skp"], r"^data.on_bad_case='skp': expected one of error, skip"),
    (["optim.schedule=cosin"], r"^optim.schedule='cosin': expected one of"),  # was read after config.yaml
    (["experiment=sa_swin", "model.saca=decoder"], r"no model.saca=decoder"),
    (["experiment=sa_swin", "model.region_attention=all", "data.regions.source=cluster"],
     r"no model.region_attention=all"),
    (["experiment=sa_swin", "trainer.batch_size=1"], r"trainer.batch_size=1: SA-Swin's contrastive term"),
    (["experiment=sa_swin", "data.crop=48"], r"data.crop=48: method=sa_swin needs crops that are a multiple of 32"),
    (["data.regions.source=label", "method.loss_weighting=focal_region"], "pretraining data have no label files"),
    (["data.augment_on=gpu"], r"^data.augment_on='gpu': expected one of cpu, device"),
    (["data.flip_axes=[3]"], r"data.flip_axes: array axes 0, 1 or 2 of the crop, got \[3\]"),
])
def test_pretrain_refuses_before_writing(tmp_path, demo_cache, extra, match):
    out = tmp_path / "run"
    with pytest.raises(OptionError, match=match):
        pretrain(compose_config("pretrain", pretrain_overrides(out, demo_cache, *extra)))
    assert not out.exists()


@pytest.mark.slow
def test_a_pretraining_run_refused_after_skipping_cases_leaves_no_bad_cases_json(tmp_path):
    """Cases skipped (data.on_bad_case=skip) are recorded once every check passed: a run refused after
    they were found (here: fewer training cases than one batch) leaves no folder and no bad_cases.json."""
    root = write_demo_dataset("bids", tmp_path / "bids", cases=4, size=24, seed=0)
    next(root.rglob("*.nii.gz")).write_bytes(b"not a nifti")
    out = tmp_path / "run"
    cfg = compose_config("pretrain", ["data=demo", f"data.root={root}", "model=tiny", "trainer=smoke", "device=cpu",
                                      f"output_dir={out}", "data.crop=16", "trainer.batch_size=8"])
    with pytest.raises(OptionError, match=r"^data: "):
        pretrain(cfg)
    assert not out.exists()


@pytest.mark.parametrize("saved, model, refusal", [
    ("resenc", {"width": 16}, "a pretraining run of the resenc family (model.arch=resenc), not of swvit"),
    ("swvit", {"arch": "resenc"}, "a pretraining run of the swvit family (model.arch=swvit), not of resenc"),
])
def test_resuming_another_network_family_says_which_the_file_is(tmp_path, saved, model, refusal):
    """resume= of a pretraining run of another family names that family, not every key that differs."""
    from asa.api.machinery.rundir import prepare_run_dir
    from asa.models.family import masked_network
    from asa.train import IncompatibleCheckpointError
    from asa.train.checkpoint import FORMAT
    from asa.train.distributed import DistEnv

    other = tmp_path / "other.pt"
    save_checkpoint(other, {"format": FORMAT, "network": {"arch": masked_network(saved), "kwargs": {}},
                            "config": {"model": {"depth": 4}}})
    out = tmp_path / "run"
    with pytest.raises(IncompatibleCheckpointError, match=rf"^cannot resume from {other}: that file is {re.escape(refusal)}"):
        prepare_run_dir(out, app="asa-pretrain", resume=str(other), overwrite=False, run_config={"model": model},
                        compat_keys=["model"], env=DistEnv())
    assert not out.exists()


def test_finetune_refuses_an_option_the_network_does_not_have(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(OptionError, match=r"model.saca=encoder: model arch 'sa_swin' has no such option"):
        finetune(compose_config("finetune", ["model=sa_swin", "experiment=asa_saca", f"output_dir={out}",
                                             "device=cpu", "data.crop=32", "model.feature_size=12"]))
    assert not out.exists()


@pytest.mark.parametrize("extra, match", [
    (["model.pos_mode=mirrror"], r"^model.pos_mode='mirrror': expected one of mirror, paper, none or null"),
    (["optim.schedule=cosin"], r"^optim.schedule='cosin': expected one of cosine, poly, constant"),
    (["data.on_bad_case=skp"], r"^data.on_bad_case='skp': expected one of error, skip"),
])
def test_finetune_refuses_a_value_outside_the_choices_before_writing(tmp_path, extra, match):
    out = tmp_path / "run"
    with pytest.raises(OptionError, match=match):
        finetune(compose_config("finetune", [f"output_dir={out}", "device=cpu", "data.num_workers=0", *extra]))
    assert not out.exists()


def test_finetune_refuses_a_crop_larger_than_every_volume(tmp_path):
    root = write_demo_dataset("brats", tmp_path / "brats", cases=3, size=32, seed=0)
    out = tmp_path / "run"
    with pytest.raises(OptionError, match=r"data.crop=64: the crop is larger than every volume .* 32×32×32"):
        finetune(compose_config("finetune", ["data=brats", f"data.root={root}", "model=tiny", "data.crop=64",
                                             f"output_dir={out}", "device=cpu", "data.num_workers=0"]))
    assert not (out / "config.yaml").exists() and not (out / "splits.json").exists()


@pytest.mark.slow  # asa-pretrain's console script, in a child process
def test_pretrain_refuses_a_crop_larger_than_every_volume_before_making_probe_phantoms(tmp_path):
    """The crop is checked against the volumes before the probe's demo phantoms are made at its size (a crop of
    512 on 32³ volumes made 512³ phantoms for minutes before the refusal): one line, exit 2, nothing cached."""
    root = write_demo_dataset("bids", tmp_path / "bids", cases=4, size=32, seed=0)
    cache, out = tmp_path / "cache", tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "asa.cli.pretrain", f"data.root={root}", "data.crop=64",
                           "model=tiny", "trainer=smoke", "device=cpu", f"output_dir={out}"],
                          capture_output=True, text=True, env={**child_env(), "ASA_CACHE": str(cache)}, timeout=120)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("[asa] peak")]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert lines[0].startswith("[asa-pretrain] refused: data.crop=64: the crop is larger than every volume")
    assert not cache.exists() and not out.exists()


def test_disk_full_during_a_checkpoint_save_names_the_folder(tmp_path, monkeypatch):
    import asa.io.atomic as atomic
    import asa.io.checkpoint as checkpoint

    real_save = torch.save
    monkeypatch.setattr(checkpoint.torch, "save", lambda obj, path: real_save(obj, "/dev/full"))  # ENOSPC underneath
    monkeypatch.setattr(atomic.shutil, "disk_usage", lambda p: type("U", (), {"free": 0})())
    (tmp_path / "last.pt").write_bytes(b"previous")
    with pytest.raises(WriteError, match=rf"no space left on {tmp_path} \(writing last.pt, 0 MiB free\)"):
        save_checkpoint(tmp_path / "last.pt", {"w": torch.zeros(100_000)})
    assert (tmp_path / "last.pt").read_bytes() == b"previous"  # nothing lost
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temporary file left


def test_a_read_only_folder_is_one_clear_line(tmp_path, monkeypatch):
    import asa.io.atomic as atomic

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path))

    monkeypatch.setattr(atomic.tempfile, "mkstemp", refuse)
    with pytest.raises(WriteError, match=rf"cannot write in {tmp_path}: permission denied \(a read-only folder\?\)"):
        atomic_write_text(tmp_path / "config.yaml", "x")


def test_a_run_folder_that_cannot_be_created_is_refused(tmp_path, demo_cache, monkeypatch):
    real_mkdir = Path.mkdir

    def mkdir(self, *args, **kwargs):
        if self == tmp_path / "ro" / "run":
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    with pytest.raises(RunDirError, match=r"output_dir=.*/ro/run: cannot write there \(read-only file system"):
        pretrain(compose_config("pretrain", pretrain_overrides(tmp_path / "ro" / "run", demo_cache)))


@pytest.mark.parametrize("value", ["runs/my run", "runs/é tude", "runs/it's", "/plain/path", "a,b[1]"])
def test_printed_overrides_paste_back(value):
    """What asa prints as `key=value` is one shell word that Hydra reads back as the value."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    words = shlex.split(override("output_dir", value))
    assert len(words) == 1
    assert OverridesParser.create().parse_override(words[0]).value() == value


def test_a_required_value_left_open_is_refused_naming_it(tmp_path):
    with pytest.raises(OptionError, match=r"^asa-predict: checkpoint is required \(checkpoint=\.\.\.\)$"):
        predict(compose_config("predict", ["input=x", f"output={tmp_path / 'p'}"]))
    with pytest.raises(OptionError, match=r"^asa-pretrain: data.root is required \(data.root=\.\.\.\)$"):
        pretrain(compose_config("pretrain", ["data=adni", f"output_dir={tmp_path / 'r'}"]))
    assert not (tmp_path / "p").exists() and not (tmp_path / "r").exists()


def test_an_old_key_on_the_command_line_names_where_it_moved():
    from asa.cli.common import _compose_error

    hydra_report = ("Could not override 'segmenter.lr_axis'.\nTo append to your config use +segmenter.lr_axis=1\n"
                    "Key 'lr_axis' not in 'SegmenterConfig'\n    full_key: segmenter.lr_axis\n")
    assert _compose_error(hydra_report) == ("Could not override 'segmenter.lr_axis'. Key 'lr_axis' not in "
                                            "'SegmenterConfig' — segmenter.lr_axis is now model.lr_axis")
    assert "is now" not in _compose_error(hydra_report.replace("lr_axis", "lr_axes"))


def test_an_option_the_fine_tuning_network_lacks_on_the_command_line_says_so():
    """The composed model section holds every option of its network's settings, so an override Hydra
    cannot place there names an option the network does not have."""
    from hydra.errors import ConfigCompositionException
    from asa.cli.common import _compose_error

    with pytest.raises(ConfigCompositionException) as err:
        compose_config("finetune", ["model=unetr", "model.pos_mode=mirror"])
    assert _compose_error(f"{err.value}\n{err.value.__cause__}") == (  # as Hydra reports it
        "Could not override 'model.pos_mode'. Key 'pos_mode' is not in struct — the network the model preset "
        "builds (model.arch) has no option pos_mode; its options are the fields of its settings "
        "(asa.models.NetworkSettings)")



@pytest.mark.parametrize("key, place", [
    ("mae.loss_weighting", "method.loss_weighting"), ("mae.pos_mode", "model.pos_mode"),
    ("mae.lr_axis", "model.lr_axis"), ("sa_swin.temperature", "method.temperature (with method=sa_swin)"),
    ("mae", "method.* (mae.pos_mode: model.pos_mode, mae.lr_axis: model.lr_axis)"),
    ("method.pos_mode", "model.pos_mode"), ("segmenter.pos_mode", "model.pos_mode"),
    ("data.size", "data.crop"), ("data.patch_size", "data.crop"),
    ("method.loss_weighting", None), ("maes.bins", None), ("model.pos_mode", None), ("data.demo.size", None),
])
def test_moved_keys_and_sections_name_their_new_place(key, place):
    from asa.api.configuration.compat import moved_key

    assert moved_key(key) == place


def test_a_whole_moved_section_on_the_command_line_names_the_new_place_of_each_key():
    from asa.api.configuration.checks import validate
    from asa.cli.common import _compose_error

    report = ("Could not override 'mae.loss_weighting'.\nTo append to your config use +mae.loss_weighting=uniform\n"
              "Key 'mae' not in 'PretrainConfig'\n    full_key: mae\n")
    assert _compose_error(report).endswith("— mae.loss_weighting is now method.loss_weighting")
    with pytest.raises(ValueError, match=r"invalid option mae: mae.pos_mode is now model.pos_mode; "
                                         r"mae.bins is now method.bins$"):
        validate(compose_config("pretrain", ["+mae={pos_mode: none, bins: 4}"]), "pretrain")



REMOVED_CACHE_DIR = ("data.cache_dir was removed; the store is the one preprocessing cache: write one with "
                     "asa-preprocess (the same data options and data.store=DIR), then train with data.store=DIR")


@pytest.mark.parametrize("entry, overrides", [
    ("pretrain", ["data.cache_dir=/x"]), ("pretrain", ["data=bids", "data.root=x", "data.cache_dir=/x"]),
    ("finetune", ["data.cache_dir=/x"]), ("finetune", ["data=brats", "data.cache_dir=/x"]),
    ("evaluate", ["output=o", "data.cache_dir=/x"]),
])
def test_data_cache_dir_is_refused_naming_the_store(entry, overrides):
    """data.cache_dir is gone (the store is the one preprocessing cache): on the command line, with
    + and in a data preset of asa-preprocess it is refused saying what took its place, as a moved key is."""
    from hydra.errors import HydraException

    from asa.api.configuration.checks import validate
    from asa.api.configuration.compat import old_key
    from asa.api.preprocess import data_preset
    from asa.cli.common import _compose_error

    assert old_key("data.cache_dir") == REMOVED_CACHE_DIR.removeprefix("data.cache_dir ")
    assert old_key("data.demo.cache_dir") is None  # where the demo phantoms go: a setting of today
    with pytest.raises(HydraException) as info:
        compose_config(entry, overrides)
    error = info.value.__cause__ or info.value
    report = f"{info.value}\n    full_key: {getattr(error, 'full_key', '')}\n"
    assert _compose_error(report).endswith(f"— {REMOVED_CACHE_DIR}")
    others = [o for o in overrides if not o.startswith("data.cache_dir")]
    with pytest.raises(ValueError, match=rf"^asa-{entry}: invalid option data.cache_dir: {re.escape(REMOVED_CACHE_DIR)}$"):
        validate(compose_config(entry, [*others, "+data.cache_dir=/x"]), entry)
    if entry != "evaluate":  # a data preset given to asa-preprocess
        data = OmegaConf.to_container(compose_config(entry, others).data)
        with pytest.raises(ValueError, match=rf"^asa-preprocess: invalid option data.cache_dir: "
                                             rf"{re.escape(REMOVED_CACHE_DIR)}$"):
            data_preset({**data, "cache_dir": "/x"})


@pytest.mark.slow
@pytest.mark.parametrize("app", ["pretrain", "finetune"])
def test_data_cache_dir_on_the_console_exits_2_naming_the_store(tmp_path, app):
    proc = subprocess.run([sys.executable, "-m", f"asa.cli.{app}", "data.cache_dir=/x", f"output_dir={tmp_path / 'r'}"],
                          capture_output=True, text=True, env=child_env(), timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"[asa-{app}] refused:") and lines[0].endswith(REMOVED_CACHE_DIR)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("entry, overrides, old", [
    ("pretrain", ["data.size=32"], "data.size"),  # data=demo sets data.* from the global package
    ("pretrain", ["data=bids", "data.root=x", "data.size=32"], "data.size"),
    ("finetune", ["data=ibsr", "data.patch_size=32"], "data.patch_size"),
])
def test_the_old_crop_keys_are_refused_naming_data_crop(entry, overrides, old):
    """data.size (pretraining) and data.patch_size (fine-tuning) are data.crop now: Hydra's report of
    either, whichever way it fails to compose, ends naming the new key."""
    from hydra.errors import HydraException

    from asa.cli.common import _compose_error

    with pytest.raises(HydraException) as info:
        compose_config(entry, overrides)
    error = info.value.__cause__ or info.value
    report = f"{info.value}\n    full_key: {getattr(error, 'full_key', '')}\n"
    assert _compose_error(report).endswith(f"— {old} is now data.crop")

@pytest.mark.slow
def test_console_refusals_exit_2_with_one_line(tmp_path, demo_cache):
    cases = [(["trainer.epocs=3"], "trainer.epocs"), (["model.pos_mode=mirrror"], "model.pos_mode='mirrror'"),
             (["method.pos_mode=none"], "method.pos_mode is now model.pos_mode"),
             (["mae.loss_weighting=uniform"], "mae.loss_weighting is now method.loss_weighting"),
             (["data.size=32"], "data.size is now data.crop"),
             (["output_dir=runs/é"], "must be quoted for Hydra"),
             (["trainer.max_steps=-5"], "trainer.max_steps=-5: expected >= 1, or null to train the whole schedule"),
             (["trainer.max_steps=0"], "trainer.max_steps=0: expected >= 1"),
             (["optim.base_lr=-1"], "optim.base_lr=-1: expected a positive learning rate"),  # no warning before
             (["data.crop=-32"], "data.crop=-32: expected the crop's edge in voxels, a positive whole number"),
             (["output_dir="], "output_dir='': empty; name the folder the run writes in")]
    base = pretrain_overrides(tmp_path / "r", demo_cache)
    here = tmp_path / "here"  # the working folder, which an empty output_dir= would write a run into
    here.mkdir()
    results = run_each("asa.cli.pretrain", [[*base, *extra] for extra, _ in cases], child_env(),  # one interpreter start-up
                       cwd=str(here))
    for (extra, words), (code, stderr) in zip(cases, results):
        assert code == 2, (extra, stderr[-2000:])
        lines = [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith("[asa] peak")]
        assert len(lines) == 1 and lines[0].startswith("[asa-pretrain] refused:") and words in lines[0], lines
    assert not (tmp_path / "r").exists() and not any(here.iterdir())
