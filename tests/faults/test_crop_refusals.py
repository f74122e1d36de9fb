"""A crop the network cannot take is refused before anything is written (it used to pass the checks and
fail at the first step, leaving config.yaml and splits.json behind)."""

from __future__ import annotations

import pytest

from asa.api import compose_config, finetune
from asa.api.common import OptionError
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
