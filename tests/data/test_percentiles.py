"""data.percentiles: the intensity clip before the z-score inside the brain. The default is the clip asa always
made (0.5-99.5, bit for bit); [0, 100] clips nothing, the z-score by hand and nnU-Net's ZScoreNormalization with
use_mask_for_norm; a bad value is refused naming the option; asa-preprocess's store records it, so a store written
under other percentiles is refused, not read."""

from __future__ import annotations

import numpy as np
import pytest

from asa.api import finetune, preprocess
from asa.api.config import compose_config
from asa.api.configuration.checks import as_config
from asa.data import build_segmentation_dataset, discover, get_task, write_demo_dataset
from asa.data.preprocessing import (PERCENTILES, PretrainPreprocess, SegmentationPreprocess, brain_mask, case_to_item,
                                    check_percentiles, load_case_images)
from asa.data.store import StoreSettingsError, open_store, store_settings
from tests.fixtures.volumes import zscore_by_hand


@pytest.fixture(scope="module")
def brats(tmp_path_factory):
    """One 4-channel demo case (skull-stripped phantoms with noise) and its task."""
    root = write_demo_dataset("brats", tmp_path_factory.mktemp("pct") / "brats", cases=1, size=24, seed=3)
    return discover("brats", root)[0], get_task("brats")


def test_the_default_is_the_clip_asa_always_made(brats):
    case, task = brats
    item = case_to_item(case, task.channels)
    image, _ = load_case_images(item)
    mask = brain_mask(image)
    default = SegmentationPreprocess(task, with_label=False)(item)["image"].numpy()
    assert np.array_equal(default, zscore_by_hand(image, mask, (0.5, 99.5)))
    assert np.array_equal(default, SegmentationPreprocess(task, percentiles=[0.5, 99.5], with_label=False)(item)["image"].numpy())
    assert not np.allclose(default, zscore_by_hand(image, mask, None), atol=1e-3)  # the clip does change these images
    # the settings a store is keyed by are those of the stores written before the option
    assert SegmentationPreprocess(task).settings()["percentiles"] == (0.5, 99.5) == PERCENTILES
    assert store_settings(SegmentationPreprocess(task).settings(), channels=task.channels,
                          dtype="float16")["percentiles"] == [0.5, 99.5]
    assert PretrainPreprocess(16).settings()["percentiles"] == (0.5, 99.5)


def test_0_100_is_the_masked_z_score_and_nnunets(brats):
    case, task = brats
    item = case_to_item(case, task.channels)
    image, _ = load_case_images(item)
    mask = brain_mask(image)
    out = SegmentationPreprocess(task, percentiles=(0, 100), with_label=False)(item)["image"].numpy()
    assert np.array_equal(out, zscore_by_hand(image, mask, None))
    assert (out[:, ~mask] == 0).all() and np.allclose(out[:, mask].mean(1), 0, atol=1e-5)
    assert np.allclose(out[:, mask].std(1), 1, atol=1e-5)

    nnunet = pytest.importorskip("nnunetv2.preprocessing.normalization.default_normalization_schemes")
    from nnunetv2.preprocessing.cropping.cropping import create_nonzero_mask

    nonzero = create_nonzero_mask(image)  # nnU-Net's mask: nonzero in any channel, holes filled
    assert np.array_equal(nonzero, mask)  # a skull-stripped image: asa's brain mask is the same voxels
    seg = np.where(nonzero, 0, -1)
    norm = nnunet.ZScoreNormalization(use_mask_for_norm=True, intensityproperties={})
    theirs = np.stack([np.where(nonzero, norm.run(image[c].copy(), seg), 0) for c in range(image.shape[0])])
    np.testing.assert_allclose(out, theirs, rtol=0, atol=2e-6)  # float32 (nnU-Net) against float64 sums (asa)


@pytest.mark.parametrize("bad", [(50, 10), (5, 5), (-1, 99), (0, 101), (1,), (1, 2, 3), ("a", "b"), (float("nan"), 9),
                                 None])
def test_a_bad_value_is_refused_naming_it(bad):
    with pytest.raises(ValueError, match=r"^percentiles=.*: expected two percentiles \[low, high\] with 0 <= low < "
                                         r"high <= 100"):
        check_percentiles(bad)
    with pytest.raises(ValueError, match="percentiles="):
        SegmentationPreprocess(get_task("ibsr"), percentiles=bad)


def test_the_option_in_the_fine_tuning_config():
    typed = as_config(compose_config("finetune", ["data=ibsr", "data.percentiles=[0,100]", "output_dir=runs/x"]),
                      "finetune")
    assert typed.data.percentiles == [0.0, 100.0]
    default = as_config(compose_config("finetune", ["data=ibsr", "output_dir=runs/x"]), "finetune")
    assert default.data.percentiles == [0.5, 99.5]
    with pytest.raises(ValueError, match=r"asa-finetune: invalid option data.percentiles=\[50.0, 10.0\]: expected two "
                                         r"percentiles \[low, high\] with 0 <= low < high <= 100"):
        as_config(compose_config("finetune", ["data=ibsr", "data.percentiles=[50,10]", "output_dir=runs/x"]),
                  "finetune")


def test_the_case_task_refuses_other_ones(tmp_path):
    # its crops are pretraining's (asa.api.tasks.case): clipped as pretraining clips, so asa-predict reads them alike
    with pytest.raises(ValueError, match=r"data.percentiles=\[0.0, 100.0\]: data.task=case preprocesses each case "
                                         r"as pretraining does \(clipped to its brain's 0.5-99.5 percentiles\)"):
        finetune(compose_config("finetune", ["data=targets", "data.percentiles=[0,100]", f"output_dir={tmp_path / 'c'}",
                                             "trainer=smoke", "device=cpu", "data.num_workers=0"]))


def test_the_store_records_them_and_refuses_other_ones(tmp_path):
    cache, store = tmp_path / "cache", tmp_path / "store"
    data = ["data=ibsr", "data.demo.cases=2", "data.demo.size=16", f"data.demo.cache_dir={cache}",
            f"data.store={store}", "progress=false", "workers=1"]
    with pytest.raises(ValueError, match=r"asa-preprocess: invalid option data.percentiles=\[0, 100, 1\]: expected two"):
        preprocess(compose_config("preprocess", [*data, "data.percentiles=[0,100,1]"]))
    preprocess(compose_config("preprocess", [*data, "data.percentiles=[0,100]"]))
    assert open_store(store).settings["percentiles"] == [0.0, 100.0]
    with pytest.raises(StoreSettingsError, match=r"percentiles: store \[0.0, 100.0\], now \[0.5, 99.5\]"):
        preprocess(compose_config("preprocess", data))  # the default into the same store: refused, nothing written
    cases, task = discover("ibsr", open_store(store).root), get_task("ibsr")
    with pytest.raises(StoreSettingsError, match=r"percentiles: store \[0.0, 100.0\], now \[0.5, 99.5\]"):
        build_segmentation_dataset(cases, task, train=False, store=store)  # a default run does not read it
    stored = build_segmentation_dataset(cases, task, train=False, store=store, percentiles=(0, 100))
    direct = build_segmentation_dataset(cases, task, train=False, percentiles=(0, 100))
    # the store keeps float16 images: the same preprocessing up to that rounding
    np.testing.assert_allclose(stored[0]["image"].numpy(), direct[0]["image"].numpy(), atol=5e-3)
