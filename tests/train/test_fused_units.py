"""Fused units (`asa.models.units.Units`): one network architecture, validated as one
(`asa.api.tasks.segmentation.DiceValidator.of_units`): each case read, cut into windows and blended once for K
networks, each unit's probabilities and Dice its own."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from asa.api.tasks.segmentation import DiceValidator
from asa.data import Task, get_task
from asa.eval.inference import predict_volume
from asa.models.cnn.resenc import resenc_unet
from asa.train.distributed import DistEnv
from asa.models.units import Units

WT = Task("wt", ("t1",), ("WT",), True, 1, (0, 1), regions=((1,),))


class Scaled(nn.Module):
    """Logits = the input times a weight plus a bias, channel by channel (exact under the vmap: one multiply-add)."""

    def __init__(self, weight: float, bias: float = 0.0, channels: int = 1) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels, 1, 1, 1), weight))
        self.bias = nn.Parameter(torch.full((channels, 1, 1, 1), bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight + self.bias


def _cube() -> dict:
    mask = torch.zeros(1, 16, 16, 16)
    mask[:, 4:12, 4:12, 4:12] = 1
    return {"image": mask * 20 - 10, "label": mask}


def test_each_unit_is_scored_on_its_own_channels_hand_computed():
    """Three units on one case of ±10: one reads the cube (Dice 1), one its complement (Dice 0), one everything (a
    bias of +15: Dice 2·512/(512 + 4096))."""
    units = [Scaled(1.0), Scaled(-1.0), Scaled(1.0, 15.0)]
    validate = DiceValidator([_cube()], task=WT, roi_size=(16, 16, 16), env=DistEnv())
    fused = validate.of_units(Units.of(units), 3)
    expected = [1.0, 0.0, 2 * 512 / (512 + 4096)]
    assert [round(m["dice_WT"], 12) for m in fused] == [round(e, 12) for e in expected]
    assert [m["dice"] for m in fused] == [validate(unit)["dice"] for unit in units]  # alone: the same, exactly


def test_a_softmax_unit_is_activated_alone_and_keeps_its_background_outside_the_box():
    """Two two-class units side by side: each unit's softmax over its own two channels (a softmax over all four
    would halve every probability), and outside the image's non-zero box each unit's background is 1."""
    image = torch.zeros(1, 20, 20, 20)
    image[:, 2:18, 2:18, 2:18] = torch.randn(1, 16, 16, 16, generator=torch.Generator().manual_seed(0))
    units = [Scaled(2.0, 0.5, channels=2), Scaled(-3.0, 0.0, channels=2)]
    with torch.no_grad():
        units[0].weight[1] = -1.0
        units[1].bias[0] = 1.0
    stacked = Units.of(units)
    with torch.no_grad():
        both = predict_volume(stacked, image, roi_size=(8, 8, 8), multilabel=False, overlap=0.5, sw_batch_size=3,
                              device="cpu", units=2)
        alone = [predict_volume(u, image, roi_size=(8, 8, 8), multilabel=False, overlap=0.5, sw_batch_size=3,
                                device="cpu") for u in units]
    assert both.shape == (4, 20, 20, 20)
    for own, one in zip(both.chunk(2), alone):
        assert torch.equal(own, one)
        assert torch.allclose(own.sum(0), torch.ones(20, 20, 20))
        assert bool((own[0, :2] == 1).all()) and bool((own[1, :2] == 0).all())  # outside the box: background
    assert not torch.allclose(alone[0], alone[1])  # the units differ


@pytest.mark.slow  # two ResEnc tiny units over two cases, fused and alone (about 3 CPU-s)
def test_fused_resenc_units_validate_within_rounding_of_each_alone():
    """The study's network: the probabilities of two differently initialised units, validated as one (a grouped
    convolution under the vmap) and each alone (dense), agree to float rounding; their Dice too."""
    task = get_task("wmh")
    torch.manual_seed(0)
    units = [resenc_unet(img_size=16, in_channels=2, out_channels=2, size="tiny").eval() for _ in range(2)]
    generator = torch.Generator().manual_seed(1)
    cases = []
    for _ in range(2):
        label = (torch.rand(1, 24, 20, 28, generator=generator) > 0.7).long()
        cases.append({"image": torch.randn(2, 24, 20, 28, generator=generator) + label, "label": label})
    fused_net = Units.of(units)
    with torch.no_grad():
        both = predict_volume(fused_net, cases[0]["image"], roi_size=(16, 16, 16), multilabel=False, overlap=0.5,
                              sw_batch_size=2, device="cpu", units=2)
        alone = [predict_volume(u, cases[0]["image"], roi_size=(16, 16, 16), multilabel=False, overlap=0.5,
                                sw_batch_size=2, device="cpu") for u in units]
        for own, one in zip(both.chunk(2), alone):
            assert float((own - one).abs().max()) < 1e-5
        assert float((alone[0] - alone[1]).abs().max()) > 1e-2
        validate = DiceValidator(cases, task=task, roi_size=(16, 16, 16), env=DistEnv(), overlap=0.5)
        fused = validate.of_units(fused_net, 2)
        for metrics, unit in zip(fused, units):
            assert metrics.keys() == validate(unit).keys()
            assert all(abs(metrics[k] - v) < 1e-3 for k, v in validate(unit).items())


def test_units_of_another_network_are_refused_naming_them():
    units = [nn.Conv3d(1, 2, 3), nn.Conv3d(1, 2, 3), nn.Conv3d(2, 2, 3)]  # the third: an input channel more
    with pytest.raises(ValueError, match=r"unit\(s\) \[2\]'s parameters differ from unit 0's by name or shape"):
        Units.of(units)
