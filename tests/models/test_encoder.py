"""The encoder module shared by ASA and ASASegmenter."""

from __future__ import annotations

import inspect

import pytest
import torch

from asa.models import ASA, PRESETS, ASASegmenter, EncoderSettings, SWViTEncoder

TINY = {"img_size": 32, **{k: v for k, v in PRESETS["tiny"].items() if not k.startswith("decoder")}}


def _mae(seed: int = 0) -> ASA:
    torch.manual_seed(seed)
    return ASA(img_size=32, **PRESETS["tiny"])


def test_both_networks_hold_the_same_encoder_module():
    mae, seg = _mae(), ASASegmenter(**TINY, in_channels=1)
    assert type(mae.encoder) is type(seg.encoder) is SWViTEncoder
    assert set(mae.encoder_state_dict()) == {f"encoder.{k}" for k in seg.encoder.state_dict()}
    # one place holds the stem and the geometry: the encoder
    assert not hasattr(mae, "patch_embed") and not hasattr(seg, "patch_embed")
    assert (seg.img_size, seg.grid, seg.reference_grid) == (seg.encoder.img_size, seg.encoder.grid, seg.encoder.reference_grid)


@pytest.mark.slow
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


def test_unwrap_finds_the_network_inside_its_training_wrappers():
    from asa.models import unwrap

    net = torch.nn.Linear(2, 2)
    assert unwrap(net) is net and unwrap(torch.nn.DataParallel(net)) is net
    assert unwrap(torch.compile(torch.nn.DataParallel(net))) is net  # compiled whole, then DDP-like


def test_the_base_preset_is_the_one_source_of_the_default_sizes():
    base, defaults = PRESETS["base"], EncoderSettings()
    assert {k: getattr(defaults, k) for k in ("embed_dim", "depth", "num_heads", "window_size")} == {
        k: base[k] for k in ("embed_dim", "depth", "num_heads", "window_size")}
    decoder = {name: p.default for name, p in inspect.signature(ASA).parameters.items() if name.startswith("decoder")}
    assert decoder == {k: v for k, v in base.items() if k.startswith("decoder")}
    assert base == dict(embed_dim=384, depth=12, num_heads=6, decoder_dim=384, decoder_depth=8, decoder_num_heads=6,
                        window_size=32)  # docs/method.md §1.3
