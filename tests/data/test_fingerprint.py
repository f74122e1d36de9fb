"""The near-duplicate fingerprint (`asa.data.fingerprint`) and the overlap check that uses it
(`asa.data.cohort.near_duplicates`): edited copies of a scan are found with their score, distinct subjects are not."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from asa.data.cohort import near_duplicates
from asa.data.fingerprint import (GRID, NEAR_THRESHOLD, decode_fingerprint, encode_fingerprint, fingerprint_scores,
                                  image_fingerprint)
from benchmarks.near_duplicates import deface, resample, with_scalp


def _save(path, image, zoom=1.0):
    nib.save(nib.Nifti1Image(np.asarray(image, dtype=np.float32), np.diag([zoom, zoom, zoom, 1.0])), str(path))
    return path


def test_scale_and_shift_of_intensity_and_text_round_trip_change_nothing():
    rng = np.random.default_rng(0)
    image = np.zeros((40, 40, 40), dtype=np.float32)
    image[8:32, 6:34, 9:30] = rng.uniform(0.5, 1.0, (24, 28, 21))
    a = image_fingerprint(image, (6.0, 6.0, 6.0))  # a brain-sized object: 144 x 168 x 126 mm
    assert a.dtype == np.int8 and a.shape == (GRID**3,) and np.abs(a).max() > 0
    assert np.array_equal(a, image_fingerprint(image * 3.5 + 200.0, (6.0, 6.0, 6.0)))
    # the same object at 1 mm is smaller than any brain: no fingerprint to match (it scores 0 against everything)
    small = image_fingerprint(image, (1.0, 1.0, 1.0))
    assert not small.any() and fingerprint_scores(small[None], a[None])[0, 0] == 0.0
    assert np.array_equal(decode_fingerprint(encode_fingerprint(a)), a)
    assert fingerprint_scores(a[None], a[None])[0, 0] == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(ValueError, match="no foreground"):
        image_fingerprint(np.zeros((20, 20, 20)), (1, 1, 1))
    with pytest.raises(ValueError, match="not a fingerprint"):
        decode_fingerprint("sha256:abc")


@pytest.mark.slow
def test_edited_copies_are_near_duplicates_and_distinct_subjects_are_not(tmp_path):
    """Template anatomy at 48^3 (4 mm): the pretraining scans have a scalp; a one-voxel crop, a 49^3 resample and
    a defaced copy of one of them are found with their scores; 15 distinct subjects give no match (the 10³-subject
    false-match rate is measured by benchmarks/near_duplicates.py, docs/weights-elsewhere.md)."""
    pytest.importorskip("nilearn")
    from asa.data.synthetic.anatomy import make_anatomy_subject

    cohort, tests = {}, {}
    for i in range(12):
        s = make_anatomy_subject(48, seed=3, index=i)
        zoom = float(s.affine[0, 0])
        head = with_scalp(s.images["t1"], s.brain_mask, zoom, i)
        cohort[f"pre-{i:02d}"] = _save(tmp_path / f"pre-{i:02d}.nii.gz", head, zoom)
        if i == 0:
            tests["crop"] = _save(tmp_path / "crop.nii.gz", head[1:], zoom)
            small, f = resample(head, (49, 49, 49))
            tests["resampled"] = _save(tmp_path / "resampled.nii.gz", small, zoom * f[0])
            tests["defaced"] = _save(tmp_path / "defaced.nii.gz", deface(head, s.brain_mask), zoom)
            tests["exact"] = cohort["pre-00"]
    distinct = {f"new-{i}": _save(tmp_path / f"new-{i}.nii.gz", make_anatomy_subject(48, seed=4, index=i).images["t1"],
                                  zoom) for i in range(3)}
    matches = near_duplicates({**tests, **distinct}, cohort)
    found = {m["query"]: m for m in matches}
    assert set(found) == {"crop", "resampled", "defaced", "exact"}  # no distinct subject, in the cohort or new
    assert all(m["reference"] == "pre-00" for m in matches)
    assert found["exact"]["kind"] == "exact" and found["exact"]["score"] == 1.0
    assert all(found[k]["kind"] == "near" and NEAR_THRESHOLD <= found[k]["score"] <= 1.0
               for k in ("crop", "resampled", "defaced"))
    # and among the cohort itself, only each scan with itself
    within = near_duplicates(cohort, cohort)
    assert sorted((m["query"], m["reference"]) for m in within) == [(k, k) for k in sorted(cohort)]
