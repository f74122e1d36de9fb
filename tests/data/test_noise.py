"""asa/data/synthetic/noise.py: the negative control's volumes (deterministic, no anatomy) and the cohort written of them."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from asa.data import discover
from asa.data.synthetic.noise import make_noise_volume, write_noise_dataset


def test_noise_volumes_are_deterministic_and_free_of_anatomy():
    a, b = (make_noise_volume(24, seed=3, index=1).images["t1"] for _ in range(2))
    assert np.array_equal(a, b) and not np.array_equal(a, make_noise_volume(24, seed=3, index=2).images["t1"])
    assert abs(a.mean() - 0.5) < 0.01 and abs(a.std() - 0.15) < 0.01 and (a > 0).all()
    # no left-right structure: away from the mid-plane (where the smoothing links a voxel to its mirror's
    # neighbours) a side correlates with its mirror by chance only (sd about 0.06 for 12 slices of 32², a
    # template subject's is above 0.8)
    c = make_noise_volume(32, seed=3, index=1).images["t1"]
    assert abs(np.corrcoef(c[:12].ravel(), c[::-1][:12].ravel())[0, 1]) < 0.3
    with pytest.raises(ValueError, match="at least 16"):
        make_noise_volume(8)


def test_the_noise_cohort_is_a_file_list_on_the_given_grid(tmp_path):
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    out = write_noise_dataset(tmp_path / "noise", cases=2, size=16, seed=3, affine=affine)
    cases = discover("filelist", out)
    assert [c.id for c in cases] == ["DEMO_000", "DEMO_001"]
    image = nib.load(out / "images" / "DEMO_001.nii.gz")
    assert np.allclose(image.affine, affine) and image.shape == (16, 16, 16)
    assert np.allclose(image.get_fdata(), make_noise_volume(16, seed=3, index=1, affine=affine).images["t1"])
    with pytest.raises(FileExistsError, match="not empty"):  # a cohort is written once, unless overwrite
        write_noise_dataset(out, cases=1, size=16)
    write_noise_dataset(out, cases=1, size=16, overwrite=True)
    with pytest.raises(ValueError, match="cases must be >= 1"):
        write_noise_dataset(tmp_path / "none", cases=0)


def test_a_noise_cohort_of_several_channels_draws_each_apart_and_keeps_the_t1_of_one(tmp_path):
    single = write_noise_dataset(tmp_path / "one", cases=1, size=16, seed=3)
    several = write_noise_dataset(tmp_path / "four", cases=1, size=16, seed=3, channels=("t1", "flair", "t1ce", "t2"))
    assert (several / "files.csv").read_text().splitlines()[0] == "id,path,flair,t1ce,t2"
    (case,) = discover("filelist", several)
    assert case.channels == ("t1", "flair", "t1ce", "t2")
    read = {ch: nib.load(path).get_fdata() for ch, path in case.images.items()}
    # the first channel is the single-channel volume, bit for bit; the others are independent draws
    assert np.array_equal(read["t1"], nib.load(single / "images" / "DEMO_000.nii.gz").get_fdata())
    for ch in ("flair", "t1ce", "t2"):
        assert abs(np.corrcoef(read["t1"].ravel(), read[ch].ravel())[0, 1]) < 0.2
    with pytest.raises(ValueError, match="channels must be t1, then any of"):
        write_noise_dataset(tmp_path / "bad", cases=1, size=16, channels=("t2", "t1"))
