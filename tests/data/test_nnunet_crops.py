"""nnU-Net's training crops for every network without a patch lattice: crops start at any voxel (not on a
coarser grid), and the forced share of each batch is a fixed number of its crops (nnU-Net's
``_oversample_last_XX_percent``), not a per-crop coin."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from asa.api.tasks.segmentation import crop_grid
from monai.transforms import Compose

from asa.data import CaseDataset, build_segmentation_dataset, discover, get_task
from asa.data.lattice import forced_crops
from asa.data.synthetic.demo import write_demo_dataset
from asa.models.cnn.dynunet import dynunet
from asa.models.cnn.resenc import resenc_unet
from asa.train.rng import SeededItems

CASE, CROP = 48, 32


@pytest.fixture(scope="module")
def brats48(tmp_path_factory):
    root = write_demo_dataset("brats", tmp_path_factory.mktemp("brats48"), cases=1, size=CASE, seed=0)
    return discover("brats", root), get_task("brats", root=root)


def _prepared(dataset) -> tuple[dict, object]:
    """(the case as the crop step gets it, the crop step) of a training dataset: the crops alone, without the
    preprocessing of every item and the augmentation after them."""
    preprocess, crop = dataset.transform.transforms[:2]
    return preprocess(dataset.items[0]), crop


@pytest.mark.parametrize("network", [
    lambda: dynunet(img_size=CROP, in_channels=4, out_channels=3),
    lambda: resenc_unet(img_size=CROP, in_channels=4, out_channels=3, size="tiny"),
], ids=["dynunet", "resenc"])
def test_a_network_without_a_patch_lattice_crops_at_any_voxel(brats48, network):
    cases, task = brats48
    grid = crop_grid(network(), {"lr_axis": 0})
    assert grid == {"lattice": 1}
    case, crop = _prepared(build_segmentation_dataset(cases, task, train=True, crop=CROP, seed=0,
                                                      samples_per_case=400, **grid))
    crop.set_random_state(0)
    starts = {tuple(c["offset"].tolist()) for c in crop(case)}  # lattice 1: the offset is the start, shifted
    # the 8-voxel lattice of earlier asa had 3 positions per axis (0, 8, 16): 64 crops in all; any voxel has 17³
    assert len(starts) > 64
    low = np.min(list(starts), axis=0)
    assert (np.max(list(starts), axis=0) - low <= CASE - CROP).all()  # every crop inside the case


def test_the_forced_crops_are_the_last_of_each_batch_as_nnunet_rounds():
    assert forced_crops(0, 2, 1, 0.33) == [False] and forced_crops(1, 2, 1, 0.33) == [True]  # one in two at batch 2
    assert [forced_crops(j, 3, 1, 0.33)[0] for j in range(3)] == [False, False, True]  # round(2.01) = 2
    assert [forced_crops(j, 4, 1, 0.33)[0] for j in range(4)] == [False, False, False, True]  # round(2.68) = 3
    assert [forced_crops(j, 5, 1, 0.33)[0] for j in range(5)] == [False, False, False, True, True]  # round(3.35)
    assert forced_crops(1, 2, 2, 0.5) == [True, True] and forced_crops(0, 2, 2, 0.5) == [False, False]
    assert forced_crops(0, 1, 4, 1.0) == [True] * 4 and forced_crops(0, 1, 4, 0.0) == [False] * 4


@pytest.mark.parametrize("oversampling", ["batch", "crop"])
def test_at_batch_two_every_batch_holds_one_forced_crop_unless_per_crop(tmp_path, oversampling):
    label = np.zeros((CASE,) * 3, np.int16)
    label[2:4, 2:4, 2:4] = 1  # a 2³ blob near a corner: an unforced crop must start at 0..2 on every axis to hold it
    root = write_demo_dataset("msd", tmp_path / "msd", cases=1, size=CASE, seed=0)
    cases = discover("msd", root)
    nib.save(nib.Nifti1Image(label, nib.load(cases[0].label).affine), cases[0].label)
    case, crop = _prepared(build_segmentation_dataset(cases, get_task("msd", root=root), train=True, crop=CROP,
                                                      seed=0, oversampling=oversampling, lattice=1))
    seeded = SeededItems(CaseDataset([case, case], Compose([crop]), seed=0), seed=0)  # the loader's path: a batch
    held = np.array([[bool((item["label"] == 1).any()) for item in seeded.__getitems__([(e, 0), (e, 1)])]
                     for e in range(60)])
    if oversampling == "batch":  # nnU-Net's: the second crop of every batch forced, the first not
        assert held[:, 1].all() and held[:, 0].mean() < 0.1
    else:  # a coin per crop: batches with no forced crop, and a second crop that is not always forced
        assert (held.sum(1) == 0).mean() > 0.2 and held[:, 1].mean() < 0.6
