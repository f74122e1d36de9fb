"""How well the near-duplicate fingerprint (`asa.data.fingerprint`) finds edited copies and keeps distinct
subjects apart, per contrast, and what it costs per file.

False matches, per contrast (t1, t1ce, t2, flair): the scores between distinct subjects over every pair of
``--subjects`` template subjects of `asa.data.synthetic.anatomy` (skull-stripped, the hard case: every one is the
same template, warped), of ``--heads`` whole heads of the same generator (``asa-demo-data --skull``: head against
head and head against another subject's stripped brain), and of ``--outside`` subjects made another way
(`benchmarks.outside_data.warp_subject`: nilearn's MNI152 under random affine and smooth warps, other head layers,
mixed orientations, 3 mm; T1 only), which the thresholds were not set on. The threshold a contrast needs is the
highest score between distinct subjects plus :data:`MARGIN`; ``NEAR_THRESHOLDS`` holds what that gave.

Recall: the first ``--copies`` subjects of each kind, the pretraining scan being the whole head (its copies
:func:`edits`: crops of 1 and 3 voxels per side, a resample to 49^3 (or one voxel more) and to 0.8x the grid, an
intensity scale and shift, the skull-stripped brain, a defaced head, and all at once) or the skull-stripped brain
(the same edits but stripping and defacing), each copy scored against its source in its own contrast. The brain a
head's fingerprint is read on (`asa.data.fingerprint._brain`) is compared with the generator's brain mask (Dice),
at ``--size`` and at ``--dice-size``. Cost: the seconds per file of :func:`asa.data.digests.volume_signature` (one
read, the digest and the fingerprint) on T1-sized volumes (182 x 218 x 182 int16, gzip, as `benchmarks.cohort`
times the digest), given for 10^4 files; with ``--pairs N``, the comparison of N fingerprints with a cohort of N.

    python -m benchmarks.near_duplicates --subjects 1000 --heads 0 --outside 0 --files 0
    python -m benchmarks.near_duplicates --subjects 0 --heads 500 --copies 50 --outside 0 --files 0
    python -m benchmarks.near_duplicates --subjects 0 --heads 0 --outside 1000 --copies 50 --files 0
    python -m benchmarks.near_duplicates --subjects 0 --heads 10 --size 96 --copies 10 --outside 0 --files 0
    python -m benchmarks.near_duplicates --subjects 0 --heads 0 --outside 0 --files 6 --pairs 10000
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

from asa.data.digests import volume_signature
from asa.data.fingerprint import NEAR_THRESHOLD, NEAR_THRESHOLDS, _brain, _reduce, fingerprint_scores, image_fingerprint
from asa.data.store_writer import worker_pool

SHAPE = (182, 218, 182)
CONTRASTS = ("t1", "t1ce", "t2", "flair")
MARGIN = 0.02  # above the highest score between distinct subjects of a contrast: its threshold
SEED = 1  # the generator's dataset seed of the subjects measured (asa-demo-data's default cohort is seed 0)


def with_scalp(image: np.ndarray, brain: np.ndarray, zoom: float, seed: int) -> np.ndarray:
    """``image`` (a skull-stripped brain) with a head round it: a dark skull 4 mm thick, then 5 mm of bright
    scalp (at least two voxels each; 0.9 of the brain's 99th percentile, 5 % noise); the T1-sized files the cost
    is timed on."""
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


def edits(head: np.ndarray, brain: np.ndarray, *, whole_head: bool = True) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The edited copies of a scan (a whole head, or with ``whole_head`` False a skull-stripped brain, which is not
    stripped or defaced again): name -> (volume, voxel size relative to the source's)."""
    one = np.ones(3)
    n = head.shape[0]
    small = tuple(max(8, int(round(s * 0.8))) for s in head.shape)
    everything, f = resample((deface(head, brain) if whole_head else head)[2:-1, 1:, 3:] * 1.3 - 40.0, small)
    out = {"crop 1 voxel": (head[1:, :, :], one),
           "crop 3 voxels each side": (head[3:-3, 3:-3, 3:-3], one),
           f"resample to {n + 1 if n < 49 else 49}^3": resample(head, (49,) * 3 if n != 49 else (50,) * 3),
           "resample to 0.8x": resample(head, small),
           "intensity x1.7 + 120": (head * 1.7 + 120.0, one),
           "intensity x0.01": (head * 0.01, one)}
    if whole_head:
        out |= {"skull-stripped": (np.where(brain, head, 0.0).astype(np.float32), one),
                "defaced": (deface(head, brain), one)}
    return out | {"all at once": (everything, f)}


def _score(a: np.ndarray, b: np.ndarray) -> float:
    return float(fingerprint_scores(a[None], b[None])[0, 0])


def _dice(image: np.ndarray, zoom: np.ndarray, truth: np.ndarray) -> float:
    """Dice of the brain the fingerprint reads (`asa.data.fingerprint._brain`) with ``truth``, on the image's grid
    (a grid the fingerprint reduces first is not compared: NaN)."""
    data, zooms = _reduce(image, zoom)
    if data.shape != image.shape:
        return float("nan")
    found = _brain(data, zooms)
    return 2.0 * float((found & truth).sum()) / float(found.sum() + truth.sum())


def _foreground_ml(image: np.ndarray, zoom: np.ndarray) -> float:
    """The volume (mL) `asa.data.fingerprint._brain` weighs against ``HEAD_ML``: the foreground, filled."""
    low, high = np.percentile(image, [1.0, 99.0])
    above = ndimage.binary_fill_holes(image > low + 0.1 * (high - low))
    return float(above.sum() * np.prod(zoom) / 1000.0)


def _subject(job: tuple[str, int, int, bool]) -> dict:
    """One subject: its fingerprints per contrast (the head's and its stripped brain's for heads), and with
    ``copies`` the scores of its edited copies and the Dice of the brain read on its head."""
    kind, index, size, copies = job
    if kind == "outside":
        from benchmarks.outside_data import warp_subject

        volume, affine, mask = warp_subject(index, head=True)
        canon = nib.as_closest_canonical(nib.Nifti1Image(volume, affine))
        brain = np.asarray(nib.as_closest_canonical(nib.Nifti1Image(mask.astype(np.uint8), affine)).dataobj) > 0
        images, zoom = {"t1": np.asarray(canon.dataobj, dtype=np.float32)}, np.array(canon.header.get_zooms()[:3])
        heads = True
    else:
        from asa.data.synthetic.anatomy import make_anatomy_subject

        heads = kind == "heads"
        s = make_anatomy_subject(size, seed=SEED, index=index, skull=heads)
        images, brain, zoom = s.images, s.brain_mask, np.full(3, float(s.affine[0, 0]))
    out: dict = {"stripped": {}, "head": {}, "copies": {}, "dice": {}, "ml": {}}
    for contrast, image in images.items():
        stripped = np.where(brain, image, 0.0).astype(np.float32)
        out["stripped"][contrast] = image_fingerprint(stripped, zoom)
        out["ml"]["stripped"] = _foreground_ml(stripped, zoom)
        if heads:
            out["head"][contrast] = image_fingerprint(image, zoom)
            out["ml"]["head"] = _foreground_ml(image, zoom)
        if not copies:
            continue
        sources = {"head": (image, True)} if heads else {}
        sources["stripped"] = (stripped, False)
        for source, (scan, whole) in sources.items():
            for name, (vol, f) in edits(scan, brain, whole_head=whole).items():
                out["copies"][(source, contrast, name)] = _score(image_fingerprint(vol, zoom * f),
                                                                 out[source][contrast])
        if heads:
            out["dice"][contrast] = _dice(image, zoom, brain)
    return out


def distinct(a: np.ndarray, b: np.ndarray | None = None) -> dict[str, float]:
    """The scores between distinct subjects: every pair of ``a`` (rows are subjects), or with ``b`` every pair of
    a row of ``a`` and another subject's row of ``b``: how many, their mean, 99.9th percentile and highest, and the
    threshold they call for (the highest plus :data:`MARGIN`)."""
    s = fingerprint_scores(a, a if b is None else b)
    off = s[np.triu_indices(len(a), k=1)] if b is None else s[~np.eye(len(a), dtype=bool)]
    return {"pairs": int(off.size), "mean": round(float(off.mean()), 4),
            "p99.9": round(float(np.percentile(off, 99.9)), 4), "max": round(float(off.max()), 4),
            "threshold": round(float(off.max()) + MARGIN, 3)}


def _with_count(stats: dict, off_scores: np.ndarray, threshold: float | None) -> dict:
    return stats | {"at or above the contrast's threshold": None if threshold is None
                    else int((off_scores >= threshold).sum())}


def false_matches(prints: dict[str, np.ndarray], against: dict[str, np.ndarray] | None = None) -> dict[str, dict]:
    """Per contrast: :func:`distinct` of ``prints`` (contrast -> [N, GRID^3]) or of ``prints`` against
    ``against``, with the pairs at or above the contrast's threshold (``NEAR_THRESHOLDS``); and across contrasts
    (two distinct subjects' images of different contrasts, which the check no longer compares), for information."""
    out = {}
    for contrast, a in prints.items():
        b = a if against is None else against[contrast]
        s = fingerprint_scores(a, b)
        off = s[np.triu_indices(len(a), k=1)] if against is None else s[~np.eye(len(a), dtype=bool)]
        out[contrast] = _with_count(distinct(a, None if against is None else b), off, NEAR_THRESHOLDS.get(contrast))
    if len(prints) > 1:
        names = list(prints)
        cross = [fingerprint_scores(prints[p], (against or prints)[q])[~np.eye(len(prints[p]), dtype=bool)]
                 for p in names for q in names if p != q]
        cross_all = np.concatenate(cross)
        out["across contrasts"] = {"pairs": int(cross_all.size), "max": round(float(cross_all.max()), 4),
                                   f"at or above {NEAR_THRESHOLD}": int((cross_all >= NEAR_THRESHOLD).sum())}
    return out


def recall(rows: list[dict]) -> dict[str, dict]:
    """Per source (head, stripped), contrast and edit: the copies found at the contrast's threshold, of how many,
    and the lowest score."""
    out: dict[str, dict] = {}
    for key in rows[0]["copies"]:
        source, contrast, name = key
        scores = [r["copies"][key] for r in rows]
        threshold = NEAR_THRESHOLDS.get(contrast) or NEAR_THRESHOLD
        out.setdefault(f"{source} {contrast}", {})[name] = {
            "found": sum(s >= threshold for s in scores), "of": len(scores), "min": round(min(scores), 4)}
    return out


def measure(kind: str, n: int, size: int, copies: int, pool) -> dict:
    """False matches, recall and Dice over ``n`` subjects of ``kind`` (anatomy, heads, outside)."""
    start = time.perf_counter()
    rows = list(pool.map(_subject, [(kind, i, size, i < copies) for i in range(n)], chunksize=4))
    stack = {src: {c: np.stack([r[src][c] for r in rows]) for c in rows[0][src]} for src in ("stripped", "head")}
    result: dict = {"subjects": n, "size": size if kind != "outside" else "3 mm", "seconds": None}
    result["false matches, skull-stripped"] = false_matches(stack["stripped"])
    if stack["head"]:
        result["false matches, heads"] = false_matches(stack["head"])
        result["false matches, head against another's stripped brain"] = false_matches(stack["head"],
                                                                                        stack["stripped"])
        dice = {c: [r["dice"][c] for r in rows if c in r["dice"]] for c in rows[0]["head"]}
        result["brain read on the head, Dice with the true mask"] = {
            c: {"mean": round(float(np.mean(v)), 3), "min": round(float(np.min(v)), 3)} for c, v in dice.items() if v}
    for part in ("stripped", "head"):
        ml = [r["ml"][part] for r in rows if part in r["ml"]]
        if ml:
            result[f"foreground mL, {part}"] = {"min": round(min(ml)), "max": round(max(ml))}
    if copies:
        result["copies"] = recall([r for r in rows if r["copies"]])
    result["seconds"] = round(time.perf_counter() - start, 1)
    return result


def cost(n: int) -> float:
    from asa.data.synthetic.phantom import make_phantom

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i in range(n):
            p = make_phantom(160, seed=10_000 + i)
            vol = np.zeros(SHAPE, dtype=np.float32)
            vol[11:171, 29:189, 11:171] = with_scalp(p.images["t1"], p.brain_mask, 1.0, i)
            paths.append(Path(tmp) / f"sub-{i:03d}_T1w.nii.gz")
            nib.save(nib.Nifti1Image(np.round(vol * 1000 + rng.integers(0, 5, SHAPE)).astype(np.int16), np.eye(4)),
                     str(paths[-1]))
        start = time.perf_counter()
        for p in paths:
            volume_signature(p)
        return (time.perf_counter() - start) / n


def pair_cost(n: int) -> float:
    """Seconds to compare ``n`` query fingerprints with a cohort of ``n`` (every pair, as `asa.data.cohort`'s near
    check does: `asa.data.overlap._near`); random fingerprints, each query an exact copy of one cohort row, which
    must be found."""
    from asa.data.overlap import _near
    from asa.data.fingerprint import GRID, encode_fingerprint

    table = np.random.default_rng(0).integers(-127, 128, size=(n, GRID**3), dtype=np.int8)
    owners = [f"c{i}" for i in range(n)]
    queries = {f"q{i}": {"t1": encode_fingerprint(table[i])} for i in range(n)}
    start = time.perf_counter()
    found = _near(queries, [(owners, ["t1"] * n, table)], NEAR_THRESHOLDS)
    seconds = time.perf_counter() - start
    if {q: set(v) for q, v in found.items()} != {f"q{i}": {f"c{i}"} for i in range(n)}:
        raise AssertionError("the pair comparison missed a copy or matched random fingerprints")
    return seconds


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--subjects", type=int, default=100, help="distinct skull-stripped template subjects (default 100)")
    p.add_argument("--heads", type=int, default=0, help="distinct whole heads of the same generator (--skull)")
    p.add_argument("--outside", type=int, default=0, help="distinct subjects of benchmarks.outside_data (heads)")
    p.add_argument("--size", type=int, default=48, help="template grid edge (48: about 4 mm voxels, 4.8 with heads)")
    p.add_argument("--copies", type=int, default=20, help="subjects of each kind whose edited copies are scored")
    p.add_argument("--files", type=int, default=8, help="T1-sized files the cost is timed on (0: not timed)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--pairs", type=int, default=0, help="time the comparison of N queries with a cohort of N (0: not)")
    p.add_argument("--out", type=Path, default=None, help="write the result as JSON here")
    args = p.parse_args(argv)
    result: dict = {"thresholds": NEAR_THRESHOLDS, "margin": MARGIN}
    with worker_pool(args.workers) as pool:
        for kind, n in (("anatomy", args.subjects), ("heads", args.heads), ("outside", args.outside)):
            if n:
                result[kind] = measure(kind, n, args.size, min(args.copies, n), pool)
                print(json.dumps({kind: result[kind]}, indent=1), flush=True)
    if args.files:
        result["seconds per T1-sized file"] = round(cost(args.files), 3)
        result["hours for 10^4 files, one process"] = round(result["seconds per T1-sized file"] * 1e4 / 3600, 2)
    if args.pairs:
        result[f"seconds to compare {args.pairs} x {args.pairs} fingerprints"] = round(pair_cost(args.pairs), 2)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
