"""``asa-export CHECKPOINT OUT_DIR``: a hub-ready model folder (:func:`asa.api.export.export_model`). Its ``--help``
is printed from its kept text (`asa.cli.help.kept_help`) before torch loads: the formats and the export load inside
the functions that use them."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from asa.cli.help import kept_help
from asa.cli.interrupted import ctrl_c_exits

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    from asa.data.cohort import COHORT_LEVELS
    from asa.formats import choices, formats

    parser = argparse.ArgumentParser(
        prog="asa-export",
        description="Write the encoder of a checkpoint as a model folder the Hugging Face hub takes as is: "
                    "model.safetensors, config.json (network spec, method, data, crop, spacing, preprocessing, "
                    "asa version and commit) and README.md (the model card).",
        epilog="asa.load_encoder(OUT_DIR) and asa-finetune model.pretrained=OUT_DIR read the folder.\n"
               "example: asa-export runs/pretrain/checkpoints/last.pt models/asa-base --license apache-2.0",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("checkpoint", help="last.pt / best.pt of asa-pretrain or asa-finetune, encoder.pt, "
                                           "encoder.safetensors or a model folder")
    parser.add_argument("out_dir", help="the folder to write (refused when it holds anything but an earlier export)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier export in OUT_DIR (its files are moved to OUT_DIR.replaced-<time>/)")
    parser.add_argument("--license", default=None,
                        help="the model card's licence id (e.g. apache-2.0; default: the one the source records, "
                             "else other, the training data's terms); a published file's recorded licence is kept")
    parser.add_argument("--cohort", choices=COHORT_LEVELS, default=None,
                        help="what cohort.json.gz carries of the pretraining cohort: full (ids, subjects, digests), "
                             "digests (default: digests under opaque keys, no participant named; asa-finetune / "
                             "asa-probe still find a pretraining scan among their held-out cases) or none (only its "
                             "summary digest in config.json)")
    parser.add_argument("--base-model", default=None, metavar="REPO_ID",
                        help="the card's base_model: the Hugging Face id of the encoder a fine-tuned network started from")
    parser.add_argument("--dataset", action="append", default=[], metavar="REPO_ID",
                        help="a Hugging Face dataset id for the card's datasets list (repeatable)")
    parser.add_argument("--format", choices=choices(), default="hub",
                        help="; ".join(f"{name}: {formats()[name].about}" for name in choices()))
    for fmt in (f for f in formats().values() if f.options):  # each format's own options, under its name
        group = parser.add_argument_group(f"{fmt.name} options")
        for option in fmt.options:
            group.add_argument(option.flag, type=option.type, nargs=option.nargs, default=None, metavar=option.metavar,
                               help=option.help)
    parser.add_argument("--debug", action="store_true", help="full tracebacks instead of one-line errors")
    return parser


@ctrl_c_exits("asa-export", "an export stopped part-way may lack files; run the same command again with --overwrite")
def main(argv: Sequence[str] | None = None) -> int:
    kept_help("export", argv, lambda: build_parser().format_help())
    from asa.api.export import export_model
    from asa.api.machinery.run import OptionError, describe_error
    from asa.api.machinery.rundir import RunDirError
    from asa.cli.common import EXIT_FAILED, EXIT_FINISHED, EXIT_REFUSED
    from asa.formats import SEGMENTER, formats

    args = build_parser().parse_args(argv)
    try:
        out = export_model(args.checkpoint, args.out_dir, overwrite=args.overwrite, license=args.license,
                           cohort=args.cohort, base_model=args.base_model, datasets=args.dataset, format=args.format,
                           **{o.name: getattr(args, o.name) for f in formats().values() for o in f.options})
    except (OptionError, RunDirError, FileExistsError) as err:
        if args.debug:
            raise
        print(f"[asa-export] refused: {err}", file=sys.stderr, flush=True)
        return EXIT_REFUSED
    except Exception as err:
        if args.debug:
            raise
        print(f"[asa-export] error: {describe_error(err)}", file=sys.stderr, flush=True)
        return EXIT_FAILED
    chosen = formats()[args.format]  # its folder alone, or the model folder's formats (the segmenter's last)
    kinds = [chosen] if chosen.alone else sorted((f for f in formats().values() if not f.alone),
                                                 key=lambda f: f.level == SEGMENTER)
    print(f"[asa-export] wrote {out}/: {', '.join(n for f in kinds for n in f.files if (out / n).exists())}")
    return EXIT_FINISHED


if __name__ == "__main__":
    sys.exit(main())
