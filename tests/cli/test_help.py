"""``--help`` of the Hydra console scripts offers what the command line takes (the groups of the primary config's
defaults list, each option of which composes; never a group kept for composing presets: ``network``,
``pretrain_network``, ``sizes/*``, asa-pretrain's ``task``), shows the config the command line composes, and is
printed from its kept text, without torch, once composed (`asa.cli.help`)."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from asa.api.config import ENTRY_POINTS, compose_config
from asa.cli import help as cli_help
from asa.cli import pretrain as pretrain_script
from asa.models import PRESETS, families

# every entry point's --help twice in one child process: composed, then read back from its kept text; then whether
# the second read loaded torch (one interpreter start-up for all)
_HELP_ALL = """
import runpy, sys
for name in sys.argv[1:]:
    for _ in range(2):
        sys.argv = ["asa-" + name, "--help"]
        print("=== asa." + name, flush=True)
        try:
            runpy.run_module("asa.cli." + name, run_name="__main__", alter_sys=True)
        except SystemExit as err:
            print("=== exit", err.code or 0, flush=True)
"""
_KEPT_ONLY = """
import os, sys
from pathlib import Path
from asa.cli import help
from asa.cli.pretrain import main
kept = Path(os.environ["ASA_CACHE"]) / "help" / f"pretrain-{help.help_digest('pretrain')}.txt"
kept.parent.mkdir(parents=True, exist_ok=True)
kept.write_text("kept help\\n")
sys.argv = ["asa-pretrain", "--help"]
try:
    main()
except SystemExit as err:
    print("exit", err.code, "torch" in sys.modules, "hydra" in sys.modules, file=sys.stderr)
"""
# what each entry point's command line chooses (its primary config's defaults list)
USER_GROUPS = {"pretrain": {"data", "experiment", "method", "model", "optim", "trainer"},
               "finetune": {"data", "experiment", "model", "optim", "task", "trainer"},
               "predict": set(), "evaluate": {"data", "task"}, "probe": {"data", "task"}, "preprocess": {"data"}}
COMPOSE_ONLY = {"network", "pretrain_network", "sizes/encoder", "sizes/decoder"}


@pytest.fixture(scope="module")
def helps(tmp_path_factory) -> dict[str, tuple[tuple[int, str], tuple[int, str], Path]]:
    """entry -> ((exit code, text) composed, (exit code, text) kept, the cache folder)."""
    cache = tmp_path_factory.mktemp("asa-cache")
    proc = subprocess.run([sys.executable, "-c", _HELP_ALL, *ENTRY_POINTS], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "ASA_CACHE": str(cache)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs: dict[str, list[tuple[int, str]]] = {}
    for part in proc.stdout.split("=== asa.")[1:]:
        name, _, rest = part.partition("\n")
        text, _, code = rest.rpartition("=== exit ")
        runs.setdefault(name, []).append((int(code.strip()), text))
    return {name: (first, second, cache) for name, (first, second) in runs.items()}


def _groups(text: str) -> dict[str, list[str]]:
    if "== Config groups" not in text:
        return {}
    section = text.split("== Config groups")[1].split("==\n", 1)[1].split("\n== ")[0]
    return {g: o.split(", ") for g, _, o in (line.partition(": ") for line in section.strip().splitlines())}


@pytest.mark.slow
@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_help_offers_only_what_the_command_line_takes(helps, name):
    (code, text), kept, _ = helps[name]
    assert code == 0 and f"asa-{name}" in text and "Usage" in text, text[-2000:]
    assert kept == (code, text)  # read back from the kept text, as composed
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


def test_kept_help_loads_neither_torch_nor_hydra(tmp_path):
    proc = subprocess.run([sys.executable, "-c", _KEPT_ONLY], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "ASA_CACHE": str(tmp_path)})
    assert proc.stderr.strip().splitlines()[-1] == "exit 0 False False", proc.stderr[-2000:]
    assert proc.stdout == "kept help\n"


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
    (tmp_path / "help").mkdir()
    (tmp_path / "help" / f"pretrain-{cli_help.help_digest('pretrain')}.txt").write_text("kept help\n")
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
