"""Sizes as three ints: an edge or a triple (`to_3tuple`), the input size a network spec records
(`spec_input_size`)."""

from __future__ import annotations

from typing import Any

from monai.utils import ensure_tuple_rep

Size3 = tuple[int, int, int]


def to_3tuple(value: int | tuple[int, ...] | list[int], name: str = "size") -> Size3:
    """Return ``value`` as a 3-tuple of ints (an int is repeated)."""
    try:
        return tuple(int(v) for v in ensure_tuple_rep(value, 3))  # type: ignore[return-value]
    except ValueError:
        raise ValueError(f"{name} must be an int or 3 ints, got {value!r}") from None


def spec_input_size(arch: str, img_size: Any) -> list[int]:
    """``img_size`` of a network spec as 3 ints; a spec of ``arch`` without one is refused."""
    if img_size is None:
        raise ValueError(f"network spec for {arch!r} needs kwargs.img_size (the network's input size)")
    return list(to_3tuple(img_size, "img_size"))
