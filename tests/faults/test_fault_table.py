"""The "What each fault gets" table (docs/run-folders.md) agrees with the code: each outcome's exit code is the constant
the console scripts exit with, and each row names a test that exists."""

from __future__ import annotations

import re
import signal
from pathlib import Path

from asa.cli.common import EXIT_FAILED, EXIT_FINISHED, EXIT_REFUSED

ROOT = Path(__file__).resolve().parents[2]
OUTCOMES = {"refused up front": EXIT_REFUSED, "survived": EXIT_FINISHED, "failed": EXIT_FAILED,
            "stopped": 128 + signal.SIGTERM}  # the rows name SIGTERM, or SIGINT (Ctrl-C); `entry` exits 128 + N


def _rows() -> list[list[str]]:
    text = (ROOT / "docs" / "run-folders.md").read_text()
    section = text.split("\n## What each fault gets\n", 1)[1].split("\n#", 1)[0]
    lines = [ln for ln in section.splitlines() if ln.startswith("|")][2:]  # past the header and its rule
    return [[cell.strip() for cell in ln.strip("|").split(" | ")] for ln in lines]


def test_each_listed_exit_code_is_the_outcomes_constant():
    rows = _rows()
    assert len(rows) >= 10
    for fault, outcome, code, _ in rows:
        assert outcome in OUTCOMES, (fault, outcome)
        if outcome == "stopped" and "SIGINT" in fault and "SIGTERM" not in fault:
            assert int(code) == 128 + signal.SIGINT, (fault, outcome, code)
            continue
        assert int(code) == OUTCOMES[outcome], (fault, outcome, code)
        assert outcome != "stopped" or "SIGTERM" in fault, fault


def test_each_row_names_a_test_that_exists():
    defined = set()
    for path in (ROOT / "tests").rglob("test_*.py"):
        defined |= set(re.findall(r"^def (test_\w+)\(", path.read_text(), flags=re.M))
    for fault, _, _, test in _rows():
        assert test.strip("`") in defined, (fault, test)
