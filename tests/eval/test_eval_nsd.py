"""Normalised surface Dice: hand-computed values, tolerance in mm with anisotropic spacing, empty sets,
per-class tolerances, and NSD in evaluate_cases' CSV / summary and the results table."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from asa.eval import NSD_EMPTY, evaluate_arrays, evaluate_cases, normalized_surface_dice
from asa.eval.evaluate import nsd_tolerances
from eval_fixtures import write_label


def cube(shape, lo, edge):
    m = np.zeros(shape, bool)
    m[lo[0] : lo[0] + edge, lo[1] : lo[1] + edge, lo[2] : lo[2] + edge] = True
    return m


# Two 4^3 cubes offset by one voxel along axis 0: a = [4, 8)^3, b = a shifted to [5, 9) x [4, 8)^2.
# Surface of each: 64 - 2^3 = 56 voxels. a -> b: a's face x=4 (16 voxels) is one voxel from b's face
# x=5; the 4 inner voxels of a's face x=7 are one voxel from b's surface (b's face x=8 along axis 0,
# b's side walls along axes 1, 2); the other 36 lie on b's surface (distance 0). b -> a alike.
SHAPE = (12, 12, 12)
A, B = cube(SHAPE, (4, 4, 4), 4), cube(SHAPE, (5, 4, 4), 4)


def test_offset_cubes_isotropic_tolerance_0_and_1mm():
    assert normalized_surface_dice(A, B, tolerance=0.0) == pytest.approx((36 + 36) / 112)  # 0.642857
    assert normalized_surface_dice(A, B, tolerance=1.0) == pytest.approx(1.0)
    assert normalized_surface_dice(A, B, tolerance=0.99) == pytest.approx(72 / 112)  # d <= tau, strictly
    assert normalized_surface_dice(A, A, tolerance=0.0) == 1.0
    assert normalized_surface_dice(B, A, tolerance=0.0) == normalized_surface_dice(A, B, tolerance=0.0)


def test_offset_cubes_anisotropic_spacing_in_mm():
    # spacing (2, 1, 1) mm: the 16-voxel faces are 2 mm apart, the 4 inner voxels of the far faces
    # are 1 mm from a side wall (spacing 1 along axes 1, 2). tau = 1 mm: 36 + 4 per direction.
    spacing = (2.0, 1.0, 1.0)
    assert normalized_surface_dice(A, B, spacing, tolerance=1.0) == pytest.approx((40 + 40) / 112)  # 0.714286
    assert normalized_surface_dice(A, B, spacing, tolerance=2.0) == pytest.approx(1.0)
    # the same shift along a 1 mm axis is within 1 mm everywhere
    a2, b2 = cube(SHAPE, (4, 4, 4), 4), cube(SHAPE, (4, 4, 5), 4)
    assert normalized_surface_dice(a2, b2, spacing, tolerance=1.0) == pytest.approx(1.0)


def test_sphere_vs_shifted_sphere_anisotropic():
    # A ball shifted by one voxel along axis 2 at 3 mm spacing: no surface point lies farther than
    # the shift (3 mm) from the other surface, so NSD reaches 1 at tau = 3 mm and grows with tau;
    # the same one-voxel shift along a 1 mm axis is never farther than 1 mm, so it scores at least
    # as high at every tau.
    grid = np.indices((24, 24, 24)).astype(float)
    ball = lambda c: ((grid - np.array(c)[:, None, None, None]) ** 2).sum(0) <= 6.0**2  # noqa: E731
    a, b = ball((12, 12, 12)), ball((12, 12, 13))
    spacing = (1.0, 1.0, 3.0)
    values = [normalized_surface_dice(a, b, spacing, tolerance=t) for t in (0.0, 1.0, 2.0, 3.0)]
    assert values == sorted(values) and values[0] < values[1] < 1.0 and values[-1] == pytest.approx(1.0)
    a0, b0 = ball((12, 12, 12)), ball((13, 12, 12))  # the shift along a 1 mm axis
    for t in (0.0, 1.0, 2.0):
        assert normalized_surface_dice(a0, b0, spacing, tolerance=t) >= normalized_surface_dice(a, b, spacing, tolerance=t)


@pytest.mark.parametrize("pred_empty, ref_empty, expected", [(True, True, 1.0), (True, False, 0.0), (False, True, 0.0)])
def test_empty_set_conventions(pred_empty, ref_empty, expected):
    empty = np.zeros(SHAPE, bool)
    p, r = (empty if pred_empty else A), (empty if ref_empty else A)
    assert normalized_surface_dice(p, r, (1.0, 1.0, 2.5), tolerance=2.0) == expected
    assert NSD_EMPTY == {"both_empty": 1.0, "one_empty": 0.0}


def test_ignore_removes_voxels_from_both():
    ignore = np.zeros(SHAPE, bool)
    ignore[8] = True  # b loses its slab x = 8 (a has none there): b' = [5, 8) x [4, 8)^2
    # a's face x=4 is one voxel from b's face x=5, every other surface voxel is shared: NSD 1 at tau 1
    # mm, below 1 at tau 0
    assert normalized_surface_dice(A, B, tolerance=1.0, ignore=ignore) == pytest.approx(1.0)
    assert normalized_surface_dice(A, B, tolerance=0.0, ignore=ignore) < 1.0


def test_bad_tolerance_and_spacing():
    with pytest.raises(ValueError, match="tolerance"):
        normalized_surface_dice(A, B, tolerance=-1.0)
    with pytest.raises(ValueError, match="tolerance"):
        normalized_surface_dice(A, B, tolerance=float("nan"))
    with pytest.raises(ValueError, match="spacing"):
        normalized_surface_dice(A, B, (1.0, 1.0), tolerance=1.0)
    with pytest.raises(TypeError, match="boolean"):
        normalized_surface_dice(A.astype(np.uint8), B, tolerance=1.0)


def test_nsd_tolerances_per_class():
    names = ("WT", "TC", "ET")
    assert nsd_tolerances(2, names) == {"WT": 2.0, "TC": 2.0, "ET": 2.0}
    assert nsd_tolerances([1, 2, 3], names) == {"WT": 1.0, "TC": 2.0, "ET": 3.0}
    assert nsd_tolerances({"ET": 1, "TC": 2, "WT": 3}, names) == {"WT": 3.0, "TC": 2.0, "ET": 1.0}
    with pytest.raises(ValueError, match="nsd_tolerance: 2 tolerance"):
        nsd_tolerances([1, 2], names)
    with pytest.raises(ValueError, match="nsd_tolerance: tolerance for TC must be a finite number"):
        nsd_tolerances([1, -2, 3], names)
    with pytest.raises(ValueError, match="each of"):
        nsd_tolerances({"WT": 1}, names)
    with pytest.raises(ValueError, match="number of mm"):
        nsd_tolerances("two", names)


def test_evaluate_arrays_and_cases_carry_nsd(tmp_path, brats_task, loader):
    # ET cube shifted one voxel along axis 0 (spacing 2 mm there): WT = TC = ET = the same masks
    ref, pred = 4 * A.astype(np.int16), 4 * B.astype(np.int16)
    row = evaluate_arrays(pred, ref, brats_task, (2.0, 1.0, 1.0), nsd_tolerance=[2.0, 1.0, 0.0])
    assert row["NSD_WT"] == pytest.approx(1.0)
    assert row["NSD_TC"] == pytest.approx(80 / 112)
    assert row["NSD_ET"] == pytest.approx(72 / 112)
    affine = np.diag([2.0, 1.0, 1.0, 1.0])
    pairs = []
    for cid, p in (("same", ref), ("shifted", pred), ("missed", np.zeros_like(ref))):
        pairs.append((cid, write_label(tmp_path / f"{cid}_pred.nii.gz", p, affine),
                      write_label(tmp_path / f"{cid}_seg.nii.gz", ref, affine)))
    out = tmp_path / "eval"
    summary = evaluate_cases(pairs, brats_task, out_dir=out, loader=loader, nsd_tolerance=1.0)
    header = next(csv.reader((out / "per_case.csv").open()))
    assert header == ["case_id"] + [f"{m}_{n}" for n in ("WT", "TC", "ET") for m in ("Dice", "HD95", "NSD")]
    written = json.loads((out / "summary.json").read_text())
    # NSD_ET over [1, 80/112, 0]: mean (1 + 80/112) / 3, median 80/112
    assert written["ET"]["NSD"]["mean"] == pytest.approx((1 + 80 / 112) / 3)
    assert written["ET"]["NSD"]["median"] == pytest.approx(80 / 112)
    assert written["ET"]["NSD"]["std"] == pytest.approx(np.std([1, 80 / 112, 0]))
    assert written["conventions"]["nsd_tolerance_mm"] == {"WT": 1.0, "TC": 1.0, "ET": 1.0}
    assert written["conventions"]["both_empty"]["NSD"] == 1.0 and written["conventions"]["one_empty"]["NSD"] == 0.0
    assert written["foreground_mean"]["NSD"] == pytest.approx((1 + 80 / 112) / 3)
    assert summary["per_case"][2]["NSD_WT"] == 0.0
    with pytest.raises(ValueError, match="nsd_tolerance"):
        evaluate_cases(pairs, brats_task, loader=loader, nsd_tolerance=[1.0, 2.0])
