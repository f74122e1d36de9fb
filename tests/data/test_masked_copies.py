"""Masked copies (`asa.data.masked_copies`): a skull-stripped or defaced copy of a whole head, on its grid, is found
by its voxels, which the fingerprint misses; distinct subjects of one template and a copy on another grid are not."""
import nibabel as nib
import numpy as np
import pytest

from asa.data.case import Case
from asa.data.fingerprint import NEAR_THRESHOLDS, fingerprint_scores, image_fingerprint
from asa.data.masked_copies import MASKED_R, kept_voxels, masked_copies
from asa.data.synthetic.anatomy import make_anatomy_subject


def _case(folder, name: str, image: np.ndarray, affine: np.ndarray) -> Case:
    path = folder / f"{name}.nii.gz"
    nib.save(nib.Nifti1Image(image.astype(np.float32), affine), str(path))
    return Case(id=name, images={"t1": path})


@pytest.fixture(scope="module")
def heads():
    return [make_anatomy_subject(48, seed=2, index=i, skull=True) for i in range(4)]


def test_stripped_and_defaced_copies_of_a_head_are_found_where_the_fingerprint_misses_them(heads, tmp_path):
    affine = heads[0].affine
    zoom = float(np.linalg.norm(affine[:3, 0]))
    refs = [_case(tmp_path, f"head{i}", s.images["t1"], affine) for i, s in enumerate(heads[:3])]
    head, brain = heads[0].images["t1"], heads[0].brain_mask.astype(bool)
    stripped = np.where(brain, head, 0.0)
    face = np.zeros_like(brain)
    face[:, 30:, :20] = True  # the front lower part of the head, outside the brain, set to zero
    defaced = np.where(face & ~brain, 0.0, heads[1].images["t1"])
    queries = [_case(tmp_path, "stripped", stripped * 1.7 + 120.0, affine),  # stripped, then rescaled
               _case(tmp_path, "defaced", defaced, affine),
               # another subject's stripped brain: of the same template, not a copy of any head (the control)
               _case(tmp_path, "other", np.where(heads[3].brain_mask.astype(bool), heads[3].images["t1"], 0.0),
                     affine),
               # the stripped copy resampled to another grid: not compared (the fingerprint's part)
               _case(tmp_path, "resampled", np.pad(stripped, 1), affine)]
    found = masked_copies(queries, refs)
    assert set(found) == {"stripped", "defaced"}
    assert list(found["stripped"]) == ["head0"] and list(found["defaced"]) == ["head1"]
    assert min(found["stripped"]["head0"], found["defaced"]["head1"]) >= MASKED_R
    # the near check alone misses the stripped copy: its fingerprint scores under the T1 threshold against its head
    prints = [image_fingerprint(image, (zoom,) * 3)[None] for image in (stripped, head)]
    score = fingerprint_scores(*prints)
    assert score[0, 0] < NEAR_THRESHOLDS["t1"]
    # the control is compared, and scores well under the threshold against every head
    kept = kept_voxels(np.where(heads[3].brain_mask.astype(bool), heads[3].images["t1"], 0.0).astype(np.float32))
    assert kept is not None and kept.size > 1000
    assert masked_copies(queries[2:3], refs) == {}


def test_an_image_without_a_blank_part_is_not_read_as_masked():
    rng = np.random.default_rng(0)
    assert kept_voxels(rng.normal(size=(16, 16, 16)).astype(np.float32)) is None  # a noisy head: no exact blank
    blank = np.zeros((16, 16, 16), dtype=np.float32)
    blank[4:12, 4:12, 4:12] = rng.uniform(1, 2, size=(8, 8, 8))
    kept = kept_voxels(blank)
    assert kept is not None and kept.size == 6 ** 3  # the kept cube eroded by one voxel
