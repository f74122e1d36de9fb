"""Fine-tuning from a pretrained file: a recorded geometry option the user overrides is said, naming the
option, the file's value and the chosen one; an unset or equal one says nothing."""

from __future__ import annotations

import pytest
import torch

from asa.api.machinery.networks import build_from_config
from asa.io import save_checkpoint
from asa.models import ASA, network_spec

TINY = dict(embed_dim=48, depth=4, num_heads=3, window_size=8)


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    torch.manual_seed(0)
    mae = ASA(img_size=32, pos_mode="mirror", lr_axis=0, decoder_dim=24, decoder_depth=1, decoder_num_heads=2, **TINY)
    path = tmp_path_factory.mktemp("enc") / "encoder.pt"
    save_checkpoint(path, {"encoder": mae.encoder_state_dict(), "network": network_spec(mae)})
    return path


@pytest.mark.parametrize("pos_mode, lr_axis, notes", [
    ("paper", None, ["model.pos_mode=paper overrides the pos_mode=mirror that {path} was pretrained with"]),
    (None, 1, ["model.lr_axis=1 overrides the lr_axis=0 that {path} was pretrained with"]),
    ("none", 2, ["model.pos_mode=none overrides", "model.lr_axis=2 overrides"]),
    (None, None, []), ("mirror", 0, []),
])
def test_an_overridden_recorded_geometry_option_is_said(export, capsys, pos_mode, lr_axis, notes):
    net = build_from_config({"pretrained": str(export), "pos_mode": pos_mode, "lr_axis": lr_axis, **TINY}, {},
                            in_channels=1, out_channels=2, crop=None)
    err = capsys.readouterr().err
    assert (net.pos_mode, network_spec(net)["kwargs"]["lr_axis"]) == (pos_mode or "mirror", 0 if lr_axis is None
                                                                      else lr_axis)
    for note in notes:
        assert "[asa] note: " + note.format(path=export) in err
    assert err.count("[asa] note:") == len(notes)
