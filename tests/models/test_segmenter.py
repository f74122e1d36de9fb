from __future__ import annotations

import pytest
import torch

from asa.io import CheckpointError
from asa.models import (ASA, PRESETS, ASASegmenter, EncoderSettings, SWViTSegmenter, network_spec,
                        symmetric_position_encoding)

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
        torch.save({"encoder": mae.encoder_state_dict(), "network": network_spec(mae)}, path)
    else:
        torch.save({"model": {f"module.{k}": v for k, v in mae.state_dict().items()}, "network": network_spec(mae),
                    "step": 3}, path)
    net = _segmenter(out_channels=2)
    report = net.load_pretrained(path, verbose=False)
    assert not report.missing and not report.unexpected
    assert set(report.loaded) == set(mae.encoder_state_dict())
    for key, value in mae.encoder_state_dict().items():
        torch.testing.assert_close(net.state_dict()[key], value)


def test_one_channel_stem_is_adapted_to_four(tmp_path):
    mae = ASA(img_size=32, **PRESETS["tiny"])
    torch.save({"encoder": mae.encoder_state_dict(), "network": network_spec(mae)}, tmp_path / "enc.pt")
    net = _segmenter(in_channels=4, out_channels=3)
    report = net.load_pretrained(tmp_path / "enc.pt", verbose=False)
    assert report.adapted
    x = torch.randn(1, 1, 32, 32, 32)
    torch.testing.assert_close(net.encoder.patch_embed(x.repeat(1, 4, 1, 1, 1)), mae.encoder.patch_embed(x), atol=1e-5, rtol=1e-5)


def test_mismatched_checkpoint_raises(tmp_path):
    other = ASA(img_size=32, **{**PRESETS["tiny"], "embed_dim": 24})
    torch.save({"model": other.state_dict(), "network": network_spec(other)}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="shape mismatch"):
        _segmenter().load_pretrained(tmp_path / "bad.pt")
    torch.save({"weights": {}}, tmp_path / "empty.pt")
    with pytest.raises(ValueError, match="neither"):
        _segmenter().load_pretrained(tmp_path / "empty.pt")
    with pytest.raises(CheckpointError, match="missing.pt"):
        _segmenter().load_pretrained(tmp_path / "missing.pt")


@pytest.mark.slow
def test_forward_takes_per_sample_brain_frame_offsets():
    torch.manual_seed(0)
    net = _segmenter(out_channels=2).eval()
    x = torch.randn(2, 1, 32, 32, 32)
    offsets = torch.tensor([[0, 0, 0], [1, -2, 3]])
    with torch.no_grad():
        both = net(x, offsets=offsets)
        assert torch.equal(net(x[:1]), net(x[:1], offsets=offsets[:1]))  # None = offset 0
        shifted = net(x[1:], offsets=offsets[1:])
        torch.testing.assert_close(both[1:], shifted, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(shifted, net(x[1:]), atol=1e-4)  # the codes moved with the crop
        crop = _segmenter(out_channels=2, spe_frame="crop").eval()
        crop.load_state_dict(net.state_dict())
        assert torch.equal(crop(x[1:], offsets=offsets[1:]), crop(x[1:]))  # ablation: one fixed table
    codes = net.position_codes(offsets[1:])
    expected = symmetric_position_encoding(net.grid, net.embed_dim, offset=(1, -2, 3))
    assert torch.equal(codes[0], expected)
    with pytest.raises(ValueError, match="offsets"):
        net(x, offsets=offsets[:1])
    with pytest.raises(ValueError, match="spe_frame"):
        _segmenter(spe_frame="image")


def test_pretrained_grid_must_match_unless_allowed(tmp_path):
    mae = ASA(img_size=64, **PRESETS["tiny"])
    torch.save({"encoder": mae.encoder_state_dict(), "network": network_spec(mae)}, tmp_path / "enc.pt")
    with pytest.raises(ValueError, match=r"8x8x8 patch grid \(64x64x64 voxels\).*4x4x4 grid \(32x32x32 voxels\)"):
        _segmenter().load_pretrained(tmp_path / "enc.pt", verbose=False)
    with pytest.warns(UserWarning, match="allow_grid_change"):  # the brain frame keeps the pretraining grid
        report = _segmenter(reference_grid=8).load_pretrained(tmp_path / "enc.pt", verbose=False, allow_grid_change=True)
    assert not report.missing
    ASASegmenter(img_size=64, **ENC).load_pretrained(tmp_path / "enc.pt", verbose=False)  # same grid: fine


def _grid4_encoder(path):
    mae = ASA(img_size=32, **PRESETS["tiny"])  # a 4x4x4 patch grid, recorded in the file's network spec
    torch.save({"encoder": mae.encoder_state_dict(), "network": {"arch": "asa_pretrain", "kwargs": mae.network_kwargs}},
               path)
    return path


@pytest.mark.parametrize("allow_grid_change", [False, True])
def test_reference_grid_other_than_the_pretraining_grid_is_refused(tmp_path, allow_grid_change):
    """docs/method.md §1.2: the reference grid is the pretraining grid; on another one every code changes."""
    from asa.api.machinery.networks import build_from_config

    path = _grid4_encoder(tmp_path / "enc.pt")
    both = r"pretrained on a 4x4x4 patch grid.*segmenter.reference_grid is 6x6x6"
    with pytest.raises(ValueError, match=both):
        _segmenter(reference_grid=(6, 6, 6)).load_pretrained(path, verbose=False, allow_grid_change=allow_grid_change)
    model_cfg = {**ENC, "pretrained": str(path)}
    with pytest.raises(ValueError, match=both):
        build_from_config(model_cfg, {"reference_grid": [6, 6, 6], "allow_grid_change": allow_grid_change},
                          in_channels=1, out_channels=2, crop=32)
    # the pretraining grid itself, given or left to follow the file, is accepted
    for reference in ([4, 4, 4], None):
        net = build_from_config(model_cfg, {"reference_grid": reference, "allow_grid_change": allow_grid_change},
                                in_channels=1, out_channels=2, crop=32)
        assert net.reference_grid == (4, 4, 4)


def test_build_from_config_follows_the_pretrained_file(tmp_path):
    from asa.api.machinery.networks import build_from_config

    mae = ASA(img_size=32, **{**PRESETS["tiny"], "pos_mode": "paper", "lr_axis": 2})
    torch.save({"model": mae.state_dict(), "network": network_spec(mae)}, tmp_path / "last.pt")
    model_cfg = {**ENC, "pretrained": str(tmp_path / "last.pt"), "pos_mode": None, "lr_axis": None}
    net = build_from_config(model_cfg, {}, in_channels=1, out_channels=2,
                            crop=None)
    assert (net.img_size, net.pos_mode, net.lr_axis, net.reference_grid) == ((32,) * 3, "paper", 2, (4, 4, 4))
    with pytest.raises(ValueError, match="allow_grid_change"):
        build_from_config(model_cfg, {}, in_channels=1, out_channels=2, crop=64)
    with pytest.warns(UserWarning):
        wide = build_from_config(model_cfg, {"allow_grid_change": True}, in_channels=1, out_channels=2, crop=64)
    assert wide.grid == (8, 8, 8) and wide.reference_grid == (4, 4, 4)  # the brain frame keeps the pretraining grid


def test_relative_position_biases_are_not_decayed():
    from asa.train.optim import param_groups

    net = _segmenter()
    names = net.no_weight_decay()
    assert names and all(n.endswith("rel_pos_bias") for n in names)
    decayed = {id(p) for p in param_groups(net, 0.1)[0]["params"]}
    assert not any(id(p) in decayed for n, p in net.named_parameters() if n in names)


def test_the_segmenter_of_its_parts_and_frames_that_do_not_fit():
    settings = EncoderSettings(img_size=32, **ENC)
    torch.manual_seed(0)
    flat = _segmenter(out_channels=3, spe_frame="crop", reference_grid=6)
    torch.manual_seed(0)
    parts = SWViTSegmenter(settings.encoder(), out_channels=3, feature_size=16, norm_name="instance", input_skip="full",
                           spe_frame="crop", reference_grid=6)
    assert list(parts.state_dict()) == list(flat.state_dict())
    assert parts.reference_grid == flat.reference_grid == (6,) * 3
    assert all(torch.equal(a, b) for a, b in zip(parts.state_dict().values(), flat.state_dict().values()))
    decoder = dict(out_channels=3, feature_size=16, norm_name="instance", input_skip="full")
    with pytest.raises(ValueError, match=r"spe_frame=brain: reference_grid \(6, 6, 6\) must be the encoder's"):
        SWViTSegmenter(settings.encoder(), spe_frame="brain", reference_grid=6, **decoder)
    with pytest.raises(ValueError, match="spe_frame=crop: the encoder's reference grid"):
        SWViTSegmenter(settings.encoder(reference_grid=6), spe_frame="crop", **decoder)
