"""`asa.eval.load_frozen` reads an SA-Swin pretraining checkpoint's input edge from the run config it
carries (``data.crop``), so ``asa-probe`` needs no ``crop=N`` for it."""
from __future__ import annotations

import pytest
import torch

from asa.eval.frozen import load_frozen
from asa.io import save_checkpoint
from asa.models import build_network, network_spec

SIZES = {"feature_size": 12, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 2, 4], "in_channels": 1}


def _sa_swin_checkpoint(path, config):
    torch.manual_seed(0)
    net = build_network({"arch": "sa_swin_pretrain", "kwargs": SIZES})
    return save_checkpoint(path, {"model": net.state_dict(), "network": network_spec(net), "config": config})


def test_an_sa_swin_checkpoint_gives_its_pretraining_crop(tmp_path):
    ckpt = _sa_swin_checkpoint(tmp_path / "last.pt", {"data": {"crop": 64}})
    frozen = load_frozen(ckpt)
    assert frozen.size == (64, 64, 64) and frozen.stride == 8
    assert frozen.tokens(torch.randn(1, 1, 64, 64, 64)).shape == (1, 8 ** 3, 4 * 12)
    assert load_frozen(ckpt, crop=32).size == (32, 32, 32)  # an explicit crop still wins


def test_an_sa_swin_checkpoint_without_a_crop_asks_for_one(tmp_path):
    ckpt = _sa_swin_checkpoint(tmp_path / "last.pt", {"data": {}})
    with pytest.raises(ValueError, match="pass crop=N"):
        load_frozen(ckpt)


def test_a_checkpoint_from_before_the_crop_rename_still_gives_its_crop(tmp_path):
    ckpt = _sa_swin_checkpoint(tmp_path / "last.pt", {"data": {"size": 32}})
    assert load_frozen(ckpt).size == (32, 32, 32)
