"""``asa-export CHECKPOINT OUT_DIR``: a hub-ready model folder (:func:`asa.api.export.export_model`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from asa.api.export import export_model
from asa.api.machinery.run import OptionError, describe_error
from asa.api.machinery.rundir import RunDirError
from asa.data.cohort import COHORT_LEVELS
from asa.formats import SEGMENTER, choices, formats
from asa.cli.common import EXIT_FAILED, EXIT_FINISHED, EXIT_REFUSED
from asa.cli.interrupted import ctrl_c_exits

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
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
    parser.add_argument("--nnunet-channels", type=int, default=None, metavar="K",
                        help="the nnU-Net checkpoint for K image channels (a 1-channel stem repeated "
                             "and divided by K; default: the encoder's own)")
    parser.add_argument("--nnunet-plans", default=None, metavar="PLANS_JSON",
                        help="add the 3d_fullres_asa configuration to this nnU-Net plans file, so that "
                             "nnUNetv2_train runs it (--overwrite replaces an earlier one there)")
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
                        help="hub (default): the model folder; onnx: the folder and model.onnx, which asa-predict "
                             "runs in onnxruntime; nnunet-results: instead of the folder, the segmenter's nnU-Net v2 "
                             "results folder, which nnUNetv2_predict_from_modelfolder runs")
    parser.add_argument("--dataset-id", type=int, default=None, metavar="ID",
                        help="nnunet-results: the plans' Dataset<ID> (1-999, default 975) in $nnUNet_results, where "
                             "two models need two ids")
    parser.add_argument("--dataset-name", default=None, metavar="NAME",
                        help="nnunet-results: the name after Dataset<ID>_ (default asa_<task>)")
    parser.add_argument("--spacing", type=float, nargs="+", default=None, metavar="MM",
                        help="nnunet-results: the plans' voxel size in mm (one edge, or three in RAS order) of a "
                             "checkpoint that records none; default: the recorded one")
    parser.add_argument("--debug", action="store_true", help="full tracebacks instead of one-line errors")
    return parser


@ctrl_c_exits("asa-export", "an export stopped part-way may lack files; run the same command again with --overwrite")
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        out = export_model(args.checkpoint, args.out_dir, overwrite=args.overwrite, license=args.license,
                           nnunet_channels=args.nnunet_channels, nnunet_plans=args.nnunet_plans, cohort=args.cohort,
                           base_model=args.base_model, datasets=args.dataset, format=args.format,
                           dataset_id=args.dataset_id, dataset_name=args.dataset_name, spacing=args.spacing)
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
