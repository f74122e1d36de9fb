"""Claims in the docs that once were wrong stay corrected: the fine-tuning optimiser's default, the
machine dependence of measured tables, what the block puzzles' low losses mean."""

from __future__ import annotations

from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_finetuning_docs_do_not_call_sgd_the_default():
    text = (DOCS / "finetuning.md").read_text()
    assert "default `optim=sgd`" not in text and "`optim=adamw` by default" in text


def test_the_age_table_says_it_depends_on_the_machine():
    text = (DOCS / "case-targets.md").read_text()
    before_table = text.split("| age, 32³ |")[0].rsplit("\n\n", 2)[-2]  # the paragraph above the table
    assert "depend" in before_table and "on the machine" in before_table


def test_the_block_puzzles_are_explained_by_what_a_block_shows_and_measured_with_the_options():
    text = (DOCS / "studies.md").read_text()
    assert "may have been solved by block-edge shortcuts" not in text
    section = text.split("## What the block puzzles learn", 1)[1]
    assert "`method.shift=8 method.block_norm=true`" in section and "scripts/puzzle_pretext.py" in section
    assert (Path(__file__).resolve().parents[1] / "scripts" / "puzzle_pretext.py").is_file()
