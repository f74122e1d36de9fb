"""``asa-study``: the console script of `asa.study.study` (its ``--help`` is the study's documentation)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from asa.api.machinery.rundir import RunDirError, check_writable
from asa.cli.common import EXIT_REFUSED
from asa.study.study import build_parser, main as study

__all__ = ["build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> None:
    """Run the study; a study folder (``--out``) it cannot write is refused first, with exit 2 and one line
    naming it, before anything is read or written (the study would fail at its first write, with a traceback)."""
    known, _ = build_parser().parse_known_args(argv)  # a bad command line: the study's own parser says so below
    try:
        check_writable(known.out.expanduser().absolute(), "--out")
    except RunDirError as err:
        print(f"[asa-study] refused: {err}", file=sys.stderr, flush=True)
        sys.exit(EXIT_REFUSED)
    sys.exit(study(argv))


if __name__ == "__main__":
    main()
