from __future__ import annotations

import pytest
import torch

from asa.models import ASA, PRESETS, ASASegmenter
from asa.train import CheckpointError

ENC = {k: v for k, v in PRESETS["tiny"].items() if not k.startswith("decoder")}


def _segmenter(**kw):
    return ASASegmenter(img_size=32, **{**ENC, **kw})


def test_full_resolution_logits_and_evenly_spaced_skips():
    net = _segmenter(in_channels=2, out_channels=4)
    assert net(torch.randn(1, 2, 32, 32, 32)).shape == (1, 4, 32, 32, 32)
    assert ASASegmenter(img_size=32, **{**ENC, "depth": 12}).hidden_indices == (2, 5, 8)
    with pytest.raises(ValueError, match="expects input"):
        net(torch.randn(1, 1, 32, 32, 32))


@pytest.mark.parametrize("export", [False, True])
def test_all_encoder_keys_load_from_pretraining(tmp_path, export):
    mae = ASA(img_size=32, **PRESETS["tiny"])
    path = tmp_path / "ckpt.pt"
    if export:
        torch.save({"encoder": mae.encoder_state_dict()}, path)
    else:
        torch.save({"model": {f"module.{k}": v for k, v in mae.state_dict().items()}, "step": 3}, path)
    net = _segmenter(out_channels=2)
    report = net.load_pretrained(path, verbose=False)
    assert not report.missing and not report.unexpected
    assert set(report.loaded) == set(mae.encoder_state_dict())
    for key, value in mae.encoder_state_dict().items():
        torch.testing.assert_close(net.state_dict()[key], value)


def test_one_channel_stem_is_adapted_to_four(tmp_path):
    mae = ASA(img_size=32, **PRESETS["tiny"])
    torch.save({"encoder": mae.encoder_state_dict()}, tmp_path / "enc.pt")
    net = _segmenter(in_channels=4, out_channels=3)
    report = net.load_pretrained(tmp_path / "enc.pt", verbose=False)
    assert report.adapted
    x = torch.randn(1, 1, 32, 32, 32)
    torch.testing.assert_close(net.patch_embed(x.repeat(1, 4, 1, 1, 1)), mae.patch_embed(x), atol=1e-5, rtol=1e-5)


def test_mismatched_checkpoint_raises(tmp_path):
    other = ASA(img_size=32, **{**PRESETS["tiny"], "embed_dim": 24})
    torch.save({"model": other.state_dict()}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="shape mismatch"):
        _segmenter().load_pretrained(tmp_path / "bad.pt")
    torch.save({"weights": {}}, tmp_path / "empty.pt")
    with pytest.raises(ValueError, match="neither"):
        _segmenter().load_pretrained(tmp_path / "empty.pt")
    with pytest.raises(CheckpointError, match="missing.pt"):
        _segmenter().load_pretrained(tmp_path / "missing.pt")
