"""BENCHMARKS.md rows land in the results table, above the sections that follow it."""
from __future__ import annotations

import pytest

from benchmarks import report


def test_a_row_goes_below_the_last_table_row_not_after_later_sections(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "markdown_row", lambda r: f"| {r['date']} | new |")
    md = tmp_path / "BENCHMARKS.md"
    report.append_markdown({"date": "d1"}, md)  # a new file: header, table head, the row
    assert md.read_text().startswith("# Benchmarks") and md.read_text().endswith("| d1 | new |\n")
    md.write_text(md.read_text() + "\n## Notes\n\n| other | table |\n| --- | --- |\n")
    report.append_markdown({"date": "d2"}, md)
    lines = md.read_text().splitlines()
    assert lines.index("| d2 | new |") == lines.index("| d1 | new |") + 1 < lines.index("## Notes")
    assert lines[-2:] == ["| other | table |", "| --- | --- |"]


def test_a_file_without_the_results_table_is_refused(tmp_path):
    md = tmp_path / "B.md"
    md.write_text("# something else\n")
    with pytest.raises(ValueError, match="no results table"):
        report.append_markdown({"date": "d"}, md)
    assert md.read_text() == "# something else\n"
