"""`asa.eval.plots`: the SVG is one matplotlib wrote, its labels and series names are text in it, NaN and
missing values draw nothing, the same data gives the same file, and ``import asa.eval.plots`` leaves
matplotlib unloaded."""
from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from asa.eval.plots import interval_plot, line_plot

NS = {"svg": "http://www.w3.org/2000/svg", "dc": "http://purl.org/dc/elements/1.1/"}
NAN = float("nan")


def svg_texts(svg: str) -> list[str]:
    """The text of every <text> element of ``svg``, which must be an SVG document matplotlib wrote."""
    root = ET.fromstring(svg)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert root.find(".//dc:title", NS).text.startswith("Matplotlib")
    return ["".join(t.itertext()) for t in root.iter("{http://www.w3.org/2000/svg}text")]


SERIES = {"scratch": [(2, 0.50, 0.05), (8, 0.60, NAN)], "pre$trained$": [(8, 0.70, 0.0), (2, NAN, 0.1)]}


def test_line_plot_holds_its_axes_and_series_as_text():
    texts = svg_texts(line_plot(SERIES, xlabel="labeled cases", ylabel="mean Dice"))
    assert {"labeled cases", "mean Dice", "scratch", "pre$trained$"} <= set(texts)
    assert {"2", "8"} <= set(texts)  # categorical: a tick per distinct x


@pytest.mark.parametrize("categorical, clip", [(True, (0.0, 1.0)), (False, None)])
def test_line_plot_leaves_nan_out_and_is_reproducible(categorical, clip):
    svg = line_plot(SERIES, xlabel="epoch", ylabel="R²", categorical=categorical, clip=clip)
    assert "nan" not in svg.lower()
    assert svg == line_plot(SERIES, xlabel="epoch", ylabel="R²", categorical=categorical, clip=clip)


def test_line_plot_of_nothing_is_an_empty_plot():
    assert {"x", "y"} <= set(svg_texts(line_plot({}, xlabel="x", ylabel="y")))


def test_interval_plot_names_rows_and_panels_and_skips_missing_values():
    rows = ["a.pt", "runs/$x$/b.pt & <c>", "random-init (asa_pretrain)"]  # names are text, not TeX or markup
    panels = {"ridge R²": [(0.5, 0.4, 0.6), (None, None, None), (NAN, 0.1, 0.2)],
              "ridge MAE": [(5.0, 4.0, 6.0), (6.0, 5.5, 6.5), (7.0, NAN, None)]}
    svg = interval_plot(rows, panels)
    texts = svg_texts(svg)
    assert set(rows) | set(panels) <= set(texts)
    assert "nan" not in svg.lower()


@pytest.mark.slow  # a child process's imports
def test_importing_the_module_leaves_matplotlib_unloaded():
    code = "import sys, asa.eval.plots; sys.exit('matplotlib' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
