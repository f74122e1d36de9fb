"""Dependencies point down the pipeline: io, the declared option choices and the plug-in tables, then data / losses / models, then
the formats for other tools (``formats``, which eval reads to run an ONNX file), then eval, then train (whose
validation uses eval's metrics), then the pretraining methods (which assemble those parts), then api,
then the compute planner, then cli. Above the package, never imported by it: ``scripts/`` and the measuring tools of
``benchmarks/``.

Every form of import counts: ``from asa.x import y``, ``from asa import x``, ``import asa.x as y``,
relative imports, ``asa.x`` reached through ``import asa`` (also the lazy ``asa.load_encoder``) and
``importlib.import_module("asa.x")``, at module level or inside a function."""
from __future__ import annotations

import ast
import functools
from pathlib import Path

import asa
from tests.fixtures.imports import ROOT, imported, module_of

PACKAGE = ROOT / "asa"
TOOLS = {"scripts": ROOT / "scripts", "benchmarks": ROOT / "benchmarks"}  # above the package
LEVEL = {"io": 0, "choices": 0, "plugins": 0, "data": 1, "losses": 1, "models": 1, "formats": 2, "eval": 2, "train": 3, "methods": 4, "api": 5,
         "planning": 6, "study": 6, "cli": 7}
# stages of one level import each other only along these edges (a cycle is never declared)
PEERS = {("models", "losses"), ("eval", "formats")}


@functools.cache
def imports_in(path: Path) -> tuple[tuple[str, int], ...]:
    """`imported` of a file of the checkout, read once per test session."""
    return tuple(imported(path))


def stage_of(module: str) -> str | None:
    """The stage of a dotted ``asa`` module (a lazy attribute of ``asa``: the stage it comes from);
    None for the package root and its plain attributes (``asa.__version__``)."""
    parts = module.split(".")
    if parts[0] != "asa" or len(parts) < 2:
        return None
    if parts[1] in getattr(asa, "_LAZY", {}):
        return stage_of(asa._LAZY[parts[1]])
    return parts[1] if parts[1] in LEVEL else None


@functools.cache
def library_imports() -> tuple[tuple[str, str, str], ...]:
    """(file:line, its stage, imported stage) for every import of another stage inside ``asa``."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        stage = stage_of(module_of(path))
        if stage is None:  # asa/__init__.py: the version and the lazy names only
            continue
        for module, line in imports_in(path):
            target = stage_of(module)
            if target is not None and target != stage:
                found.append((f"{path.relative_to(ROOT)}:{line}", stage, target))
    return tuple(found)


def test_every_stage_is_known():
    stages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    stages |= {p.stem for p in PACKAGE.glob("*.py") if p.name != "__init__.py"}
    assert stages == set(LEVEL)
    assert library_imports()  # the scan sees the package's imports


def test_the_scan_sees_every_form_of_import(tmp_path):
    """Each form names its stage, relative ones resolved from the file's own package."""
    source = ("import asa\nimport asa.models as m\nfrom asa import eval\nfrom asa.data import x\n"
              "from ..io import y\nfrom . import step\nimport importlib\nimportlib.import_module('asa.api.config')\n"
              "def f():\n    from asa.methods import z\n    return asa.load_encoder, asa.__version__\n")
    path = tmp_path / "probe.py"
    path.write_text(source)
    stages = sorted(filter(None, (stage_of(m) for m, _ in imported(path, "asa.train.probe"))))
    assert stages == sorted(["models", "eval", "data", "io", "train", "api", "methods", "models"])


def test_no_import_points_up_the_pipeline():
    upward = [(f, target) for f, stage, target in library_imports() if LEVEL[target] > LEVEL[stage]]
    assert upward == []


def test_stages_of_one_level_import_each_other_only_along_declared_edges():
    sideways = [(f, stage, target) for f, stage, target in library_imports()
                if LEVEL[target] == LEVEL[stage] and (stage, target) not in PEERS]
    assert sideways == []
    assert not {(b, a) for a, b in PEERS} & PEERS


def test_io_and_choices_import_nothing_of_asa_and_only_the_console_scripts_import_the_planner():
    assert [(f, t) for f, stage, t in library_imports() if stage in ("io", "choices", "plugins")] == []
    assert [(f, t) for f, stage, t in library_imports() if t == "planning" and stage != "cli"] == []


def test_the_package_imports_neither_scripts_nor_benchmarks():
    """``benchmarks/`` and ``scripts/`` are not installed with asa: an import of them works only in a
    checkout (and would tie the library to its measuring tools)."""
    found = [f"{path.relative_to(ROOT)}:{line} {module}" for path in sorted(PACKAGE.rglob("*.py"))
             for module, line in imports_in(path) if module.split(".")[0] in TOOLS]
    assert found == []


def _module_exists(module: str) -> bool:
    parts = module.split(".")
    if parts[0] != "asa":
        return True
    if len(parts) == 2 and (parts[1] in getattr(asa, "_LAZY", {}) or hasattr(asa, parts[1])):
        return True
    target = ROOT.joinpath(*parts)
    return target.with_suffix(".py").is_file() or (target / "__init__.py").is_file()


def test_scripts_and_benchmarks_import_existing_stages_and_never_the_console_scripts():
    """The tools drive the library through its stages (``asa.api``, ``asa.data``, ...): not through
    ``asa.cli``, whose modules are thin entries, and never a module that has moved or gone."""
    into_cli, missing = [], []
    for tool, folder in TOOLS.items():
        for path in sorted(folder.rglob("*.py")):
            for module, line in imports_in(path):
                where = f"{path.relative_to(ROOT)}:{line} {module}"
                if module == "asa.cli" or module.startswith("asa.cli."):
                    into_cli.append(where)
                elif module.split(".")[0] == "asa" and not _module_exists(module):
                    missing.append(where)
    assert into_cli == [] and missing == []


def test_the_package_imports_only_modules_that_exist():
    missing = [f"{path.relative_to(ROOT)}:{line} {module}" for path in sorted(PACKAGE.rglob("*.py"))
               for module, line in imports_in(path) if module.split(".")[0] == "asa" and not _module_exists(module)]
    assert missing == []


# modules whose functions may import asa, and why (say it in the module too)
LOCAL_IMPORTS: dict[str, str] = {
    "cli/help.py": "a Hydra console script's --help is printed from its kept text before torch loads: the job's "
                   "modules (asa.api, asa.cli.common) load once the script runs or composes its help",
    "cli/cohort.py": "asa-cohort's --help is printed from its kept text before torch loads (asa.cli.help.kept_help): "
                     "the cohort's modules load once the command runs or composes its help",
    "cli/export.py": "asa-export's --help is printed from its kept text before torch loads (asa.cli.help.kept_help): "
                     "the formats and the export load once the command runs or composes its help",
    "cli/nnunet.py": "asa-nnunet's --help and its one-line refusals (no command, one not nnU-Net's, nnU-Net absent) "
                     "are said before torch loads: asa's torchvision import loads once nnU-Net's command runs",
    "cli/study.py": "asa-study's --help is printed from its kept text before torch loads (asa.cli.help.kept_text): the "
                    "study's modules load once the command runs",
    "data/prepare/pipeline.py": "asa-prepare's --help and option refusals load neither torch nor MONAI, which asa's "
                                "dataset readers (asa.data.layouts) import: the readers load once the options pass",
}


def test_asa_imports_sit_at_module_level():
    """A function-local import of asa hides a real dependency (or a cycle): every one is at the top of
    its module, but in the modules of LOCAL_IMPORTS."""
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


def _module_graph() -> dict[str, set[str]]:
    """Module -> the asa modules it imports (a name inside a module counts as its module), every form, every place."""
    modules = {module_of(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets = set()
        for name, _ in imports_in(path):
            while name and name not in modules:  # asa.models.build_network -> asa.models
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
        graph[module] = targets
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected parts of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        while work:
            node, edges = work[-1]
            step = next((t for t in edges if t not in index or t in stack), None)
            if step is not None and step not in index:
                index[step] = low[step] = len(index)
                stack.append(step)
                work.append((step, iter(sorted(graph[step]))))
                continue
            if step is not None:  # on the stack: a way back
                low[node] = min(low[node], index[step])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                part = []
                while not part or part[-1] != node:
                    part.append(stack.pop())
                if len(part) > 1:
                    found.append(sorted(part))
    return found


def test_no_module_of_asa_imports_itself_back():
    """No import circle, through any chain of modules or any deferred import: the one found has a test of its own."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles(_module_graph()) == []
