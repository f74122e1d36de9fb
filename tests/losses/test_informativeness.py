from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from asa.losses import patch_informativeness
from asa.losses.informativeness import NORMALIZATIONS as NORMALIZE


def _literal(volume: np.ndarray, s: int, b: int, normalize: str) -> np.ndarray:
    """docs/method.md §1.5 steps 1-4, voxel by voxel, patch by patch."""
    bsz, c, d, h, w = volume.shape
    out = np.zeros((bsz, (d // s) * (h // s) * (w // s)))

    def at(v, ch, i, j, k):
        inside = 0 <= i < d and 0 <= j < h and 0 <= k < w
        return float(v[ch, i, j, k]) if inside else 0.0

    for n in range(bsz):
        v = volume[n]
        hist = np.zeros((d // s, h // s, w // s, b, b))
        for ch in range(c):
            for i in range(d):
                for j in range(h):
                    for k in range(w):
                        gx = at(v, ch, i + 1, j, k) - at(v, ch, i - 1, j, k)
                        gy = at(v, ch, i, j + 1, k) - at(v, ch, i, j - 1, k)
                        gz = at(v, ch, i, j, k + 1) - at(v, ch, i, j, k - 1)
                        mag = math.sqrt(gx * gx + gy * gy + gz * gz)
                        if mag == 0:
                            continue
                        theta = math.acos(max(-1.0, min(1.0, gz / mag)))
                        phi = abs(math.atan2(gy, gx))
                        r = min(int(theta // (math.pi / b)), b - 1)
                        col = min(int(phi // (math.pi / b)), b - 1)
                        hist[i // s, j // s, k // s, r, col] += mag
        hist = hist.reshape(-1, b * b)
        if normalize == "l2":
            hist = hist / np.sqrt((hist**2).sum(-1, keepdims=True) + 1e-10)
        out[n] = hist.mean(-1)
    return out


@pytest.mark.parametrize(
    "shape, s, b, normalize",
    [
        ((2, 1, 8, 8, 8), 4, 8, "l2"),
        ((1, 2, 8, 4, 12), 4, 4, "l2"),
        ((1, 1, 8, 8, 8), 4, 8, "none"),
    ],
)
def test_matches_literal_per_voxel_implementation(shape, s, b, normalize):
    rng = np.random.default_rng(0)
    volume = rng.standard_normal(shape).astype(np.float32)
    volume[0, 0, :4, :4, :4] = 0.0  # a flat corner patch as well
    got = patch_informativeness(torch.from_numpy(volume), patch_size=s, bins=b, normalize=normalize)
    expected = _literal(volume.astype(np.float64), s, b, normalize)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4, atol=1e-6)


def test_all_zero_and_flat_volumes_give_zero_without_nan():
    zero = patch_informativeness(torch.zeros(2, 1, 8, 8, 8), patch_size=4)
    assert torch.equal(zero, torch.zeros(2, 8))
    np.testing.assert_allclose(
        patch_informativeness(torch.zeros(1, 1, 8, 8, 8), patch_size=4).numpy(),
        _literal(np.zeros((1, 1, 8, 8, 8)), 4, 8, "l2"),
    )
    flat = patch_informativeness(torch.full((1, 1, 12, 12, 12), 5.0), patch_size=4)
    assert torch.isfinite(flat).all()
    assert flat.view(3, 3, 3)[1, 1, 1] == 0  # interior patch of a flat volume: no gradient
    assert (flat.view(3, 3, 3)[0] > 0).all()  # border patches see the zero padding


def test_l2_bounds_and_no_gradient():
    volume = torch.randn(1, 1, 16, 16, 16, requires_grad=True)
    g = patch_informativeness(volume, patch_size=8, bins=8)
    assert not g.requires_grad
    assert (g >= 1 / 64 - 1e-6).all() and (g <= 1 / 8 + 1e-6).all()  # docs/method.md §1.5: [1/b², 1/b]


@pytest.mark.parametrize(
    "kwargs, match",
    [(dict(normalize="max"), "normalize"), (dict(patch_size=5), "divisible"), (dict(bins=0), "bins")],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        patch_informativeness(torch.zeros(1, 1, 8, 8, 8), **kwargs)


@pytest.mark.parametrize("shape", [(3, 2, 16, 8, 24), (2, 1, 24, 16, 16)])
def test_chunked_pass_gives_the_same_bits_whatever_the_chunk(shape, monkeypatch):
    """On a CPU the histogram pass runs in cache-sized chunks; a patch lies in one chunk and each slot is summed
    in the voxels' order, so rows of patches of one sample, whole samples and the whole batch at once per chunk
    (the plans (samples, voxel layers) below, checked by hand) give the same bits."""
    from asa.losses import informativeness

    volume = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    volume[:, :, :8, :8, :8] = 0.0  # a flat patch as well
    voxels = shape[1] * shape[2] * shape[3] * shape[4]  # one sample, all its channels
    row = 8 * voxels // shape[2]  # one row of patches
    plans = {1: (1, 8), row: (1, 8), 2 * row: (1, 16), voxels: (1, shape[2]), 2 * voxels: (2, shape[2]),
             10**9: (shape[0], shape[2])}  # 2 rows of 3 at depth 24: a shorter last chunk; 2 samples of 3 likewise
    got, threads = {}, torch.get_num_threads()
    for budget, plan in plans.items():
        monkeypatch.setattr(informativeness, "SLAB_VOXELS", budget)
        assert informativeness._chunk(volume, 8) == plan
        for normalize in NORMALIZE:
            got[budget, normalize] = patch_informativeness(volume, patch_size=8, bins=4, normalize=normalize)
    for (budget, normalize), g in got.items():
        assert torch.equal(g, got[10**9, normalize]), (budget, normalize)
    assert torch.get_num_threads() == threads  # the chunked pass's one thread is given back
