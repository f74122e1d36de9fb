"""scripts/code_lines.py counts code lines without docstrings, comments and blanks, by hand on a small source."""
from __future__ import annotations

from scripts.code_lines import code_lines, main

SOURCE = '''"""Module docstring,
on two lines."""

import os  # a comment


def f(x):
    """A docstring."""
    # a comment line
    return (x +
            1)


class C:
    """Class docstring."""

    y = "not a docstring"
'''


def test_code_lines_by_hand(tmp_path, capsys):
    assert code_lines(SOURCE) == 6  # import, def, return (two lines), class, y
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text(SOURCE)
    main([str(tmp_path / "pkg")])
    assert capsys.readouterr().out.split() == ["files", "1", "lines", str(len(SOURCE.splitlines())), "code", "6"]
