"""nnU-Net's deep supervision loss: the weights, the label downsampled to each output, plain logits."""

from __future__ import annotations

import pytest
import torch

from asa.losses import DeepSupervisionLoss, deep_supervision_weights
from asa.losses.deep_supervision import downsample_nearest


def test_nnunet_weights_and_label_downsampling():
    assert deep_supervision_weights(1) == [1.0]
    assert deep_supervision_weights(3) == pytest.approx([4 / 7, 2 / 7, 1 / 7])  # 1, 1/2, 1/4 normalised
    with pytest.raises(ValueError):
        deep_supervision_weights(0)
    label = torch.arange(64).reshape(1, 1, 4, 4, 4) - 1  # int64 with a -1 (ignore) at the first voxel
    down = downsample_nearest(label, (2, 2, 2))
    assert down.dtype == torch.int64 and torch.equal(down, label[:, :, ::2, ::2, ::2])  # every other voxel


class Recording(torch.nn.Module):
    """A stand-in loss recording the shapes it sees and returning a known value per output."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, logits, target, regions=None):
        self.seen.append((tuple(logits.shape[2:]), tuple(target.shape[2:]), None if regions is None else
                          tuple(regions.shape[2:])))
        return logits.new_tensor(float(logits.shape[2]))  # 8 for the full-size output, 4, 2 for the heads


def test_the_wrapper_weighs_each_output_against_its_downsampled_label():
    rec = Recording()
    loss = DeepSupervisionLoss(rec, 3)
    outs = [torch.zeros(1, 2, 8, 8, 8), torch.zeros(1, 2, 4, 4, 4), torch.zeros(1, 2, 2, 2, 2)]
    value = loss(outs, torch.zeros(1, 1, 8, 8, 8, dtype=torch.long), torch.zeros(1, 1, 8, 8, 8, dtype=torch.int16))
    assert value.item() == pytest.approx(8 * 4 / 7 + 4 * 2 / 7 + 2 * 1 / 7)
    assert rec.seen == [((8,) * 3,) * 3, ((4,) * 3,) * 3, ((2,) * 3,) * 3]
    assert loss(outs[0], torch.zeros(1, 1, 8, 8, 8, dtype=torch.long)).item() == 8  # eval output: plain loss
    with pytest.raises(ValueError, match="returned 2 outputs"):
        loss(outs[:2], torch.zeros(1, 1, 8, 8, 8, dtype=torch.long))
