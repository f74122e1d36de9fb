from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.transforms import RandFlipd, RandRotated

from asa.data import (
    RegionSource,
    build_pretrain_dataset,
    build_segmentation_dataset,
    cluster_tissue,
    discover,
    get_task,
    load_volume,
)
from asa.data.augmentation import Finalize, segmentation_train_augmentation
from asa.data.synthetic.demo import write_nifti
from asa.data.synthetic.phantom import make_phantom
from asa.data.preprocessing import brain_mask, normalize_in_brain


def test_clustering_is_deterministic_and_finds_the_tissues():
    ph = make_phantom(40, seed=2)
    image = ph.images["t1"][None]
    mask = brain_mask(image)
    a = cluster_tissue(normalize_in_brain(image, mask), mask, 3, seed=5)
    b = cluster_tissue(normalize_in_brain(image, mask), mask, 3, seed=5)
    np.testing.assert_array_equal(a, b)
    assert set(np.unique(a)) == {0, 1, 2, 3} and (a[~mask] == 0).all() and (a[mask] > 0).all()
    # numbered by T1 intensity: 1 CSF, 2 GM, 3 WM (the phantom's tissue codes) on most brain voxels
    inside = (ph.tissue > 0) & mask
    assert (a[inside] == ph.tissue[inside]).mean() > 0.8


def test_clustering_seed_only_picks_the_sample():
    rng = np.random.default_rng(0)
    image = np.concatenate([rng.normal(m, 0.05, 4000) for m in (-1.0, 0.0, 1.0)]).reshape(1, 20, 20, 30).astype(np.float32)
    mask = np.ones(image.shape[1:], bool)
    labels = [cluster_tissue(image, mask, 3, seed=s, max_samples=500) for s in (0, 1)]
    np.testing.assert_array_equal(labels[0], labels[1])  # well-separated classes: any seed finds them
    assert np.array_equal(np.unique(labels[0].reshape(3, -1), axis=1).ravel(), [1, 2, 3])


def test_pretrain_region_map_is_cropped_with_the_image(demo_root):
    cases = discover("bids", demo_root("bids"))
    ds = build_pretrain_dataset(cases[:1], crop=(32, 32, 32), augment=False, regions=RegionSource("cluster", k=3))
    item = ds[0]
    assert set(item) == {"image", "region", "id"} and item["region"].dtype == torch.int64
    assert item["region"].shape == (1, 32, 32, 32)
    assert torch.equal(item["region"][0] > 0, item["image"][0] != 0)  # brain voxels carry a class


def test_supplied_and_label_sources(demo_root, tmp_path):
    root = demo_root("ibsr")
    cases = discover("ibsr", root)
    task = get_task("ibsr")
    for c in cases:  # supplied maps: the tissue labels + 10, in the files' own (LIA) orientation
        lab = load_volume(c.label, label=True)
        write_nifti(lab.array.astype(np.int16) + 10, lab.affine, tmp_path / f"{c.id}.nii.gz", "LIA")
    supplied = build_segmentation_dataset(cases, task, train=False, regions=RegionSource("file", dir=tmp_path))[0]
    from_label = build_segmentation_dataset(cases, task, train=False, regions=RegionSource("label"))[0]
    assert torch.equal(supplied["region"], from_label["region"] + 10)
    assert torch.equal(from_label["region"], from_label["label"])  # IBSR labels 0..3, no ignore label
    with pytest.raises(RuntimeError) as err:  # MONAI wraps errors raised inside a transform
        build_segmentation_dataset(cases, task, train=False, regions=RegionSource("file", dir=tmp_path / ".."))[0]
    assert "no region map IBSR_DEMO_01.nii.gz" in str(err.value.__cause__)
    with pytest.raises(ValueError, match="regions.source"):
        RegionSource("sam")


def test_region_map_follows_flips_and_rotations():
    """The region map goes through every spatial transform of the label, with the same draws."""
    size = 24
    yy = np.indices((size,) * 3)
    label = ((yy[0] > 12).astype(np.int64) + 2 * (yy[1] > 8) + 4 * (yy[2] > 15))[None]  # 8 blocks
    item = {"image": torch.from_numpy(label.astype(np.float32)), "label": torch.from_numpy(label),
            "region": torch.from_numpy(label.astype(np.int16)), "fg": torch.from_numpy((label > 0).astype(np.uint8)),
            "centre": torch.tensor([11.5, 11.5, 11.5], dtype=torch.float64)}
    augment = segmentation_train_augmentation(get_task("ibsr"), (16, 16, 16), region=True, rotate_deg=30)
    for t in augment.transforms:
        if isinstance(t, (RandRotated, RandFlipd)):
            t.prob = 1.0  # a rotation and every flip, always
    finalize = Finalize(("image", "label", "region"), torch.int64)
    augment.set_random_state(0)
    moved = 0
    for _ in range(6):
        out = finalize(augment(dict(item)))
        assert torch.equal(out["region"], out["label"])
        # the image went through the same geometry: away from the block edges it agrees with the map
        agree = (out["image"].round().long() == out["region"]).float().mean()
        assert agree > 0.8
        moved += int(not torch.equal(out["region"], torch.from_numpy(label[:, :16, :16, :16])))
    assert moved == 6


def test_label_source_is_refused_as_a_network_input_and_kept_for_the_loss():
    """A map made from the target never feeds region attention (docs/method.md §1.6b); the loss-only focal
    term, which sees the labels anyway, may use it."""
    spec = {"source": "label", "k": 3, "seed": 0, "dir": None}
    with pytest.raises(ValueError, match=r"source=label .*model.region_attention=alternate feeds the region map "
                                         r"into the network.*data.regions.source=cluster.*file"):
        RegionSource.from_config(spec, needed_by=["model.region_attention=alternate", "task.focal_weight=1.0"],
                                 network="model.region_attention=alternate")
    loss_only = RegionSource.from_config(spec, needed_by=["task.focal_weight=1.0"])
    assert loss_only.source == "label" and loss_only.from_target
    for source in ("cluster", "file"):  # what region attention may be fed
        regions = RegionSource.from_config({**spec, "source": source, "dir": "."}, needed_by=["x"], network="x")
        assert regions.source == source and not regions.from_target


def test_inference_region_map_refuses_the_label(demo_root):
    from asa.data import region_map_for_inference

    case = discover("ibsr", demo_root("ibsr"))[0]
    with pytest.raises(ValueError, match="source=label"):
        region_map_for_inference(case, get_task("ibsr"), RegionSource("label"))
    assert region_map_for_inference(case, get_task("ibsr"), RegionSource("cluster")).shape[0] == 1


def test_auto_source_clusters_only_when_an_option_needs_regions():
    assert RegionSource.from_config({"source": "auto"}) is None
    assert RegionSource.from_config({}) is None  # a missing source is auto
    auto = RegionSource.from_config({"source": "auto", "k": 4, "seed": 2}, needed_by=["model.region_attention=all"],
                                    network="model.region_attention=all")
    assert (auto.source, auto.k, auto.seed) == ("cluster", 4, 2)
    with pytest.raises(ValueError, match=r"model.region_attention=all need\(s\) region maps, but "
                                         r"data.regions.source=none.*auto"):
        RegionSource.from_config({"source": "none"}, needed_by=["model.region_attention=all"])
    with pytest.raises(ValueError, match=r"data.regions.source must be one of \('auto', 'none', 'cluster'"):
        RegionSource.from_config({"source": "sam"})
