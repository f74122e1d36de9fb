"""``asa-study``: the console script of `asa.study.study` (its ``--help`` is the study's documentation, printed from
its kept text before torch loads: `asa.cli.help.kept_text`)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from asa.cli.help import HELP_FLAGS, kept_text

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> None:
    """Run the study; a study folder (``--out``) it cannot write is refused first, with exit 2 and one line
    naming it, before anything is read or written (the study would fail at its first write, with a traceback)."""
    args = sys.argv[1:] if argv is None else list(argv)
    if any(a in HELP_FLAGS for a in args):
        def parser_help() -> str:
            from asa.study.study import build_parser

            return build_parser().format_help()

        print(kept_text("study", parser_help), end="", flush=True)
        sys.exit(0)
    from asa.api.machinery.rundir import RunDirError, check_writable
    from asa.cli.common import EXIT_REFUSED
    from asa.study.study import build_parser, main as study

    known, _ = build_parser().parse_known_args(args)  # a bad command line: the study's own parser says so below
    try:
        check_writable(known.out.expanduser().absolute(), "--out")
    except RunDirError as err:
        print(f"[asa-study] refused: {err}", file=sys.stderr, flush=True)
        sys.exit(EXIT_REFUSED)
    sys.exit(study(args))


if __name__ == "__main__":
    main()
