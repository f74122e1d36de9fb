from __future__ import annotations

import numpy as np
import pytest

from asa.data.synthetic.phantom import make_phantom


def _mirror(a: np.ndarray, midline: float) -> tuple[np.ndarray, np.ndarray]:
    """(a, a reflected about the midline) restricted to voxels whose mirror is inside the grid."""
    n = a.shape[0]
    j = int(round(2 * midline)) - np.arange(n)
    ok = (j >= 0) & (j < n)
    return a[ok], a[j[ok]]


def test_deterministic():
    a = make_phantom(64, seed=5, tumour=True)
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


def _volumes(ph) -> dict[str, int]:
    """Voxel counts of the aged anatomy: CSF near the ventricles, GM of the medial temporal box, sulcal CSF."""
    c = np.linalg.inv(ph.affine)[:3, 3]
    radii = np.array([0.36, 0.43, 0.35]) * np.array(ph.classes.shape)
    x, y, z = np.meshgrid(*[np.arange(n) - c[a] for a, n in enumerate(ph.classes.shape)], indexing="ij")
    u, v, w = x / radii[0], y / radii[1], z / radii[2]
    r = np.sqrt(u * u + v * v + w * w)
    mt = (np.abs(u) > 0.1) & (np.abs(u) < 0.5) & (v > -0.4) & (v < 0.3) & (w > -0.55) & (w < -0.15)
    return {"ventricles": int(((ph.classes == 1) & (r < 0.7) & (w > -0.1) & (np.abs(x) >= 1)).sum()),
            "hippocampus": int(((ph.classes == 2) & mt).sum()), "mt_csf": int(((ph.classes == 1) & mt).sum()),
            "sulci": int(((ph.classes == 1) & (r > 0.85)).sum()), "cortex": int(((ph.classes == 2) & (r > 0.7)).sum())}


def test_ageing_grows_ventricles_and_sulci_and_atrophy_shrinks_the_hippocampus():
    # one seed: the same subject at different ages / atrophy grades (its per-subject noise is fixed)
    young, old = (_volumes(make_phantom(48, seed=7, age=a)) for a in (55.0, 85.0))
    assert old["ventricles"] > 1.5 * young["ventricles"]
    assert old["sulci"] > young["sulci"] and old["cortex"] < young["cortex"]  # cortical thinning
    assert old["hippocampus"] < young["hippocampus"]
    cn, mci, ad = (_volumes(make_phantom(48, seed=7, age=70.0, atrophy=g)) for g in (0.0, 0.5, 1.0))
    assert cn["hippocampus"] > mci["hippocampus"] > ad["hippocampus"] and ad["hippocampus"] < 0.7 * cn["hippocampus"]
    assert cn["mt_csf"] < mci["mt_csf"] < ad["mt_csf"]  # the lost tissue opens the temporal horn
    assert cn["ventricles"] == ad["ventricles"]  # atrophy is medial-temporal only
    aged = make_phantom(48, seed=7, age=70.0, atrophy=1.0)
    tissue, mirrored = _mirror(aged.tissue, aged.midline)
    assert (tissue[tissue > 0] == mirrored[tissue > 0]).mean() > 0.93  # both hemispheres age alike
    np.testing.assert_array_equal(aged.images["t1"], make_phantom(48, seed=7, age=70.0, atrophy=1.0).images["t1"])


def test_ageless_phantom_has_no_medial_temporal_structures_and_bad_ageing_arguments_are_refused():
    plain, aged = make_phantom(40, seed=3), make_phantom(40, seed=3, age=50.0)
    assert _volumes(plain)["mt_csf"] == 0 and _volumes(plain)["hippocampus"] < 10  # a sliver of deep grey nuclei
    assert _volumes(aged)["mt_csf"] > 30 and _volumes(aged)["hippocampus"] > 50
    assert _volumes(aged)["sulci"] == _volumes(plain)["sulci"]  # at 50 the ageing has not started
    assert make_phantom(40, seed=3, sex="M").brain_mask.sum() > make_phantom(40, seed=3, sex="F").brain_mask.sum()
    with pytest.raises(ValueError, match="atrophy=0.5 needs an age"):
        make_phantom(32, atrophy=0.5)
    with pytest.raises(ValueError, match=r"atrophy must lie in \[0, 1\]"):
        make_phantom(32, age=70.0, atrophy=1.5)
    with pytest.raises(ValueError, match="sex must be one of"):
        make_phantom(32, sex="X")
