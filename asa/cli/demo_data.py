"""``asa-demo-data``: write a phantom dataset in one of the real layouts."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from asa.data import LAYOUTS, write_demo_dataset

_LAYOUT_HELP = """layouts:
  bids      sub-XXX/[ses-M00/]anat/sub-XXX[_ses-M00]_T1w.nii.gz           (pretraining, T1)
  caps      subjects/sub-*/ses-M000/t1_linear/*_desc-Crop_res-1x1x1_T1w.nii.gz (pretraining, T1)
  filelist  images/case_XXX.nii.gz + files.csv (id,path)                  (pretraining, T1)
  brats     BraTS2021_XXXXX/BraTS2021_XXXXX_{t1,t1ce,t2,flair,seg}.nii.gz  (labels 0/1/2/4)
  ibsr      IBSR_NN/IBSR_NN_ana_strip.nii.gz + IBSR_NN_segTRI_ana.nii.gz  (1 CSF, 2 GM, 3 WM)
  wmh       <site>/<id>/pre/{T1,FLAIR}.nii.gz + <site>/<id>/wmh.nii.gz      (1 WMH, 2 other)
  msd       dataset.json + imagesTr/<case>_000k.nii.gz + labelsTr/<case>.nii.gz (nnU-Net raw)

Phantoms are deterministic in --seed, 1 mm voxels, skull-stripped; files are stored in non-RAS
orientations for some layouts (BraTS LPS, IBSR LIA, WMH LAS) as real data are.

example:
  asa-demo-data --layout brats --out /tmp/brats_demo --cases 6 --size 64 --seed 0
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="asa-demo-data",
        description="Write a synthetic brain-MRI phantom dataset in the layout asa reads for a real dataset.",
        epilog=_LAYOUT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--layout", required=True, choices=LAYOUTS, help="dataset layout to write")
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    parser.add_argument("--cases", type=int, default=4, help="number of cases (default: 4)")
    parser.add_argument("--size", type=int, default=64, help="volume edge in voxels, 1 mm each (default: 64)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        out = write_demo_dataset(args.layout, args.out, cases=args.cases, size=args.size, seed=args.seed)
    except ValueError as err:
        print(f"asa-demo-data: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.cases} {args.layout} case(s) of {args.size}^3 voxels to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
