"""The encoder module shared by ASA and ASASegmenter, and files written before it was one module."""

from __future__ import annotations

import torch

from asa.models import ASA, ASASegmenter, SWViTEncoder
from asa.models.encoder import upgrade_legacy_keys

TINY = dict(img_size=32, embed_dim=48, depth=4, num_heads=3, window_size=8)


def _legacy(state: dict) -> dict:
    """A state dict as written before the encoder was one module (stem beside it as patch_embed.*)."""
    return {k.replace("encoder.patch_embed.", "patch_embed."): v for k, v in state.items()}


def _mae(seed: int = 0) -> ASA:
    torch.manual_seed(seed)
    return ASA(**TINY, decoder_dim=48, decoder_depth=2, decoder_num_heads=3)


def test_both_networks_hold_the_same_encoder_module():
    mae, seg = _mae(), ASASegmenter(**TINY, in_channels=1)
    assert type(mae.encoder) is type(seg.encoder) is SWViTEncoder
    assert set(mae.encoder_state_dict()) == {f"encoder.{k}" for k in seg.encoder.state_dict()}
    # one place holds the stem and the geometry: the encoder
    assert not hasattr(mae, "patch_embed") and not hasattr(seg, "patch_embed")
    assert (seg.img_size, seg.grid, seg.reference_grid) == (seg.encoder.img_size, seg.encoder.grid, seg.encoder.reference_grid)
    # the stem comes first among the encoder's parameters (optimizer states keep their order)
    assert next(iter(dict(seg.named_parameters()))) == "encoder.patch_embed.proj.weight"


def test_pretraining_and_fine_tuning_paths_of_the_encoder_agree():
    enc = _mae().encoder.eval()
    x = torch.randn(2, 1, 32, 32, 32)
    with torch.no_grad():
        every = torch.arange(64).expand(2, -1)
        full = enc.encode(x)
        # visible tokens = all tokens: the masked path is the full path
        torch.testing.assert_close(enc.encode(x, ids_keep=every), full, rtol=0, atol=0)
        # offset 0 in the brain frame is the pretraining table
        torch.testing.assert_close(enc.encode(x, offsets=torch.zeros(2, 3, dtype=torch.long)), full, rtol=0, atol=0)
        out, hidden = enc.encode(x, hidden_indices=(0, 2))
        shifted = enc.encode(x, offsets=torch.tensor([[1, 0, 0], [0, 0, 0]]))
    torch.testing.assert_close(out, full, rtol=0, atol=0)
    assert [h.shape for h in hidden] == [(2, 64, 48)] * 2
    assert not torch.equal(shifted[0], full[0]) and torch.equal(shifted[1], full[1])


def test_state_dicts_written_before_the_encoder_module_still_load():
    mae = _mae(0)
    fresh = _mae(1)
    fresh.load_state_dict(_legacy(mae.state_dict()))  # strict: every key renamed, none left over
    for key, value in mae.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    torch.manual_seed(2)
    seg = ASASegmenter(**TINY, in_channels=2, out_channels=3)
    torch.manual_seed(3)
    other = ASASegmenter(**TINY, in_channels=2, out_channels=3).eval()
    other.load_state_dict(_legacy(seg.state_dict()))
    x = torch.randn(1, 2, 32, 32, 32)
    with torch.no_grad():
        assert torch.equal(other(x), seg.eval()(x))
    renamed = upgrade_legacy_keys({"module.patch_embed.proj.bias": 1, "module.head.bias": 2}, "module.")
    assert renamed == {"module.encoder.patch_embed.proj.bias": 1, "module.head.bias": 2}


def test_a_legacy_encoder_export_loads_with_every_key_reported(tmp_path):
    mae = _mae()
    legacy = _legacy(mae.encoder_state_dict())
    assert "patch_embed.proj.weight" in legacy
    config = {"img_size": 32, "patch_size": 8, "pos_mode": "mirror"}  # as exports recorded it then
    torch.save({"encoder": legacy, "config": config}, tmp_path / "e.pt")
    seg = ASASegmenter(**TINY, in_channels=4)
    report = seg.load_pretrained(tmp_path / "e.pt", verbose=False)
    assert set(report.loaded) == set(mae.encoder_state_dict()) and not report.missing and not report.unexpected
    assert report.adapted == ["encoder.patch_embed.proj.weight 1 -> 4 channels"]
    for key, value in mae.encoder.state_dict().items():
        if key != "patch_embed.proj.weight":
            assert torch.equal(seg.encoder.state_dict()[key], value), key
