"""TensorBoard panels: labelled slices cut through the label's (fine-tuning) or the loss weights'
(pretraining) centre of mass, not the volume centre, so an off-centre lesion is on them."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from asa.api.tasks.segmentation import make_segmentation_panel_fn
from asa.methods.masked_autoencoder import PANEL_ROWS, make_panel_fn
from asa.models import ASA
from asa.train.panels import centre_of_mass, panel_centre, slice_captions, slice_grid

SHAPE = (32, 32, 32)


def _lesion() -> torch.Tensor:
    """An off-centre box: x 3..7, y 20..22, z 10..14 (5 × 3 × 5 voxels), centre of mass (5, 21, 12)."""
    v = torch.zeros(SHAPE)
    v[3:8, 20:23, 10:15] = 1
    return v


def test_centre_of_mass_by_hand():
    assert centre_of_mass(_lesion()) == (5, 21, 12)
    w = torch.zeros(SHAPE)
    w[0, 0, 0], w[4, 9, 30] = 1.0, 3.0  # x: (0·1 + 4·3)/4 = 3; y: 27/4 = 6.75 -> 7; z: 90/4 = 22.5 -> 23 (half up)
    assert centre_of_mass(w) == (3, 7, 23)
    assert centre_of_mass(torch.zeros(SHAPE)) is None


def test_panel_centre_falls_back_to_the_brain_then_the_volume_centre():
    brain = torch.zeros(SHAPE)
    brain[10:13, 4:7, 0:3] = 1
    assert panel_centre(SHAPE, _lesion(), brain) == (5, 21, 12)
    assert panel_centre(SHAPE, torch.zeros(SHAPE), brain) == (11, 5, 1)  # no label: the brain
    assert panel_centre((1, 2, *SHAPE), None, torch.zeros(SHAPE)) == (16, 16, 16)


def _slice_ink(grid: torch.Tensor, blank: torch.Tensor) -> float:
    """What the slices add to a panel: the same panel of an empty volume holds only the labels."""
    return float((grid - blank).sum())


def test_slice_grid_cuts_through_the_voxel_and_labels_rows_and_columns():
    lesion = _lesion()
    at = (5, 21, 12)
    assert slice_captions(at) == ["sagittal x=5", "coronal y=21", "axial z=12"]
    grid = slice_grid({"label": lesion}, at)
    blank = slice_grid({"label": torch.zeros(SHAPE)}, at)
    assert grid.shape == blank.shape and grid.shape[0] == 1 and grid.min() >= 0 and grid.max() <= 1
    assert float(blank.sum()) > 0  # the captions and the row name are drawn
    # the box's sections: sagittal y·z = 3·5, coronal x·z = 5·5, axial x·y = 5·3 voxels
    assert _slice_ink(grid, blank) == 15 + 25 + 15
    # through the volume centre (what the panels cut before) the lesion is not on the panel at all
    mid = (16, 16, 16)
    assert _slice_ink(slice_grid({"label": lesion}, mid), slice_grid({"label": torch.zeros(SHAPE)}, mid)) == 0
    # another slice index or row name changes the labels
    assert not torch.equal(blank, slice_grid({"label": torch.zeros(SHAPE)}, (6, 21, 12)))
    assert not torch.equal(blank, slice_grid({"prediction": torch.zeros(SHAPE)}, at))
    with pytest.raises(ValueError, match="outside the volume"):
        slice_grid({"label": lesion}, (32, 0, 0))


class _Constant(nn.Module):
    """A segmentation network that predicts background everywhere (2 classes)."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.tensor([1.0, -1.0]))

    def forward(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        return self.bias.view(1, 2, 1, 1, 1).expand(x.shape[0], 2, *x.shape[2:])


def test_finetuning_panel_cuts_through_the_labels_centre_of_mass():
    image = torch.zeros(1, *SHAPE)
    image[0, 2:30, 2:30, 2:30] = torch.rand(28, 28, 28) + 0.5  # the brain fills the volume
    label = _lesion().long()[None]  # softmax task: [1, X, Y, Z] classes
    label[0, 20, 20, 20] = -1  # an ignored voxel is not foreground
    panel = make_segmentation_panel_fn({"image": image, "label": label}, multilabel=False, roi_size=(16,) * 3)
    images = panel(_Constant(), 0)
    assert set(images) == {"finetune/1_image", "finetune/2_label", "finetune/3_prediction"}
    at = (5, 21, 12)  # centre of mass of the box (the ignored voxel left out)
    lesion = _lesion()
    lesion[20, 20, 20] = 0  # -1 is clamped to 0 on the label panel
    expected = slice_grid({"label": lesion}, at)  # class 1 of 2 shows as 1.0
    assert torch.equal(images["finetune/2_label"], expected)
    # multilabel targets [K, X, Y, Z]: foreground is any channel
    multi = torch.stack([_lesion(), torch.zeros(SHAPE)])
    panel = make_segmentation_panel_fn({"image": image, "label": multi}, multilabel=True, roi_size=(16,) * 3)
    assert torch.equal(panel(_Constant(), 0)["finetune/2_label"], slice_grid({"label": _lesion() / 2}, at))


def test_pretraining_panel_cuts_through_the_loss_weights_inside_the_brain():
    torch.manual_seed(0)
    model = ASA(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, decoder_dim=32, decoder_depth=1,
                decoder_num_heads=2, window_size=8).eval()
    x = torch.zeros(1, *SHAPE)
    x[0, 0:12, 16:32, 8:24] = torch.randn(12, 16, 16)  # a brain in one corner: the AR weights sit there
    with torch.no_grad():
        torch.manual_seed(1)  # the same mask in both forwards
        images = make_panel_fn(x)(model, 0)
        torch.manual_seed(1)
        out = model(x[None])
    assert list(images) == [f"pretrain/{r}" for r in PANEL_ROWS]
    weights = model.unpatchify((out.weights / out.weights.max())[..., None].expand(-1, -1, 8 ** 3))[0, 0]
    at = centre_of_mass(weights * (x[0] != 0))
    assert at[0] < 12 and at[1] >= 16  # off the volume centre, inside the brain
    assert torch.equal(images["pretrain/4_ar_weights"], slice_grid({"AR weights": weights.clamp(0, 1)}, at))


def test_sa_swin_panel_is_one_labelled_grid_through_the_views_brain():
    from asa.models import SymmetryAwareHead
    from asa.methods.sa_swin import make_sah_panel_fn

    torch.manual_seed(0)
    head = SymmetryAwareHead(feature_size=12, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 4), drop_patch=8).eval()
    x = torch.zeros(1, *SHAPE)
    x[0, 4:28, 4:28, 4:28] = torch.randn(24, 24, 24)
    with torch.no_grad():
        images = make_sah_panel_fn(x)(head, 0)
    (tag, grid), = images.items()
    assert tag == "inpainting/panel"
    blank = torch.zeros(SHAPE)
    names = ("rotated view", "patches dropped", "reconstruction")
    assert grid.shape == slice_grid(dict.fromkeys(names, blank), (16, 16, 16)).shape  # three labelled rows
