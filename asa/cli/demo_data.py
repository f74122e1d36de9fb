"""``asa-demo-data``: write phantoms, or subjects warped from the MNI152 template, in one of the real layouts."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from asa import data  # its names load on first use (torch with them): a kept --help loads none
from asa.cli.help import kept_help
from asa.cli.interrupted import ctrl_c_exits

_LAYOUT_HELP = """layouts:
  bids      sub-XXX/[ses-M00/]anat/sub-XXX[_ses-M00]_T1w.nii.gz           (pretraining, T1)
  caps      subjects/sub-*/ses-M000/t1_linear/*_desc-Crop_res-1x1x1_T1w.nii.gz (pretraining, T1)
  filelist  images/case_XXX.nii.gz + files.csv (id,path)                  (pretraining, T1)
  brats     BraTS2021_XXXXX/BraTS2021_XXXXX_{t1,t1ce,t2,flair,seg}.nii.gz  (labels 0/1/2/4)
  ibsr      IBSR_NN/IBSR_NN_ana_strip.nii.gz + IBSR_NN_segTRI_ana.nii.gz  (1 CSF, 2 GM, 3 WM)
  wmh       <site>/<id>/pre/{T1,FLAIR}.nii.gz + <site>/<id>/wmh.nii.gz      (1 WMH, 2 other)
  msd       dataset.json + imagesTr/<case>_000k.nii.gz + labelsTr/<case>.nii.gz (nnU-Net raw)

Phantoms are deterministic in --seed, 1 mm voxels, skull-stripped; files are stored in non-RAS
orientations for some layouts (BraTS LPS, IBSR LIA, WMH LAS) as real data are. Case ids are
synthetic (BraTS2021_DEMO_00000, BRATS_DEMO_001), never a real dataset's. The labeled layouts (brats,
ibsr, wmh, msd) hold other subjects than the pretraining ones (bids, caps, filelist), whatever the
seeds: a demo labeled set is never made of a demo cohort's heads. A non-empty --out is
refused unless --overwrite.

--anatomy writes subjects warped from the MNI ICBM152 2009 template (needs
pip install "asa[anatomy]", which installs nilearn and its copy of the template) in bids, caps,
filelist, ibsr or msd; --size is then the grid holding the whole brain (64 -> about 3 mm voxels).
--lesions adds grey-matter heterotopia (msd label 4) and enlarged deep grey nuclei on one side (label 5),
lesions with normal tissue intensities (bids, caps, filelist, msd).

Realism options of the template subjects (defaults: the subjects as ever, byte for byte):
  --placement free  lesions with no location prior: heterotopia anywhere in the white matter and a
                    grey-matter enlargement anywhere on the grey / white border (cortex or nuclei),
                    either hemisphere, sizes drawn (msd labels 4 heterotopia, 5 grey_enlargement);
                    fixed (default): deep white matter, the deep grey nuclei of one side
  --placement planted
                    free, with 3-6 heterotopia nodules of radius 6-12 mm: a lesion load learnable from one
                    or two labeled cases (asa-study --scale planted; a bids cohort of it carries the lesions
                    unlabeled)
  --skull           whole heads (skull, scalp, neck) in air with Rician noise, as a T1 before brain
                    extraction; --size is then the grid holding the head (64 -> about 3.6 mm voxels)
  --contrasts t1 t1ce t2 flair
                    bids: more contrasts per subject beside the T1w (_ce-gadolinium_T1w, _T2w, _FLAIR),
                    a pretraining cohort with the fine-tuning channels (phantoms too)

example:
  asa-demo-data --layout brats --out /tmp/brats_demo --cases 6 --size 64 --seed 0
  asa-demo-data --layout brats --out /tmp/brats_case --cases 1 --size 240 240 155   # full BraTS size
  asa-demo-data --layout msd --anatomy --lesions --out /tmp/mni_msd --cases 8 --size 64
  asa-demo-data --layout msd --anatomy --lesions --placement free --skull --out /tmp/heads --size 64
  asa-demo-data --layout bids --anatomy --contrasts t1 t1ce t2 flair --out /tmp/cohort --cases 40
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="asa-demo-data",
        description="Write a synthetic brain-MRI phantom dataset in the layout asa reads for a real dataset.",
        epilog=_LAYOUT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--layout", required=True, choices=data.LAYOUTS, help="dataset layout to write")
    parser.add_argument("--out", required=True, help="output folder (created if missing; refused if not empty)")
    parser.add_argument("--cases", type=int, default=4, help="number of cases (default: 4)")
    parser.add_argument("--size", type=int, nargs="+", default=[64], metavar="N",
                        help="volume edge in voxels, 1 mm each (default: 64), or three sizes X Y Z "
                             "(e.g. 240 240 155, a full BraTS case)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--targets", action="store_true",
                        help="aged phantoms with age, sex and diagnosis per subject (bids, caps, filelist: "
                             "participants.tsv or files.csv), for asa-finetune data=targets")
    parser.add_argument("--anatomy", action="store_true",
                        help="subjects warped from the MNI152 template instead of phantoms (bids, caps, filelist, "
                             'ibsr, msd; pip install "asa[anatomy]")')
    parser.add_argument("--lesions", action="store_true",
                        help="with --anatomy: grey-matter heterotopia and one-sided enlarged deep grey nuclei "
                             "(msd labels 4 and 5)")
    parser.add_argument("--placement", choices=data.PLACEMENTS, default="fixed",
                        help="with --lesions: fixed (default: deep white matter, the deep grey nuclei), free "
                             "(anywhere in the tissue, either hemisphere, sizes drawn) or planted (free, more and "
                             "larger heterotopia)")
    parser.add_argument("--skull", action="store_true",
                        help="with --anatomy: whole heads (skull, scalp, neck) in air with Rician noise, not "
                             "skull-stripped brains (bids, caps, filelist, msd)")
    parser.add_argument("--contrasts", nargs="+", choices=tuple(data.BIDS_CONTRASTS), default=["t1"], metavar="C",
                        help=f"bids: the contrasts per subject, t1 first, of {', '.join(data.BIDS_CONTRASTS)} "
                             "(default: t1)")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into a non-empty --out (files of the same name are replaced)")
    return parser


@ctrl_c_exits("asa-demo-data", "the folder may hold some of the cases; run the same command again with --overwrite")
def main(argv: Sequence[str] | None = None) -> int:
    kept_help("demo-data", argv, lambda: build_parser().format_help())
    parser = build_parser()
    args = parser.parse_args(argv)
    if len(args.size) not in (1, 3):
        parser.error(f"--size takes one edge or three sizes X Y Z, got {len(args.size)} values")
    size = args.size[0] if len(args.size) == 1 else tuple(args.size)
    try:
        out = data.write_demo_dataset(args.layout, args.out, cases=args.cases, size=size, seed=args.seed,
                                      overwrite=args.overwrite, targets=args.targets, anatomy=args.anatomy,
                                      lesions=args.lesions, placement=args.placement, skull=args.skull,
                                      contrasts=args.contrasts)
    except (ValueError, FileExistsError, ImportError) as err:
        print(f"asa-demo-data: error: {err}", file=sys.stderr)
        return 2
    shape = f"{size}^3" if isinstance(size, int) else " x ".join(map(str, size))
    with_targets = " with age, sex and diagnosis" if args.targets else ""
    source = (" MNI152 template subject(s)" + (" with lesions" if args.lesions else "")) if args.anatomy else " case(s)"
    source += (f" ({args.placement} placement)" if args.placement != "fixed" else "") + \
        (" with skull, scalp and neck" if args.skull else "") + \
        (f" in {len(args.contrasts)} contrasts" if args.contrasts != ["t1"] else "")
    print(f"wrote {args.cases} {args.layout}{source} of {shape} voxels{with_targets} to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
