"""A crop the network cannot take is refused before anything is written (it used to pass the checks and
fail at the first step, leaving config.yaml and splits.json behind)."""

from __future__ import annotations

import pytest

from asa.api import compose_config, finetune
from asa.api.machinery.run import OptionError
from asa.models import Capabilities, build_network, capabilities


@pytest.mark.parametrize("crop, fault", [
    (32, "a multiple of 32 and at least 64: e.g. 64"), (48, "a multiple of 32 and at least 64: e.g. 64"),
    (100, "a multiple of 32 and at least 64: e.g. 96"), (64, None), (96, None),
])
def test_swin_networks_declare_the_crops_they_take(crop, fault):
    for arch in ("sa_swin", "swin_unetr"):
        net = build_network({"arch": arch, "kwargs": {"img_size": 64, "in_channels": 1, "out_channels": 2,
                                                      "feature_size": 12, "depths": [1, 1, 1, 1],
                                                      "num_heads": [1, 1, 2, 4]}})
        got = capabilities(net).crop_fault(crop)
        assert (got is None) if fault is None else got.endswith(fault), (arch, got)
    assert Capabilities().crop_fault(7) is None  # a network that declares nothing takes any crop


def test_finetune_refuses_a_crop_sa_swin_cannot_take_before_writing(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(OptionError, match=r"^data.crop=32: the network takes crops whose edge is a multiple "
                                          r"of 32 and at least 64: e.g. 64$"):
        finetune(compose_config("finetune", ["model=sa_swin", f"output_dir={out}", "device=cpu", "data.crop=32",
                                             "model.feature_size=12", "data.num_workers=0"]))
    assert not out.exists()


@pytest.mark.parametrize("stored", [False, True])
def test_pretrain_refuses_a_crop_larger_than_every_volume(tmp_path, capsys, stored):
    from asa.api import preprocess, pretrain
    from asa.cli.common import EXIT_REFUSED, entry

    data = ["data.demo.cases=3", "data.demo.size=32", f"data.demo.cache_dir={tmp_path / 'cache'}"]
    if stored:  # a store written for this crop: its recorded grids are compared
        preprocess(compose_config("preprocess", ["data=demo", *data, "data.crop=64", f"data.store={tmp_path / 's'}",
                                                 "workers=1", "progress=false"]))
        data.append(f"data.store={tmp_path / 's'}")
    cfg = compose_config("pretrain", ["model=tiny", "trainer=smoke", "device=cpu", "probe.every=0", "data.crop=64",
                                      f"output_dir={tmp_path / 'run'}", *data])
    with pytest.raises(SystemExit) as stop:
        entry("asa-pretrain", pretrain, cfg)
    err = capsys.readouterr().err
    assert stop.value.code == EXIT_REFUSED, err
    assert "data.crop=64: the crop is larger than every volume along every axis (the largest, sub-DEMO" in err
    assert "is 32×32×32" in err and "set data.crop=32 or smaller" in err
    assert (f"in {tmp_path / 's'}" in err) == stored


DYNUNET = ["data.demo.cases=4", "data.demo.size=32", "data.num_workers=0", "trainer=smoke", "device=cpu", "model=dynunet"]


def test_dynunet_says_which_crop_its_plan_takes(tmp_path):
    from asa.api import finetune

    data = [*DYNUNET, f"data.demo.cache_dir={tmp_path / 'cache'}"]
    with pytest.raises(OptionError, match=r"^dynunet: its plan halves axis 0 of the crop 1 time\(s\), so the crop's "
                                          r"edge there must be divisible by 2, and 33 is not: take a crop \(data.crop\) "
                                          r"of 32 voxels \(or another that the plan halves evenly\)$"):
        finetune(compose_config("finetune", [*data, "data.crop=33", f"output_dir={tmp_path / 'a'}"]))


@pytest.mark.slow
def test_dynunet_takes_a_crop_that_is_no_multiple_of_8(tmp_path):
    from asa.api import finetune

    data = [*DYNUNET, f"data.demo.cache_dir={tmp_path / 'cache'}"]
    # 20 = 4 · 5: planned with two poolings; crops no longer have to be multiples of a ViT's patch size 8
    finetune(compose_config("finetune", [*data, "data.crop=20", f"output_dir={tmp_path / 'b'}"]))
    assert (tmp_path / "b" / "checkpoints" / "last.pt").is_file()
