"""A fine-tuning task's own settings are its ``task`` section, typed by the claiming task's Settings: the
keys that held them before are refused naming their new place, and a run config written before (a
resumed run folder, a checkpoint) is read with their values there and its record of what it predicts as
``outputs``."""

from __future__ import annotations

from pathlib import Path

import pytest

from asa.api import load_config
from asa.api.tasks.case import HeadSettings, Settings as CaseSettings
from asa.api.configuration.checks import DEFAULT_TASK
from asa.api.configuration.compat import OVERSAMPLING_BEFORE, SEGMENTATION_BEFORE, current_config
from asa.api.configuration.schema import CONFIG_VERSION
from asa.api.tasks.segmentation import Settings as SegmentationSettings
from asa.io import load_checkpoint

MOVED = [("data.samples_per_case=2", "task.samples_per_case"), ("loss.focal_weight=1", "task.focal_weight"),
         ("loss.focal_beta=2", "task.focal_beta"), ("loss.class_weighted=false", "task.class_weighted (with task=case)"),
         ("loss.regression=huber", "task.regression"), ("loss.huber_delta=2", "task.huber_delta"),
         ("head.pooling=attention", "task.head.pooling"), ("head.hidden_dim=8", "task.head.hidden_dim"),
         ("head.dropout=0.1", "task.head.dropout"), ("data.target=age", "task.target (with task=case)"),
         ("data.target_kind=continuous", "task.target_kind"), ("data.targets=t.tsv", "task.targets"),
         ("data.classes=[a,b]", "task.classes"), ("validation.crops=centre", "task.crops (with task=case)"),
         ("validation.overlap=0.25", "task.overlap (with task=segmentation)"),
         ("validation.sw_batch_size=1", "task.sw_batch_size (with task=segmentation)")]
SEGMENTATION_RECORD = {"name": "brats", "channels": ["t1", "t1ce", "t2", "flair"], "multilabel": True}
CASE_RECORD = {"name": "case", "kind": "continuous", "target": "age", "classes": [], "target_shift": 70.0,
               "target_scale": 8.0}


@pytest.mark.parametrize("override, place", MOVED)
def test_an_old_key_is_refused_naming_its_new_place(override, place):
    with pytest.raises(ValueError, match=rf"{override.split('=')[0]} is now {place.replace('(', '.').replace(')', '.')}"):
        load_config("finetune", "data=targets", override)


@pytest.mark.parametrize("data, overrides, expected", [
    ("brats", ["task.samples_per_case=2", "task.focal_weight=0.5"],
     SegmentationSettings(samples_per_case=2, focal_weight=0.5)),
    ("targets", [], CaseSettings()),  # data.task=case: the segmentation defaults give way to the case task's
    ("targets", ["task=case", "task.head.pooling=attention", "task.regression=huber"],
     CaseSettings(regression="huber", head=HeadSettings(pooling="attention"))),
])
def test_the_task_section_is_the_claiming_task_s_settings(data, overrides, expected):
    assert load_config("finetune", f"data={data}", *overrides).task == expected


@pytest.mark.parametrize("overrides, message", [
    (["data=brats", "+task.class_weighted=false"], "task.class_weighted=False: task segmentation has no such option"),
    (["data=targets", "task.focal_weight=1"], "data.task=case is trained by task case, whose settings are chosen "
                                              "with task=case"),
    (["data=targets", "task=case", "task.regression=l1"], "task.regression='l1': expected one of mse, huber"),
    (["data=brats", "task=case"], "data.task=brats is trained by task segmentation"),  # not silently segmentation
])
def test_another_task_s_option_or_a_bad_value_is_refused_naming_it(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_config("finetune", *overrides)


def test_an_old_segmentation_run_config_is_read_with_its_settings_in_the_task_section():
    old = {"data": {"task": "brats", "samples_per_case": 3, "crop": 32}, "task": dict(SEGMENTATION_RECORD),
           "loss": {"focal_weight": 0.5, "focal_beta": 2.0, "class_weighted": True, "regression": "mse",
                    "huber_delta": 1.0},
           "head": {"pooling": "mean", "hidden_dim": 256, "dropout": 0.0}}
    read = current_config(old)
    assert read["outputs"] == SEGMENTATION_RECORD
    assert read["task"] == {"name": "segmentation", "samples_per_case": 3, "focal_weight": 0.5, "focal_beta": 2.0,
                            **SEGMENTATION_BEFORE, **OVERSAMPLING_BEFORE}  # the sampler and Dice it trained with
    # with the default clip, the only one there was before data.percentiles
    assert read["data"] == {"task": "brats", "crop": 32, "percentiles": [0.5, 99.5]}
    assert "loss" not in read and "head" not in read
    assert current_config(read) == read and old["task"] == SEGMENTATION_RECORD  # read once; the saved one kept


def test_segmentation_samples_and_scores_as_nnunet_unless_asked_and_old_runs_keep_theirs():
    settings = load_config("finetune", "data=ibsr").task
    assert (settings.sampling, settings.foreground_fraction, settings.dice_background, settings.oversampling) == (
        "classes", None, False, "batch")
    old = load_config("finetune", "data=ibsr", "task.sampling=foreground", "task.dice_background=true").task
    assert (old.sampling, old.dice_background) == ("foreground", True)
    saved = {"data": {"task": "ibsr"}, "task": {"name": "segmentation", "samples_per_case": 1}}  # before the keys
    assert current_config(saved)["task"] == {"name": "segmentation", "samples_per_case": 1, "sampling": "foreground",
                                             "foreground_fraction": None, "dice_background": True,
                                             "oversampling": "crop"}
    now = {"data": {"task": "ibsr"}, "task": {"name": "segmentation", "sampling": "classes", "dice_background": False}}
    assert current_config(now)["task"]["sampling"] == "classes"  # a run of this version as it is
    assert "sampling" not in current_config({"task": {"name": "case"}})["task"]
    with pytest.raises(ValueError, match="task.sampling='random': expected one of classes, foreground"):
        load_config("finetune", "data=ibsr", "task.sampling=random")
    with pytest.raises(ValueError, match="task.oversampling='item': expected one of batch, crop"):
        load_config("finetune", "data=ibsr", "task.oversampling=item")


def test_an_old_case_checkpoint_config_is_read_with_its_record_as_outputs():
    old = {"data": {"task": "case", "samples_per_case": 1}, "task": dict(CASE_RECORD),
           "loss": {"focal_weight": 0.0, "focal_beta": 1.0, "class_weighted": False, "regression": "huber",
                    "huber_delta": 0.5},
           "head": {"pooling": "attention", "hidden_dim": 64, "dropout": 0.1}}
    read = current_config(old)
    assert read["outputs"] == CASE_RECORD
    assert read["task"] == {"name": "case", "class_weighted": False, "regression": "huber", "huber_delta": 0.5,
                            "head": {"pooling": "attention", "hidden_dim": 64, "dropout": 0.1}}
    assert current_config({"outputs": CASE_RECORD, "task": {"name": "case"}}) == {
        "version": CONFIG_VERSION, "outputs": CASE_RECORD, "task": {"name": "case"}}


@pytest.mark.slow
def test_a_run_written_with_the_old_keys_resumes(old_run):
    old_run.train(2, False, "task.samples_per_case=2")

    def before(config: dict) -> dict:  # the layout of a run written before the task section
        settings = config["task"]
        return {**{k: v for k, v in config.items() if k not in ("task", "outputs")},
                "data": {**config["data"], "samples_per_case": settings["samples_per_case"]},
                "loss": {"focal_weight": settings["focal_weight"], "focal_beta": settings["focal_beta"],
                         "class_weighted": True, "regression": "mse", "huber_delta": 1.0},
                "head": {"pooling": "mean", "hidden_dim": 256, "dropout": 0.0}, "task": config["outputs"]}

    old_run.rewrite(before)
    # a run saved before nnU-Net's sampling and Dice became the default resumes only with the ones it had
    with pytest.raises(Exception, match="task.sampling: .*last.pt has 'foreground', config has 'classes'"):
        old_run.train(4, True, "task.samples_per_case=2")
    assert old_run.train(4, True, "task.samples_per_case=2", "task.sampling=foreground",
                         "task.dice_background=true").step == 4
    resumed = load_checkpoint(old_run.dir / "checkpoints" / "last.pt")["config"]  # as this version reads it
    assert resumed["task"]["samples_per_case"] == 2 and resumed["outputs"]["name"] == "ibsr"


def test_the_task_group_default_is_the_one_that_gives_way():
    text = (Path(__file__).resolve().parents[2] / "configs" / "finetune" / "finetune.yaml").read_text()
    assert f"  - task: {DEFAULT_TASK} " in text


def test_a_run_config_with_validation_and_target_keys_is_read_with_them_in_its_task_section():
    """A run config of the layout before the task's validation and target settings moved (``validation.*``,
    ``data.target``, ...): each task gets its own, the other task's (which never configured the run) are left out."""
    old_data = {"task": "case", "crop": 32, "target": "age", "target_kind": "auto", "targets": None, "classes": None}
    case = {"data": old_data, "task": {"name": "case", "class_weighted": True},
            "validation": {"overlap": 0.5, "sw_batch_size": 2, "crops": "centre"}}
    read = current_config(case)
    assert read["task"] == {"name": "case", "class_weighted": True, "target": "age", "target_kind": "auto",
                            "targets": None, "classes": None, "crops": "centre"}
    assert read["data"] == {"task": "case", "crop": 32, "percentiles": [0.5, 99.5]} and "validation" not in read
    segmentation = {"data": {**old_data, "task": "ibsr", "target": None},
                    "task": {"name": "segmentation", "sampling": "classes", "dice_background": False},
                    "validation": {"overlap": 0.25, "sw_batch_size": 1, "crops": "grid"}}
    read = current_config(segmentation)
    assert read["task"] == {"name": "segmentation", "sampling": "classes", "dice_background": False, "overlap": 0.25,
                            "sw_batch_size": 1, "foreground_fraction": None, "oversampling": "crop"}
    assert read["data"] == {"task": "ibsr", "crop": 32, "percentiles": [0.5, 99.5]} and current_config(read) == read
