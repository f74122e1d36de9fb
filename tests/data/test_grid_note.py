"""Anisotropic or oblique voxel grids get one note per run saying what the brain frame assumes and how to
resample; near-isotropic, aligned grids none."""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest

from asa.data import write_demo_dataset
from asa.data.geometry import grid_note


def _rotated(degrees: float, spacing=(1.0, 1.0, 1.0)) -> np.ndarray:
    """An affine whose voxel axes 1 and 2 are turned by ``degrees`` about world x (RAS)."""
    t = math.radians(degrees)
    rotation = np.array([[1, 0, 0], [0, math.cos(t), -math.sin(t)], [0, math.sin(t), math.cos(t)]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag(spacing)
    return affine


def test_aligned_near_isotropic_grids_get_no_note():
    assert grid_note({"a": np.eye(4), "b": _rotated(5), "c": np.diag([1.0, 1.0, 1.4, 1.0])}) is None
    assert grid_note({}) is None


def test_one_note_counts_the_anisotropic_and_the_oblique_cases():
    note = grid_note({"a": np.diag([1.0, 1.0, 3.0, 1.0]), "b": _rotated(20), "c": np.eye(4), "d": _rotated(30)})
    assert note.startswith("1 of 4 case(s) have anisotropic voxels (e.g. a: 1 × 1 × 3 mm); "
                           "2 of 4 case(s) are oblique (e.g. b: 20° off the RAS axes).")
    assert "mid-sagittal plane across array axis 0" in note and "data.resample_mm=1" in note
    assert "asa-preprocess" in note and "reslice oblique scans" in note
    assert grid_note({"x": _rotated(20, spacing=(1.0, 1.0, 3.0))}).count("case(s)") == 2  # both, one note


@pytest.mark.slow
def test_a_pretraining_run_on_oblique_scans_notes_it_once(tmp_path, capsys):
    from asa.api import load_config, pretrain

    root = write_demo_dataset("bids", tmp_path / "bids", cases=4, size=24, seed=0)
    for path in root.rglob("*.nii.gz"):  # the same voxels, an oblique grid: 20° about x
        image = nib.load(path)
        nib.save(nib.Nifti1Image(np.asarray(image.dataobj), _rotated(20) @ image.affine), path)
    pretrain(load_config("pretrain", "data=demo", f"data.root={root}", "model=tiny", "trainer=smoke", "device=cpu",
                         "data.crop=16", "trainer.batch_size=1", f"output_dir={tmp_path / 'run'}"))
    notes = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("[asa] note: ")]
    assert len(notes) == 1 and notes[0].startswith("[asa] note: 4 of 4 case(s) are oblique (e.g. sub-DEMO001")
