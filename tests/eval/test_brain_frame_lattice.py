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
from asa.models import Capabilities

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

    patch_size, reference_grid = PATCH, (REF // PATCH,) * 3
    capabilities = Capabilities(offsets=True, patch_size=patch_size, reference_grid=reference_grid)

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, x: torch.Tensor, offsets: torch.Tensor | None = None) -> torch.Tensor:
        assert offsets is not None and offsets.dtype == torch.int64 and offsets.shape == (x.shape[0], 3)
        self.calls.append((x.clone(), offsets.clone()))
        return torch.zeros(x.shape[0], 4, *x.shape[2:]) + self.dummy


@pytest.mark.slow
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
    plain = build_segmentation_dataset([case], task, train=True, crop=16, samples_per_case=8, seed=0,
                                       reference_size=REF, rotate_deg=0, zoom=(1.0, 1.0), flip_axes=(), gamma=(1.0, 1.0))
    for crop in plain[0]:
        start = origin + crop["offset"].numpy() * PATCH
        # (tolerance: the no-op gamma/rotation still resample in float32; a one-voxel shift is off by O(1))
        torch.testing.assert_close(crop["image"], _region(image, start, 16), rtol=0, atol=1e-4)
    flipped = build_segmentation_dataset([case], task, train=True, crop=16, samples_per_case=8, seed=0,
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


class LatticeProbe(nn.Module):
    """A brain-frame network stand-in whose output at a voxel says which patch of the reference
    lattice that voxel lay in: channel a is the patch's reference coordinate along axis a, folded
    about the reference centre (a flip along a sends the lattice onto its mirror, so this is what a
    flip keeps); the last two channels are the voxel's real position code (lr_axis 0, two sinusoids)."""

    patch_size, reference_grid = 4, (4, 4, 4)
    capabilities = Capabilities(offsets=True, patch_size=patch_size, reference_grid=reference_grid)

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        from asa.models import brain_frame_encoding

        p, grid = self.patch_size, tuple(n // self.patch_size for n in x.shape[2:])
        local = torch.stack(torch.meshgrid(*(torch.arange(n) for n in grid), indexing="ij"))  # [3, *grid]
        ref = local[None] + offsets[:, :, None, None, None]  # [B, 3, *grid] reference patch coordinates
        centre = (torch.tensor(self.reference_grid) - 1).view(1, 3, 1, 1, 1) / 2
        folded = (centre - (ref - centre).abs()) / 4  # [B, 3, *grid]
        codes = brain_frame_encoding(grid, 2, offsets, reference_grid=self.reference_grid)  # [B, N, 2]
        codes = codes.transpose(1, 2).reshape(x.shape[0], 2, *grid)
        out = torch.cat([folded.float(), codes], dim=1)
        for axis in (2, 3, 4):
            out = out.repeat_interleave(p, dim=axis)  # every voxel of a patch carries its patch's values
        return out + self.dummy


@pytest.mark.parametrize("centre", [None, (20.0, 25.0, 18.0), (20.5, 25.0, 18.5)])
@pytest.mark.slow
def test_flip_tta_keeps_every_voxels_patch_and_code(centre):
    """Each flipped pass sees the mirror image of the unflipped lattice, so a network whose output is
    a function of the voxel's patch gives the same value under every flip: TTA changes nothing. A
    brain box of odd extent (centre on a whole voxel) is where recomputing the origin from the
    flipped centre used to move the lattice by one voxel."""
    shape = (41, 50, 37)
    image = torch.zeros(1, *shape)
    image[:, 10:31, 14:37, 9:28] = 1.0  # brain box of odd extents 21, 23, 19: centre (20, 25, 18)
    net = LatticeProbe()
    kwargs = dict(roi_size=(16, 16, 16), multilabel=True, overlap=0.5, centre=centre)
    plain = predict_volume(net, image, **kwargs)
    for axes in [(1,), (2,), (0, 1, 2)]:  # every voxel stays in (the mirror of) its patch
        torch.testing.assert_close(predict_volume(net, image, tta_axes=axes, **kwargs)[:3], plain[:3], rtol=0, atol=1e-6)
    # a left-right flip keeps each voxel's very position code (and with it its SACA partner)
    torch.testing.assert_close(predict_volume(net, image, tta_axes=(0,), **kwargs), plain, rtol=0, atol=1e-6)
