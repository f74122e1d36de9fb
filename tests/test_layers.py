"""Dependencies point down the pipeline: io, then data/losses/models, then train/eval, then the
pretraining methods (which assemble those parts), then api, then the benchmarks and the compute planner (bench, which drive the whole stack), then cli."""
from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "asa"
LEVEL = {"io": 0, "data": 1, "losses": 1, "models": 1, "train": 2, "eval": 2, "methods": 3, "api": 4, "bench": 5,
         "cli": 6}
IMPORT = re.compile(r"^\s*(?:from|import)\s+asa\.(\w+)", re.M)


def imports() -> list[tuple[str, str, str]]:
    """(file, its stage, imported stage) for every ``asa.<stage>`` import, also those inside functions."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        if len(rel.parts) < 2:
            continue
        stage = rel.parts[0]
        found += [(str(rel), stage, m.group(1)) for m in IMPORT.finditer(path.read_text()) if m.group(1) != stage]
    return found


def test_every_stage_is_known():
    stages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert stages == set(LEVEL)
    assert imports()  # the scan sees the package's imports


def test_no_import_points_up_the_pipeline():
    upward = [(f, target) for f, stage, target in imports() if LEVEL[target] > LEVEL[stage]]
    assert upward == []


def test_io_imports_nothing_of_asa_and_only_the_console_scripts_import_bench():
    assert [(f, t) for f, stage, t in imports() if stage == "io"] == []
    assert [(f, t) for f, stage, t in imports() if t == "bench" and stage != "cli"] == []


# modules whose functions may import asa, and why (say it in the module too)
LOCAL_IMPORTS = {"bench/gpu_parts.py": "each GPU-check part runs in its own process and loads only its own stack"}


def test_asa_imports_sit_at_module_level():
    """A function-local import of asa hides a real dependency (or a cycle): every one is at the top of
    its module, but in the modules of LOCAL_IMPORTS."""
    import ast

    local = []
    for path in PACKAGE.rglob("*.py"):
        if str(path.relative_to(PACKAGE)) in LOCAL_IMPORTS:
            continue
        for fn in ast.walk(ast.parse(path.read_text())):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                             [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else
                             ["."] if isinstance(node, ast.ImportFrom) else [])
                    if any(n == "." or n == "asa" or n.startswith("asa.") for n in names):
                        local.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert local == []
