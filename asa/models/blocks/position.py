"""Symmetric position encoding (SPE), paper eq. 3, in the crop frame or the brain frame (docs/method.md §1.2)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from asa.models.blocks.sizes import to_3tuple

POSITION_MODES = ("mirror", "paper", "none")


def _fold(w: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """The fold f(w) along the mirrored axis of a reference grid of length ``size`` (docs/method.md §1.2), on
    int64 coordinates; defined for every integer w, also outside [0, size), where it goes on linearly.
    Exact integers: ``mirror`` ``c − |w − c|`` with c = (size − 1)/2, ``paper`` ``size/2 − |size/2 − w|``."""
    if mode == "mirror":  # w and its exact mirror size-1-w meet; = min(w, size-1-w) inside
        return (size - 1 - (2 * w - (size - 1)).abs()) // 2
    if mode == "paper":  # literal eq. 3: pairs w with size - w
        return (size - (size - 2 * w).abs()) // 2
    return w


def _fold_extent(size: int, mode: str) -> int:
    """U: how many fold values the reference grid's own planes take (0 … U−1)."""
    return {"mirror": (size + 1) // 2, "paper": size // 2 + 1}.get(mode, size)


def _zigzag(q: torch.Tensor) -> torch.Tensor:
    """0, −1, 1, −2, 2, … -> 0, 1, 2, 3, 4, …: a bijection of the integers onto the naturals."""
    return torch.where(q >= 0, 2 * q, -2 * q - 1)


def _tile_number(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """A bijection of N³ onto N with (0, 0, 0) -> 0, numbering triples by their sum s first:
    C(s+2, 3) triples have a smaller sum, then by m = b + c (C(m+1, 2) before), then by c."""
    s, m = a + b + c, b + c
    return s * (s + 1) * (s + 2) // 6 + m * (m + 1) // 2 + c


def _check(dim: int | None, mode: str, lr_axis: int) -> None:
    if mode not in POSITION_MODES:
        raise ValueError(f"position encoding mode must be one of {POSITION_MODES}, got {mode!r}")
    if dim is not None and (dim <= 0 or dim % 2):
        raise ValueError(f"position encoding dim must be a positive even number, got {dim}")
    if lr_axis not in (0, 1, 2):
        raise ValueError(f"lr_axis must be 0, 1 or 2, got {lr_axis}")


def position_index(
    coords: torch.Tensor, reference_grid: tuple[int, int, int] | int, *, mode: str = "mirror", lr_axis: int = 0
) -> torch.Tensor:
    """Pos of eq. 3 for reference-grid coordinates anywhere on the lattice: coords [..., 3] integer
    patch coordinates in the reference grid's frame -> [...] int64.

    With t, h the non-mirrored coordinates, u = f(w) the folded one, T, H, W the reference sizes and
    U the number of fold values inside the reference grid, each coordinate is split into a tile
    and a remainder, ``t = T·q_t + r_t`` (0 ≤ r_t < T), ``h = H·q_h + r_h``, ``u = U·q_u + r_u``, and

        ``Pos = H·W·r_t + W·r_h + r_u + T·H·W·ψ(q)``,

    ψ a bijection of the tile indices q ∈ Z³ onto N with ψ(0) = 0 (`_zigzag` per axis, then
    `_tile_number`). Inside the reference box q = 0 and Pos is eq. 3 exactly (the pretraining codes).
    Unique: the remainders are the digits of a mixed-radix number below T·H·W (r_u < U ≤ W), so
    ``Pos mod T·H·W`` gives r and ``Pos div T·H·W`` gives ψ(q), hence q; so Pos determines (t, h, u),
    and (t, h, u) determines the patch up to its mirror (f(w) = f(w') only for w' = w or its mirror).
    Distinct Pos give distinct codes: ``PE[0], PE[1]`` are sin and cos of Pos itself, and distinct
    integers differ modulo 2π.
    Exact in float64 (Pos < 2^53) for coordinates within hundreds of reference grids of the box
    along every axis, far beyond any scan.
    """
    _check(None, mode, lr_axis)
    reference = to_3tuple(reference_grid, "reference_grid")
    coords = coords.long()
    t_axis, h_axis = (a for a in range(3) if a != lr_axis)
    size_t, size_h, size_w = reference[t_axis], reference[h_axis], reference[lr_axis]
    size_u = _fold_extent(size_w, mode)
    digits, tiles = [], []
    for value, size in ((coords[..., t_axis], size_t), (coords[..., h_axis], size_h),
                        (_fold(coords[..., lr_axis], size_w, mode), size_u)):
        tiles.append(_zigzag(torch.div(value, size, rounding_mode="floor")))
        digits.append(torch.remainder(value, size))
    r_t, r_h, r_u = digits
    return size_h * size_w * r_t + size_w * r_h + r_u + size_t * size_h * size_w * _tile_number(*tiles)


def _encode(coords: torch.Tensor, reference: tuple[int, int, int], dim: int, mode: str, lr_axis: int) -> torch.Tensor:
    """coords [..., 3] int64 reference-grid coordinates -> codes [..., dim] float32 (eq. 3)."""
    pos = position_index(coords, reference, mode=mode, lr_axis=lr_axis).to(torch.float64)  # [...], exact integers
    freq = torch.exp(
        -math.log(10000.0) * torch.arange(0, dim, 2, dtype=torch.float64, device=coords.device) / dim
    )
    angle = pos.unsqueeze(-1) * freq  # [..., dim/2]
    pe = torch.stack([angle.sin(), angle.cos()], dim=-1)  # interleave: PE[2i]=sin, PE[2i+1]=cos
    return pe.reshape(*coords.shape[:-1], dim).float()


def _grid_coords(grid: tuple[int, int, int], device: torch.device | None = None) -> torch.Tensor:
    """[N, 3] int64 coordinates of a grid's patches in raster order (axis 2 fastest)."""
    axes = torch.meshgrid(*(torch.arange(n, dtype=torch.int64, device=device) for n in grid), indexing="ij")
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
    ``a + offset``. Offset 0 with the default reference is the pretraining table. Beyond the
    reference box the fold goes on linearly and Pos is continued tile by tile (`position_index`):
    inside the box the codes are eq. 3's bit for bit, and over the whole lattice two patches share
    a code only when they are the same patch or mirror pairs (w ~ W−1−w about the reference centre).

    Returns: [N, dim] float32, rows in raster order over ``grid`` (axis 2 fastest).
    """
    _check(dim, mode, lr_axis)
    sizes = to_3tuple(grid, "grid")
    reference = sizes if reference_grid is None else to_3tuple(reference_grid, "reference_grid")
    shift = torch.tensor([int(o) for o in to_3tuple(list(offset), "offset")], dtype=torch.int64)
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
    coords = _grid_coords(grid, offsets.device)[None] + offsets.long()[:, None, :]  # [B, N, 3]
    return _encode(coords, reference, dim, mode, lr_axis)
