"""Small hand-written SVG plots (no plotting library): a line plot with error bars and an interval
(forest) plot of estimates with their confidence intervals. NaN values are left out of a plot."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape

__all__ = ["PALETTE", "interval_plot", "line_plot"]

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def _finite(*xs: float | None) -> bool:
    return all(x is not None and math.isfinite(x) for x in xs)


def _range(values: Sequence[float], clip: tuple[float, float] | None) -> tuple[float, float]:
    """Axis limits around ``values``, rounded outwards to tenths (within ``clip``)."""
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    lo, hi = math.floor(lo * 10) / 10, math.ceil(hi * 10) / 10 + 1e-9
    if clip is not None:
        lo, hi = max(clip[0], lo), min(clip[1], hi)
    return (lo, hi) if hi > lo else (lo, lo + 0.1)


def _open(width: int, height: int) -> list[str]:
    return [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
            'font-size="12">', f'<rect width="{width}" height="{height}" fill="white"/>']


def line_plot(series: Mapping[str, Sequence[tuple[float, float, float]]], *, xlabel: str, ylabel: str,
              categorical: bool = True, clip: tuple[float, float] | None = (0.0, 1.0), width: int = 480,
              height: int = 320) -> str:
    """Plain SVG of one line per series name, each a list of (x, y, error bar half-height; 0 or NaN: none).

    ``categorical``: the distinct x values evenly spaced (e.g. labeled cases 2, 8), else a linear x axis.
    ``clip``: bounds of the y axis range (None: the data's own)."""
    points = {name: [(float(x), float(y), 0.0 if math.isnan(e) else float(e)) for x, y, e in pts if not math.isnan(y)]
              for name, pts in series.items()}
    xs = sorted({x for pts in points.values() for x, _, _ in pts}) or [0.0]
    ys = [v for pts in points.values() for _, y, e in pts for v in (y - e, y + e)]
    lo, hi = _range(ys, clip)
    left, right, top, bottom = 60, 110, 20, 45
    span = width - left - right
    if categorical:
        px = lambda x: left + (xs.index(x) + 0.5) * span / len(xs)  # noqa: E731
        ticks = xs
    else:
        x0, x1 = xs[0], (xs[-1] if xs[-1] > xs[0] else xs[0] + 1)
        px = lambda x: left + 10 + (x - x0) / (x1 - x0) * (span - 20)  # noqa: E731
        ticks = sorted({xs[round(i * (len(xs) - 1) / 5)] for i in range(6)}) if len(xs) > 6 else xs
    py = lambda d: top + (hi - d) / (hi - lo) * (height - top - bottom)  # noqa: E731
    out = _open(width, height) + [
           f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" stroke="black"/>',
           f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="black"/>',
           f'<text x="{(left + width - right) / 2}" y="{height - 8}" text-anchor="middle">{escape(xlabel)}</text>',
           f'<text x="14" y="{(top + height - bottom) / 2}" text-anchor="middle" transform="rotate(-90 14 {(top + height - bottom) / 2})">{escape(ylabel)}</text>']
    for k in range(6):
        d = lo + (hi - lo) * k / 5
        out.append(f'<text x="{left - 6}" y="{py(d) + 4:.1f}" text-anchor="end">{d:.2f}</text>')
        out.append(f'<line x1="{left}" y1="{py(d):.1f}" x2="{width - right}" y2="{py(d):.1f}" stroke="#ddd"/>')
    for x in ticks:
        out.append(f'<text x="{px(x):.1f}" y="{height - bottom + 16}" text-anchor="middle">{x:g}</text>')
    for i, (name, pts) in enumerate(points.items()):
        color = PALETTE[i % len(PALETTE)]
        pts = sorted(pts)
        out.append(f'<polyline points="{" ".join(f"{px(x):.1f},{py(y):.1f}" for x, y, _ in pts)}" fill="none" '
                   f'stroke="{color}" stroke-width="2"/>')
        for x, y, e in pts:
            if e:
                out.append(f'<line x1="{px(x):.1f}" y1="{py(y - e):.1f}" x2="{px(x):.1f}" y2="{py(y + e):.1f}" stroke="{color}"/>')
            out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{color}"/>')
        out.append(f'<text x="{width - right + 8}" y="{top + 16 * (i + 1)}" fill="{color}">{escape(str(name))}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def interval_plot(rows: Sequence[str], panels: Mapping[str, Sequence[tuple[float | None, float | None, float | None]]],
                  *, panel_width: int = 200, row_height: int = 26, label_width: int = 190) -> str:
    """A forest plot: one panel per metric (``panels`` title -> one (value, low, high) per row),
    side by side; each row a dot at its value with a whisker over [low, high]; ``rows`` are the row
    names, on the left. Missing or NaN values draw nothing (the row stays, empty)."""
    top, bottom, gap = 30, 36, 24
    height = top + bottom + row_height * len(rows)
    width = label_width + len(panels) * (panel_width + gap)
    out = _open(width, height)
    for r, name in enumerate(rows):
        y = top + row_height * (r + 0.5)
        out.append(f'<text x="{label_width - 8}" y="{y + 4:.1f}" text-anchor="end" fill="{PALETTE[r % len(PALETTE)]}">'
                   f'{escape(name)}</text>')
    for p, (title, values) in enumerate(panels.items()):
        x0 = label_width + p * (panel_width + gap)
        ends = [v for trio in values for v in trio if _finite(v)]
        lo, hi = _range(ends, None)
        px = lambda v: x0 + (v - lo) / (hi - lo) * panel_width  # noqa: E731
        out += [f'<text x="{x0 + panel_width / 2}" y="{top - 12}" text-anchor="middle">{escape(title)}</text>',
                f'<line x1="{x0}" y1="{height - bottom}" x2="{x0 + panel_width}" y2="{height - bottom}" stroke="black"/>']
        for k in range(3):
            v = lo + (hi - lo) * k / 2
            out.append(f'<line x1="{px(v):.1f}" y1="{top}" x2="{px(v):.1f}" y2="{height - bottom}" stroke="#ddd"/>')
            out.append(f'<text x="{px(v):.1f}" y="{height - bottom + 16}" text-anchor="middle">{v:.3g}</text>')
        for r, (value, low, high) in enumerate(values):
            y, color = top + row_height * (r + 0.5), PALETTE[r % len(PALETTE)]
            if _finite(low, high):
                out.append(f'<line x1="{px(low):.1f}" y1="{y:.1f}" x2="{px(high):.1f}" y2="{y:.1f}" stroke="{color}" '
                           'stroke-width="2"/>')
            if _finite(value):
                out.append(f'<circle cx="{px(value):.1f}" cy="{y:.1f}" r="4" fill="{color}"/>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
