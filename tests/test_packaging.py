"""The wheel ships every package: pyproject.toml lists packages explicitly (the configs live outside
asa/), so a package folder added or removed must be listed or dropped there too. The extras keep the torch they are
installed beside (no requirement among what they pull excludes it), and the README names what holds numpy and
scipy back."""
from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

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


def _extras() -> dict[str, list[str]]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def _pulled(requirements: list[str]) -> dict[str, list[Requirement]]:
    """Every installed distribution that ``requirements`` pull, directly or through others -> the requirements of it
    that apply (markers evaluated for the extras asked of it, as pip reads them); one not installed is left out."""
    applying: dict[str, list[Requirement]] = {}
    asked: dict[str, set[str]] = {}
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        try:
            stated = [Requirement(r) for r in metadata.distribution(name).requires or []]
        except metadata.PackageNotFoundError:
            continue
        new = ({""} | set(req.extras)) - asked.setdefault(name, set())
        asked[name] |= new
        taken = [r for r in stated if r.marker is None or any(r.marker.evaluate({"extra": e}) for e in new)]
        applying.setdefault(name, []).extend(taken)
        todo += taken
    return applying


@pytest.mark.parametrize("extra", sorted(_extras()))
def test_no_extra_pulls_a_requirement_that_excludes_the_installed_torch(extra):
    """pip would replace the installed torch (a CPU or CUDA build chosen on purpose, README) to satisfy such a
    requirement: checked on what is installed, as .ci/run checks torch's version after installing every extra."""
    pulled = _pulled(_extras()[extra])
    if not pulled:
        pytest.skip(f"the {extra} extra is not installed")
    for pinned in ("torch", "torchvision"):
        try:
            installed = metadata.version(pinned)
        except metadata.PackageNotFoundError:
            continue
        refusing = [f"{name}: {req}" for name, reqs in pulled.items() for req in reqs
                    if canonicalize_name(req.name) == pinned and not req.specifier.contains(installed, prereleases=True)]
        assert refusing == [], f"the {extra} extra pulls a requirement that excludes {pinned} {installed}: {refusing}"


def test_the_readme_names_what_holds_numpy_and_scipy_back():
    """A fresh environment with every extra resolves numpy 2.3.5 and scipy 1.15.3, without the prepare extra 2.4.6 and
    1.17.1: the distributions whose requirements exclude those newer ones, with their caps, are the README's."""
    newer = {"numpy": "2.4.6", "scipy": "1.17.1"}
    pulled = _pulled([r for reqs in _extras().values() for r in reqs])
    if "antspyx" not in pulled:
        pytest.skip("the prepare extra is not installed")
    caps = sorted((name, metadata.version(name), str(req)) for name, reqs in pulled.items() for req in reqs
                  if canonicalize_name(req.name) in newer and not req.specifier.contains(newer[canonicalize_name(req.name)]))
    install = README_INSTALL.search((ROOT / "README.md").read_text())
    assert install is not None, "README.md: no paragraph on what the extras change"
    said = install.group(0)
    for name, version, cap in caps:
        assert f"`{name}` {version}" in said and f"`{cap}`" in said, (name, version, cap, said)
    assert [name for name, _, _ in caps] == ["antspyx", "antspyx"]


README_INSTALL = re.compile(r"The `prepare` extra holds numpy and scipy back[^\n]*(?:\n(?!\n)[^\n]*)*")
