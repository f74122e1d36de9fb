"""Symmetric position encoding (SPE), paper eq. 3, in the crop frame or the brain frame (DESIGN §1.2)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from asa.models.patch import to_3tuple

POSITION_MODES = ("mirror", "paper", "none")


def _fold(w: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """The fold f(w) along the mirrored axis of a reference grid of length ``size`` (DESIGN §1.2).

    Defined for every integer w, also outside [0, size): the fold extends linearly beyond the grid.
    """
    if mode == "mirror":
        centre = (size - 1) / 2
        return centre - (w - centre).abs()  # w and its exact mirror size-1-w meet; = min(w, size-1-w) inside
    if mode == "paper":
        return size / 2 - (size / 2 - w).abs()  # literal eq. 3: pairs w with size - w
    return w


def _check(dim: int, mode: str, lr_axis: int) -> None:
    if mode not in POSITION_MODES:
        raise ValueError(f"position encoding mode must be one of {POSITION_MODES}, got {mode!r}")
    if dim <= 0 or dim % 2:
        raise ValueError(f"position encoding dim must be a positive even number, got {dim}")
    if lr_axis not in (0, 1, 2):
        raise ValueError(f"lr_axis must be 0, 1 or 2, got {lr_axis}")


def _encode(coords: torch.Tensor, reference: tuple[int, int, int], dim: int, mode: str, lr_axis: int) -> torch.Tensor:
    """coords [..., 3] float64 reference-grid coordinates -> codes [..., dim] float32 (eq. 3)."""
    t_axis, h_axis = (a for a in range(3) if a != lr_axis)
    t, h, w = coords[..., t_axis], coords[..., h_axis], coords[..., lr_axis]
    size_h, size_w = reference[h_axis], reference[lr_axis]
    pos = size_h * size_w * t + size_w * h + _fold(w, size_w, mode)  # [...]
    freq = torch.exp(
        -math.log(10000.0) * torch.arange(0, dim, 2, dtype=torch.float64, device=coords.device) / dim
    )
    angle = pos.unsqueeze(-1) * freq  # [..., dim/2]
    pe = torch.stack([angle.sin(), angle.cos()], dim=-1)  # interleave: PE[2i]=sin, PE[2i+1]=cos
    return pe.reshape(*coords.shape[:-1], dim).float()


def _grid_coords(grid: tuple[int, int, int], device: torch.device | None = None) -> torch.Tensor:
    """[N, 3] float64 coordinates of a grid's patches in raster order (axis 2 fastest)."""
    axes = torch.meshgrid(*(torch.arange(n, dtype=torch.float64, device=device) for n in grid), indexing="ij")
    return torch.stack(axes, dim=-1).reshape(-1, 3)


def symmetric_position_encoding(
    grid: tuple[int, int, int] | int,
    dim: int,
    *,
    mode: str = "mirror",
    lr_axis: int = 0,
    offset: Sequence[int] = (0, 0, 0),
    reference_grid: tuple[int, int, int] | int | None = None,
) -> torch.Tensor:
    """Sinusoidal position code of every token of a grid, shared by left–right mirror pairs.

    For a patch at (t, h, w) of a T×H×W reference grid, w being the coordinate along ``lr_axis``
    and t, h the other two axes in array order, eq. 3 gives ``Pos = H·W·t + W·h + f(w)`` and
    ``PE[2i] = sin(Pos / 10000^(2i/D))``, ``PE[2i+1] = cos(Pos / 10000^(2i/D))``.
    ``mode`` picks the fold f: ``mirror`` (``f(w) = c − |w − c|``, c = (W−1)/2: w ~ W−1−w),
    ``paper`` (w ~ W−w, eq. 3 literally) or ``none`` (f(w) = w, an ordinary 1D sinusoid).

    Brain frame: a crop of ``grid`` patches whose origin lies ``offset`` patches from the origin of
    the ``reference_grid`` (default: ``grid`` itself) gives its patch ``a`` the reference code of
    ``a + offset``; the fold extends linearly beyond the reference grid. Offset 0 with the default
    reference is the pretraining table.

    Returns: [N, dim] float32, rows in raster order over ``grid`` (axis 2 fastest).
    """
    _check(dim, mode, lr_axis)
    sizes = to_3tuple(grid, "grid")
    reference = sizes if reference_grid is None else to_3tuple(reference_grid, "reference_grid")
    shift = torch.tensor([float(int(o)) for o in to_3tuple(list(offset), "offset")], dtype=torch.float64)
    return _encode(_grid_coords(sizes) + shift, reference, dim, mode, lr_axis)


def brain_frame_encoding(
    grid: tuple[int, int, int],
    dim: int,
    offsets: torch.Tensor,
    *,
    mode: str = "mirror",
    lr_axis: int = 0,
    reference_grid: tuple[int, int, int] | None = None,
) -> torch.Tensor:
    """Per-sample brain-frame codes: offsets [B, 3] integer patch offsets -> [B, N, dim] float32 on
    the offsets' device; row b equals ``symmetric_position_encoding(grid, dim, offset=offsets[b], ...)``."""
    _check(dim, mode, lr_axis)
    if offsets.ndim != 2 or offsets.shape[1] != 3:
        raise ValueError(f"offsets must be [B, 3] patch offsets, got shape {tuple(offsets.shape)}")
    if offsets.is_floating_point() and not torch.equal(offsets, offsets.round()):
        raise ValueError(f"offsets must be whole patches (crops start on the reference lattice), got {offsets.tolist()}")
    reference = grid if reference_grid is None else reference_grid
    coords = _grid_coords(grid, offsets.device)[None] + offsets.to(torch.float64)[:, None, :]  # [B, N, 3]
    return _encode(coords, reference, dim, mode, lr_axis)
