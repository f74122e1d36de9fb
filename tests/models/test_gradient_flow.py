"""How the fine-tuning gradient reaches ASASegmenter's SW-ViT encoder, against MONAI's UNETR of the
same crop and width (scripts/gradient_share.py measures the same on phantoms)."""

from __future__ import annotations

import math

import pytest
import torch
from monai.networks.nets import UNETR

from asa.losses import SegmentationLoss
from asa.models import PRESETS, ASASegmenter

ENC = {k: v for k, v in PRESETS["tiny"].items() if not k.startswith("decoder")}


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed 32³ batch: Gaussian noise whose label is its intensity bin (4 classes)."""
    x = torch.randn(1, 1, 32, 32, 32, generator=torch.Generator().manual_seed(0))
    return x, torch.bucketize(x, torch.tensor([-0.5, 0.0, 0.5]))


def _rms(net: torch.nn.Module, prefix: str, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Per-weight RMS gradient of the encoder (``prefix``) and of the rest, Dice + CE on (x, y)."""
    SegmentationLoss(multilabel=False)(net(x), y).backward()
    sums = {True: [0.0, 0], False: [0.0, 0]}
    for name, p in net.named_parameters():
        if p.grad is not None:
            part = sums[name.startswith(prefix)]
            part[0] += p.grad.double().pow(2).sum().item()
            part[1] += p.numel()
    return math.sqrt(sums[True][0] / sums[True][1]), math.sqrt(sums[False][0] / sums[False][1])


@pytest.mark.slow
def test_decoder_takes_raw_hidden_states_and_the_normed_output():
    """UNETR's convention: the skips are the raw residual stream of blocks (k+1)·d/4 − 1 (position
    code included), only the deepest input is the encoder's final LayerNorm (unit RMS per token)."""
    torch.manual_seed(0)
    net = ASASegmenter(img_size=32, out_channels=2, **ENC).eval()
    blocks, inputs = {}, {}
    for i, block in enumerate(net.encoder.blocks):
        block.register_forward_hook(lambda m, a, out, i=i: blocks.__setitem__(i, out))
    for name in ("skip1", "skip2", "bottleneck"):
        getattr(net, name).register_forward_pre_hook(lambda m, a, name=name: inputs.__setitem__(name, a[0]))
    with torch.no_grad():
        net(torch.randn(2, 1, 32, 32, 32))
    volume = lambda t: t.transpose(1, 2).reshape(2, net.embed_dim, *net.grid)  # noqa: E731 [B, N, C] -> [B, C, G]
    first, second, third = net.hidden_indices
    torch.testing.assert_close(inputs["skip1"], volume(blocks[first]))
    torch.testing.assert_close(inputs["skip2"], volume(blocks[second]))
    z3, z4 = inputs["bottleneck"].split(net.embed_dim, dim=1)
    torch.testing.assert_close(z3, volume(blocks[third]))
    tokens = z4.flatten(2)  # [B, C, N]: per token over channels
    torch.testing.assert_close(tokens.mean(1), torch.zeros_like(tokens[:, 0]), atol=1e-5, rtol=0)
    torch.testing.assert_close(tokens.var(1, unbiased=False), torch.ones_like(tokens[:, 0]), atol=1e-3, rtol=0)
    assert volume(blocks[third]).pow(2).mean() > 1.0  # raw: the residual stream carries the SPE (RMS 1/√2)


@pytest.mark.slow
def test_encoder_gradient_per_weight_is_within_a_factor_of_unetrs():
    """On one batch the encoder's per-weight gradient (relative to its decoder's) stays within 16x of
    UNETR's of the same width (scripts/gradient_share.py: 4.8x on random data, 5-6.5x on phantoms,
    from the method's 8³ patches, unit sinusoidal code and Xavier stem, docs/method.md §1.1–1.3); every
    encoder block gets gradient; and the raw-image skip takes the rest: without it the encoder's share
    grows."""
    x, y = _batch()
    torch.manual_seed(0)
    asa = ASASegmenter(img_size=32, out_channels=4, **ENC)
    torch.manual_seed(0)
    unetr = UNETR(in_channels=1, out_channels=4, img_size=32, feature_size=16, hidden_size=ENC["embed_dim"],
                  mlp_dim=4 * ENC["embed_dim"], num_heads=ENC["num_heads"], norm_name="instance", res_block=True)
    enc, dec = _rms(asa, "encoder.", x, y)
    ref_enc, ref_dec = _rms(unetr, "vit.", x, y)
    assert enc / dec > (ref_enc / ref_dec) / 16
    for i, block in enumerate(asa.encoder.blocks):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in block.parameters()), f"block {i}"
    torch.manual_seed(0)
    no_skip = ASASegmenter(img_size=32, out_channels=4, input_skip="none", **ENC)
    enc_no_skip, dec_no_skip = _rms(no_skip, "encoder.", x, y)
    assert enc_no_skip / dec_no_skip > 2 * enc / dec
