"""Every Python block of the README and of docs/ runs as written, a page's blocks in order in one session, in
a folder that holds the run they name: ``runs/pretrain``, the Quickstart's run (`asa-pretrain` with no
arguments: model=tiny), built here once on a smaller crop and fewer phantoms. A block that is not meant to
run (a sketch with ``...`` for its methods, one that needs data or minutes a test does not have) says so on
the line before it, with why: ``<!-- not run: <reason> -->``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"(?:<!-- not run: (?P<reason>[^\n]*?) -->\n)?```python\n(?P<code>.*?)```", re.S)
NOT_RUN = re.compile(r"^<!-- not run", re.M)  # a marker on a line of its own


def _blocks(page: Path) -> list[tuple[str, str | None]]:
    """(code, why it is not run or None) of each Python block of ``page``, in order."""
    return [(m["code"], m["reason"]) for m in BLOCK.finditer(page.read_text())]


RUN = {page.relative_to(ROOT).as_posix(): [code for code, why in _blocks(page) if why is None] for page in PAGES}
RUN = {page: blocks for page, blocks in RUN.items() if blocks}


def test_every_block_not_run_says_why_and_the_marker_is_on_a_block():
    for page in PAGES:
        text = page.read_text()
        assert len(NOT_RUN.findall(text)) == sum(why is not None for _, why in _blocks(page)), page  # no stray marker
        assert all(len(why.strip()) > 10 for _, why in _blocks(page) if why is not None), page
    assert "docs/weights-elsewhere.md" in RUN  # its first block loads the Quickstart's run


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory) -> Path:
    """A folder holding ``runs/pretrain``: the Quickstart's tiny run, on 32³ crops of six 40³ phantoms."""
    from asa.api import load_config, pretrain

    folder = tmp_path_factory.mktemp("docs")
    pretrain(load_config("pretrain", "model=tiny", "trainer=smoke", "data.crop=32", "data.demo.size=40",
                         "data.demo.cases=6", f"data.demo.cache_dir={folder / 'cache'}", "device=cpu",
                         f"output_dir={folder / 'runs' / 'pretrain'}"))
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("page", sorted(RUN))
def test_the_python_blocks_of_a_page_run_as_written(page, quickstart_run, monkeypatch):
    monkeypatch.chdir(quickstart_run)
    session: dict = {"__name__": "__docs__"}
    for code in RUN[page]:
        exec(compile(code, f"{page} (python block)", "exec"), session)
