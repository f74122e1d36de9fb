"""asa-demo-data writes non-cubic phantoms, e.g. a full-size 240 × 240 × 155 BraTS case."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from asa.cli.demo_data import main
from asa.data import discover, load_volume, write_demo_dataset


def test_three_sizes_give_a_phantom_of_that_shape_in_ras(tmp_path, capsys):
    assert main(["--layout", "brats", "--out", str(tmp_path), "--cases", "1", "--size", "40", "36", "24"]) == 0
    assert "1 brats case(s) of 40 x 36 x 24 voxels" in capsys.readouterr().out
    (case,) = discover("brats", tmp_path)
    for path in case.images.values():
        assert nib.load(str(path)).shape == (40, 36, 24)  # stored LPS: axes flipped, not permuted
    volume = load_volume(case.images["t1"])
    assert volume.array.shape[-3:] == (40, 36, 24)
    label = nib.load(str(case.label)).get_fdata()
    assert set(np.unique(label)) <= {0, 1, 2, 4} and (label > 0).any()  # a tumour in the non-cubic brain


def test_one_size_is_still_a_cube_and_bad_sizes_are_refused(tmp_path, capsys):
    write_demo_dataset("ibsr", tmp_path / "a", cases=1, size=20)
    assert nib.load(str(next((tmp_path / "a").rglob("*ana_strip.nii.gz")))).shape == (20, 20, 20)
    with pytest.raises(SystemExit) as err:
        main(["--layout", "brats", "--out", str(tmp_path / "b"), "--size", "40", "36"])
    assert err.value.code == 2 and "one edge or three sizes" in capsys.readouterr().err
    with pytest.raises(ValueError, match="size must be >= 16 voxels"):
        write_demo_dataset("brats", tmp_path / "c", cases=1, size=(40, 12, 40))
