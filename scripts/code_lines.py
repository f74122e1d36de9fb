#!/usr/bin/env python
"""Lines of a Python package: all of them, and its code without docstrings, comments and blank lines (a line counts
when a token other than a comment, a newline or an indent starts or runs on it, outside the docstrings of the module,
its classes and functions).

    python scripts/code_lines.py asa        # at d3e0669: files 210  lines 31902  code 21278
"""
from __future__ import annotations

import argparse
import ast
import io
import tokenize
from pathlib import Path

SKIPPED = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}


def code_lines(source: str) -> int:
    """The lines of ``source`` that hold code (not a docstring, a comment or blank)."""
    docstrings = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            value = first.value if isinstance(first, ast.Expr) else None
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                docstrings.update(range(first.lineno, first.end_lineno + 1))
    lines = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in SKIPPED:
            lines.update(n for n in range(token.start[0], token.end[0] + 1) if n not in docstrings)
    return len(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package", type=Path, help="a folder of Python files (e.g. asa)")
    files = sorted(parser.parse_args(argv).package.rglob("*.py"))
    texts = [f.read_text(encoding="utf-8") for f in files]
    print(f"files {len(files)}  lines {sum(len(t.splitlines()) for t in texts)}  code {sum(map(code_lines, texts))}")


if __name__ == "__main__":
    main()
