"""``asa-study``: the console script of `asa.study.study` (its ``--help`` is the study's documentation)."""

from __future__ import annotations

import sys

from asa.study.study import main as study

__all__ = ["main"]


def main() -> None:
    sys.exit(study())


if __name__ == "__main__":
    main()
