"""Hand-computed Dice and HD95 on tiny masks, anisotropic spacing, empty sets and ignore masks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from asa.eval import EMPTY_HD95, dice, hd95


def cube(shape, lo, size):
    """Boolean array with a cube of side ``size`` whose lowest corner is ``lo``."""
    m = np.zeros(shape, dtype=bool)
    m[lo[0] : lo[0] + size, lo[1] : lo[1] + size, lo[2] : lo[2] + size] = True
    return m


def test_empty_hd95_is_brats_volume_diagonal():
    # BraTS volume 240 x 240 x 155 mm: sqrt(240^2 + 240^2 + 155^2) = sqrt(139225) = 373.13
    assert EMPTY_HD95 == 373.13
    assert math.isclose(math.sqrt(240**2 + 240**2 + 155**2), EMPTY_HD95, abs_tol=5e-3)


def test_dice_identical_and_disjoint():
    a = cube((10, 10, 10), (1, 1, 1), 3)
    assert dice(a, a) == 1.0
    assert dice(a, cube((10, 10, 10), (6, 6, 6), 3)) == 0.0


def test_dice_offset_cubes():
    # 4^3 cubes offset by 2 voxels along axis 0: overlap 2*4*4 = 32 voxels,
    # Dice = 2*32 / (64 + 64) = 0.5
    a = cube((12, 12, 12), (2, 2, 2), 4)
    b = cube((12, 12, 12), (4, 2, 2), 4)
    assert dice(a, b) == 0.5
    # one voxel inside a 2x1x1 reference: 2*1 / (1 + 2) = 2/3
    p = np.zeros((4, 4, 4), bool)
    r = np.zeros((4, 4, 4), bool)
    p[1, 1, 1] = True
    r[1:3, 1, 1] = True
    assert dice(p, r) == pytest.approx(2 / 3)


def test_hd95_single_voxels():
    # single voxels at (0,0,0) and (3,4,0): distance 5 voxels
    p = np.zeros((8, 8, 8), bool)
    r = np.zeros((8, 8, 8), bool)
    p[0, 0, 0] = True
    r[3, 4, 0] = True
    assert hd95(p, r) == pytest.approx(5.0)
    assert hd95(p, r, (2.0, 2.0, 2.0)) == pytest.approx(10.0)
    # anisotropic: (3*1, 4*1, 0*3) -> still 5; move r to (3,4,1): sqrt(9 + 16 + 3^2) = sqrt(34)
    assert hd95(p, r, (1.0, 1.0, 3.0)) == pytest.approx(5.0)
    r2 = np.zeros_like(r)
    r2[3, 4, 1] = True
    assert hd95(p, r2, (1.0, 1.0, 3.0)) == pytest.approx(math.sqrt(34.0))


def test_hd95_offset_cubes_and_anisotropic_spacing():
    # 3^3 cubes offset by k = 2 voxels. Surface = 26 voxels (all but the centre). Directed
    # distances from one surface to the other: front layer 9 x 0, middle layer 8 x 1 (centre is
    # not surface), back layer 9 x 2 -> sorted [0]*9 + [1]*8 + [2]*9; the 95th percentile sits at
    # position 0.95 * 25 = 23.75, inside the run of 2s -> HD95 = 2 voxels; same both ways.
    a = cube((10, 10, 10), (2, 2, 2), 3)
    b0 = cube((10, 10, 10), (4, 2, 2), 3)  # offset along axis 0
    b2 = cube((10, 10, 10), (2, 2, 4), 3)  # offset along axis 2
    assert hd95(a, b0) == pytest.approx(2.0)
    assert hd95(a, b2) == pytest.approx(2.0)
    # spacing (1, 1, 3) mm: the axis-0 offset stays 2 mm, the axis-2 offset becomes 2 * 3 = 6 mm
    assert hd95(a, b0, (1.0, 1.0, 3.0)) == pytest.approx(2.0)
    assert hd95(a, b2, (1.0, 1.0, 3.0)) == pytest.approx(6.0)
    # symmetric in its arguments
    assert hd95(b2, a, (1.0, 1.0, 3.0)) == pytest.approx(6.0)


def test_hd95_is_a_percentile_not_the_maximum():
    # ref: a line of 10 voxels (all surface). pred: the same line plus one outlier voxel 10
    # voxels from the line's end. Directed pred->ref: 10 x 0 and 1 x 10; linear-interpolated
    # 95th percentile of 11 values sits at position 0.95 * 10 = 9.5 -> (0 + 10) / 2 = 5.
    # Directed ref->pred: all 0. HD95 = max(5, 0) = 5 (the plain Hausdorff distance would be 10).
    r = np.zeros((12, 12, 4), bool)
    r[0:10, 0, 0] = True
    p = r.copy()
    p[0, 10, 0] = True
    assert hd95(p, r) == pytest.approx(5.0)
    # with 30 line voxels the single outlier falls above the 95th percentile: 0.95 * 30 = 28.5 -> 0
    r = np.zeros((32, 12, 4), bool)
    r[0:30, 0, 0] = True
    p = r.copy()
    p[0, 10, 0] = True
    assert hd95(p, r) == pytest.approx(0.0)


@pytest.mark.parametrize(
    "pred_empty, ref_empty, expected",
    [(True, True, (1.0, 0.0)), (True, False, (0.0, EMPTY_HD95)), (False, True, (0.0, EMPTY_HD95))],
)
def test_empty_conventions(pred_empty, ref_empty, expected):
    full = cube((6, 6, 6), (1, 1, 1), 2)
    empty = np.zeros((6, 6, 6), bool)
    p = empty if pred_empty else full
    r = empty if ref_empty else full
    assert (dice(p, r), hd95(p, r, (1.0, 1.0, 2.5))) == expected


def test_ignore_mask_removes_voxels_from_both():
    # ref: a 2^3 lesion (label 1) and a separate 2^3 "other pathology" block (ignored).
    # pred marks both blocks. Without ignore: Dice = 2*8 / (16 + 8) = 2/3 and the extra block is
    # 4 voxels away; with ignore the extra block vanishes -> Dice 1, HD95 0.
    r = cube((10, 10, 10), (1, 1, 1), 2)
    ign = cube((10, 10, 10), (6, 1, 1), 2)
    p = r | ign
    assert dice(p, r) == pytest.approx(2 / 3)
    assert hd95(p, r) > 0
    assert dice(p, r, ignore=ign) == 1.0
    assert hd95(p, r, ignore=ign) == 0.0
    # everything inside the ignore mask: both empty after masking -> Dice 1, HD95 0
    assert dice(ign, ign & ~ign, ignore=ign) == 1.0
    assert hd95(ign, np.zeros_like(ign), ignore=ign) == 0.0
    # reference lesion inside the ignore mask only, prediction elsewhere -> one empty
    assert hd95(r, ign, ignore=ign) == EMPTY_HD95


def test_bad_inputs():
    a = np.zeros((4, 4, 4), bool)
    with pytest.raises(TypeError, match="boolean"):
        dice(a.astype(np.uint8), a)
    with pytest.raises(ValueError, match="same shape"):
        hd95(a, np.zeros((4, 4, 5), bool))
    with pytest.raises(ValueError, match="spacing"):
        hd95(a, a, (1.0, 1.0))
    with pytest.raises(ValueError, match="spacing"):
        hd95(a, a, (1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="ignore"):
        dice(a, a, ignore=np.zeros((3, 3, 3), bool))


def _line(n: int, xs) -> np.ndarray:
    """A 1-voxel-thick line along axis 0 (every voxel is a surface voxel)."""
    m = np.zeros((n, 3, 3), dtype=bool)
    m[list(xs), 1, 1] = True
    return m


def test_hd95_conventions_differ_on_hand_made_point_sets():
    # ref: x = 0..9; pred: the same plus one far voxel at x = 39.
    # pred -> ref: ten 0s and one 30 -> 95th pct at position 0.95·10 = 9.5: 0 + 0.5·30 = 15
    # ref -> pred: ten 0s -> 0.  max_directed = 15.
    # pooled: twenty 0s and one 30 -> position 0.95·20 = 19 -> sorted[19] = 0.
    ref, pred = _line(40, range(10)), _line(40, [*range(10), 39])
    assert hd95(pred, ref) == pytest.approx(15.0)
    assert hd95(pred, ref, convention="pooled") == pytest.approx(0.0)
    assert hd95(pred, ref, spacing=(2.0, 1.0, 1.0)) == pytest.approx(30.0)
    # ref: x = 0..15; pred: the same plus x = 36..39 (distances 21..24 to x = 15).
    # pred -> ref: sixteen 0s, 21, 22, 23, 24 -> position 0.95·19 = 18.05: 23 + 0.05 = 23.05
    # pooled: thirty-two 0s, 21..24 -> position 0.95·35 = 33.25: 22 + 0.25 = 22.25
    ref, pred = _line(40, range(16)), _line(40, [*range(16), 36, 37, 38, 39])
    assert hd95(pred, ref) == pytest.approx(23.05)
    assert hd95(pred, ref, convention="pooled") == pytest.approx(22.25)
    assert hd95(ref, pred, convention="pooled") == hd95(pred, ref, convention="pooled")  # both symmetric
    # identical directed distributions (0 ×8, 1, 2 each way) still differ by the interpolation:
    # directed position 0.95·9 = 8.55: 1 + 0.55 = 1.55; pooled (0 ×16, 1, 1, 2, 2) position 18.05: 2
    a, b = _line(40, range(10)), _line(40, range(2, 12))
    assert hd95(a, b) == pytest.approx(1.55)
    assert hd95(a, b, convention="pooled") == pytest.approx(2.0)
    with pytest.raises(ValueError, match="convention"):
        hd95(a, b, convention="medpy")
