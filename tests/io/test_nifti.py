"""NIfTI file names: suffixes, case ids, finding a stem's file, prediction paths."""
from __future__ import annotations

import pytest

from asa.io import find_nifti, is_nifti, nifti_suffix, prediction_path, probabilities_path, strip_nifti


@pytest.mark.parametrize("name, suffix, stem", [
    ("case_01.nii.gz", ".nii.gz", "case_01"),
    ("case_01.nii", ".nii", "case_01"),
    ("sub-01_T1w.NII.GZ", ".nii.gz", "sub-01_T1w"),  # any case, as nibabel reads them
    ("a.nii.nii", ".nii", "a.nii"),
    ("scan.gz", "", "scan.gz"),
    ("notes.txt", "", "notes.txt"),
])
def test_suffix_and_case_id_from_a_file_name(name, suffix, stem):
    assert nifti_suffix(name) == suffix
    assert is_nifti(name) is bool(suffix)
    assert strip_nifti(name) == stem


def test_find_nifti_prefers_gz_and_says_none_when_absent(tmp_path):
    assert find_nifti(tmp_path, "x") is None
    (tmp_path / "x.nii").write_bytes(b"")
    assert find_nifti(tmp_path, "x") == tmp_path / "x.nii"
    (tmp_path / "x.nii.gz").write_bytes(b"")
    assert find_nifti(tmp_path, "x") == tmp_path / "x.nii.gz"
    assert find_nifti(tmp_path, "x", suffixes=(".nii",)) == tmp_path / "x.nii"


def test_prediction_file_names_round_trip_to_the_case_id(tmp_path):
    assert prediction_path(tmp_path, "BraTS2021_00001") == tmp_path / "BraTS2021_00001.nii.gz"
    assert probabilities_path(tmp_path, "c") == tmp_path / "c_probabilities.nii.gz"
    assert strip_nifti(prediction_path(tmp_path, "IBSR_01").name) == "IBSR_01"
