"""The README's newcomer path runs as written: Quickstart then the Worked example, in one folder; every
command of the README and of the topic pages under docs/ is one the package installs, with options it takes,
and every relative link of those pages leads to a file and heading that exist."""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
DEFAULT_OUTPUT = {"asa-pretrain": "runs/pretrain", "asa-finetune": "runs/finetune"}
HYDRA = {"asa-pretrain": "pretrain", "asa-finetune": "finetune", "asa-predict": "predict",
         "asa-evaluate": "evaluate", "asa-probe": "probe", "asa-preprocess": "preprocess"}
ARGPARSE = {"asa-demo-data": "asa.cli.demo_data", "asa-plan": "asa.cli.plan", "asa-export": "asa.cli.export",
            "asa-cohort": "asa.cli.cohort", "asa-study": "asa.study.study", "asa-prepare": "asa.cli.prepare"}


def _block_commands(text: str) -> list[list[str]]:
    """The `asa-*` shell commands of a text's bash blocks, continuation lines joined."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split("#", 1)[0].strip()
            for part in line.split("&&"):
                words = shlex.split(part)
                if words and words[0].startswith("asa-"):
                    commands.append(words)
    return commands


def _all_commands() -> list[tuple[str, list[str]]]:
    return [(page.relative_to(ROOT).as_posix(), words) for page in PAGES for words in _block_commands(page.read_text())]


def _commands(section: str) -> list[list[str]]:
    """The shell commands of a README section's bash blocks, continuation lines joined."""
    text = README.read_text()
    start = text.index(f"## {section}")
    return _block_commands(text[start:text.index("\n## ", start + 3)])


def _option(words: list[str], key: str) -> str | None:
    for w in words[1:]:
        if w.startswith(f"{key}="):
            return w.split("=", 1)[1]
    return None


def test_quickstart_then_worked_example_never_reuse_a_run_folder():
    commands = _commands("Quickstart") + _commands("Worked example")
    runs = [(_option(w, "output_dir") or DEFAULT_OUTPUT[w[0]]) for w in commands if w[0] in DEFAULT_OUTPUT]
    assert len(runs) >= 3
    assert len(set(runs)) == len(runs), f"two runs share an output_dir (the second is refused): {runs}"


def test_worked_example_outputs_stay_out_of_the_data_and_follow_the_runs():
    commands = {w[0]: w for w in _commands("Worked example")}
    data = Path(commands["asa-demo-data"][commands["asa-demo-data"].index("--out") + 1])
    pred = Path(_option(commands["asa-predict"], "output"))
    assert data not in pred.parents and pred != data
    brats = _option(commands["asa-finetune"], "output_dir")
    assert _option(commands["asa-predict"], "checkpoint").startswith(brats)
    assert _option(commands["asa-predict"], "split_file") == _option(commands["asa-evaluate"], "split_file")
    assert _option(commands["asa-evaluate"], "pred") == str(pred)
    pretrain = _option(commands["asa-pretrain"], "output_dir")
    assert _option(commands["asa-finetune"], "model.pretrained").startswith(pretrain)


def test_the_quickstart_starts_by_installing_the_torch_pair_the_tests_pin():
    """It makes and activates a virtual environment, then its first install is the torch the tests run against with
    its torchvision, not the newest torch (which the test extra's pinned torchvision would replace with another
    build on the next line)."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    torchvision = re.search(r'"torchvision==([\d.]+)"', pyproject).group(1)
    torch_minor = re.search(r"the tests run against torch (\d+\.\d+)", pyproject).group(1)
    text = README.read_text()
    block = re.search(r"```bash\n(.*?)```", text[text.index("## Quickstart"):], re.S).group(1)
    lines = [line.split("#", 1)[0] for line in block.splitlines()]
    venv = shlex.split(lines[0])
    assert venv[1:3] == ["-m", "venv"] and ". .venv/bin/activate" in lines[0], lines[0]
    first = shlex.split(next(line for line in lines if "pip install" in line))
    assert first[:2] == ["pip", "install"] and f"torchvision=={torchvision}" in first, first
    assert any(re.fullmatch(rf"torch=={re.escape(torch_minor)}\.\d+", w) for w in first), first


def test_the_quickstart_names_what_each_extra_installs():
    """Each extra of the test line is named with the tools of its list in pyproject.toml (``prepare``: asa-prepare's
    default brain extraction, deepbet, among them)."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    text = README.read_text()
    line = next(ln for ln in text[text.index("## Quickstart"):].splitlines() if ".[test," in ln)
    said = line.split("prepare:", 1)[1]
    for requirement in re.search(r"^prepare = \[(.*)\]", pyproject, re.M).group(1).split(","):
        name = re.match(r'\s*"([a-z]+)', requirement).group(1)
        assert {"antspyx": "ANTsPy"}.get(name, name).lower() in said.lower(), (name, said)


def test_no_page_cites_an_issue_number():
    """Issue numbers are the tracker's, which a reader of the repository cannot open."""
    for page in PAGES:
        assert not re.search(r"\bissues? #?\d+", page.read_text(), re.I), page


def test_the_readme_is_a_front_page_and_maps_every_topic_page():
    text = README.read_text()
    assert [h for h in re.findall(r"^## (.+)$", text, re.M)] == [
        "Quickstart", "Worked example: pretrain → fine-tune → predict → evaluate", "Documentation", "Licence"]
    mapped = set(re.findall(r"\]\(docs/([\w-]+\.md)\)", text.split("## Documentation", 1)[1]))
    assert mapped == {p.name for p in PAGES[1:]}, "a page under docs/ that the README's map leaves out, or the reverse"


def test_every_command_is_an_installed_script():
    section = (ROOT / "pyproject.toml").read_text().split("[project.scripts]\n", 1)[1].split("\n\n", 1)[0]
    scripts = set(re.findall(r"^([\w-]+) = ", section, re.M))
    assert {"asa-pretrain", "asa-plan"} <= scripts
    commands = _all_commands()
    assert len(commands) >= 30 and {page for page, _ in commands} > {"README.md", "docs/planning.md"}
    for page, words in commands:
        assert words[0] in scripts, (page, words)


@pytest.mark.parametrize("page,words", _all_commands(), ids=lambda v: v if isinstance(v, str) else " ".join(v)[:60])
def test_every_command_takes_its_options(page, words):
    """Hydra scripts: the overrides compose against the typed schema (a typo, a renamed key or another script's
    preset is refused); argparse scripts: the arguments parse. Nothing runs."""
    if words[0] in HYDRA:
        from asa.api import load_config

        load_config(HYDRA[words[0]], *words[1:])
    elif words[0] in ARGPARSE:
        importlib.import_module(ARGPARSE[words[0]]).build_parser().parse_args(words[1:])
    elif words[0] == "asa-nnunet":  # nnU-Net's command and its own arguments (the route's are on nnU-Net's branch)
        assert re.fullmatch(r"nnUNetv2_\w+", words[1]), words
    else:  # asa-torchrun: torchrun's own options, then the script's module and its Hydra overrides
        assert words[0] == "asa-torchrun" and "-m" in words, words
        module = words[words.index("-m") + 1]
        script = {f"asa.cli.{name}": name for name in HYDRA.values()}[module]
        from asa.api import load_config

        load_config(script, *words[words.index("-m") + 2:])


def _anchors(text: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens (code blocks left out)."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in re.findall(r"^#+ (.+)$", text, re.M)}


def test_relative_links_lead_to_files_and_headings_that_exist():
    checked = 0
    for page in PAGES:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"\w+://", target):
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            assert dest.exists(), (page.name, target)
            if anchor:
                assert anchor in _anchors(dest.read_text()), (page.name, target)
            checked += 1
    assert checked >= 20


def test_every_installed_script_is_named_in_the_readme():
    section = (ROOT / "pyproject.toml").read_text().split("[project.scripts]\n", 1)[1].split("\n\n", 1)[0]
    scripts = set(re.findall(r"^([\w-]+) = ", section, re.M))
    assert "asa-torchrun" in scripts
    text = README.read_text()
    assert [name for name in sorted(scripts) if f"`{name}`" not in text] == []


def test_what_the_readme_commands_write_into_the_checkout_is_ignored_by_git():
    """The folders the README's commands write (runs, the demo data) are left out of git's view of the checkout."""
    ignored = {line.strip().strip("/") for line in (ROOT / ".gitignore").read_text().splitlines()}
    written = []
    for words in _block_commands(README.read_text()):
        for i, word in enumerate(words):
            if word in ("--out",) and i + 1 < len(words):
                written.append(words[i + 1])
            for key in ("output_dir", "output", "data.store"):
                if word.startswith(f"{key}="):
                    written.append(word.split("=", 1)[1])
        if words[0] in DEFAULT_OUTPUT and _option(words, "output_dir") is None:
            written.append(DEFAULT_OUTPUT[words[0]])
    relative = [Path(w) for w in written if not Path(w).is_absolute()]
    assert {"runs", "demo"} <= {p.parts[0] for p in relative}
    assert [str(p) for p in relative if p.parts[0] not in ignored] == []
