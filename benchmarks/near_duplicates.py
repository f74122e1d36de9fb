"""How well the near-duplicate fingerprint (`asa.data.fingerprint`) finds edited copies and keeps distinct
subjects apart, and what it costs per file.

Recall: every subject of ``--copies`` is given a scalp (a bright shell round the brain across a dark gap, as a
T1's skin and fat lie outside its skull; the generators write skull-stripped brains) and this head is the
"pretraining scan"; the copies are the edits redistribution makes (:data:`EDITS`: crops of 1 and 3 voxels, a
resample to 49^3 and to 0.8x the grid, an intensity scale and shift, the skull-stripped brain, a defaced head,
and all at once). Each copy is scored against its source. False matches: the highest score between two distinct
subjects over every pair of ``--subjects`` (template-warped anatomy subjects of `asa.data.synthetic.anatomy`, the
hard case: every one is the same template, warped; and ``--phantoms`` geometric phantoms), with their scalps and
without. Cost: the seconds per file of :func:`asa.data.cohort.volume_signature` (one read, the digest and the
fingerprint) on T1-sized volumes
(182 x 218 x 182 int16, gzip, as `benchmarks.cohort` times the digest), given for 10^4 files; with ``--pairs N``,
the comparison of N fingerprints with a cohort of N.

    python -m benchmarks.near_duplicates --subjects 1000 --phantoms 1000 --copies 50 --workers 2
    python -m benchmarks.near_duplicates --subjects 0 --phantoms 0 --files 6 --workers 1 --pairs 10000
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from asa.data.cohort import volume_signature
from asa.data.fingerprint import NEAR_THRESHOLD, fingerprint_scores, image_fingerprint
from asa.data.store_writer import worker_pool

SHAPE = (182, 218, 182)


def with_scalp(image: np.ndarray, brain: np.ndarray, zoom: float, seed: int) -> np.ndarray:
    """``image`` (a skull-stripped brain) with a head round it: a dark skull 4 mm thick, then 5 mm of bright
    scalp (at least two voxels each; 0.9 of the brain's 99th percentile, 5 % noise)."""
    step = max(2, round(4.0 / zoom))
    skull = ndimage.binary_dilation(brain, iterations=step)
    scalp = ndimage.binary_dilation(skull, iterations=max(2, round(5.0 / zoom))) & ~skull
    level = np.percentile(image[brain], 99) * 0.9
    rng = np.random.default_rng(seed)
    return np.where(scalp, level * (1 + 0.05 * rng.standard_normal(image.shape)), image).astype(np.float32)


def deface(head: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """``head`` with its face removed as defacing tools remove it: every voxel outside the brain in front of the
    brain's middle (RAS axis 1) and below its upper third (axis 2) set to zero."""
    ys, zs = np.nonzero(brain.any(axis=0))
    face = np.zeros_like(brain)
    face[:, int(np.median(ys)):, : int(zs.min() + 0.66 * (zs.max() - zs.min()))] = True
    return np.where(face & ~brain, 0.0, head).astype(np.float32)


def resample(image: np.ndarray, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``image`` resampled (linear) to ``shape`` over the same extent, and the factors of its voxel size."""
    factors = np.array(shape) / np.array(image.shape)
    return ndimage.zoom(image, factors, order=1).astype(np.float32), 1 / factors


def edits(head: np.ndarray, brain: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The edited copies of a head: name -> (volume, voxel size relative to the source's)."""
    one = np.ones(3)
    n = head.shape[0]
    small = tuple(max(8, int(round(s * 0.8))) for s in head.shape)
    everything, f = resample(deface(head, brain)[2:-1, 1:, 3:] * 1.3 - 40.0, small)
    return {"crop 1 voxel": (head[1:, :, :], one),
            "crop 3 voxels each side": (head[3:-3, 3:-3, 3:-3], one),
            f"resample to {n + 1 if n < 49 else 49}^3": resample(head, (49,) * 3 if n != 49 else (50,) * 3),
            "resample to 0.8x": resample(head, small),
            "intensity x1.7 + 120": (head * 1.7 + 120.0, one),
            "intensity x0.01": (head * 0.01, one),
            "skull-stripped": (np.where(brain, head, 0.0).astype(np.float32), one),
            "defaced": (deface(head, brain), one),
            "all at once": (everything, f)}


def _anatomy(job: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, float]:
    from asa.data.synthetic.anatomy import make_anatomy_subject

    s = make_anatomy_subject(job[1], seed=1, index=job[0])
    return s.images["t1"], s.brain_mask, float(s.affine[0, 0])


def _phantom(job: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, float]:
    from asa.data.synthetic.phantom import make_phantom

    p = make_phantom(job[1], seed=10_000 + job[0])
    return p.images["t1"], p.brain_mask, 1.0


def _prints(job: tuple[str, int, int]) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """(stripped fingerprint, head fingerprint, {edit: score against the head}) of one subject."""
    kind, index, size = job
    image, brain, zoom = (_anatomy if kind == "anatomy" else _phantom)((index, size))
    head = with_scalp(image, brain, zoom, index)
    source = image_fingerprint(head, (zoom,) * 3)
    stripped = image_fingerprint(image, (zoom,) * 3)
    scores = {name: float(fingerprint_scores(image_fingerprint(vol, zoom * f)[None], source[None])[0, 0])
              for name, (vol, f) in edits(head, brain).items()}
    return stripped, source, scores


def false_matches(prints: np.ndarray) -> dict[str, float]:
    """The highest and the 99.9th percentile of the scores between distinct subjects, and the pairs at or above
    the threshold."""
    s = fingerprint_scores(prints, prints)
    off = s[np.triu_indices(len(prints), k=1)]
    return {"pairs": int(off.size), "max": round(float(off.max()), 4),
            "p99.9": round(float(np.percentile(off, 99.9)), 4),
            "mean": round(float(off.mean()), 4), f"at or above {NEAR_THRESHOLD}": int((off >= NEAR_THRESHOLD).sum())}


def cost(n: int) -> float:
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i in range(n):
            image, brain, _ = _phantom((i, 160))
            vol = np.zeros(SHAPE, dtype=np.float32)
            vol[11:171, 29:189, 11:171] = with_scalp(image, brain, 1.0, i)[:, :, :]
            paths.append(Path(tmp) / f"sub-{i:03d}_T1w.nii.gz")
            nib.save(nib.Nifti1Image(np.round(vol * 1000 + rng.integers(0, 5, SHAPE)).astype(np.int16), np.eye(4)),
                     str(paths[-1]))
        start = time.perf_counter()
        for p in paths:
            volume_signature(p)
        return (time.perf_counter() - start) / n


def pair_cost(n: int) -> float:
    """Seconds to compare ``n`` query fingerprints with a cohort of ``n`` (every pair, as `asa.data.cohort`'s near
    check does: `asa.data.cohort._near`); random fingerprints, each query an exact copy of one cohort row, which
    must be found."""
    from asa.data.cohort import _near
    from asa.data.fingerprint import GRID, encode_fingerprint

    table = np.random.default_rng(0).integers(-127, 128, size=(n, GRID**3), dtype=np.int8)
    owners = [f"c{i}" for i in range(n)]
    queries = {f"q{i}": {"t1": encode_fingerprint(table[i])} for i in range(n)}
    start = time.perf_counter()
    found = _near(queries, owners, table, NEAR_THRESHOLD)
    seconds = time.perf_counter() - start
    if found != {f"q{i}": {f"c{i}": 1.0} for i in range(n)}:
        raise AssertionError("the pair comparison missed a copy or matched random fingerprints")
    return seconds


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--subjects", type=int, default=100, help="distinct anatomy subjects (default 100)")
    p.add_argument("--phantoms", type=int, default=100, help="distinct geometric phantoms (default 100)")
    p.add_argument("--size", type=int, default=48, help="anatomy grid edge (48: about 4 mm voxels)")
    p.add_argument("--phantom-size", type=int, default=64, help="phantom grid edge (1 mm voxels)")
    p.add_argument("--copies", type=int, default=20, help="subjects of each kind whose edited copies are scored")
    p.add_argument("--files", type=int, default=8, help="T1-sized files the cost is timed on (0: not timed)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--pairs", type=int, default=0, help="time the comparison of N queries with a cohort of N (0: not)")
    p.add_argument("--out", type=Path, default=None, help="write the result as JSON here")
    args = p.parse_args(argv)
    result: dict = {"threshold": NEAR_THRESHOLD}
    with worker_pool(args.workers) as pool:
        for kind, n, size in (("anatomy", args.subjects, args.size), ("phantom", args.phantoms, args.phantom_size)):
            if not n:
                continue
            rows = list(pool.map(_prints, [(kind, i, size) for i in range(n)], chunksize=4))
            stripped = np.stack([r[0] for r in rows])
            heads = np.stack([r[1] for r in rows])
            copies = [r[2] for r in rows[: args.copies]]
            if args.out:
                np.savez_compressed(args.out.with_suffix(f".{kind}.npz"), stripped=stripped, heads=heads,
                                    copies=np.array([[c[k] for k in copies[0]] for c in copies]),
                                    edits=np.array(list(copies[0])))
            result[kind] = {"subjects": n, "size": size,
                            "false matches, skull-stripped": false_matches(stripped),
                            "false matches, with scalp": false_matches(heads),
                            "copies": {name: {"min": round(min(c[name] for c in copies), 4),
                                              "found": sum(c[name] >= NEAR_THRESHOLD for c in copies),
                                              "of": len(copies)} for name in copies[0]}}
            print(json.dumps({kind: result[kind]}, indent=1), flush=True)
    if args.files:
        result["seconds per T1-sized file"] = round(cost(args.files), 3)
        result["hours for 10^4 files, one process"] = round(result["seconds per T1-sized file"] * 1e4 / 3600, 2)
    if args.pairs:
        result[f"seconds to compare {args.pairs} x {args.pairs} fingerprints"] = round(pair_cost(args.pairs), 2)
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
