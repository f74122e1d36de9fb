"""nnU-Net's foreground sampling (task.sampling=classes, the default) against asa's earlier one (foreground):
the classes found, the forced crops' class drawn uniformly among those present, the unforced crops placed
uniformly, and the refusals."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from asa.data.lattice import FOREGROUND_FRACTION, LatticeCropd, _CropCentres, class_indices

N, CROP = 32, 8


def _case() -> dict:
    """A 32³ case: class 1 fills a 16³ block (4096 voxels), class 2 one 2³ blob (8 voxels) in the far corner,
    class 3 absent; -1 (ignored) on a slab."""
    label = torch.zeros(1, N, N, N, dtype=torch.int64)
    label[0, :16, :16, :16] = 1
    label[0, 28:30, 28:30, 28:30] = 2
    label[0, :, :, 31] = -1
    fg = ((label > 0)).to(torch.uint8)
    return {"image": torch.randn(1, N, N, N), "label": label, "fg": fg, "centre": torch.full((3,), (N - 1) / 2)}


def _crops(sampling: str, pos: float | None, samples: int = 400, seed: int = 0) -> list[dict]:
    crop = LatticeCropd(["image", "label"], label_key="fg", spatial_size=[CROP] * 3, patch=1, reference_size=[N] * 3,
                        pos=pos, num_samples=samples, sampling=sampling)
    crop.set_random_state(seed)
    return crop(_case())


def _share(crops: list[dict], value: int) -> float:
    return float(np.mean([bool((c["label"] == value).any()) for c in crops]))


def test_class_indices_are_the_classes_present_ignore_and_empty_left_out():
    case = _case()
    one, two = class_indices(case["label"])
    assert len(one) == 16**3 and len(two) == 8  # the -1 slab at z = 31 misses both
    assert np.array_equal(two, np.flatnonzero((case["label"][0] == 2).numpy().reshape(-1)))
    regions = torch.zeros(3, 4, 4, 4)
    regions[0, :2] = 1
    regions[2, 0, 0, 0] = 1  # region 1 empty: left out
    assert [len(i) for i in class_indices(regions)] == [32, 1]
    assert class_indices(torch.zeros(1, 4, 4, 4)) == []


def test_forced_crops_draw_the_class_uniformly_so_the_small_class_gets_half():
    # every crop forced (pos 1): class 2 (8 voxels of 4104 labelled) is drawn for half of them
    assert _share(_crops("classes", 1.0), 2) == pytest.approx(0.5, abs=0.08)  # 400 draws: 4 sd ≈ 0.1
    # asa's earlier draw centres on any labelled voxel: class 2 in 8 / 4104 of the centres
    assert _share(_crops("foreground", 1.0), 2) < 0.03


def test_unforced_crops_are_placed_uniformly():
    offsets = np.array([c["offset"].tolist() for c in _crops("classes", 0.0)])  # patch 1, origin 0: the start
    assert offsets.min() == 0 and offsets.max() == N - CROP  # every start reachable, none beyond
    assert offsets.mean(0) == pytest.approx([(N - CROP) / 2] * 3, abs=1.5)  # uniform over 0..24: mean 12
    # the case's own data: class 2 lies in a crop iff its start is within 21..24 along each axis: (4/25)³ ≈ 0.004
    assert _share(_crops("classes", 0.0), 2) < 0.03


def test_the_forced_share_is_nnunets_third_by_default():
    assert FOREGROUND_FRACTION == {"classes": 0.33, "foreground": 2 / 3}
    assert LatticeCropd(["image"], label_key="fg", spatial_size=[8] * 3, patch=8, reference_size=[8] * 3).pos == 0.33
    # a third forced, half of those onto class 2; unforced crops hold it with probability ≈ 0.004
    assert _share(_crops("classes", None, samples=1200), 2) == pytest.approx(0.33 / 2, abs=0.05)


def test_a_case_without_labels_gives_uniform_crops():
    case = _case()
    case["label"].zero_()
    crop = LatticeCropd(["image", "label"], label_key="fg", spatial_size=[CROP] * 3, patch=1,
                        reference_size=[N] * 3, pos=1.0, num_samples=5)
    assert len(crop(case)) == 5


def test_crop_centres_enumerate_every_valid_centre_once():
    centres = _CropCentres((5, 6, 4), (2, 4, 4))
    flat = sorted(centres[k] for k in range(len(centres)))
    assert len(centres) == 4 * 3 * 1 and len(set(flat)) == len(flat)
    coords = np.array(np.unravel_index(flat, (5, 6, 4))).T
    assert coords[:, 0].tolist() == sorted([1, 2, 3, 4] * 3) and set(coords[:, 2]) == {2}


@pytest.mark.parametrize("kw, message", [({"sampling": "random"}, "sampling='random': expected one of classes, "
                                                                   "foreground"),
                                         ({"pos": 1.5}, r"pos=1.5 must be in \[0, 1\]")])
def test_bad_sampling_options_are_refused(kw, message):
    with pytest.raises(ValueError, match=message):
        LatticeCropd(["image"], label_key="fg", spatial_size=[8] * 3, patch=8, reference_size=[8] * 3, **kw)
