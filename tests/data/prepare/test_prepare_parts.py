"""asa-prepare's parts that need no registration tool: the prepared grid on the symmetric template, the
names, the settings and shards refused, the QC's robust z and flags, the mirror score, the refusal of a
missing tool naming the extra."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from asa.data.case import Case
from asa.data.prepare import (INSTALL_HINT, MissingTool, PrepareSettings, case_files, mirror_score, parse_shard,
                              prepare, prepared_grid, qc_table, robust_z)
from asa.data.prepare.tools import need

pytest.importorskip("nilearn")


@pytest.mark.parametrize("box, crop, spacing", [("centre", 128, 1.0), ("centre", 48, 3.0), ("template", 64, 2.0)])
def test_the_prepared_grid_mirrors_about_the_template_plane(box, crop, spacing):
    shape, affine = prepared_grid(box=box, crop=crop, spacing=spacing)
    if box == "centre":
        assert shape == (crop,) * 3
    assert np.allclose(np.diag(affine)[:3], spacing)
    # voxel i and X - 1 - i lie at x and -x: the template's mid-sagittal plane is the grid's centre plane
    first, last = affine @ [0, 0, 0, 1], affine @ [shape[0] - 1, 0, 0, 1]
    assert first[0] == pytest.approx(-last[0])


def test_the_template_box_holds_the_whole_template_brain():
    from asa.data.prepare import load_template

    tpl = load_template()
    shape, affine = prepared_grid(box="template", spacing=1.0)
    idx = np.argwhere(tpl.brain)
    world = tpl.affine[:3, :3] @ idx.T + tpl.affine[:3, 3:]
    voxel = np.linalg.inv(affine)[:3, :3] @ world + np.linalg.inv(affine)[:3, 3:]
    assert voxel.min() >= 0 and (voxel.max(1) <= np.asarray(shape) - 1).all()
    # the template is its own mirror about x = 0 (nilearn's symmetric 2009a)
    assert np.array_equal(tpl.brain, tpl.brain[::-1])


@pytest.mark.parametrize("kwargs, message", [
    ({"brain": "bet"}, "brain='bet'"), ({"transform": "syn"}, "transform='syn'"), ({"box": "whole"}, "box='whole'"),
    ({"spacing": 0}, "spacing=0"), ({"crop": 4}, "crop=4"),
])
def test_bad_settings_are_refused_naming_the_option(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PrepareSettings(**kwargs)


@pytest.mark.parametrize("text, expected", [("0/1", (0, 1)), ("3/10", (3, 10))])
def test_shards(text, expected):
    assert parse_shard(text) == expected


@pytest.mark.parametrize("text", ["1/1", "-1/4", "2", "a/b"])
def test_bad_shards_are_refused(text):
    with pytest.raises(ValueError, match="shard="):
        parse_shard(text)


def test_names_keep_a_bids_case_and_make_a_listed_one_a_subject(tmp_path):
    bids = Case("sub-01_ses-M00_run-2", {"t1": tmp_path / "x.nii.gz"}, None,
                {"subject": "01", "session": "M00", "layout": "bids"})
    files = case_files(bids)
    assert str(files.image("t1")) == "sub-01/ses-M00/anat/sub-01_ses-M00_run-2_T1w.nii.gz"
    assert files.image("t1ce").name == "sub-01_ses-M00_run-2_ce-gadolinium_T1w.nii.gz"
    assert files.transform("t1").name == "sub-01_ses-M00_run-2_from-T1w_to-MNI152NLin2009aSym_mode-image_xfm.mat"
    listed = case_files(Case("DEMO_000", {"t1": tmp_path / "x.nii.gz"}, None, {"layout": "filelist"}))
    assert str(listed.image("flair")) == "sub-DEMO000/anat/sub-DEMO000_FLAIR.nii.gz"


def test_robust_z_by_hand():
    # median 3, |x - 3| = 2 1 0 1 2 -> MAD 1, scaled 1.4826
    z = robust_z([1.0, 2.0, 3.0, 4.0, 5.0, None])
    assert z[:5] == pytest.approx([-2 / 1.4826, -1 / 1.4826, 0.0, 1 / 1.4826, 2 / 1.4826])
    assert z[5] is None
    assert robust_z([1.0, 1.0]) == [None, None]  # too few to judge
    # the floor: a scale of at least 5 % of the median (3 -> 0.15 here is below 1.4826, so no change)
    assert robust_z([10.0, 10.1, 10.0, 9.9, 10.0], floor=0.05)[1] == pytest.approx(0.1 / 0.5)


def test_qc_flags_the_outlier_of_the_cohort():
    records = [{"id": f"sub-{k}", "qc": {"symmetry": 0.80 + 0.01 * (k % 3), "brain_ml": 1200.0 + 10 * k,
                                        "similarity": 0.70 + 0.01 * (k % 2)}} for k in range(9)]
    records.append({"id": "sub-bad", "qc": {"symmetry": 0.30, "brain_ml": 1240.0, "similarity": 0.71}})
    rows = {row["id"]: row for row in qc_table(records)}
    assert rows["sub-bad"]["flags"] == ["symmetry"]
    assert all(not rows[f"sub-{k}"]["flags"] for k in range(9))
    # four cases flag nothing (their spread says too little), nor does a 7 % lower symmetry in a tight cohort
    assert not any(row["flags"] for row in qc_table(records[:3] + records[-1:]))
    tight = [{"id": f"sub-{k}", "qc": {"symmetry": 0.705 + 0.001 * k, "brain_ml": 2000.0, "similarity": 0.7}}
             for k in range(9)]
    tight.append({"id": "sub-lower", "qc": {"symmetry": 0.652, "brain_ml": 2000.0, "similarity": 0.7}})
    assert not any(row["flags"] for row in qc_table(tight))


def test_mirror_score_is_one_for_a_symmetric_brain_and_lower_for_a_shifted_one():
    rng = np.random.default_rng(0)
    half = rng.random((8, 12, 10))
    image = np.concatenate([half, half[::-1]])
    mask = np.ones(image.shape, dtype=bool)
    assert mirror_score(image, mask) == pytest.approx(1.0)
    assert mirror_score(np.roll(image, 2, axis=0), mask) < 0.9


def test_a_missing_tool_is_refused_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ants", None)  # an import of ants now fails as if it were not installed
    with pytest.raises(MissingTool, match=r'asa-prepare .* needs ants.*pip install "asa\[prepare\]"'):
        need("ants", "asa-prepare (N4 bias correction and registration)")
    assert INSTALL_HINT == 'pip install "asa[prepare]"'


def test_the_raw_folder_is_never_written(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    with pytest.raises(ValueError, match="inside the raw folder"):
        prepare(raw, raw / "derivatives" / "prepared")
