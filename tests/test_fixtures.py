"""No test module imports another: what tests share lives in ``tests/fixtures/`` (imported as ``tests.fixtures.x``),
in a folder's helper (``tests/train/toy.py``) or, as pytest fixtures, in a ``conftest.py``; so every test folder
runs alone (``python -m pytest tests/api``)."""
from __future__ import annotations

from tests.fixtures.imports import ROOT, imported


def test_no_test_module_imports_another():
    found = [f"{path.relative_to(ROOT)}:{line} {module}" for path in sorted((ROOT / "tests").rglob("*.py"))
             for module, line in imported(path, own="tests.x")
             if module.rpartition(".")[2].startswith("test_") or module.rpartition(".")[2] == "conftest"]
    assert found == []
