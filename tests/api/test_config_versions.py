"""Every saved run config records the version of its layout; one of an earlier version is read through the
numbered migrations after it (version k -> k + 1, in order), one without a version through all of them, and a
newer one is refused (docs/run-folders.md)."""

from __future__ import annotations

import pytest
import yaml

from asa.api import finetune, load_config
from asa.api.configuration.compat import (MIGRATIONS, OVERSAMPLING_BEFORE, SEGMENTATION_BEFORE, added_settings,
                                          current_config, read_config)
from asa.api.configuration.schema import CONFIG_VERSION
from asa.data import write_demo_dataset
from asa.io import load_checkpoint

OLD_SEGMENTATION = {"data": {"task": "ibsr", "samples_per_case": 2, "target": None},
                    "loss": {"focal_weight": 0.0, "focal_beta": 1.0}, "validation": {"overlap": 0.25, "crops": "grid"}}


def test_one_migration_per_version_and_the_composed_config_at_this_version():
    assert len(MIGRATIONS) == CONFIG_VERSION
    assert load_config("finetune", "data=ibsr").version == CONFIG_VERSION
    assert load_config("pretrain").version == CONFIG_VERSION


def test_a_record_without_a_version_goes_through_every_migration():
    read = current_config(OLD_SEGMENTATION)
    assert read["version"] == CONFIG_VERSION and "loss" not in read and "validation" not in read
    assert read["task"] == {"name": "segmentation", "samples_per_case": 2, "focal_weight": 0.0, "focal_beta": 1.0,
                            "overlap": 0.25, **SEGMENTATION_BEFORE, **OVERSAMPLING_BEFORE}
    # data.percentiles came later: a run saved before it clipped at the default, the only clip there was
    assert read["data"] == {"task": "ibsr", "percentiles": [0.5, 99.5]} and current_config(read) == read
    assert added_settings(OLD_SEGMENTATION)["data.percentiles"] == [0.5, 99.5]


@pytest.mark.parametrize("version, migrated", [(0, True), (2, True), (3, False), (CONFIG_VERSION, False)])
def test_a_versioned_record_gets_only_the_migrations_after_its_version(version, migrated):
    """Migration 3 (2 -> 3) gives a segmentation run without sampler settings the ones it trained with; a record
    of version 3 or later lacks them because they are at their defaults elsewhere, and is left so."""
    read = current_config({"version": version, "data": {"task": "ibsr"}, "task": {"name": "segmentation"}})
    assert ("sampling" in read["task"]) == migrated and read["version"] == CONFIG_VERSION


@pytest.mark.parametrize("version, oversampling", [(5, "crop"), (6, None)])
def test_a_run_saved_before_the_per_batch_forced_share_resumes_with_the_per_crop_one(version, oversampling):
    read = current_config({"version": version, "data": {"task": "ibsr"}, "task": {"name": "segmentation"}})
    assert read["task"].get("oversampling") == oversampling


def test_migration_2_reads_the_networks_as_it_knew_them_not_as_registered_today(monkeypatch):
    """Migration 2 (1 -> 2) carries the segmenter's decoder options into the model section of a network that
    followed its pretraining, and drops null keys another network never took. It reads a frozen table: a network
    renamed in, or a field added to today's settings, leaves a version-1 record's meaning as it was."""
    from asa.api.configuration import compat
    from asa.models import registry

    old = {"version": 1, "data": {"task": "ibsr"}, "task": {"name": "segmentation"},
           "segmenter": {"feature_size": 24, "input_skip": False, "allow_grid_change": False},
           "model": {"arch": "swvit_unetr", "patch_size": 8, "pos_mode": None, "not_a_field": None}}
    before = current_config(old)
    assert before["model"]["feature_size"] == 24 and before["model"]["input_skip"] is False
    assert "not_a_field" not in before["model"] and before["model"]["pos_mode"] is None
    assert before["segmenter"] == {"allow_grid_change": False}
    resenc = {"version": 1, "data": {"task": "ibsr"}, "task": {"name": "segmentation"},
              "segmenter": {"feature_size": 24}, "model": {"arch": "resenc", "size": "S", "spacing": None}}
    read = current_config(resenc)["model"]
    assert (read["arch"], read["size"]) == ("resenc", "S") and "spacing" not in read
    assert "feature_size" not in read  # resenc never followed a pretraining file
    # today's registry changed under it: swvit_unetr no longer follows its pretraining (no family, no road), resenc gains a field
    record = registry.RECORDS["swvit_unetr"]
    monkeypatch.setitem(registry.RECORDS, "swvit_unetr", type(record)(**{**vars(record), "family": None}))
    assert compat.V2_NETWORKS["swvit_unetr"][0] and current_config(old) == before
    migrated = {"segmenter": dict(resenc["segmenter"]), "model": dict(resenc["model"])}
    compat.MIGRATIONS[1](migrated, {})
    assert migrated["model"] == {"arch": "resenc", "size": "S"}  # the null key no resenc setting took is dropped


@pytest.mark.parametrize("version, why", [
    (CONFIG_VERSION + 1, rf"^version: {CONFIG_VERSION + 1} is newer than this asa reads \(versions 0 to {CONFIG_VERSION}\): "
                         "a newer asa wrote it"),
    (-1, r"^version: -1 is unreadable: asa writes a whole number"), ("2", r"^version: '2' is unreadable"),
    ("five", r"^version: 'five' is unreadable"), (2.5, r"^version: 2.5 is unreadable"),
    (True, r"^version: True is unreadable"),
])
def test_a_version_this_asa_cannot_read_is_refused(version, why):
    """A whole number above this asa's is newer; anything else that is no whole number from 0 is unreadable."""
    with pytest.raises(ValueError, match=why):
        read_config({"version": version})


def _saved_run(out, config_version, checkpoint_version):
    """A run folder as a stopped run leaves it: config.yaml and checkpoints/last.pt, each with its version."""
    from asa.io import save_checkpoint
    from asa.train.checkpoint import FORMAT, RESUME_ONLY

    (out / "checkpoints").mkdir(parents=True)
    (out / "config.yaml").write_text(yaml.safe_dump({"version": config_version, "model": {"width": 16}}))
    save_checkpoint(out / "checkpoints" / "last.pt", {"format": FORMAT, "step": 1, **{k: {} for k in RESUME_ONLY},
                                                      "config": {"version": checkpoint_version, "model": {"width": 16}}})


@pytest.mark.parametrize("config_version, checkpoint_version, refusal", [
    (CONFIG_VERSION + 1, CONFIG_VERSION, rf"cannot resume: \S+/config.yaml has version: {CONFIG_VERSION + 1} is newer "
                                         "than this asa reads"),
    ("five", CONFIG_VERSION, r"cannot resume: \S+/config.yaml has version: 'five' is unreadable"),
    (-1, CONFIG_VERSION, r"cannot resume: \S+/config.yaml has version: -1 is unreadable"),
    (CONFIG_VERSION, CONFIG_VERSION + 1, rf"cannot resume from \S+/checkpoints/last.pt: the run config saved in it "
                                         rf"has version: {CONFIG_VERSION + 1} is newer than this asa reads"),
    (CONFIG_VERSION, "five", r"cannot resume from \S+/checkpoints/last.pt: the run config saved in it has version: "
                             r"'five' is unreadable"),
])
def test_a_resumed_run_refuses_a_version_it_cannot_read_in_either_file(tmp_path, config_version, checkpoint_version,
                                                                       refusal):
    """config.yaml's version is checked as last.pt's is; each refusal names its file; nothing is changed."""
    from asa.api.machinery.rundir import RunDirError, prepare_run_dir
    from asa.train import IncompatibleCheckpointError
    from asa.train.distributed import DistEnv

    out = tmp_path / "run"
    _saved_run(out, config_version, checkpoint_version)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    with pytest.raises((RunDirError, IncompatibleCheckpointError), match=refusal):
        prepare_run_dir(out, app="asa-pretrain", resume=True, overwrite=False,
                        run_config={"version": CONFIG_VERSION, "model": {"width": 16}}, compat_keys=["model"],
                        env=DistEnv())
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # no lock, no history left behind
    assert yaml.safe_load((out / "config.yaml").read_text())["version"] == config_version


def test_a_resumed_run_of_this_version_passes_both_checks(tmp_path):
    from asa.api.machinery.rundir import prepare_run_dir
    from asa.train.distributed import DistEnv

    out = tmp_path / "run"
    _saved_run(out, CONFIG_VERSION, CONFIG_VERSION)
    run_dir = prepare_run_dir(out, app="asa-pretrain", resume=True, overwrite=False,
                              run_config={"version": CONFIG_VERSION, "model": {"width": 16}}, compat_keys=["model"],
                              env=DistEnv())
    assert run_dir.resume is not None and run_dir.resume.path == out / "checkpoints" / "last.pt"
    run_dir.release()


def test_the_version_is_recorded_by_asa_not_chosen():
    with pytest.raises(ValueError, match=rf"version=1: the layout version of a run config is this asa's \({CONFIG_VERSION}\)"):
        load_config("finetune", "version=1")


def test_config_yaml_and_every_checkpoint_record_the_version(tmp_path):
    root = write_demo_dataset("ibsr", tmp_path / "ibsr", cases=4, size=24, seed=0)
    out = tmp_path / "run"
    cfg = load_config("finetune", "data=ibsr", "model=tiny", "trainer=smoke", "trainer.max_steps=1", "trainer.epochs=1",
                      "data.num_workers=0", "data.split.ratios=[3,1,0]", "data.crop=16", "device=cpu",
                      f"data.root={root}", f"output_dir={out}")
    finetune(cfg)
    assert yaml.safe_load((out / "config.yaml").read_text())["version"] == CONFIG_VERSION
    assert load_checkpoint(out / "checkpoints" / "last.pt")["config"]["version"] == CONFIG_VERSION


def test_a_run_resumes_only_with_the_percentiles_it_was_preprocessed_with():
    """data.percentiles is in resume_must_match: a run saved before the option (its default clip) resumes at the
    default and is refused with [0, 100], naming the key; one saved with [0, 100] is refused at the default."""
    from asa.api.config import compose_config
    from asa.train.checkpoint import IncompatibleCheckpointError, check_compatible

    keys = list(compose_config("finetune", ["data=ibsr"]).resume_must_match)
    assert "data.percentiles" in keys
    now = {"data": {"task": "ibsr", "percentiles": [0.5, 99.5]}, "task": {"name": "segmentation"}}
    before = {"version": CONFIG_VERSION, "data": {"task": "ibsr"}, "task": {"name": "segmentation"}}
    check_compatible(before, now, ["data.percentiles"], current=current_config, added=added_settings)
    unclipped = {**now, "data": {"task": "ibsr", "percentiles": [0.0, 100.0]}}
    for saved, requested in ((before, unclipped), (unclipped, now)):
        with pytest.raises(IncompatibleCheckpointError, match="data.percentiles"):
            check_compatible(saved, requested, ["data.percentiles"], current=current_config, added=added_settings)

