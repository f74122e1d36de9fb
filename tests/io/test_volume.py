from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

import asa.data
from asa.io import VolumeError, load_volume, save_volume
from asa.data.synthetic.demo import write_nifti


def _oblique_affine() -> np.ndarray:
    a, b = np.deg2rad(20), np.deg2rad(-10)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    rz = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
    aff = np.eye(4)
    aff[:3, :3] = rz @ rx @ np.diag([-0.9, 1.1, 1.3])  # L-ish, anisotropic, oblique
    aff[:3, 3] = [40.0, -20.0, 10.0]
    return aff


def _affine_for(codes: str) -> np.ndarray:
    ornt = nib.orientations.axcodes2ornt(tuple(codes))
    aff = np.eye(4)
    for i, (ax, flip) in enumerate(ornt.astype(int)):
        aff[ax, i] = flip * (1.0 + 0.25 * i)
    aff[:3, 3] = [-10.0, 5.0, 3.0]
    return aff


@pytest.mark.parametrize("affine", [_affine_for("LAS"), _affine_for("LPS"), _affine_for("PIL"), _oblique_affine()],
                         ids=["LAS", "LPS", "PIL", "oblique"])
@pytest.mark.parametrize("kind", ["image", "label"])
def test_round_trip_is_exact(tmp_path, affine, kind):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 5, size=(7, 9, 11)).astype(np.uint8) if kind == "label" else rng.random((7, 9, 11)).astype(np.float32) + 0.1
    img = nib.Nifti1Image(data, affine)
    img.header["descrip"] = b"asa round trip"
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=2)
    src = tmp_path / "in.nii.gz"
    nib.save(img, src)

    vol = load_volume(src)
    assert vol.is_label == (kind == "label")
    # canonical: axis codes RAS and the world position of every voxel preserved
    assert nib.aff2axcodes(vol.affine) == ("R", "A", "S")
    ijk = np.array([2, 3, 4, 1.0])
    world = vol.affine @ ijk
    back = np.linalg.inv(affine) @ world
    assert np.allclose(back, np.round(back), atol=1e-6)
    assert vol.array[tuple(ijk[:3].astype(int))] == data[tuple(np.round(back[:3]).astype(int))]

    out = tmp_path / "out.nii.gz"
    save_volume(vol.array, vol, out)
    re = nib.load(out)
    assert re.shape == data.shape
    np.testing.assert_array_equal(np.asanyarray(re.dataobj), data)
    np.testing.assert_allclose(re.affine, img.affine, atol=1e-6)
    for field in ("qform_code", "sform_code", "descrip", "xyzt_units"):
        assert re.header[field] == img.header[field]
    np.testing.assert_allclose(re.header.get_sform(), img.header.get_sform(), atol=1e-6)
    np.testing.assert_allclose(re.header.get_qform(), img.header.get_qform(), atol=1e-5)
    assert re.get_data_dtype() == data.dtype


def test_ras_axes_follow_anatomy(tmp_path):
    """A bright voxel on the patient's left of an LPS file ends at low axis-0 index in RAS."""
    ras = np.zeros((8, 8, 8), np.float32)
    ras[1, 6, 5] = 1.0  # left, anterior, superior in RAS array coordinates
    path = write_nifti(ras, np.eye(4), tmp_path / "lps.nii.gz", "LPS")
    assert nib.aff2axcodes(nib.load(path).affine) == ("L", "P", "S")
    vol = load_volume(path)
    assert vol.original_axcodes == ("L", "P", "S")
    np.testing.assert_array_equal(vol.array, ras)
    np.testing.assert_allclose(vol.affine, np.eye(4))


def test_save_accepts_path_reference_and_bool(tmp_path):
    path = write_nifti(np.ones((4, 5, 6), np.float32), np.eye(4), tmp_path / "ref.nii", "LPS")
    mask = np.zeros((4, 5, 6), bool)
    mask[0] = True
    out = save_volume(mask, path, tmp_path / "mask.nii.gz")
    vol = load_volume(out, label=True)
    np.testing.assert_array_equal(vol.array.astype(bool), mask)
    assert vol.array.dtype == np.uint8
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary files left behind
    with pytest.raises(ValueError, match="does not match the canonical grid"):
        save_volume(np.zeros((5, 5, 5)), path, tmp_path / "bad.nii.gz")


def _write(path, data, affine=np.eye(4)):
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def test_faults_name_the_file(tmp_path):
    good = _write(tmp_path / "good.nii.gz", np.ones((6, 6, 6), np.float32))
    raw = good.read_bytes()
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(raw[: len(raw) // 2])
    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(raw[:20] + bytes(200) + raw[220:])
    not_nifti = tmp_path / "notes.nii.gz"
    not_nifti.write_bytes(gzip.compress(b"hello, not an image" * 50))
    text = tmp_path / "text.nii"
    text.write_text("plain text")
    four_d = _write(tmp_path / "four_d.nii.gz", np.ones((6, 6, 6, 3), np.float32))
    nan = np.ones((6, 6, 6), np.float32)
    nan[1, 2, 3] = np.nan
    nan = _write(tmp_path / "nan.nii.gz", nan)
    inf = np.ones((6, 6, 6), np.float32)
    inf[0, 0, 0] = np.inf
    inf = _write(tmp_path / "inf.nii.gz", inf)
    zero = _write(tmp_path / "zero.nii.gz", np.zeros((6, 6, 6), np.float32))
    cases = {
        tmp_path / "missing.nii.gz": "not found",
        truncated: "corrupt|truncated|unreadable",
        corrupt: "corrupt|truncated|unreadable",
        not_nifti: "NIfTI|corrupt|unreadable",
        text: "NIfTI|corrupt|unreadable",
        four_d: "3D",
        nan: "NaN",
        inf: "NaN/Inf",
        zero: "all zeros",
    }
    for path, fault in cases.items():
        with pytest.raises(VolumeError, match=fault) as err:
            load_volume(path)
        assert str(path) in str(err.value), str(err.value)
        assert isinstance(err.value, ValueError)


def test_4d_frames_and_empty_labels(tmp_path):
    data = np.stack([np.full((4, 4, 4), k + 1, np.float32) for k in range(3)], axis=-1)
    path = _write(tmp_path / "multi.nii.gz", data)
    assert load_volume(path, frame=2).array.max() == 3
    assert load_volume(path, allow_4d=True).array.shape == (4, 4, 4, 3)
    single = _write(tmp_path / "single.nii.gz", np.ones((4, 4, 4, 1), np.float32))
    assert load_volume(single).array.shape == (4, 4, 4)
    empty_label = _write(tmp_path / "seg.nii.gz", np.zeros((4, 4, 4), np.uint8))
    vol = load_volume(empty_label)
    assert vol.is_label and vol.array.dtype == np.uint8


def test_the_data_stage_reexports_the_public_reader_and_writer():
    """docs/python-api.md promises ``asa.data.load_volume`` / ``asa.data.save_volume``: the same functions as
    asa.io's."""
    assert asa.data.load_volume is load_volume and asa.data.save_volume is save_volume
