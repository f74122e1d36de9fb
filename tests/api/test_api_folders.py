"""asa/api holds the console-script doors; the config language, the run machinery and the task homes each have a
folder below them, and a lower folder never imports a door (nor ``asa.api`` itself), even inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

import asa.api

API = Path(asa.api.__file__).resolve().parent
FOLDERS = ("configuration", "machinery", "tasks")
DOORS = {"cohort", "config", "evaluate", "export", "finetune", "predict", "preprocess", "pretrain", "probe"}


def _imports(path: Path) -> list[tuple[str, int]]:
    """(dotted module or ``module.name``, line) of every absolute import in ``path``, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found += [(f"{node.module}.{alias.name}", node.lineno) for alias in node.names]
            found.append((node.module, node.lineno))
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module" \
                and node.args and isinstance(node.args[0], ast.Constant):
            found.append((str(node.args[0].value), node.lineno))
    return found


def test_asa_api_holds_the_doors_and_three_folders():
    modules = {p.stem for p in API.glob("*.py") if p.name != "__init__.py"}
    folders = {p.name for p in API.iterdir() if (p / "__init__.py").is_file()}
    assert modules == DOORS and folders == set(FOLDERS)


def test_no_lower_folder_imports_a_door():
    doors = {f"asa.api.{name}" for name in DOORS} | {"asa.api"}
    back = [f"{path.relative_to(API.parent)}:{line} imports {module}"
            for folder in FOLDERS for path in sorted((API / folder).glob("*.py"))
            for module, line in _imports(path)
            if module in doors and not module.startswith(tuple(f"asa.api.{f}" for f in FOLDERS))]
    assert back == []
