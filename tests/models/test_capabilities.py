"""Networks declare what they take and offer (`asa.models.Capabilities`); callers read the declaration."""
from __future__ import annotations

import pytest
import torch
from monai.networks.nets import UNETR

from asa.models import ASA, PRESETS, ASACaseHead, ASASegmenter, Capabilities, capabilities

ENCODER = {k: v for k, v in PRESETS["tiny"].items() if not k.startswith("decoder")}
SPE = "model.pos_mode=mirror (the symmetric position code)"  # a part that assumes a symmetric brain


def test_each_network_declares_what_its_forward_takes():
    brain = ASASegmenter(img_size=32, out_channels=2, region_attention="alternate", **ENCODER)
    crop = ASASegmenter(img_size=32, out_channels=2, spe_frame="crop", **ENCODER)
    assert capabilities(brain) == Capabilities(regions=True, offsets=True, patch_size=8, reference_grid=(4, 4, 4),
                                               zero_encoder=True, symmetry=(SPE,))
    assert (capabilities(crop).offsets, capabilities(crop).regions) == (False, False)
    assert capabilities(ASACaseHead(img_size=32, out_channels=3, **ENCODER)) == Capabilities(
        offsets=True, patch_size=8, reference_grid=(4, 4, 4), crop_lattice=8, symmetry=(SPE,))
    assert capabilities(ASA(img_size=32, loss_weighting="focal_region", **PRESETS["tiny"])) == Capabilities(regions=True)
    # MONAI's networks declare nothing: the image alone, no lattice, no reliance switch
    assert capabilities(UNETR(1, 2, img_size=32, feature_size=8, hidden_size=48, mlp_dim=96, num_heads=4)) == Capabilities()


def test_the_lattice_is_in_voxels_and_read_through_wrappers():
    net = ASASegmenter(img_size=32, out_channels=2, reference_grid=4, **ENCODER)
    assert capabilities(net).lattice == (8, (32, 32, 32))
    assert capabilities(torch.nn.DataParallel(net)) is net.capabilities
    with pytest.raises(ValueError, match="patch_size and reference_grid come together"):
        Capabilities(patch_size=8)
