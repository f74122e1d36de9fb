"""Citations of the method point somewhere: code, configs, tests and docs cite docs/method.md by its
numbered sections (and docs/python-api.md for the public names), never a reference file that is not part of
the repository; and every section they cite is a heading of docs/method.md."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
METHOD = ROOT / "docs" / "method.md"
SCOPES = ("asa", "configs", "tests", "docs", "scripts", "benchmarks", "README.md")
SELF = Path(__file__).resolve().relative_to(ROOT).as_posix()

SECTION = r"\d+(?:\.\d+)?[a-z]?"
# "docs/method.md §1.6", "method.md §1.2–1.3", "[method §1.6b](method.md#...)"
CITATION = re.compile(rf"method(?:\.md)?\]?\s+§\s*({SECTION})(?:\s*[–-]\s*({SECTION}))?")
ANCHOR = re.compile(r"method\.md#([\w-]+)")


def _tracked() -> dict[str, str]:
    """Path -> text of every tracked file in the scopes (this test left out)."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--", *SCOPES], cwd=ROOT, capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the tracked files are unknown")
    texts = {}
    for name in listed.stdout.decode().split("\0"):
        path = ROOT / name
        if not name or name == SELF or not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" not in data:  # text files only
            texts[name] = data.decode("utf-8", errors="replace")
    assert any(name.startswith("asa/") for name in texts) and "README.md" in texts, "git ls-files listed too little"
    return texts


def _sections() -> set[str]:
    """The section numbers of docs/method.md's headings ("1", "1.6", "1.6b", ...)."""
    text = re.sub(r"```.*?```", "", METHOD.read_text(), flags=re.S)
    return set(re.findall(rf"^#{{2,4}} ({SECTION})\.?\s", text, re.M))


def _anchors() -> set[str]:
    """GitHub's heading anchors of docs/method.md (as tests/test_readme.py derives them)."""
    text = re.sub(r"```.*?```", "", METHOD.read_text(), flags=re.S)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in re.findall(r"^#+ (.+)$", text, re.M)}


def test_nothing_cites_a_design_file_outside_the_repository():
    offenders = [f"{name}:{i}: {line.strip()[:100]}" for name, text in _tracked().items()
                 for i, line in enumerate(text.splitlines(), 1) if re.search(r"\bDESIGN\b", line)]
    assert not offenders, "cite docs/method.md (or docs/python-api.md) instead:\n" + "\n".join(offenders)


def test_every_cited_section_of_the_method_page_exists():
    sections = _sections()
    assert {"1", "1.1", "1.2", "1.5", "1.6", "1.6b", "1.8", "2", "3", "5"} <= sections, sorted(sections)
    cited, missing = 0, []
    for name, text in _tracked().items():
        for i, line in enumerate(text.splitlines(), 1):
            for match in CITATION.finditer(line):
                for number in filter(None, match.groups()):
                    cited += 1
                    if number not in sections:
                        missing.append(f"{name}:{i}: §{number}")
    assert cited >= 60, f"only {cited} citations of docs/method.md found: the pattern no longer matches them"
    assert not missing, f"sections that docs/method.md does not have (its: {sorted(sections)}):\n" + "\n".join(missing)


def test_every_link_into_the_method_page_names_a_heading():
    anchors = _anchors()
    missing = [f"{name}: #{anchor}" for name, text in _tracked().items()
               for anchor in ANCHOR.findall(text) if anchor not in anchors]
    assert not missing, "\n".join(missing)
