from __future__ import annotations

from pathlib import Path

import pytest

from asa.data import get_task, write_demo_dataset
from asa.eval.predict import cases_from_files, gather_cases


def _touch(folder: Path, *names: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / n for n in names]
    for p in paths:
        p.write_bytes(b"")
    return paths


def test_one_channel_files_are_one_case_each(tmp_path):
    paths = _touch(tmp_path, "subj_2020.nii.gz", "scan_0000.nii.gz", "other.nii", "UPPER.NII.GZ")
    cases = cases_from_files(paths, get_task("ibsr"))
    assert sorted(c.id for c in cases) == ["UPPER", "other", "scan", "subj_2020"]  # suffixes in any case, as layouts
    assert all(list(c.images) == ["t1"] and c.label is None for c in cases)


def test_a_second_channel_given_to_a_one_channel_model_is_refused_not_taken_for_a_case(tmp_path):
    paths = _touch(tmp_path, "x_0000.nii.gz", "x_0001.nii.gz", "y_0001.nii.gz")
    with pytest.raises(ValueError, match=r"x_0001.nii.gz: channel 1 of case 'x' \(beside x_0000.nii.gz, its channel "
                                         r"0\), but the model reads one channel \(t1\): give x_0000.nii.gz alone"):
        cases_from_files(paths, get_task("ibsr"))
    # without its _0000, a name ending in 4 digits is a freely named one-channel scan (a year, a subject number)
    assert [c.id for c in cases_from_files(paths[1:2] + paths[2:], get_task("ibsr"))] == ["x_0001", "y_0001"]


def test_multichannel_files_follow_nnunet_naming(tmp_path):
    paths = _touch(tmp_path, "a_0001.nii.gz", "a_0000.nii.gz", "b_0000.nii.gz", "b_0001.nii.gz")
    cases = cases_from_files(paths, get_task("wmh"))
    assert [c.id for c in cases] == ["a", "b"]
    assert cases[0].images == {"t1": tmp_path / "a_0000.nii.gz", "flair": tmp_path / "a_0001.nii.gz"}
    with pytest.raises(ValueError, match=r"case 'c': found channels \[0\].*needs 2"):
        cases_from_files(_touch(tmp_path, "c_0000.nii.gz"), get_task("wmh"))
    with pytest.raises(ValueError, match="not a NIfTI"):
        cases_from_files(_touch(tmp_path, "notes.txt"), get_task("wmh"))


def test_gather_reads_layouts_folders_and_reports_missing_inputs(tmp_path):
    root = write_demo_dataset("wmh", tmp_path / "wmh", cases=2, size=32, seed=0)
    assert len(gather_cases(root, get_task("wmh"))) == 2
    files = _touch(tmp_path / "plain", "x.nii.gz", "y.nii.gz")
    assert [c.id for c in gather_cases(tmp_path / "plain", get_task("ibsr"))] == ["x", "y"]
    assert [c.id for c in gather_cases([str(f) for f in files], get_task("ibsr"))] == ["x", "y"]
    with pytest.raises(FileNotFoundError, match="missing.nii.gz"):
        gather_cases([tmp_path / "missing.nii.gz"], get_task("ibsr"))
    empty = _touch(tmp_path / "empty", "readme.txt")[0].parent
    with pytest.raises(FileNotFoundError, match="no .nii"):
        gather_cases(empty, get_task("ibsr"))


def test_on_bad_case_skip_predicts_the_others_and_lists_the_bad_one(tmp_path):
    import nibabel as nib
    import numpy as np
    import torch

    from asa.data import get_task, write_demo_dataset
    from asa.io import VolumeError
    from asa.eval.predict import Predictor, gather_cases, predict_cases

    task = get_task("brats")
    root = write_demo_dataset("brats", tmp_path / "brats", cases=3, size=16, seed=0)
    bad_file = sorted(root.rglob("*_t2.nii.gz"))[1]
    img = nib.load(str(bad_file))
    nib.save(nib.Nifti1Image(np.zeros(img.shape, np.float32), img.affine), str(bad_file))  # all zeros
    bad_id = bad_file.parent.name
    predictor = Predictor(torch.nn.Conv3d(4, task.num_outputs, 1), task, (16, 16, 16), torch.device("cpu"))
    cases = gather_cases(root, task)
    with pytest.raises(VolumeError, match=rf"{bad_id}_t2.nii.gz: image is all zeros .*on_bad_case=skip"):
        predict_cases(predictor, cases, tmp_path / "stop", progress=False)
    skipped: list = []
    written = predict_cases(predictor, cases, tmp_path / "out", progress=False, on_bad_case="skip", skipped=skipped)
    assert sorted(p.name for p in written) == sorted(f"{c.id}.nii.gz" for c in cases if c.id != bad_id)
    assert [cid for cid, _ in skipped] == [bad_id] and "all zeros" in skipped[0][1]


def test_a_dataset_without_the_channels_the_checkpoint_reads_is_refused_before_predicting(tmp_path):
    """A 4-channel (brats) checkpoint on 1-channel (ibsr) data: refused naming the channels read and found, before
    any case is predicted (asa-predict: exit 2, nothing written)."""
    root = write_demo_dataset("ibsr", tmp_path / "ibsr", cases=2, size=16, seed=0)
    with pytest.raises(ValueError, match=rf"^input={root} \(layout ibsr\): the checkpoint's task brats reads 4 "
                                         r"channel\(s\) \(t1, t1ce, t2, flair\); 2 of 2 case\(s\) lack some \(e.g. "
                                         r"IBSR_DEMO_01: missing t1ce, t2, flair; the inputs hold t1\)"):
        gather_cases(root, get_task("brats"))
    assert [c.id for c in gather_cases(root, get_task("ibsr"))] == ["IBSR_DEMO_01", "IBSR_DEMO_02"]
