from __future__ import annotations

import numpy as np
import pytest
import torch

from asa.data import (
    build_pretrain_dataset,
    build_segmentation_dataset,
    discover,
    ensure_demo_dataset,
    get_task,
    load_volume,
    preprocess_for_inference,
    save_volume,
)
from asa.data.geometry import brain_centre, crop_or_pad
from asa.data.synthetic.phantom import make_phantom
from asa.data.preprocessing import brain_mask, normalize_in_brain


def test_crop_puts_midline_at_centre():
    ph = make_phantom(48, seed=4)  # brain deliberately off the grid centre
    image = ph.images["t1"][None]
    mask = brain_mask(image)
    centre = brain_centre(mask)
    assert abs(centre[0] - ph.midline) <= 0.5
    world = brain_centre(mask, ph.affine, lr_centre="world")
    assert world[0] == pytest.approx(ph.midline)
    out = crop_or_pad(image, world, (40, 40, 40))[0]
    assert np.array_equal(out != 0, out[::-1] != 0) or ((out != 0) == (out[::-1] != 0)).mean() > 0.95
    tissue = crop_or_pad(ph.tissue[None], world, (40, 40, 40))[0]
    assert (tissue == tissue[::-1]).mean() > 0.95  # mirror i <-> 39 - i


def test_brain_centre_is_the_bounding_box_centre():
    """MONAI's bounding box gives the centre the per-axis projections give (first + last) / 2,
    on hand-made boxes, touching the edges, single voxels and random masks."""
    def by_projection(mask):
        return np.array([(p[0] + p[-1]) / 2 for p in (
            np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3))])

    mask = np.zeros((10, 12, 9), bool)
    mask[2:7, 0:5, 8] = True  # x 2..6, y 0..4 (an edge), z 8 (the last plane)
    assert brain_centre(mask).tolist() == [4.0, 2.0, 8.0]
    one = np.zeros((5, 5, 5), bool)
    one[4, 0, 3] = True
    assert brain_centre(one).tolist() == [4.0, 0.0, 3.0]
    assert brain_centre(np.zeros((4, 6, 8), bool)).tolist() == [1.5, 2.5, 3.5]  # empty: the grid centre
    rng = np.random.default_rng(0)
    for density in (0.001, 0.01, 0.3):
        mask = rng.random((17, 20, 23)) < density
        if mask.any():
            assert np.array_equal(brain_centre(mask), by_projection(mask))
    ph_mask = brain_mask(make_phantom(40, seed=2).images["t1"][None])
    assert np.array_equal(brain_centre(ph_mask), by_projection(ph_mask))


def test_crop_or_pad_hand_values():
    a = np.arange(5, dtype=np.float32)[None, :, None, None] * np.ones((1, 5, 1, 1), np.float32)
    out = crop_or_pad(a, (2.0, 0, 0), (3, 1, 1))
    np.testing.assert_array_equal(out[0, :, 0, 0], [1, 2, 3])
    out = crop_or_pad(a, (0.5, 0, 0), (4, 1, 1))  # half-integer centre, even size: exact middle
    np.testing.assert_array_equal(out[0, :, 0, 0], [0, 0, 1, 0 + 2])
    out = crop_or_pad(a, (2.0, 0, 0), (7, 1, 1))
    np.testing.assert_array_equal(out[0, :, 0, 0], [0, 0, 1, 2, 3, 4, 0])


def test_normalize_in_brain():
    rng = np.random.default_rng(0)
    img = np.zeros((1, 10, 10, 10), np.float32)
    img[0, 2:8, 2:8, 2:8] = rng.normal(100, 10, (6, 6, 6))
    img[0, 5, 5, 5] = 1e6  # outlier clipped away
    out = normalize_in_brain(img, brain_mask(img))
    brain = out[0, 2:8, 2:8, 2:8]
    assert abs(brain.mean()) < 1e-4 and abs(brain.std() - 1) < 1e-3 and brain.max() < 4
    assert np.all(out[0, :2] == 0)


def test_pretrain_items_and_lps_orientation(demo_root):
    cases = discover("brats", demo_root("brats"))
    ds = build_pretrain_dataset(cases, crop=(40, 40, 40), augment=False, channels=("t1",))
    item = ds[0]
    assert set(item) == {"image", "id"} and item["id"] == cases[0].id
    assert item["image"].shape == (1, 40, 40, 40) and item["image"].dtype == torch.float32
    x = item["image"][0].numpy()
    fg = x != 0
    assert ((fg == fg[::-1]).mean()) > 0.95  # LPS on disk, yet the brain is symmetric about the centre
    assert abs(x[fg].mean()) < 0.2
    resampled = build_pretrain_dataset(cases, crop=24, augment=False, resample_mm=1.5)[0]
    assert resampled["image"].shape == (1, 24, 24, 24)


def test_pretrain_augmentation_is_seeded(demo_root):
    cases = discover("bids", demo_root("bids"))
    a = build_pretrain_dataset(cases, crop=24, augment=True, seed=1)
    b = build_pretrain_dataset(cases, crop=24, augment=True, seed=1)
    c = build_pretrain_dataset(cases, crop=24, augment=True, seed=2)
    xa, xb, xc = (d[0]["image"] for d in (a, b, c))
    assert torch.equal(xa, xb) and not torch.equal(xa, xc)
    loader = torch.utils.data.DataLoader(a, batch_size=1, num_workers=2, generator=torch.Generator().manual_seed(0))
    first = [x["image"] for x in loader]
    loader = torch.utils.data.DataLoader(a, batch_size=1, num_workers=2, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(p, q) for p, q in zip(first, (x["image"] for x in loader)))


@pytest.mark.parametrize("layout", ["brats", "ibsr", "wmh"])
def test_segmentation_items(demo_root, layout):
    root = demo_root(layout)
    task = get_task(layout)
    cases = discover(layout, root)
    train = build_segmentation_dataset(cases, task, train=True, crop=16, seed=0)
    item = train[0]
    assert set(item) == {"image", "label", "offset"}
    assert item["offset"].dtype == torch.int64 and item["offset"].shape == (3,)
    assert item["image"].shape == (len(task.channels), 16, 16, 16)
    if task.multilabel:
        assert item["label"].shape == (3, 16, 16, 16) and item["label"].dtype == torch.float32
        assert set(item["label"].unique().tolist()) <= {0.0, 1.0}
    else:
        assert item["label"].shape == (1, 16, 16, 16) and item["label"].dtype == torch.int64
        assert set(item["label"].unique().tolist()) <= {-1, *range(task.num_outputs)}
    with pytest.raises(ValueError, match="train=True needs crop"):  # no crop size stated twice
        build_segmentation_dataset(cases, task, train=True)
    val = build_segmentation_dataset(cases, task, train=False)[0]
    ref = load_volume(cases[0].label)
    assert val["image"].shape[1:] == ref.shape and val["id"] == cases[0].id and val["centre"].shape == (3,)
    np.testing.assert_array_equal(
        task.label_to_target(ref.array.astype(np.int64)) if task.multilabel else task.label_to_target(ref.array.astype(np.int64))[None],
        val["label"].numpy(),
    )


def test_foreground_oversampling(demo_root):
    cases = discover("brats", demo_root("brats"))
    ds = build_segmentation_dataset(cases, get_task("brats"), train=True, crop=8, samples_per_case=12, seed=0,
                                    rotate_deg=0, zoom=(1.0, 1.0), flip_axes=())
    crops = ds[0]
    assert isinstance(crops, list) and len(crops) == 12
    with_tumour = sum(bool(c["label"][0].any()) for c in crops)
    assert with_tumour >= 6  # ~2/3 of crops centred on tumour; tumour is a few % of the volume


def test_inference_round_trip_to_original_space(demo_root, tmp_path):
    task = get_task("brats")
    case = discover("brats", demo_root("brats"))[0]
    image, ref = preprocess_for_inference(case, task)
    assert image.shape == (4, *ref.shape) and ref.original_axcodes == ("L", "P", "S")
    label = load_volume(case.label)
    probs = torch.from_numpy(task.label_to_target(label.array))
    out = save_volume(task.prediction_to_label(probs), ref, tmp_path / "pred.nii.gz")
    import nibabel as nib

    np.testing.assert_array_equal(np.asanyarray(nib.load(out).dataobj), np.asanyarray(nib.load(case.label).dataobj))


def test_ensure_demo_dataset_generates_once(tmp_path, monkeypatch):
    root = ensure_demo_dataset("ibsr", cases=2, size=16, seed=0, cache_dir=tmp_path)
    assert len(discover("ibsr", root)) == 2
    import asa.data.synthetic.demo as demo

    monkeypatch.setattr(demo, "write_demo_dataset", lambda *a, **k: (_ for _ in ()).throw(AssertionError("regenerated")))
    assert ensure_demo_dataset("ibsr", cases=2, size=16, seed=0, cache_dir=tmp_path) == root
    monkeypatch.setenv("ASA_CACHE", str(tmp_path / "env"))
    with pytest.raises(AssertionError, match="regenerated"):
        ensure_demo_dataset("ibsr", cases=2, size=16, seed=0)
    assert not list((tmp_path / "env" / "demo").iterdir())  # no half-written folder left


def test_pretraining_augmentation_cannot_fake_informativeness(demo_root):
    """Intensity augmentation acts inside the brain: the background stays 0, and the attentive
    weights put no mass on patches that no brain voxel reaches (the gradient stencil reaches one
    voxel beyond a patch); a global shift would turn the volume border into an edge."""
    import torch.nn.functional as F
    from monai.transforms import RandShiftIntensityd

    from asa.data.preprocessing import PretrainPreprocess, case_to_item
    from asa.losses import masked_patch_weights, patch_informativeness

    cases = discover("bids", demo_root("bids"))
    plain = PretrainPreprocess(32)(case_to_item(cases[0], ("t1",)))
    brain = plain["brain"].float()[None]  # [1, 1, 32, 32, 32]
    reach = F.max_pool3d(brain, 3, stride=1, padding=1)
    empty = F.avg_pool3d(reach, 8).flatten(1) == 0  # [1, N] patches no brain voxel reaches
    assert empty.sum() >= 4  # the corners of a 32³ crop around a 32³ phantom
    changed = 0
    for seed in range(4):
        x = build_pretrain_dataset(cases[:1], crop=32, augment=True, seed=seed)[0]["image"][None]
        assert (x[brain.bool().expand_as(x) == 0] == 0).all()
        changed += int(not torch.equal(x[0], plain["image"]))
        weights = masked_patch_weights(torch.ones(1, 64), patch_informativeness(x))
        assert weights[empty].sum() == 0
    assert changed  # the augmentation did act
    shifted = RandShiftIntensityd(keys="image", offsets=(0.05, 0.1), prob=1.0)({"image": plain["image"]})["image"]
    weights = masked_patch_weights(torch.ones(1, 64), patch_informativeness(torch.as_tensor(shifted)[None]))
    assert (weights[empty] > 0).all()
