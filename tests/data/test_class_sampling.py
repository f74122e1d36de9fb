"""nnU-Net's foreground sampling (task.sampling=classes, the default) against asa's earlier one (foreground):
the classes found, the forced crops' class drawn uniformly among those present, the unforced crops placed
uniformly, where nnU-Net's loader lets a crop lie (a forced crop centred on its voxel and padded past the far
border, a volume smaller than the crop in the crop's middle), and the refusals."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from asa.data.lattice import FOREGROUND_FRACTION, LatticeCropd, class_indices, crop_start_bounds

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


@pytest.mark.parametrize("shape, size, lowest, highest", [
    (32, 8, 0, 24),  # a volume at least the crop: every start that keeps the crop inside
    (8, 8, 0, 0),
    (6, 8, -1, -1),  # 2 voxels missing: one on each side
    (5, 8, -2, -1),  # 3 missing: nnU-Net's -3 // 2 = -2 to 5 + 1 + 1 - 8 = -1, the volume off the middle by half
    (1, 4, -2, -1),
])
def test_crop_start_bounds_are_nnunets(shape, size, lowest, highest):
    lo, hi = crop_start_bounds((shape, 40, shape), (size, 8, size))
    assert lo.tolist() == [lowest, 0, lowest] and hi.tolist() == [highest, 32, highest]


def _one_voxel(n: int, voxel: tuple[int, int, int], crop: int = CROP, patch: int = 1, samples: int = 1,
               pos: float = 1.0) -> list[dict]:
    """The crops of an n³ case whose only class is one voxel (image values 1 to 2, never 0); the reference grid
    at the origin, so with ``patch=1`` a crop's offset is its start."""
    label = torch.zeros(1, n, n, n, dtype=torch.int64)
    label[(0, *voxel)] = 1
    case = {"image": 1 + torch.rand(1, n, n, n), "label": label, "fg": (label > 0).to(torch.uint8),
            "centre": torch.full((3,), (n - 1) / 2)}
    crops = LatticeCropd(["image", "label"], label_key="fg", spatial_size=[crop] * 3, patch=patch,
                         reference_size=[n] * 3, pos=pos, num_samples=samples)
    crops.set_random_state(0)
    return crops(case)


def test_a_forced_crop_at_the_far_corner_is_centred_on_its_voxel_and_padded():
    (crop,) = _one_voxel(N, (N - 1,) * 3)
    assert crop["offset"].tolist() == [N - 1 - CROP // 2] * 3  # nnU-Net's start: the voxel minus half the crop
    middle = (0, *[CROP // 2] * 3)
    assert crop["label"][middle] == 1 and int(crop["label"].sum()) == 1
    inside = (slice(None), *[slice(0, CROP // 2 + 1)] * 3)  # the voxel and what lies before it
    outside = torch.ones_like(crop["image"], dtype=torch.bool)
    outside[inside] = False
    assert (crop["image"][inside] >= 1).all()
    assert (crop["image"][outside] == 0).all() and (crop["label"][outside] == 0).all()  # padded: 0, background
    assert int(outside.sum()) == CROP**3 - (CROP // 2 + 1) ** 3


def test_a_forced_crop_at_the_near_corner_starts_at_the_border_as_nnunets():
    # nnU-Net's get_bbox: max(lowest start, voxel - size // 2): centring stops at the lowest start, 0 here
    (crop,) = _one_voxel(N, (0, 0, 0))
    assert crop["offset"].tolist() == [0, 0, 0] and crop["label"][0, 0, 0, 0] == 1
    assert (crop["image"] >= 1).all()  # nothing padded


def test_the_forced_voxel_lies_in_the_crops_middle_wherever_it_is():
    rng = np.random.default_rng(0)
    voxels = [tuple(int(v) for v in rng.integers(0, N, 3)) for _ in range(40)]
    voxels += [(N - 1, CROP // 2, 17), (CROP // 2, N - 2, N - 1), (3, N - 1, 30)]  # far borders and the near one
    for voxel in voxels:
        for crop in _one_voxel(N, voxel, samples=3):
            found = np.argwhere(crop["label"][0].numpy() == 1)
            assert found.tolist() == [[min(v, CROP // 2) for v in voxel]]  # the middle, unless near the near border
            assert crop["offset"].tolist() == [max(v - CROP // 2, 0) for v in voxel]
    # on a lattice of 4: the crop starts on it, the voxel within half a patch of the middle
    for voxel in voxels:
        for crop in _one_voxel(N, voxel, crop=16, patch=4, samples=3):
            found = np.argwhere(crop["label"][0].numpy() == 1)[0]
            start = np.asarray(voxel) - found
            assert (start % 4 == 0).all()
            assert (np.abs(found - 8) <= 2).all() or (start[np.abs(found - 8) > 2] == 0).all()


def test_a_volume_smaller_than_the_crop_sits_in_its_middle():
    n, size = 5, 8  # 3 voxels missing: the volume starts at index 2 or 1 of the crop (nnU-Net's bounds -2, -1)
    unforced = _one_voxel(n, (2, 2, 2), crop=size, samples=200, pos=0.0)
    starts = np.array([c["offset"].tolist() for c in unforced])
    assert set(starts.reshape(-1).tolist()) == {-2, -1}
    for crop, start in zip(unforced, starts):
        inside = tuple(slice(-s, -s + n) for s in start)
        kept = torch.zeros(size, size, size, dtype=torch.bool)
        kept[inside] = True
        assert (crop["image"][0][kept] >= 1).all() and (crop["image"][0][~kept] == 0).all()
        assert (crop["label"][0][~kept] == 0).all() and crop["label"].sum() == 1  # the whole volume, padded with 0
    # forced on the volume's last voxel: centred, so the volume starts at index 0 of the crop and 4 voxels pad it
    (crop,) = _one_voxel(n, (n - 1,) * 3, crop=size)
    assert crop["offset"].tolist() == [n - 1 - size // 2] * 3 and crop["label"][0, 4, 4, 4] == 1
    # forced on its first voxel: no lower than the lowest start, -2
    (crop,) = _one_voxel(n, (0, 0, 0), crop=size)
    assert crop["offset"].tolist() == [-2] * 3 and crop["label"][0, 2, 2, 2] == 1


@pytest.mark.parametrize("kw, message", [({"sampling": "random"}, "sampling='random': expected one of classes, "
                                                                   "foreground"),
                                         ({"pos": 1.5}, r"pos=1.5 must be in \[0, 1\]")])
def test_bad_sampling_options_are_refused(kw, message):
    with pytest.raises(ValueError, match=message):
        LatticeCropd(["image"], label_key="fg", spatial_size=[8] * 3, patch=8, reference_size=[8] * 3, **kw)
