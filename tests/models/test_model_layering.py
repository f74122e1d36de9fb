"""The folders of ``asa/models`` keep to their layers: the shared parts (``blocks/`` and the modules of
SHARED: the registry, the families' declarations, their encoder faces and file road, the networks' encoder keys,
the network declarations, the presets, the weights reader, the masked twin's contract, torchvision's import)
import no network family; a family (``swvit/``, ``swin/``, ``vit/``, ``cnn/``, ``primus/``) imports its own files and the
shared parts only, never another family;
the heads (``heads/``) sit on the families' encoders, and nothing below imports them. The modules that
act on whole networks (``compiled``, ``portable``, ``zoo``, the package itself) sit above every folder.
No module of ``asa.models`` is part of an import cycle, not even through an import for the type checker.

Every form of import counts, as in ``tests/test_layers.py`` (the scan of ``tests/fixtures/imports.py``)."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from tests.fixtures.imports import ROOT, imported

MODELS = ROOT / "asa" / "models"
# each folder of asa/models -> the folders it may import besides its own files and the SHARED modules
FOLDERS: dict[str, set[str]] = {
    "blocks": set(),  # the shared parts: patches, the mirror map and SACA, objectives, encoder weights
    "swvit": {"blocks"},
    "swin": {"blocks"},
    "vit": {"blocks"},
    "cnn": {"blocks"},
    "primus": {"blocks"},
    "heads": {"blocks", "swvit", "swin", "vit"},  # heads on a family's encoder
}
# top-level modules every folder may import; they import no folder
SHARED = {"registry", "family", "face", "road", "keys", "declared", "presets", "weights", "twin", "published",
          "torchvision_ops"}


def modules(root: Path) -> Iterator[tuple[Path, str]]:
    """(file, dotted module) of every module under ``root``, a folder laid out as ``asa/models``."""
    for path in sorted(root.rglob("*.py")):
        parts = ("asa", "models", *path.relative_to(root).with_suffix("").parts)
        yield path, ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def place(module: str) -> str | None:
    """The folder or top-level module of ``asa.models`` that ``module`` lies in ("" the package
    itself); None outside ``asa.models``."""
    parts = module.split(".")
    return None if parts[:2] != ["asa", "models"] else (parts[2] if len(parts) > 2 else "")


def crossings(root: Path = MODELS) -> list[str]:
    """``file:line module`` of every import that leaves its layer, in the tree ``root``."""
    found = []
    for path, own in modules(root):
        here = place(own)
        if here in FOLDERS:
            allowed = {here, *FOLDERS[here], *SHARED}
        elif here in SHARED:
            allowed = set(SHARED)
        else:
            continue  # the modules above every folder
        for module, line in imported(path, own):
            target = place(module)
            if target is not None and target not in allowed:
                found.append(f"{path.relative_to(root.parent)}:{line} {module}")
    return found


def cycles(root: Path = MODELS) -> list[list[str]]:
    """The import cycles among the modules under ``root`` (each once, from its first module)."""
    graph = {own: {m for m, _ in imported(path, own) if place(m) is not None and m != own}
             for path, own in modules(root)}
    found: list[list[str]] = []
    for start in sorted(graph):
        stack = [(start, [start])]
        while stack:
            node, trail = stack.pop()
            for nxt in sorted(graph.get(node, ())):
                if nxt == start:
                    found.append(trail)
                elif nxt > start and nxt not in trail and nxt in graph:  # a cycle is found from its first module
                    stack.append((nxt, [*trail, nxt]))
    return found


def test_every_folder_has_a_layer():
    folders = {p.name for p in MODELS.iterdir() if (p / "__init__.py").is_file()}
    assert folders == set(FOLDERS)
    assert all(allowed <= set(FOLDERS) for allowed in FOLDERS.values())
    assert {name for name in SHARED if (MODELS / f"{name}.py").is_file()} == SHARED


def test_no_family_imports_another_and_the_shared_parts_import_no_family():
    assert crossings() == []


def test_no_module_of_the_models_is_in_an_import_cycle():
    assert cycles() == []


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, source in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(source)
    return root


def test_a_planted_import_across_the_layers_is_caught(tmp_path):
    """The scan reports what it should: a family importing another (in a function, relatively, through
    ``TYPE_CHECKING``), a shared module importing a family, the package root; not what is allowed."""
    root = _tree(tmp_path / "models", {
        "registry.py": "from asa.models.blocks.patch import patchify\n",
        "blocks/patch.py": "from asa.models.registry import x\n",
        "cnn/masked.py": ("from asa.models.blocks.patch import patchify\nfrom asa.models.cnn.resenc import y\n"
                          "def f():\n    from asa.models.swvit.encoder import z\n"),
        "swin/sa_swin.py": "from ..swvit import saca\nfrom asa.models import register_network\n",
        "cnn/transfer.py": "if TYPE_CHECKING:\n    from asa.models.cnn.resenc import ResEncUNet\n",
        "cnn/resenc.py": "from asa.models.cnn.transfer import load\n",
        "heads/puzzles.py": "from asa.models.swvit.encoder import EncoderSettings\n",
        "swvit/encoder.py": "from asa.models.heads.puzzles import p\nfrom asa.models.portable import q\n",
    })
    assert sorted(crossings(root)) == sorted([
        "models/registry.py:1 asa.models.blocks.patch", "models/cnn/masked.py:4 asa.models.swvit.encoder",
        "models/swin/sa_swin.py:1 asa.models.swvit", "models/swin/sa_swin.py:2 asa.models",
        "models/swvit/encoder.py:1 asa.models.heads.puzzles", "models/swvit/encoder.py:2 asa.models.portable"])
    assert cycles(root) == [["asa.models.blocks.patch", "asa.models.registry"],
                            ["asa.models.cnn.resenc", "asa.models.cnn.transfer"],
                            ["asa.models.heads.puzzles", "asa.models.swvit.encoder"]]


# --- from outside asa.models: the package's exports and the families' declarations, not a family's folder ---------

FAMILY_FOLDERS = {"swvit", "swin", "vit", "cnn", "primus", "heads"}  # the folders holding a family's (or head's) own
# modules outside asa.models that are a family's own method, its network defined in that folder: they may reach in
BOUND = {
    "asa/methods/sa_swin.py": {"swin"},  # SA-Swin's pretraining: its encoder prefixes and the swin probe tokens
    "asa/methods/rpl.py": {"heads"},  # relative patch location: its puzzle head's grid and block layout
    "asa/methods/jigsaw.py": {"heads"},  # the jigsaw puzzle: its head's permutations
}


def reaching_in(package: Path = ROOT / "asa", bound: dict[str, set[str]] = BOUND) -> list[str]:
    """``file:line module`` of every import, in a module of ``package`` outside ``asa/models``, of a module inside a
    family's folder (`FAMILY_FOLDERS`), but the folders ``bound`` allows that module."""
    found = []
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package.parent)
        if relative.parts[:2] == ("asa", "models"):
            continue
        own = ".".join(relative.with_suffix("").parts[:-1] if path.name == "__init__.py" else
                       relative.with_suffix("").parts)
        for module, line in imported(path, own):
            target = place(module)
            if target in FAMILY_FOLDERS and target not in bound.get(relative.as_posix(), set()):
                found.append(f"{relative.as_posix()}:{line} {module}")
    return found


def test_outside_the_models_a_family_is_reached_through_the_package_or_its_declaration():
    assert reaching_in() == []
    assert all(set(folders) <= FAMILY_FOLDERS and (ROOT / path).is_file() for path, folders in BOUND.items())


def test_a_planted_import_into_a_family_folder_is_caught(tmp_path):
    """Every form of import into a family's folder is reported from outside asa.models; the package, its shared
    modules, a bound method's own family and the models' own folders are not."""
    root = _tree(tmp_path / "asa", {
        "eval/probe.py": ("from asa.models import patch_regions\nfrom asa.models.swvit.region_attention import p\n"
                          "def f():\n    from ..models.cnn import resenc\n"),
        "api/export.py": "import asa.models.primus.family\nfrom asa.formats.nnunet import x\n",
        "methods/sa_swin.py": "from asa.models.swin.sa_swin import y\nfrom asa.models.heads.puzzles import z\n",
        "models/cnn/resenc.py": "from asa.models.cnn.transfer import load\n",
    })
    assert reaching_in(root, {"asa/methods/sa_swin.py": {"swin"}}) == [
        "asa/api/export.py:1 asa.models.primus.family", "asa/eval/probe.py:2 asa.models.swvit.region_attention",
        "asa/eval/probe.py:4 asa.models.cnn", "asa/methods/sa_swin.py:2 asa.models.heads.puzzles"]
