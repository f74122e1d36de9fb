"""``asa-prepare``: raw T1 scans (BIDS or a file list) to the prepared, MNI-aligned BIDS-derivatives folder
that ``asa-preprocess`` and ``asa-pretrain`` read."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

# settings, choices and refusals only: the tools and asa's readers (torch) load once the options are accepted
from asa.cli.help import kept_help
from asa.cli.interrupted import ctrl_c_exits
from asa.data.prepare.case import MIN_SIMILARITY, PrepareSettings
from asa.data.prepare.pipeline import INPUT_LAYOUTS, parse_shard, prepare
from asa.data.prepare.stages import BRAIN_TOOLS, TRANSFORMS
from asa.data.prepare.template import BOXES
from asa.data.prepare.tools import MissingTool

_EPILOG = """per case: N4 bias correction (ANTs), brain extraction (--brain), registration of the T1 to the
symmetric MNI152 2009 template (ANTs, --transform), resampling to --spacing mm and the crop (--box); the
other contrasts (T2w, FLAIR, ce-T1w) registered rigidly to their T1 and carried through the same
transform. Written per case: the images, the brain mask, the transforms (ANTs .mat, to take a
prediction back to the native scan: asa.data.prepare.to_native) and a record; qc/index.html ranks the
cases (mirror symmetry, brain volume, similarity to the template; outliers by robust z).

A case whose registration failed (similarity to the template below --min-similarity, e.g. a header
turned 90 degrees), an empty, unreadable or 2D scan, and under --brain none a whole head are failed cases:
listed with the reason, nothing of them written; the scans of every case are read and checked before the
first registration. A rerun prepares only what is missing. OUT is a new folder, an empty one or one
asa-prepare made (with the same settings), and one it can write (checked first). Exit codes: 0 every case
prepared, 1 some case failed (listed, the others prepared), 2 a refused option, output folder or a
missing tool, 130/143 stopped by SIGINT/SIGTERM (the recorded cases stay; those under way and their
temporary files are removed, and a rerun removes what a killed run left).

examples:
  asa-prepare /data/ADNI_BIDS /data/ADNI_prepared --workers 16
  asa-prepare files.csv /data/prepared --brain robex --transform rigid
  asa-prepare raw/ prepared/ --spacing 3 --crop 48     # a quick look on a coarse grid
  asa-prepare /data/BIDS /scratch/prepared --shard ${SLURM_ARRAY_TASK_ID}/${SLURM_ARRAY_TASK_COUNT}
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="asa-prepare", epilog=_EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     description="Prepare raw T1 scans as the paper did: N4, registration to the "
                                                 "symmetric MNI template, brain extraction, 1 mm, 128^3 crop.")
    defaults = PrepareSettings  # the class's defaults: an instance checks its crop against the template (nilearn)
    parser.add_argument("source", help="a raw BIDS folder or a file list (files.csv: id,path[,t1ce,t2,flair])")
    parser.add_argument("out", help="the prepared folder to write (never inside the source)")
    parser.add_argument("--layout", choices=INPUT_LAYOUTS, default="auto",
                        help="how to read the source (default: auto)")
    parser.add_argument("--transform", choices=TRANSFORMS, default=defaults.transform,
                        help=f"registration of the T1 to the template (default: {defaults.transform})")
    parser.add_argument("--brain", choices=BRAIN_TOOLS, default=defaults.brain,
                        help=f"brain extraction (default: {defaults.brain}; none: the inputs are skull-stripped "
                             "already, the brain their bright voxels: above 0.1 %% of the 99th percentile)")
    parser.add_argument("--spacing", type=float, default=defaults.spacing,
                        help=f"voxel edge of the prepared images in mm (default: {defaults.spacing:g})")
    parser.add_argument("--box", choices=BOXES, default=defaults.box,
                        help="centre: a cube of --crop voxels at the template brain's centre (default); template: "
                             "the template brain's whole bounding box")
    parser.add_argument("--crop", type=int, default=defaults.crop,
                        help=f"the cube's edge in voxels with --box centre (default: {defaults.crop})")
    parser.add_argument("--workers", type=int, default=1, help="processes, one core and one case each (default: 1)")
    parser.add_argument("--shard", default="0/1", metavar="I/N",
                        help="prepare only the cases whose sorted index is I modulo N (default: 0/1, all)")
    parser.add_argument("--seed", type=int, default=0, help="ANTs' sampling seed (default: 0)")
    parser.add_argument("--min-similarity", type=float, default=MIN_SIMILARITY, metavar="R",
                        help="a case whose prepared T1 correlates less than R with the template failed its "
                             f"registration: listed, not written (default: {MIN_SIMILARITY:g}; correct ones measured "
                             "0.51-0.90 on real images, a header turned 90 degrees or flipped front to back "
                             "0.05-0.34; 0: none refused)")
    parser.add_argument("--into-existing", action="store_true",
                        help="write into OUT although it holds files and is not a folder asa-prepare made "
                             "(refused without it)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _kept(argv: Sequence[str] | None) -> str:
    """What a stopped run leaves, read off OUT when the stop arrives: its recorded cases (those under way were
    removed unrecorded)."""
    try:
        out = Path(build_parser().parse_known_args(argv)[0].out).expanduser()
    except SystemExit:  # stopped while the command line was read
        return "nothing prepared"
    recorded = sum(1 for _ in out.glob("sub-*/**/*_desc-prepare.json")) if out.is_dir() else 0
    if not recorded:
        return f"no case is prepared in {out}; run the same command again"
    return (f"{out} holds {recorded} prepared case(s), each recorded; the cases under way were removed; run the same "
            "command again to prepare the rest")


@ctrl_c_exits("asa-prepare", _kept)
def main(argv: Sequence[str] | None = None) -> int:
    kept_help("prepare", argv, lambda: build_parser().format_help())
    args = build_parser().parse_args(argv)
    try:
        settings = PrepareSettings(transform=args.transform, brain=args.brain, spacing=args.spacing, box=args.box,
                                   crop=args.crop)
        parse_shard(args.shard)
        if args.workers < 1:
            raise ValueError(f"--workers {args.workers}: expected a number of processes >= 1")
        if not 0 <= args.min_similarity < 1:
            raise ValueError(f"--min-similarity {args.min_similarity}: expected a correlation in [0, 1)")
        report = prepare(args.source, args.out, settings=settings, layout=args.layout, workers=args.workers,
                         shard=args.shard, progress=not args.no_progress, seed=args.seed,
                         min_similarity=args.min_similarity, into_existing=args.into_existing)
    except (MissingTool, ValueError, FileNotFoundError) as err:  # PrepareSettingsError, a reader's CaseError too
        print(f"asa-prepare: error: {err}", file=sys.stderr)
        return 2
    print(report.summary())
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
