"""Every saved run config records the version of its layout; one of an earlier version is read through the
numbered migrations after it (version k -> k + 1, in order), one without a version through all of them, and a
newer one is refused (docs/run-folders.md)."""

from __future__ import annotations

import pytest
import yaml

from asa.api import finetune, load_config
from asa.api.configuration.compat import (MIGRATIONS, OVERSAMPLING_BEFORE, SEGMENTATION_BEFORE, current_config,
                                          read_config)
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
    assert read["data"] == {"task": "ibsr"} and current_config(read) == read


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


@pytest.mark.parametrize("version", [CONFIG_VERSION + 1, -1, "2"])
def test_a_version_this_asa_cannot_read_is_refused(version):
    with pytest.raises(ValueError, match=rf"version {version!r}: this asa reads versions 0 to {CONFIG_VERSION}"):
        read_config({"version": version})


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
