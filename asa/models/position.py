"""Symmetric position encoding (SPE), paper eq. 3."""

from __future__ import annotations

import math

import torch

from asa.models.patch import to_3tuple

POSITION_MODES = ("mirror", "paper", "none")


def _fold(w: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """The fold f(w) along the mirrored axis of length ``size`` (DESIGN §1.2)."""
    if mode == "mirror":
        return torch.minimum(w, size - 1 - w)  # w and its exact mirror size-1-w meet
    if mode == "paper":
        return size / 2 - (size / 2 - w).abs()  # literal eq. 3: pairs w with size - w
    return w


def symmetric_position_encoding(
    grid: tuple[int, int, int] | int,
    dim: int,
    *,
    mode: str = "mirror",
    lr_axis: int = 0,
) -> torch.Tensor:
    """Sinusoidal position code of every token of a grid, shared by left–right mirror pairs.

    For a patch at (t, h, w) of a T×H×W grid, w being the coordinate along ``lr_axis`` and t, h
    the other two axes in array order, eq. 3 gives ``Pos = H·W·t + W·h + f(w)`` and
    ``PE[2i] = sin(Pos / 10000^(2i/D))``, ``PE[2i+1] = cos(Pos / 10000^(2i/D))``.
    ``mode`` picks the fold f: ``mirror`` (w ~ W-1-w), ``paper`` (w ~ W-w, eq. 3 literally) or
    ``none`` (f(w) = w, an ordinary 1D sinusoid without symmetry).

    Returns: [N, dim] float32, rows in raster order over ``grid`` (axis 2 fastest).
    """
    if mode not in POSITION_MODES:
        raise ValueError(f"position encoding mode must be one of {POSITION_MODES}, got {mode!r}")
    if dim <= 0 or dim % 2:
        raise ValueError(f"position encoding dim must be a positive even number, got {dim}")
    if lr_axis not in (0, 1, 2):
        raise ValueError(f"lr_axis must be 0, 1 or 2, got {lr_axis}")
    sizes = to_3tuple(grid, "grid")
    coords = torch.meshgrid(*(torch.arange(n, dtype=torch.float64) for n in sizes), indexing="ij")
    t_axis, h_axis = (a for a in range(3) if a != lr_axis)
    t, h, w = coords[t_axis], coords[h_axis], coords[lr_axis]
    size_h, size_w = sizes[h_axis], sizes[lr_axis]
    pos = size_h * size_w * t + size_w * h + _fold(w, size_w, mode)  # [G0, G1, G2]
    freq = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    angle = pos.reshape(-1, 1) * freq  # [N, dim/2]
    pe = torch.stack([angle.sin(), angle.cos()], dim=-1)  # interleave: PE[2i]=sin, PE[2i+1]=cos
    return pe.reshape(-1, dim).float()
