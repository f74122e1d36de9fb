"""The MONAI format through asa-export: the model folder of a SwinViT-family encoder holds ``swin_unetr_ssl.pt``, the
layout ``SwinUNETR.load_from`` reads, which sets every SwinViT tensor of MONAI's own network to the encoder's; an
encoder of another family gets no such file (the format names the family it takes)."""

from __future__ import annotations

import torch
from monai.networks.nets import SwinUNETR

from asa.api.export import export_model
from asa.formats.monai import MONAI, MONAI_FILE
from asa.io import save_checkpoint
from asa.models import ASA, PRESETS, build_network, network_spec

SWIN_TINY = dict(feature_size=12, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 4))


def test_a_swin_encoder_folder_holds_swin_unetrs_load_from_layout(tmp_path):
    torch.manual_seed(2)
    net = build_network({"arch": "sa_swin", "kwargs": dict(img_size=[32] * 3, in_channels=1, out_channels=3,
                                                            **SWIN_TINY)})
    save_checkpoint(tmp_path / "last.pt", {"model": net.state_dict(), "network": network_spec(net), "step": 1})
    folder = export_model(tmp_path / "last.pt", tmp_path / "model")
    monai = SwinUNETR(in_channels=1, out_channels=2, **SWIN_TINY)
    monai.load_from(torch.load(folder / MONAI_FILE, weights_only=True))
    own = {k: v for k, v in net.state_dict().items() if k.startswith("swinViT.")}
    assert own and all(torch.equal(monai.state_dict()[k], v) for k, v in own.items())
    assert f"`{MONAI_FILE}` is the encoder in the layout MONAI's `SwinUNETR.load_from` reads" in (
        folder / "README.md").read_text()


def test_another_familys_encoder_gets_no_monai_file(tmp_path):
    mae = ASA(img_size=32, **PRESETS["tiny"])
    assert MONAI.fault(network_spec(mae)) == "a 'asa_pretrain' network (swvit family); the monai export takes the swin family"
    save_checkpoint(tmp_path / "last.pt", {"model": mae.state_dict(), "network": network_spec(mae), "step": 1})
    assert not (export_model(tmp_path / "last.pt", tmp_path / "model") / MONAI_FILE).exists()
