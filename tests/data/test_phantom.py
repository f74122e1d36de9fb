from __future__ import annotations

import time

import numpy as np

from asa.data.phantom import make_phantom


def _mirror(a: np.ndarray, midline: float) -> tuple[np.ndarray, np.ndarray]:
    """(a, a reflected about the midline) restricted to voxels whose mirror is inside the grid."""
    n = a.shape[0]
    j = int(round(2 * midline)) - np.arange(n)
    ok = (j >= 0) & (j < n)
    return a[ok], a[j[ok]]


def test_deterministic_and_fast():
    t = time.perf_counter()
    a = make_phantom(64, seed=5, tumour=True)
    assert time.perf_counter() - t < 1.0
    b = make_phantom(64, seed=5, tumour=True)
    for k in a.images:
        np.testing.assert_array_equal(a.images[k], b.images[k])
    assert not np.array_equal(make_phantom(64, seed=6).images["t1"], a.images["t1"])


def test_hemispheres_near_symmetric_except_tumour():
    ph = make_phantom(64, seed=2, tumour=True)
    tissue, mirrored = _mirror(ph.tissue, ph.midline)
    brain = tissue > 0
    assert (tissue[brain] == mirrored[brain]).mean() > 0.93  # tiny seeded asymmetry only
    tum, tum_m = _mirror(ph.tumour, ph.midline)
    assert (tum > 0).sum() > 50 and ((tum > 0) & (tum_m > 0)).sum() < 0.05 * (tum > 0).sum()  # one-sided
    img, img_m = _mirror(ph.images["t1"], ph.midline)
    healthy = (tum == 0) & (tum_m == 0) & brain
    assert np.corrcoef(img[healthy], img_m[healthy])[0, 1] > 0.8
    assert np.corrcoef(img[tum > 0], img_m[tum > 0])[0, 1] < 0.6


def test_labels_line_up_with_images():
    ph = make_phantom(48, seed=1, tumour=True, lesions=True)
    t1, t2, flair, t1ce = (ph.images[k] for k in ("t1", "t2", "flair", "t1ce"))
    csf, gm, wm = (ph.tissue == v for v in (1, 2, 3))
    core_wm = wm & (ph.tumour == 0) & (ph.lesions == 0)
    # contrast ordering of tissues, as in real scans
    assert np.median(t1[core_wm]) > np.median(t1[gm & (ph.tumour == 0)]) > np.median(t1[csf])
    assert np.median(t2[csf]) > np.median(t2[core_wm])
    assert np.median(t1ce[ph.tumour == 4]) > 1.5 * np.median(t1[ph.tumour == 4])  # enhancing rim
    assert np.median(flair[ph.lesions == 1]) > 1.5 * np.median(flair[core_wm])  # WMH bright on FLAIR
    # nesting: necrosis inside enhancing inside tumour extent; everything inside the brain
    assert np.all(ph.brain_mask[(ph.tumour > 0) | (ph.tissue > 0)])
    assert set(np.unique(ph.tumour)) == {0, 1, 2, 4}
    assert np.all(t1[~ph.brain_mask] == 0)
    assert ph.brain_mask.sum() > 0.15 * ph.brain_mask.size


def test_world_origin_at_brain_centre():
    ph = make_phantom(40, seed=0)
    centre_vox = np.linalg.inv(ph.affine) @ np.array([0, 0, 0, 1.0])
    assert abs(centre_vox[0] - ph.midline) < 1e-9
    assert np.allclose(np.abs(np.diag(ph.affine)[:3]), 1.0)
