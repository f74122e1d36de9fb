"""``asa-study``: the console script of `asa.study.study` (its ``--help`` is the study's documentation)."""

from __future__ import annotations

import sys

from asa.study.study import build_parser, main as study

__all__ = ["build_parser", "main"]


def main() -> None:
    sys.exit(study())


if __name__ == "__main__":
    main()
