"""The near-duplicate fingerprint (`asa.data.fingerprint`) and the overlap check that uses it
(`asa.data.overlap.near_duplicates`, `cohort_overlap`): edited copies of a scan are found with their score, in their
own contrast; distinct subjects are not, in any contrast; the brain of a whole head is read under its scalp."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from asa.data.case import Case
from asa.data.cohort_list import COHORT_FORMAT
from asa.data.digests import DIGEST
from asa.data.overlap import cohort_overlap, describe_overlap, near_duplicates
from asa.data.fingerprint import (FINGERPRINT, GRID, NEAR_THRESHOLD, NEAR_THRESHOLDS, _brain, decode_fingerprint,
                                  encode_fingerprint, fingerprint_scores, image_fingerprint)
from benchmarks.near_duplicates import deface


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


def _pair(score: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two int8 fingerprints whose correlation is about ``score``."""
    rng = np.random.default_rng(seed)
    a, noise = np.zeros(GRID**3), np.zeros(GRID**3)  # on 256 values, large enough that int8 rounding keeps the score
    a[:256], noise[:256] = rng.standard_normal(256), rng.standard_normal(256)
    a /= np.linalg.norm(a)
    noise -= (noise @ a) * a
    b = score * a + np.sqrt(1 - score**2) * noise / np.linalg.norm(noise)
    return tuple(np.round(v / np.linalg.norm(v) * 127).astype(np.int8) for v in (a, b))


def test_an_image_is_compared_with_the_cohort_images_of_its_own_contrast_only():
    """A labeled case's T2w close to a cohort case's T1 (a score above every threshold) is no near-duplicate; the
    same image as the cohort case's t2 is, scored in t2 and said so; a channel of no known contrast (ADC) is
    compared with every contrast at the strictest threshold."""
    cohort_print, close = _pair(0.98)
    assert fingerprint_scores(close[None], cohort_print[None])[0, 0] > NEAR_THRESHOLD
    text = encode_fingerprint(cohort_print)
    cohort = {"format": COHORT_FORMAT, "digest": DIGEST, "fingerprint": FINGERPRINT, "seen_parts": ["train"],
              "cases": {"sub-01": {"part": "train", "subject": "01", "images": {"t1": "sha256:a"},
                                   "fingerprints": {"t1": text}},
                        "sub-02": {"part": "train", "subject": "02", "images": {"t2": "sha256:b"},
                                   "fingerprints": {"t2": text}}}}
    query = {"T2w": encode_fingerprint(close)}
    cases = [Case(id=name, images={ch: f"{name}.nii.gz" for ch in chans}) for name, chans in
             (("BRATS_001", query), ("BRATS_002", {"ADC": 0}), ("BRATS_003", {"FLAIR": 0}))]
    prints = {"BRATS_001": query, "BRATS_002": {"ADC": query["T2w"]}, "BRATS_003": {"FLAIR": query["T2w"]}}
    report = cohort_overlap(cohort, {"test": cases}, digests={c.id: {} for c in cases}, fingerprints=prints)["test"]
    near = {m["case"]: m for m in report["by_near_content"]}
    assert set(near) == {"BRATS_001", "BRATS_002"}  # the FLAIR is compared with no cohort FLAIR: none there
    assert near["BRATS_001"]["matches"] == ["sub-02"] and near["BRATS_001"]["contrasts"] == {"sub-02": "t2"}
    assert near["BRATS_002"]["matches"] == ["sub-01", "sub-02"]  # no known contrast: against all, at the strictest
    line = describe_overlap({"test": report})[0]
    assert "BRATS_001 = sub-02 (near t2, 0.9" in line and "same contrast" in line
    # a score between the contrast's threshold and the strictest: found in its contrast, not from an unknown one
    low = min(t for t in NEAR_THRESHOLDS.values() if t is not None)
    if low < NEAR_THRESHOLD - 0.01:
        contrast = next(c for c, t in NEAR_THRESHOLDS.items() if t == low)
        ref, copy = _pair(0.5 * (low + NEAR_THRESHOLD), seed=1)
        entry = {"part": "train", "images": {}, "fingerprints": {contrast: encode_fingerprint(ref)}}
        record = dict(cohort, cases={"c": entry})
        found = cohort_overlap(record, {"test": cases[:2]}, digests={c.id: {} for c in cases[:2]},
                               fingerprints={"BRATS_001": {contrast: encode_fingerprint(copy)},
                                             "BRATS_002": {"ADC": encode_fingerprint(copy)}})["test"]
        assert [m["case"] for m in found["by_near_content"]] == ["BRATS_001"]


def test_an_older_fingerprint_is_compared_by_digest_only():
    """A record written with another fingerprint (its ``fingerprint`` descriptor differs) is not near-checked."""
    text = encode_fingerprint(_pair(0.99)[0])
    cohort = {"format": COHORT_FORMAT, "digest": DIGEST, "fingerprint": FINGERPRINT.replace("heads from", "x"),
              "cases": {"a": {"part": "train", "images": {"t1": "sha256:a"}, "fingerprints": {"t1": text}}}}
    case = Case(id="q", images={"t1": "q.nii.gz"})
    report = cohort_overlap(cohort, {"test": [case]}, digests={"q": {"t1": "sha256:a"}},
                            fingerprints={"q": {"t1": text}})
    assert report["test"]["near_checked"] is False and report["test"]["overlapping"] == ["q"]  # by its digest
    assert "near content not checked" in describe_overlap(report)[0]


@pytest.fixture(scope="module")
def skull_subject():
    pytest.importorskip("nilearn")
    from asa.data.synthetic.anatomy import make_anatomy_subject

    return make_anatomy_subject(48, seed=2, index=0, skull=True)


def test_the_brain_of_a_whole_head_is_read_under_its_scalp_and_its_copies_point_back_to_it(skull_subject):
    """An ``asa-demo-data --skull`` head (48^3, 4.8 mm voxels): the brain the fingerprint reads overlaps the
    generator's brain mask (Dice >= 0.9, where the whole head is twice the brain), a skull-stripped brain is read as
    itself; its crop and intensity-edited copies are found at their contrast's threshold, and its skull-stripped and
    defaced copies score higher against it than against other subjects' heads (below the thresholds on these template
    subjects, which miss most of them: docs/weights-elsewhere.md)."""
    from asa.data.synthetic.anatomy import make_anatomy_subject

    s = skull_subject
    zoom = np.full(3, float(s.affine[0, 0]))
    truth = s.brain_mask
    others = [make_anatomy_subject(48, seed=2, index=i, skull=True) for i in (1, 2, 3)]
    for contrast in ("t1", "t2"):
        head = s.images[contrast]
        stripped = np.where(truth, head, 0.0).astype(np.float32)
        found, itself = _brain(head, zoom), _brain(stripped, zoom)
        assert 2 * (found & truth).sum() / (found.sum() + truth.sum()) >= 0.9
        assert 2 * (itself & truth).sum() / (itself.sum() + truth.sum()) >= 0.99
        heads = np.stack([image_fingerprint(v, zoom) for v in [head] + [o.images[contrast] for o in others]])
        for copy in (head[1:], head * 1.7 + 120.0):
            assert fingerprint_scores(image_fingerprint(copy, zoom)[None], heads[:1])[0, 0] >= NEAR_THRESHOLDS[contrast]
        for copy in (stripped, deface(head, truth)):
            scores = fingerprint_scores(image_fingerprint(copy, zoom)[None], heads)[0]
            assert scores[0] > scores[1:].max() + 0.05, (contrast, scores)


def test_distinct_subjects_stay_below_their_contrast_threshold():
    """Five template subjects in four contrasts, skull-stripped and whole heads: no pair of distinct subjects
    reaches its contrast's threshold (10^3 subjects: benchmarks/near_duplicates.py, docs/weights-elsewhere.md)."""
    pytest.importorskip("nilearn")
    from asa.data.synthetic.anatomy import make_anatomy_subject

    for skull in (False, True):
        subjects = [make_anatomy_subject(48, seed=7, index=i, skull=skull) for i in range(5)]
        for contrast, threshold in NEAR_THRESHOLDS.items():
            prints = np.stack([image_fingerprint(s.images[contrast], (float(s.affine[0, 0]),) * 3) for s in subjects])
            scores = fingerprint_scores(prints, prints)[np.triu_indices(5, k=1)]
            assert threshold is None or scores.max() < threshold, (skull, contrast, scores.max())


@pytest.mark.slow
def test_edited_copies_are_near_duplicates_and_distinct_subjects_are_not(tmp_path):
    """Template heads at 48^3 (``asa-demo-data --skull``): the pretraining scans are whole heads; a one-voxel crop
    and an intensity-edited copy of one of them are found with their scores (files name no contrast: the strictest
    threshold); 3 distinct subjects give no match (the 10^3-subject false-match rate is
    measured by benchmarks/near_duplicates.py, docs/weights-elsewhere.md)."""
    pytest.importorskip("nilearn")
    from asa.data.synthetic.anatomy import make_anatomy_subject

    cohort, tests = {}, {}
    for i in range(8):
        s = make_anatomy_subject(48, seed=3, index=i, skull=True)
        zoom = float(s.affine[0, 0])
        head = s.images["t1"]
        cohort[f"pre-{i:02d}"] = _save(tmp_path / f"pre-{i:02d}.nii.gz", head, zoom)
        if i == 0:
            tests["crop"] = _save(tmp_path / "crop.nii.gz", head[1:], zoom)
            tests["scaled"] = _save(tmp_path / "scaled.nii.gz", head * 1.7 + 120.0, zoom)
            tests["exact"] = cohort["pre-00"]
    distinct = {}
    for i in range(3):
        s = make_anatomy_subject(48, seed=4, index=i, skull=bool(i % 2))
        distinct[f"new-{i}"] = _save(tmp_path / f"new-{i}.nii.gz", s.images["t1"], float(s.affine[0, 0]))
    matches = near_duplicates({**tests, **distinct}, cohort)
    found = {m["query"]: m for m in matches}
    assert set(found) == {"crop", "scaled", "exact"}  # no distinct subject
    assert all(m["reference"] == "pre-00" for m in matches)
    assert found["exact"]["kind"] == "exact" and found["exact"]["score"] == 1.0
    assert all(found[k]["kind"] == "near" and NEAR_THRESHOLD <= found[k]["score"] <= 1.0
               for k in ("crop", "scaled"))
    # and among the cohort itself, only each scan with itself
    within = near_duplicates(cohort, cohort)
    assert sorted((m["query"], m["reference"]) for m in within) == [(k, k) for k in sorted(cohort)]
