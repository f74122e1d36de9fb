"""R-MSA and the focal region loss inside SW-ViT, ASA and ASASegmenter."""

from __future__ import annotations

import pytest
import torch

from asa.models import ASA, ASASegmenter, EncoderSettings, RegionAttention, SWViT, patch_regions, patchify, unpatchify
from asa.models.swvit.attention import LinearWindowAttention

TINY = dict(embed_dim=24, depth=4, num_heads=2, decoder_dim=24, decoder_depth=2, decoder_num_heads=2, window_size=8)


@pytest.mark.parametrize(
    ("layout", "kinds"),
    [("none", "L S L S"), ("alternate", "L R S R"), ("all", "R R R R")],
)
def test_block_layouts(layout, kinds):
    vit = SWViT(EncoderSettings(window_size=8, region_attention=layout).blocks(24, 4, 2))
    got = []
    for block in vit.blocks:
        if isinstance(block.attn, RegionAttention):
            got.append("R")
        else:
            assert isinstance(block.attn, LinearWindowAttention)
            got.append("S" if block.attn.shift else "L")
    assert " ".join(got) == kinds
    assert vit.uses_regions == (layout != "none")
    with pytest.raises(ValueError, match="region_attention"):
        EncoderSettings(region_attention="odd").blocks(24, 4, 2)


def _regions(b: int, size: int = 32) -> torch.Tensor:
    """Voxel labels [B, 1, size³]: four slabs along axis 0 (whole patches), shuffled per sample."""
    slab = torch.arange(size) // (size // 4)
    maps = [torch.randperm(4)[slab][:, None, None].expand(size, size, size) for _ in range(b)]
    return torch.stack(maps)[:, None]


def test_encoder_sees_region_ids_of_the_visible_tokens():
    """With R-MSA everywhere, a visible token's latent depends on visible tokens of its own region only."""
    torch.manual_seed(0)
    model = ASA(img_size=32, region_attention="all", loss_weighting="uniform", **TINY).eval()
    x = torch.randn(1, 1, 32, 32, 32)
    regions = _regions(1)
    patch_ids = patchify(regions, 8).mode(-1).values  # every patch lies in one slab
    mask, ids_keep = model.random_masking(1, x.device)
    ids = patch_regions(regions, 8)
    assert torch.equal(ids, patch_ids)
    base = model.forward_encoder(x, ids_keep, ids)
    changed = int(ids_keep[0, 0])  # the first visible patch, in slab/region ids[0, changed]
    y = patchify(x, 8)
    y[0, changed] += 1.0
    out = model.forward_encoder(unpatchify(y, 8, (4, 4, 4), 1), ids_keep, ids)
    moved = (out - base).abs().amax(-1)[0] > 1e-6  # [N_vis]
    same_region = ids[0, ids_keep[0]] == ids[0, changed]
    assert moved[0] and not moved[~same_region].any()


@pytest.mark.parametrize("weighting", ["focal_region", "attentive"])
def test_asa_with_regions_trains(weighting):
    torch.manual_seed(0)
    model = ASA(img_size=32, region_attention="alternate", loss_weighting=weighting, **TINY)
    x, regions = torch.randn(2, 1, 32, 32, 32), _regions(2)
    out = model(x, regions)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert all(p.grad is not None for n, p in model.named_parameters() if "encoder.blocks.1.attn" in n)
    assert (out.weights[out.mask == 0] == 0).all() and (out.weights >= 0).all()
    with pytest.raises(ValueError, match="needs regions"):
        model(x)


def test_focal_region_mae_loss_by_hand():
    """β = 0: the masked L1 over the voxels of masked patches."""
    torch.manual_seed(0)
    model = ASA(img_size=32, loss_weighting="focal_region", focal_beta=0.0, **TINY)
    assert model.loss_weighting == "focal_region"
    x, regions = torch.randn(2, 1, 32, 32, 32), _regions(2)
    out = model(x, regions)
    l1 = (out.pred - patchify(x, 8)).abs().mean(-1)  # [B, N]
    expected = (l1 * out.mask).sum() / out.mask.sum()
    torch.testing.assert_close(out.loss, expected)
    with pytest.raises(ValueError, match="loss_weighting"):
        ASA(img_size=32, loss_weighting="focal", **TINY)


@pytest.mark.slow
def test_segmenter_with_region_attention():
    torch.manual_seed(0)
    net = ASASegmenter(img_size=32, out_channels=3, region_attention="alternate", feature_size=8,
                       embed_dim=24, depth=4, num_heads=2, window_size=8)
    x = torch.randn(2, 1, 32, 32, 32)
    logits = net(x, regions=_regions(2))
    assert logits.shape == (2, 3, 32, 32, 32)
    with pytest.raises(ValueError, match="needs regions"):
        net(x)
    plain = ASASegmenter(img_size=32, out_channels=3, feature_size=8, embed_dim=24, depth=4, num_heads=2, window_size=8)
    assert net.capabilities.regions and not plain.capabilities.regions and plain(x).shape == logits.shape
