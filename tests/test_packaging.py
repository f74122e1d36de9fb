"""The wheel ships every package: pyproject.toml lists packages explicitly (the configs live outside
asa/), so a package folder added or removed must be listed or dropped there too."""
from __future__ import annotations

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]


def _folders() -> set[str]:
    found = {".".join(p.relative_to(ROOT).parent.parts) for p in (ROOT / "asa").rglob("*.py")}
    found |= {"asa.configs" + "".join(f".{part}" for part in p.relative_to(ROOT / "configs").parent.parts)
              for p in (ROOT / "configs").rglob("*") if p.suffix in (".yaml", ".py")}
    return {f for f in found if "__pycache__" not in f}


def test_pyproject_lists_exactly_the_package_folders():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    assert listed == _folders()
