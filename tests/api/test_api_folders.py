"""asa/api holds the console-script doors; the config language, the run machinery and the task homes each have a
folder below them, one floor each (configuration < machinery < tasks < the doors): a folder imports only its own
floor and those below it, never a door (nor ``asa.api`` itself), even inside a function, by an absolute or a
relative import."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

import asa.api

API = Path(asa.api.__file__).resolve().parent
FOLDERS = ("configuration", "machinery", "tasks")  # the floors, lowest first
DOORS = {"cohort", "config", "evaluate", "export", "finetune", "predict", "preprocess", "pretrain", "probe"}


def _imports(path: Path, package: str) -> list[tuple[str, int]]:
    """(dotted module or ``module.name``, line) of every import in ``path`` (a module of ``package``), at any
    depth; a relative import resolved against the package (``from ..tasks import x`` in asa.api.machinery:
    ``asa.api.tasks``, ``asa.api.tasks.x``)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            found += [(f"{module}.{alias.name}", node.lineno) for alias in node.names]
            found.append((module, node.lineno))
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module" \
                and node.args and isinstance(node.args[0], ast.Constant):
            found.append((str(node.args[0].value), node.lineno))
    return found


def _upward(api: Path) -> list[str]:
    """Every import in a folder of ``api`` (an asa/api tree) of a door, of ``asa.api`` itself or of a higher floor."""
    doors = {f"asa.api.{name}" for name in DOORS} | {"asa.api"}
    back = []
    for floor, folder in enumerate(FOLDERS):
        above = tuple(f"asa.api.{f}" for f in FOLDERS[floor + 1:])
        below = tuple(f"asa.api.{f}" for f in FOLDERS[:floor + 1])
        for path in sorted((api / folder).rglob("*.py")):  # a task's own package (tasks/case/) too
            package = ".".join(("asa", "api", *path.relative_to(api).parent.parts))
            for module, line in _imports(path, package):
                up = module.startswith(above) and module.split(".")[2] in FOLDERS[floor + 1:]
                if up or (module in doors and not module.startswith(below)):
                    back.append(f"{path.relative_to(api.parent)}:{line} imports {module}")
    return back


def test_asa_api_holds_the_doors_and_three_folders():
    modules = {p.stem for p in API.glob("*.py") if p.name != "__init__.py"}
    folders = {p.name for p in API.iterdir() if (p / "__init__.py").is_file()}
    assert modules == DOORS and folders == set(FOLDERS)


def test_no_folder_imports_a_door_or_a_higher_floor():
    assert _upward(API) == []


@pytest.mark.parametrize("planted, line", [
    ("from asa.api.tasks import finetune_task", "configuration/bad.py:1 imports asa.api.tasks"),
    ("from ..tasks.segmentation import crop_grid", "configuration/bad.py:1 imports asa.api.tasks.segmentation"),
    ("def f():\n    from .. import finetune", "configuration/bad.py:2 imports asa.api.finetune"),
    ("import asa.api.machinery.job", "configuration/bad.py:1 imports asa.api.machinery.job"),
    ("from asa.api.pretrain import pretrain", "configuration/bad.py:1 imports asa.api.pretrain"),
])
def test_the_floor_check_sees_a_planted_upward_import(tmp_path, planted, line):
    """A copy of asa/api with one module planted on the config floor that reaches up: the check names it."""
    api = tmp_path / "api"
    shutil.copytree(API, api, ignore=shutil.ignore_patterns("__pycache__"))
    assert _upward(api) == []
    (api / "configuration" / "bad.py").write_text(planted + "\n")
    found = [f.removeprefix("api/") for f in _upward(api)]
    assert line in found and all(f.startswith("configuration/bad.py:") for f in found)


def test_a_tasks_own_package_is_checked_too(tmp_path):
    """A module of a task's package (tasks/case/) that reaches a door, by a relative import: the check names it."""
    api = tmp_path / "api"
    shutil.copytree(API, api, ignore=shutil.ignore_patterns("__pycache__"))
    (api / "tasks" / "case" / "bad.py").write_text("from ...finetune import finetune\n")
    assert _upward(api) == ["api/tasks/case/bad.py:1 imports asa.api.finetune"]
