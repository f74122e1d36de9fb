"""benchmarks/outside_data.py: subjects made from nilearn's MNI152 template, read by asa's own readers."""

from __future__ import annotations

import itertools
import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from asa.data import discover
from benchmarks import outside_data


def _canonical(volume: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    return nib.as_closest_canonical(nib.Nifti1Image(volume, affine))


@pytest.mark.slow  # the whole script: a cohort and a labeled set written and read back
def test_cli_writes_sets_asa_reads(tmp_path):
    result = outside_data.main(["--out", str(tmp_path), "--healthy", "3", "--lesions", "2", "--seed", "5"])
    assert result["cohort"]["subjects"] == 3 and result["labeled"]["cases"] == 2
    cohort = discover("bids", tmp_path / "cohort")
    assert [c.id for c in cohort] == ["sub-001", "sub-002", "sub-003"]
    assert all(list(c.images) == ["t1"] and c.label is None for c in cohort)
    labeled = discover("msd", tmp_path / "labeled")  # full checks: label values, grids, contrast in the brain
    assert [c.id for c in labeled] == ["lesion_001", "lesion_002"]
    assert all(list(c.images) == ["T1"] and c.label is not None for c in labeled)
    meta = json.loads((tmp_path / "labeled" / "dataset.json").read_text())
    assert meta["numTraining"] == 2 and meta["labels"] == {"background": 0, "lesion": 1}
    assert meta["channel_names"] == {"0": "T1"}
    healthy = [int(line.split("\t")[1]) for line in
               (tmp_path / "cohort" / "participants.tsv").read_text().splitlines()[1:]]
    assert healthy == [5, 6, 7] and sorted(meta["seeds"].values()) == [8, 9]  # no subject in both sets
    for case in labeled:  # image and label share the grid; the label holds a lesion
        image, label = nib.load(case.images["T1"]), nib.load(case.label)
        assert image.shape == label.shape and np.allclose(image.affine, label.affine)
        assert set(np.unique(np.asarray(label.dataobj))) == {0, 1}


def test_same_seed_same_subject_other_seed_other_subject():
    v1, a1, m1 = outside_data.warp_subject(3)
    v2, a2, m2 = outside_data.warp_subject(3)
    assert np.array_equal(v1, v2) and np.array_equal(a1, a2) and np.array_equal(m1, m2)
    canon = [_canonical(*outside_data.warp_subject(s)[:2]).get_fdata().ravel() for s in (3, 4, 5)]
    for x, y in itertools.combinations(canon, 2):
        assert np.corrcoef(x, y)[0, 1] < 0.95  # the same template, warped apart


def test_orientations_vary_and_canonical_brains_coincide():
    codes, centres = set(), []
    for seed in range(6):
        volume, affine, brain = outside_data.warp_subject(seed)
        assert volume.shape == brain.shape and volume.dtype == np.float32
        assert np.allclose(np.abs(affine[:3, :3]).sum(axis=0), 3.0)  # an axis permutation with flips, 3 mm
        codes.add(nib.aff2axcodes(affine))
        canon = _canonical(brain.astype(np.uint8), affine)
        assert np.allclose(canon.affine[:3, :3], np.diag([3.0, 3.0, 3.0]))
        inside = np.argwhere(np.asarray(canon.dataobj) > 0)
        centres.append(nib.affines.apply_affine(canon.affine, inside.mean(axis=0)))
    assert len(codes) >= 3
    spread = max(np.linalg.norm(a - b) for a, b in itertools.combinations(centres, 2))
    assert spread < 20.0  # mm: the random shift and scale move the brain by a few mm only


def test_skull_stripped_and_head():
    stripped, _, brain = outside_data.warp_subject(1)
    assert np.all(stripped[~brain] == 0) and stripped[brain].min() >= 0
    assert 1.0e6 < brain.sum() * 27 < 2.5e6  # mm^3: a brain's volume
    head, _, brain_h = outside_data.warp_subject(1, head=True)
    assert np.array_equal(brain, brain_h)
    inner = np.median(head[brain])
    skull = ndimage.binary_dilation(brain, iterations=1) & ~brain
    scalp = ndimage.binary_dilation(brain, iterations=6) & ~ndimage.binary_dilation(brain, iterations=2)
    assert np.median(head[skull]) < 0.6 * inner  # the dark band of CSF and bone round the brain
    assert np.percentile(head[scalp], 90) > 0.6 * inner  # and the bright scalp beyond it
    far = ~ndimage.binary_dilation(brain, iterations=12)
    assert 0 < np.median(head[far]) < 0.2 * inner  # Rician background, not zero


def test_lesions_lie_in_the_brain_and_change_only_their_neighbourhood():
    for seed in (11, 12, 13):
        volume, label, affine, brain = outside_data.lesion_case(seed)
        plain, plain_affine, plain_brain = outside_data.warp_subject(seed)
        assert np.array_equal(affine, plain_affine) and np.array_equal(brain, plain_brain)
        lesion = label == 1
        assert label.dtype == np.uint8 and set(np.unique(label)) == {0, 1}
        assert lesion.any() and not (lesion & ~brain).any()
        assert 1 <= ndimage.label(lesion)[1] <= 3 * 4  # 1-3 blobs (a blob may break apart at 3 mm)
        assert lesion.sum() * 27 < 3 * 4 / 3 * np.pi * 20.0**3  # mm^3: at most three 40 mm balls
        changed = np.abs(volume - plain) > 1e-3 * np.abs(plain).max()
        assert changed[lesion].mean() > 0.9
        assert not changed[~brain].any()
        near = ndimage.distance_transform_edt(~lesion, sampling=3.0) <= 30.0  # mm
        assert not changed[~near].any()  # the same subject, noise and bias away from the lesions


def test_bad_spacing_is_refused():
    with pytest.raises(ValueError, match="spacing"):
        outside_data.warp_subject(0, spacing=0.0)
