"""The README's newcomer path runs as written: Quickstart then the Worked example, in one folder."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
DEFAULT_OUTPUT = {"asa-pretrain": "runs/pretrain", "asa-finetune": "runs/finetune"}


def _commands(section: str) -> list[list[str]]:
    """The shell commands of a README section's bash blocks, continuation lines joined."""
    text = README.read_text()
    start = text.index(f"## {section}")
    body = text[start:text.index("\n## ", start + 3)]
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", body, re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split("#", 1)[0].strip()
            for part in line.split("&&"):
                words = shlex.split(part)
                if words and words[0].startswith("asa-"):
                    commands.append(words)
    return commands


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
