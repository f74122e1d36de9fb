"""``--brain none`` on nilearn's skull-stripped MNI152 templates as shipped (1 and 2 mm; the 2 mm one holds
resampling residue of 1e-45 to 3e-16 in its background): the brain found is the template's own brain mask, under
the header's voxel size or a wrong one (labelled 0.8x), and an image bright to its grid's faces is refused whatever
its voxel size says."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from asa.data.prepare.stages import extract_brain

datasets = pytest.importorskip("nilearn.datasets")  # the templates ship inside nilearn: no download


def _template(resolution: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(T1 [X, Y, Z], RAS affine, brain mask) of nilearn's MNI152 template at ``resolution`` mm."""
    image = datasets.load_mni152_template(resolution=resolution)
    mask = np.asarray(datasets.load_mni152_brain_mask(resolution=resolution).dataobj) > 0
    return np.asarray(image.get_fdata(), np.float32), image.affine, mask


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


@pytest.mark.parametrize("resolution", [1, 2])
def test_the_brain_of_nilearn_s_templates_is_their_brain_mask_not_their_residue(resolution):
    data, affine, mask = _template(resolution)
    if resolution == 2:  # the residue is there: the non-zero field holds twice the brain
        assert ((data > 0) & (data < 1e-6)).sum() > 200_000
    brain = extract_brain(data, affine, "none")
    litres = brain.sum() * resolution**3 / 1e6
    assert _dice(brain, mask) > 0.99 and 1.85 < litres < 1.95  # the mask holds 1.88 L at both resolutions


def test_a_voxel_size_labelled_0_8x_gives_the_same_brain_not_the_field_of_view():
    """The 2 mm template with its voxels labelled 1.6 mm: the non-zero field holds 4.0 x 0.512 = 2.06 L, under the
    whole-head bound, so trusting the header made it the brain; the brain is the same voxels as at 2 mm."""
    data, affine, mask = _template(2)
    brain = extract_brain(data, affine @ np.diag([0.8, 0.8, 0.8, 1.0]), "none")
    assert np.array_equal(brain, extract_brain(data, affine, "none")) and _dice(brain, mask) > 0.99
    assert brain.sum() < 0.6 * (data > 0).sum()


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_a_bright_background_is_refused_whatever_the_voxel_size(scale):
    """The template's air set to a tenth of its white matter (a head's air, not a stripped background): the bright
    part reaches every face of the grid; labelled 0.5x it would hold 2.0 L, a brain's volume."""
    data, affine, _ = _template(2)
    data = np.where(data > 0.01, data, 0.1 * data.max()).astype(np.float32)
    with pytest.raises(ValueError, match=r"fills its field of view \(100% of the grid's faces"):
        extract_brain(data, affine @ np.diag([scale, scale, scale, 1.0]), "none")


def test_an_image_with_no_positive_voxel_is_refused():
    with pytest.raises(ValueError, match="no positive voxel: choose --brain deepbet or robex"):
        extract_brain(-np.ones((8, 8, 8), np.float32), np.eye(4), "none")


@pytest.mark.slow  # N4 and an affine registration (3 mm grid; at 6 mm even the template as shipped reads 0.45)
def test_the_mislabelled_template_is_prepared_with_its_brain(tmp_path):
    """Through asa-prepare: the QC's brain volume (in the scan's own space, by its header) is the template brain's
    1.88 L x 0.512, which the QC page can flag; with the field of view as brain it read 2,049 mL."""
    pytest.importorskip("ants")
    from asa.cli.prepare import main

    data, affine, mask = _template(2)
    scan = tmp_path / "raw" / "sub-01" / "anat" / "sub-01_T1w.nii.gz"
    scan.parent.mkdir(parents=True)
    nib.save(nib.Nifti1Image(data, affine @ np.diag([0.8, 0.8, 0.8, 1.0])), str(scan))
    out = tmp_path / "prepared"
    assert main([str(tmp_path / "raw"), str(out), "--brain", "none", "--spacing", "3", "--box", "template",
                 "--no-progress"]) == 0
    record = json.loads(next(out.rglob("*_desc-prepare.json")).read_text())
    assert record["qc"]["brain_ml"] == pytest.approx(mask.sum() * 8 * 0.512 / 1000, rel=0.01)
    assert record["qc"]["similarity"] > 0.8
