"""Crops and sliding windows start on the brain frame's patch lattice, and the network is told where
(non-RAS input, brain off the volume's centre)."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

from asa.data import Case, build_segmentation_dataset, get_task, load_volume, preprocess_for_inference
from asa.eval.inference import predict_volume

PATCH, REF = 8, 32  # reference grid 4³ patches = 32³ voxels


@pytest.fixture(scope="module")
def lps_case(tmp_path_factory):
    """An IBSR-like case stored in LPS orientation whose brain sits off the volume's centre."""
    root = tmp_path_factory.mktemp("lps")
    shape = (44, 52, 40)  # canonical RAS grid
    grid = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"))
    centre = np.array([15.0, 30.0, 17.0])
    radii = np.array([11.0, 15.0, 12.0])
    brain = (((grid - centre[:, None, None, None]) / radii[:, None, None, None]) ** 2).sum(0) <= 1
    rng = np.random.default_rng(0)
    image = np.where(brain, 100 + 20 * rng.standard_normal(shape), 0).astype(np.float32)
    label = np.where(brain, 2, 0).astype(np.int16)
    label[brain & (grid[0] < 12)] = 3
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])  # stored as L, P, S: flip the canonical axes 0 and 1
    to_file = lambda a: np.ascontiguousarray(a[::-1, ::-1, :])  # noqa: E731
    affine[:3, 3] = [shape[0] - 1, shape[1] - 1, 0]
    nib.save(nib.Nifti1Image(to_file(image), affine), root / "t1.nii.gz")
    nib.save(nib.Nifti1Image(to_file(label), affine), root / "seg.nii.gz")
    case = Case(id="lps", images={"t1": root / "t1.nii.gz"}, label=root / "seg.nii.gz")
    assert load_volume(root / "t1.nii.gz").original_axcodes == ("L", "P", "S")
    # the reference grid's origin, from the canonical brain mask's bounding box
    idx = np.argwhere(brain)
    bbox_centre = (idx.min(0) + idx.max(0)) / 2
    origin = np.floor(bbox_centre - (REF - 1) / 2 + 0.5).astype(int)
    return case, origin


def _region(image: torch.Tensor, start: np.ndarray, size: int) -> torch.Tensor:
    """image[:, start:start+size] per axis, zero where it leaves the volume."""
    out = torch.zeros(image.shape[0], size, size, size)
    src, dst = [], []
    for a in range(3):
        lo, hi = max(start[a], 0), min(start[a] + size, image.shape[a + 1])
        src.append(slice(lo, hi))
        dst.append(slice(lo - start[a], hi - start[a]))
    out[(slice(None), *dst)] = image[(slice(None), *src)]
    return out


class Spy(nn.Module):
    """A brain-frame network stand-in that records the windows and offsets it receives."""

    patch_size, reference_grid, spe_frame = PATCH, (REF // PATCH,) * 3, "brain"

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, x: torch.Tensor, offsets: torch.Tensor | None = None) -> torch.Tensor:
        assert offsets is not None and offsets.dtype == torch.int64 and offsets.shape == (x.shape[0], 3)
        self.calls.append((x.clone(), offsets.clone()))
        return torch.zeros(x.shape[0], 4, *x.shape[2:]) + self.dummy


def test_sliding_windows_start_on_the_lattice_and_carry_their_offsets(lps_case):
    case, origin = lps_case
    image, reference = preprocess_for_inference(case, get_task("ibsr"))
    np.testing.assert_array_equal(
        np.floor(np.asarray(reference.meta["brain_centre"]) - (REF - 1) / 2 + 0.5).astype(int), origin)
    spy = Spy()
    probs = predict_volume(spy, image, roi_size=(REF,) * 3, multilabel=False, overlap=0.3,
                           centre=reference.meta["brain_centre"])
    assert probs.shape == (4, *image.shape[1:])
    seen = set()
    for windows, offsets in spy.calls:
        for window, offset in zip(windows, offsets):
            start = origin + offset.numpy() * PATCH  # where the offset says the window is, in the canonical image
            torch.testing.assert_close(window, _region(image, start, REF), rtol=0, atol=0)
            seen.add(tuple(offset.tolist()))
    assert (0, 0, 0) in seen or len(seen) > 4  # several windows, every one on the lattice
    assert len(seen) == sum(len(w) for w, _ in spy.calls)


def test_training_crops_start_on_the_lattice(lps_case):
    case, origin = lps_case
    task = get_task("ibsr")
    image = build_segmentation_dataset([case], task, train=False)[0]["image"]
    plain = build_segmentation_dataset([case], task, train=True, patch_size=16, samples_per_case=8, seed=0,
                                       reference_size=REF, rotate_deg=0, zoom=(1.0, 1.0), flip_axes=(), gamma=(1.0, 1.0))
    for crop in plain[0]:
        start = origin + crop["offset"].numpy() * PATCH
        # (tolerance: the no-op gamma/rotation still resample in float32; a one-voxel shift is off by O(1))
        torch.testing.assert_close(crop["image"], _region(image, start, 16), rtol=0, atol=1e-4)
    flipped = build_segmentation_dataset([case], task, train=True, patch_size=16, samples_per_case=8, seed=0,
                                         reference_size=REF, rotate_deg=0, zoom=(1.0, 1.0), flip_axes=(0,),
                                         gamma=(1.0, 1.0))
    mirrored = 0
    for crop in flipped[0]:
        start = origin + crop["offset"].numpy() * PATCH
        if not torch.allclose(crop["image"], _region(image, start, 16), rtol=0, atol=1e-4):
            # a left-right flip turns the crop into its mirror crop: offset W - G - o along axis 0
            o = crop["offset"].clone()
            o[0] = REF // PATCH - 16 // PATCH - o[0]
            torch.testing.assert_close(crop["image"].flip(1), _region(image, origin + o.numpy() * PATCH, 16),
                                       rtol=0, atol=1e-4)
            mirrored += 1
    assert 0 < mirrored < 8
