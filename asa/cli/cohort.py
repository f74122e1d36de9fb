"""``asa-cohort PRETRAIN_RUN FINETUNE_RUN``: were validation or test cases in the pretraining cohort
(:func:`asa.api.cohort.check_cohort`)? Its ``--help`` is printed from its kept text (`asa.cli.help.kept_help`) before
torch loads: the cohort's modules load inside the functions that use them."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from asa.cli.help import kept_help
from asa.cli.interrupted import ctrl_c_exits

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    from asa.api.machinery.cohort import COHORT_FILE

    parser = argparse.ArgumentParser(
        prog="asa-cohort",
        description="Say how many validation and test cases of a fine-tuning run were in the cohort of the "
                    "pretraining run its encoder comes from (that run's train and val parts), by case id, by "
                    "subject and by image content (the sha256 of the RAS+ voxels: renamed copies count). The "
                    f"cohort's digests are kept as {COHORT_FILE} in the pretraining run folder.",
        epilog="exit codes: 0 no test case in the cohort; 2 a test case was in it (unless --accept-overlap) or a "
               "refused input; 1 an error.\n"
               "example: asa-cohort runs/pretrain runs/brats --json runs/brats/cohort_overlap.json\n"
               "         asa-cohort runs/pretrain  (record the cohort; then asa-export runs/pretrain/checkpoints/best.pt "
               "OUT carries it)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("pretrain_run", help="the pretraining run folder (or a checkpoint in its checkpoints/)")
    parser.add_argument("finetune_run", nargs="?", default=None,
                        help="the fine-tuning run folder whose splits.json is checked (left out: only record the "
                             f"pretraining run's {COHORT_FILE}, which asa-export then carries in the encoder export)")
    parser.add_argument("--subsets", nargs="+", default=["val", "test"], metavar="SUBSET",
                        help="the parts of the fine-tuning split to check (default: val test)")
    parser.add_argument("--accept-overlap", action="store_true",
                        help="report test cases found in the cohort without refusing (exit 0)")
    parser.add_argument("--json", metavar="FILE", default=None, help="also write the whole report as JSON")
    parser.add_argument("--workers", type=int, default=4, help="processes reading the images (default 4)")
    return parser


@ctrl_c_exits("asa-cohort", "no report; run the same command again")
def main(argv: Sequence[str] | None = None) -> int:
    kept_help("cohort", argv, lambda: build_parser().format_help())
    from asa.api.cohort import check_cohort
    from asa.api.machinery.cohort import COHORT_FILE, check_run_kinds, pretraining_cohort, run_folder
    from asa.api.machinery.run import describe_error
    from asa.cli.common import EXIT_FAILED, EXIT_FINISHED, EXIT_REFUSED
    from asa.data.cohort import cohort_digest

    args = build_parser().parse_args(argv)
    if args.finetune_run is None:
        try:
            check_run_kinds(args.pretrain_run, None)
            cohort = pretraining_cohort(args.pretrain_run, workers=args.workers)
        except (FileNotFoundError, ValueError) as err:
            print(f"[asa-cohort] refused: {describe_error(err)}", file=sys.stderr, flush=True)
            return EXIT_REFUSED
        size = cohort_digest(cohort)
        print(f"[asa-cohort] recorded {size['cases']} seen case(s), {size['images']} image digest(s) in "
              f"{run_folder(args.pretrain_run) / COHORT_FILE}; asa-export of a checkpoint of this run carries them, "
              "and asa-finetune / asa-probe with that export check their held-out cases", flush=True)
        return EXIT_FINISHED
    try:
        report = check_cohort(args.pretrain_run, args.finetune_run, subsets=args.subsets, workers=args.workers)
    except (FileNotFoundError, ValueError) as err:
        print(f"[asa-cohort] refused: {describe_error(err)}", file=sys.stderr, flush=True)
        return EXIT_REFUSED
    except Exception as err:
        print(f"[asa-cohort] error: {describe_error(err)}", file=sys.stderr, flush=True)
        return EXIT_FAILED
    for line in report["lines"]:
        print(f"[asa-cohort] {line}", flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(report, fh, indent=2)
    test = report["subsets"].get("test", {}).get("overlapping", [])
    if test and not args.accept_overlap:
        print(f"[asa-cohort] refused: {len(test)} test case(s) were in the pretraining cohort, so test metrics of "
              "this encoder are not held out; re-split the fine-tuning data without them, or pass "
              "--accept-overlap to report them anyway", file=sys.stderr, flush=True)
        return EXIT_REFUSED
    return EXIT_FINISHED


if __name__ == "__main__":
    sys.exit(main())
