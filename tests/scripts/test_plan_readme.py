"""The asa-plan example of docs/planning.md is what the command prints: the block under "Planning a run" is
checked against a fresh run of the command above it (paste the printed output there when it changes)."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

from asa.planning import ESTIMATE_CAVEATS
from asa.cli.plan import main

PAGE = Path(__file__).resolve().parents[2] / "docs" / "planning.md"


def _example() -> tuple[list[str], str]:
    """(the asa-plan arguments, the output block) of the planning page's example."""
    text = PAGE.read_text()
    section = text[text.index("# Planning a run\n"):]
    section = section[:section.index("\n## ")] if "\n## " in section else section
    match = re.search(r"```bash\n(asa-plan .*?)\n```\n```\n(.*?)\n```", section, re.S)
    assert match, "docs/planning.md: no asa-plan example (a bash block followed by its output block)"
    command = match.group(1).replace("\\\n", " ")
    argv = shlex.split(command)
    return argv[1:], match.group(2)


def test_readme_plan_example_is_the_commands_output(tmp_path, monkeypatch, capsys):
    argv, expected = _example()
    assert not {"--benchmarks-md", "--from-json"} & set(argv), "the example must give its figures as options"
    monkeypatch.chdir(tmp_path)  # nothing read from the working directory
    runs = []
    for _ in range(2):
        assert main(argv) == 0
        runs.append(capsys.readouterr().out.rstrip("\n"))
    assert runs[0] == runs[1]  # deterministic
    assert runs[0] == expected, f"docs/planning.md's asa-plan output is stale; the command prints:\n{runs[0]}"
    assert "wall time" in expected and ", estimated*" in expected and ESTIMATE_CAVEATS[0] in expected
