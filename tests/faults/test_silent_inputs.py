"""Inputs that used to train without a word: a task's settings chosen for data another task trains
(``data=targets task=segmentation``), and a dataset whose every label map is empty (Dice 0 by construction).
Both are refused before the run folder records anything."""

from __future__ import annotations

import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from asa.api import finetune, load_config
from asa.api.machinery.run import OptionError
from asa.data import write_demo_dataset


@pytest.mark.parametrize("overrides, message", [
    (["data=targets", "task=segmentation"], "task=segmentation: data.task=case is trained by task case; choose task=case"),
    (["data=ibsr", "task=case"], "data.task=ibsr is trained by task segmentation"),
])
def test_a_task_chosen_for_data_another_task_trains_is_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_config("finetune", *overrides)


@pytest.mark.parametrize("overrides, task", [(["data=targets"], "case"), (["data=targets", "task=case"], "case"),
                                             (["data=ibsr", "task=segmentation"], "segmentation")])
def test_the_claiming_task_chosen_or_left_out_composes(overrides, task):
    assert load_config("finetune", *overrides).task.name == task


@pytest.mark.slow  # the console script in a child process
def test_the_command_line_refuses_the_other_task_before_writing(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "asa.cli.finetune", "data=targets", "task=segmentation",
                           f"output_dir={out}"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "refused: task=segmentation: data.task=case is trained by task case" in proc.stderr
    assert not out.exists()


def test_a_dataset_whose_every_label_map_is_empty_is_refused_before_writing(tmp_path):
    root = write_demo_dataset("ibsr", tmp_path / "data", cases=4, size=32, seed=3)
    labels = sorted(root.rglob("*_segTRI_ana.nii.gz"))
    assert len(labels) == 4
    for path in labels:
        img = nib.load(str(path))
        nib.save(nib.Nifti1Image(np.zeros(img.shape, np.uint8), img.affine), str(path))
    out = tmp_path / "run"
    cfg = load_config("finetune", "data=ibsr", f"data.root={root}", "data.crop=32", "trainer=smoke", "device=cpu",
                      "trainer.progress=false", f"output_dir={out}")
    with pytest.raises(OptionError, match=r"every label map of the 4 labelled case\(s\) is empty .*_segTRI_ana"):
        finetune(cfg)
    assert not (out / "config.yaml").exists() and not (out / "splits.json").exists()

    # one case with a labelled voxel is enough: the check reads files only until it finds one
    img = nib.load(str(labels[-1]))
    data = np.zeros(img.shape, np.uint8)
    data[16, 16, 16] = 1
    nib.save(nib.Nifti1Image(data, img.affine), str(labels[-1]))
    from asa.api.machinery.dataset import check_labels_present
    from asa.data import discover

    check_labels_present(discover("ibsr", root), where="data=ibsr")


def test_a_mistyped_data_task_is_refused_naming_every_task_before_writing(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=r"data.task=brat: no fine-tuning task takes it \(registered: segmentation takes "
                                         r"brats, ibsr, msd, wmh; case"):
        finetune(load_config("finetune", "data.task=brat", f"output_dir={out}"))
    assert not out.exists()
    for entry in ("evaluate", "probe"):  # every job of a task is chosen by data.task
        with pytest.raises(ValueError, match=r"data.task=brat: no fine-tuning task takes it \(registered: segmentation"):
            load_config(entry, "data.task=brat", f"output={out}")
