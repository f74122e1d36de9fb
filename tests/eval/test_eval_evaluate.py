"""evaluate_cases on tiny synthetic NIfTI cases: per-case CSV, summary JSON statistics, errors."""

from __future__ import annotations

import csv
import json
import math

import nibabel as nib
import numpy as np
import pytest

from asa.eval import EMPTY_HD95, evaluate_arrays, evaluate_cases, match_predictions
from eval_fixtures import WmhLikeTask, write_label

SHAPE = (12, 12, 12)
AFFINE = np.diag([1.0, 1.0, 2.0, 1.0])  # RAS already; spacing (1, 1, 2) mm


def _cube(lo):
    m = np.zeros(SHAPE, np.int16)
    m[lo[0] : lo[0] + 4, lo[1] : lo[1] + 4, lo[2] : lo[2] + 4] = 1
    return m


@pytest.fixture
def brats_cases(tmp_path):
    """Three cases sharing the reference: an ET (label 4) 4^3 cube at (2,2,2).

    A: prediction identical                     -> WT, TC, ET: Dice 1, HD95 0, NSD 1
    B: same cube labelled 1 (NCR) instead of 4  -> WT, TC perfect; ET pred empty: Dice 0, HD95 373.13, NSD 0
    C: ET cube shifted 2 voxels along axis 2    -> Dice 0.5 everywhere (overlap 32 of 64+64);
       HD95: the far face of each cube is 2 slices = 2 * 2 mm = 4 mm from the other surface
       (16 of 56 surface voxels, above the 95th percentile position 0.95 * 55 = 52.25) -> 4 mm.
       NSD at 1 mm: of each surface's 56 voxels, the 12 + 12 ring voxels of the two overlapping
       slices (0 mm) and the 4 inner voxels of the overlapped face (1 mm to a side wall) count:
       28 + 28 of 112 = 0.5.
    """
    ref = 4 * _cube((2, 2, 2))
    preds = {"A": ref, "B": _cube((2, 2, 2)), "C": 4 * _cube((2, 2, 4))}
    pairs = []
    for cid, pred in preds.items():
        label_path = write_label(tmp_path / f"{cid}_seg.nii.gz", ref, AFFINE)
        pred_path = write_label(tmp_path / f"{cid}_pred.nii.gz", pred, AFFINE)
        pairs.append((cid, pred_path, label_path))
    return pairs


def test_evaluate_cases_values_csv_and_json(tmp_path, brats_cases, brats_task, loader):
    out = tmp_path / "eval"
    summary = evaluate_cases(brats_cases, brats_task, out_dir=out, loader=loader)

    rows = {r["case_id"]: r for r in summary["per_case"]}
    assert rows["A"] == {"case_id": "A", **{f"{m}_{n}": v for n in ("WT", "TC", "ET") for m, v in (("Dice", 1.0), ("HD95", 0.0), ("NSD", 1.0))}}
    assert (rows["B"]["Dice_WT"], rows["B"]["HD95_TC"]) == (1.0, 0.0)
    assert (rows["B"]["Dice_ET"], rows["B"]["HD95_ET"], rows["B"]["NSD_ET"]) == (0.0, EMPTY_HD95, 0.0)
    for n in ("WT", "TC", "ET"):
        assert rows["C"][f"Dice_{n}"] == 0.5
        assert rows["C"][f"HD95_{n}"] == pytest.approx(4.0)
        assert rows["C"][f"NSD_{n}"] == pytest.approx(0.5)

    # CSV: header order and one exact row
    with open(out / "per_case.csv", newline="") as f:
        lines = list(csv.reader(f))
    assert lines[0] == ["case_id", "Dice_WT", "HD95_WT", "NSD_WT", "Dice_TC", "HD95_TC", "NSD_TC",
                        "Dice_ET", "HD95_ET", "NSD_ET"]
    assert [r[0] for r in lines[1:]] == ["A", "B", "C"]
    assert [float(x) for x in lines[2][1:]] == [1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0, EMPTY_HD95, 0.0]

    # JSON: file equals the returned dict; statistics by hand
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    assert on_disk["n_cases"] == 3 and on_disk["names"] == ["WT", "TC", "ET"]
    wt = on_disk["WT"]
    # WT Dice [1, 1, 0.5]: mean 2.5/3, median 1, std sqrt(((1/6)^2*2 + (1/3)^2) / 3) = sqrt(1/18)
    assert wt["Dice"]["mean"] == pytest.approx(2.5 / 3)
    assert wt["Dice"]["median"] == 1.0
    assert wt["Dice"]["std"] == pytest.approx(math.sqrt(1 / 18))
    # WT HD95 [0, 0, 4]: mean 4/3, median 0, std sqrt(((4/3)^2*2 + (8/3)^2) / 3) = sqrt(32)/3
    assert wt["HD95"]["mean"] == pytest.approx(4 / 3)
    assert wt["HD95"]["median"] == 0.0
    assert wt["HD95"]["std"] == pytest.approx(math.sqrt(32) / 3)
    # ET Dice [1, 0, 0.5]: mean 0.5, median 0.5, std sqrt((0.25 + 0.25 + 0) / 3)
    et = on_disk["ET"]
    assert (et["Dice"]["mean"], et["Dice"]["median"]) == (0.5, 0.5)
    assert et["Dice"]["std"] == pytest.approx(math.sqrt(1 / 6))
    # ET HD95 [0, 373.13, 4]: mean 377.13/3, median 4
    assert et["HD95"]["mean"] == pytest.approx(377.13 / 3)
    assert et["HD95"]["median"] == pytest.approx(4.0)
    # foreground mean of Dice: (2.5/3 + 2.5/3 + 0.5) / 3
    assert on_disk["foreground_mean"]["Dice"] == pytest.approx((2.5 / 3 * 2 + 0.5) / 3)
    # atomic writes leave no temporary files behind
    assert sorted(p.name for p in out.iterdir()) == ["per_case.csv", "summary.json"]


def test_parallel_workers_match_serial(brats_cases, loader):
    from eval_fixtures import BratsLikeTask

    serial = evaluate_cases(brats_cases, BratsLikeTask(), loader=loader)
    parallel = evaluate_cases(brats_cases, BratsLikeTask(), num_workers=2, loader=loader)
    assert serial == parallel


def test_non_ras_prediction_is_reoriented(tmp_path, brats_task, loader):
    # The prediction is stored flipped along axis 0 with an LAS affine: after canonical
    # reorientation it is voxel-for-voxel the RAS reference -> perfect scores.
    ref = 4 * _cube((1, 2, 2))  # asymmetric along axis 0
    las = AFFINE.copy()
    las[0, 0], las[0, 3] = -1.0, SHAPE[0] - 1
    label_path = write_label(tmp_path / "seg.nii.gz", ref, AFFINE)
    pred_path = write_label(tmp_path / "pred.nii.gz", ref[::-1], las)
    summary = evaluate_cases([("x", pred_path, label_path)], brats_task, loader=loader)
    assert summary["ET"]["Dice"]["mean"] == 1.0 and summary["ET"]["HD95"]["mean"] == 0.0


def test_shape_mismatch_names_both_files(tmp_path, brats_task, loader):
    label_path = write_label(tmp_path / "case_seg.nii.gz", np.zeros(SHAPE), AFFINE)
    pred_path = write_label(tmp_path / "case_pred.nii.gz", np.zeros((12, 12, 10)), AFFINE)
    with pytest.raises(ValueError, match="shape") as err:
        evaluate_cases([("case", pred_path, label_path)], brats_task, loader=loader)
    assert "case_pred.nii.gz" in str(err.value) and "case_seg.nii.gz" in str(err.value)


def test_probability_map_prediction_is_rejected(tmp_path, brats_task, loader):
    label_path = write_label(tmp_path / "seg.nii.gz", np.zeros(SHAPE), AFFINE)
    pred_path = tmp_path / "prob.nii.gz"
    nib.save(nib.Nifti1Image(np.full(SHAPE, 0.3, np.float32), AFFINE), str(pred_path))
    with pytest.raises(ValueError, match="prob.nii.gz.*non-integer"):
        evaluate_cases([("c", pred_path, label_path)], brats_task, loader=loader)


def test_bad_pairs(brats_cases, brats_task):
    with pytest.raises(ValueError, match="no .*pairs"):
        evaluate_cases([], brats_task)
    with pytest.raises(ValueError, match="duplicate case ids \\['A'\\]"):
        evaluate_cases([brats_cases[0], brats_cases[0]], brats_task)


def test_wmh_ignore_label_excluded_from_metrics(wmh_task):
    # ref: WMH (1) cube and "other pathology" (2) cube; prediction calls both WMH.
    # Label-2 voxels are removed from prediction and reference -> Dice 1, HD95 0 (not 2*8/(16+8)).
    ref = _cube((1, 1, 1)) + 2 * _cube((7, 7, 7))
    pred = _cube((1, 1, 1)) + _cube((7, 7, 7))
    row = evaluate_arrays(pred, ref, wmh_task, (1.0, 1.0, 3.0))
    assert row == {"Dice_WMH": 1.0, "HD95_WMH": 0.0, "NSD_WMH": 1.0}
    # stand-in with only `ignore_label` (no `ignore_mask` method) behaves the same
    assert evaluate_arrays(pred, ref, WmhLikeTask(), (1.0, 1.0, 3.0)) == row


def test_match_predictions(tmp_path):
    from types import SimpleNamespace

    (tmp_path / "pred").mkdir()
    (tmp_path / "pred" / "c1.nii.gz").touch()
    (tmp_path / "pred" / "c2.nii").touch()
    cases = [SimpleNamespace(id=c, label=tmp_path / f"{c}_seg.nii.gz") for c in ("c1", "c2", "c3")]
    with pytest.raises(FileNotFoundError, match="c3"):
        match_predictions(tmp_path / "pred", cases)
    pairs = match_predictions(tmp_path / "pred", cases, on_missing="skip")
    assert [(c, p.name) for c, p, _ in pairs] == [("c1", "c1.nii.gz"), ("c2", "c2.nii")]


def test_summary_records_the_hd95_convention(tmp_path, brats_cases, brats_task, loader):
    default = evaluate_cases(brats_cases, brats_task, loader=loader)
    pooled = evaluate_cases(brats_cases, brats_task, loader=loader, hd95_convention="pooled", out_dir=tmp_path)
    assert default["conventions"]["hd95_convention"] == "max_directed"
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written["conventions"]["hd95_convention"] == "pooled" and "medpy" in written["conventions"]["hd95"]
    # case C: surfaces 4 mm apart on 16 of 56 voxels each way; pooled: 32 of 112 -> still 4 mm
    assert pooled["per_case"][2]["HD95_ET"] == pytest.approx(4.0) == default["per_case"][2]["HD95_ET"]
    with pytest.raises(ValueError, match="hd95="):
        evaluate_cases(brats_cases, brats_task, loader=loader, hd95_convention="medpy")
