"""The plots of the studies and of ``asa-probe``, drawn by matplotlib and returned as SVG text: a line
plot with error bars and an interval (forest) plot of estimates with their confidence intervals.
NaN or missing values are left out of a plot.

matplotlib is imported inside the functions (``import asa`` stays fast) and only its object API is
used (a :class:`~matplotlib.figure.Figure`, never pyplot), so no global figure state or GUI backend is
involved.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["interval_plot", "line_plot"]

DPI = 100  # the width / height arguments are in pixels at this resolution
# text stays <text> (searchable, readable by the tests); a fixed salt and no date: the same data, the same file
_RC = {"svg.fonttype": "none", "svg.hashsalt": "asa", "font.size": 9}


def _finite(*xs: float | None) -> bool:
    return all(x is not None and math.isfinite(x) for x in xs)


def _range(values: Sequence[float], clip: tuple[float, float] | None) -> tuple[float, float]:
    """Axis limits around ``values``, rounded outwards to tenths (within ``clip``)."""
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    lo, hi = math.floor(lo * 10) / 10, math.ceil(hi * 10) / 10
    if clip is not None:
        lo, hi = max(clip[0], lo), min(clip[1], hi)
    return (lo, hi) if hi > lo else (lo, lo + 0.1)


def _svg(fig: Figure) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    return buf.getvalue()


def line_plot(series: Mapping[str, Sequence[tuple[float, float, float]]], *, xlabel: str, ylabel: str,
              categorical: bool = True, clip: tuple[float, float] | None = (0.0, 1.0), dodge: bool = False,
              width: int = 480, height: int = 320) -> str:
    """SVG of one line per series name, each a list of (x, y, error bar half-height; 0 or NaN: none),
    with the names in a legend on the right.

    Args:
        series: series name -> its points (x, y, half-height); points with a NaN y are left out.
        xlabel: the x axis label.
        ylabel: the y axis label.
        categorical: the distinct x values evenly spaced (e.g. labeled cases 2, 8), else a linear x axis.
        dodge: with ``categorical``, each series drawn a little apart along x around its category, so that points
            and error bars of several series at one x stay apart (one N: one column of points, side by side).
        clip: bounds of the y axis range (None: the data's own).
        width: figure width in pixels.
        height: figure height in pixels.
    """
    from matplotlib import rc_context
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    points = {name: sorted((float(x), float(y), 0.0 if math.isnan(e) else float(e))
                           for x, y, e in pts if not math.isnan(y)) for name, pts in series.items()}
    xs = sorted({x for pts in points.values() for x, _, _ in pts})
    ys = [v for pts in points.values() for _, y, e in pts for v in (y - e, y + e)]
    with rc_context(_RC):
        fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, layout="constrained")
        ax = fig.add_subplot()
        step = min(0.6 / len(points), 0.15) if dodge and categorical and points else 0.0
        for k, (name, pts) in enumerate(points.items()):
            shift = (k - (len(points) - 1) / 2) * step  # the series spread symmetrically around their category
            at = [xs.index(x) + shift if categorical else x for x, _, _ in pts]
            errors = [e for _, _, e in pts]
            ax.errorbar(at, [y for _, y, _ in pts], yerr=errors if any(errors) else None, marker="o", markersize=4,
                        linewidth=2, label=str(name))
        if categorical:
            ax.set_xticks(range(len(xs)), [f"{x:g}" for x in xs])
            ax.set_xlim(-0.5, max(len(xs), 1) - 0.5)
        elif all(x.is_integer() for x in xs):  # epochs, steps: no tick between two
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(*_range(ys, clip))
        ax.grid(axis="y", color="#ddd")
        ax.set_axisbelow(True)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if points:
            legend = ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
            for text in legend.get_texts():  # names as given: a '$' in one is no TeX
                text.set_parse_math(False)
        return _svg(fig)


def interval_plot(rows: Sequence[str], panels: Mapping[str, Sequence[tuple[float | None, float | None, float | None]]],
                  *, xlabels: Mapping[str, str] | None = None, zero: bool = False, panel_width: int = 200,
                  row_height: int = 26, label_width: int = 190) -> str:
    """SVG of a forest plot: one panel per metric, side by side, each row a dot at its value with a
    whisker over [low, high], in the row's colour; the row names on the left, first row on top.
    Missing or NaN values draw nothing (the row stays, empty).

    Args:
        rows: the row names.
        panels: panel title -> one (value, low, high) per row.
        xlabels: panel title -> its x axis label (e.g. "Δ mean Dice"); a panel left out has none.
        zero: mark x = 0 in every panel with a vertical line (its SVG id "zero"), kept in view: a difference's
            sign is read against it.
        panel_width: width of a panel in pixels.
        row_height: height of a row in pixels.
        label_width: width of the row names' column in pixels.
    """
    from matplotlib import rc_context
    from matplotlib.figure import Figure

    xlabels = dict(xlabels or {})
    width = label_width + max(len(panels), 1) * panel_width
    height = 70 + (16 if xlabels else 0) + row_height * len(rows)
    with rc_context(_RC):
        fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, layout="constrained")
        axes = fig.subplots(1, max(len(panels), 1), sharey=True, squeeze=False)[0]
        for ax, (title, values) in zip(axes, panels.items()):
            for r, (value, low, high) in enumerate(values):
                if _finite(low, high):
                    ax.hlines(r, low, high, color=f"C{r % 10}", linewidth=2)
                if _finite(value):
                    ax.plot([value], [r], "o", color=f"C{r % 10}", markersize=6)
            if zero:
                ax.axvline(0.0, color="#444", linewidth=1, linestyle="--", gid="zero")
            ax.set_title(title)
            if title in xlabels:
                ax.set_xlabel(xlabels[title])
            ax.grid(axis="x", color="#ddd")
            ax.set_axisbelow(True)
        names = axes[0]
        names.set_yticks(range(len(rows)), [str(name) for name in rows], parse_math=False)  # file paths, as given
        names.set_ylim(len(rows) - 0.5, -0.5)  # the first row on top
        for r, label in enumerate(names.get_yticklabels()):
            label.set_color(f"C{r % 10}")
        return _svg(fig)
