"""The similarity to the template of correct and failed asa-prepare registrations: the bound of --min-similarity.

Each T1 of ``asa-demo-data --anatomy`` (skull-stripped brains, or whole heads with ``--skull``) is written twice
more into a raw BIDS folder: under a random pose (up to +-15 degrees about each axis and +-20 mm: a correct
registration undoes it) and, for each of ``--turns``, with its header turned 90 degrees about that axis (the
scanner's axes mislabelled: no affine registration from the centres of mass undoes it). All are prepared with
``min_similarity=0`` (none refused) and each case's QC similarity and symmetry is printed, then the range of each
kind (docs/own-data.md, "A failed case is not written").

    python -m benchmarks.prepare_failures --size 24 --cases 4 --brain none --spacing 6 --box template --out /tmp/pf24
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy.spatial.transform import Rotation

from asa.data import write_demo_dataset
from asa.data.prepare import PrepareSettings, prepare

_AXES = {"x": 0, "y": 1, "z": 2}


def turned(axis: str) -> np.ndarray:
    """A 90-degree turn about RAS axis ``axis`` (x, y or z), as a 4x4 affine."""
    i, j = [k for k in range(3) if k != _AXES[axis]]
    turn = np.eye(4)
    turn[[i, i, j, j], [i, j, i, j]] = [0, -1, 1, 0]
    return turn


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=24)
    p.add_argument("--cases", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skull", action="store_true", help="whole heads (prepare them with --brain deepbet or robex)")
    p.add_argument("--brain", default="none")
    p.add_argument("--spacing", type=float, default=6.0)
    p.add_argument("--box", default="template")
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--turns", nargs="*", default=["x", "y", "z"], choices=sorted(_AXES))
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    source, raw = args.out / "demo", args.out / "raw"
    write_demo_dataset("bids", source, cases=args.cases, size=args.size, seed=args.seed, anatomy=True,
                       skull=args.skull)
    kinds = {}
    for t1 in sorted(source.rglob("*_T1w.nii.gz")):
        label = t1.name.split("_")[0][4:]
        image = nib.load(str(t1))
        pose = np.eye(4)
        pose[:3, :3] = Rotation.from_euler("xyz", rng.uniform(-15, 15, 3), degrees=True).as_matrix()
        pose[:3, 3] = rng.uniform(-20, 20, 3)
        for kind, move in (("posed", pose), *((f"turned{a}", turned(a)) for a in args.turns)):
            subject = f"{label}{kind}"
            folder = raw / f"sub-{subject}" / "anat"
            folder.mkdir(parents=True)
            nib.save(nib.Nifti1Image(np.asarray(image.dataobj), move @ image.affine),
                     str(folder / f"sub-{subject}_T1w.nii.gz"))
            kinds[f"sub-{subject}"] = "correct" if kind == "posed" else "turned 90"
    settings = PrepareSettings(brain=args.brain, spacing=args.spacing, box=args.box, crop=args.crop)
    report = prepare(raw, args.out / "prepared", settings=settings, workers=args.workers, progress=False,
                     min_similarity=0.0)
    rows = []
    for path in sorted((args.out / "prepared").rglob("*_desc-prepare.json")):
        record = json.loads(path.read_text())
        rows.append({"case": record["id"], "kind": kinds[record["id"]],
                     **{k: round(record["qc"][k], 3) for k in ("similarity", "symmetry")}})
        print(json.dumps(rows[-1]), flush=True)
    summary = {kind: {m: [min(r[m] for r in rows if r["kind"] == kind), max(r[m] for r in rows if r["kind"] == kind)]
                      for m in ("similarity", "symmetry")} | {"cases": sum(r["kind"] == kind for r in rows)}
               for kind in sorted({r["kind"] for r in rows})}
    result = {"summary": summary, "failed": report.failed}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
