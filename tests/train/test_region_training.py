"""Region maps in fine-tuning: the focal region term, region attention in the step and in sliding windows."""

from __future__ import annotations

import pytest
import torch

from asa.api.tasks.segmentation import segmentation_step
from asa.eval.inference import predict_volume
from asa.losses import FocalRegionLoss, SegmentationLoss
from asa.models import ASASegmenter

SEG = dict(feature_size=8, embed_dim=24, depth=4, num_heads=2, window_size=8)


def _regions(b: int, size: int = 32) -> torch.Tensor:
    """[B, 1, size³]: four slabs along axis 0."""
    return (torch.arange(size) // (size // 4)).view(1, 1, -1, 1, 1).expand(b, 1, size, size, size).clone()


def test_focal_term_is_added_with_its_weight_and_skips_ignored_voxels():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, 8)
    target = torch.randint(-1, 3, (2, 1, 8, 8, 8))
    regions = torch.randint(0, 4, (2, 1, 8, 8, 8))
    base = SegmentationLoss(multilabel=False)(logits, target, regions)
    with_focal = SegmentationLoss(multilabel=False, focal_weight=0.5, focal_beta=2.0)
    keep = target != -1
    onehot = torch.nn.functional.one_hot(target[:, 0].clamp_min(0), 3).movedim(-1, 1).float()
    term = FocalRegionLoss(2.0)(torch.softmax(logits, 1), onehot, regions, keep)[0]
    torch.testing.assert_close(with_focal(logits, target, regions), base + 0.5 * term)
    # ignored voxels carry no focal error: changing their logits leaves the term unchanged
    changed = logits + 5.0 * (~keep).float() * torch.randn_like(logits)
    torch.testing.assert_close(with_focal.focal_term(changed, target, regions), with_focal.focal_term(logits, target, regions))
    with pytest.raises(ValueError, match="region map"):
        with_focal(logits, target)


def test_multilabel_focal_term_uses_sigmoid_probabilities():
    logits = torch.randn(1, 3, 8, 8, 8)
    target = (torch.rand(1, 3, 8, 8, 8) > 0.5).float()
    regions = torch.randint(0, 2, (1, 1, 8, 8, 8))
    loss = SegmentationLoss(multilabel=True, focal_weight=1.0, focal_beta=0.0)
    torch.testing.assert_close(loss.focal_term(logits, target, regions), (torch.sigmoid(logits) - target).abs().mean())


def test_step_gives_regions_to_a_region_attention_network():
    torch.manual_seed(0)
    net = ASASegmenter(img_size=32, out_channels=3, region_attention="alternate", **SEG)
    batch = {"image": torch.randn(2, 1, 32, 32, 32), "label": torch.randint(0, 3, (2, 1, 32, 32, 32)),
             "region": _regions(2)}
    loss, _ = segmentation_step(SegmentationLoss(multilabel=False, focal_weight=1.0))(net, batch)
    loss.backward()
    assert torch.isfinite(loss) and net.encoder.blocks[1].attn.qkv.weight.grad is not None
    with pytest.raises(ValueError, match="needs regions"):
        segmentation_step(SegmentationLoss(multilabel=False))(net, {k: batch[k] for k in ("image", "label")})


@pytest.mark.slow
def test_sliding_windows_carry_the_region_map():
    torch.manual_seed(0)
    net = ASASegmenter(img_size=32, out_channels=3, region_attention="all", **SEG).eval()
    image, regions = torch.randn(1, 32, 32, 32), _regions(1)[0]
    got = predict_volume(net, image, roi_size=(32, 32, 32), multilabel=False, regions=regions)
    with torch.no_grad():
        expected = torch.softmax(net(image[None], regions=regions[None]), 1)[0]
    torch.testing.assert_close(got, expected)
    other = predict_volume(net, image, roi_size=(32, 32, 32), multilabel=False, regions=regions.transpose(1, 2))
    assert not torch.allclose(got, other)  # the map is really used (slabs along another axis)
    big = predict_volume(net, torch.randn(1, 40, 36, 32), roi_size=(32, 32, 32), multilabel=False,
                         regions=torch.randint(0, 3, (1, 40, 36, 32)), tta_axes=[0])
    assert big.shape == (3, 40, 36, 32) and torch.isfinite(big).all()
    with pytest.raises(ValueError, match="regions must be"):
        predict_volume(net, image, roi_size=(32, 32, 32), multilabel=False, regions=regions[0])
