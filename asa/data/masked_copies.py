"""Masked copies: an image that is another image with part of it set to one value, on the same grid.

Skull stripping and defacing keep a scan's grid and its voxels inside the part they keep: the brain of a whole
head, the head without its face. Such a copy has another digest, and its fingerprint (`asa.data.fingerprint`)
reads another brain box than its source's (a whole head's brain is found by depth under the scalp), so the near
check misses it (docs/weights-elsewhere.md). This check looks at the voxels instead, where both images are on disk:

1. a query is *masked* when ``MASKED_SHARE`` or more of its voxels hold exactly its lowest value (a brain set in
   zeros, a face blanked); what it keeps is the rest, eroded by one voxel (an edge voxel may have been blended);
2. ``MASKED_SAMPLES`` of the kept voxels, drawn with a fixed seed, are read in the query and in every reference of
   the same grid (shape in asa's RAS+ frame, as the digest reads it), and their Pearson correlation is taken
   (an intensity scale or shift of the copy changes nothing);
3. a correlation of ``MASKED_R`` or more is a masked copy: the query's kept voxels are the reference's voxels.
   Distinct subjects on one grid, even the same template warped by a few millimetres, stay far below it
   (docs/weights-elsewhere.md gives the scores measured).

A resampled or cropped copy changes the grid and is left to the fingerprint; so is a cohort known only by its
record (`asa.data.cohort.cohort_record` keeps digests and fingerprints, not voxels).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage

from asa.data.case import Case
from asa.data.digests import ras_voxels

__all__ = ["MASKED_R", "MASKED_SAMPLES", "MASKED_SHARE", "describe_masked", "kept_voxels", "masked_copies"]

MASKED_SHARE = 0.05  # a query with at least this share of its voxels at exactly its lowest value is masked
MASKED_SAMPLES = 4096  # kept voxels compared per query image
MASKED_R = 0.999  # the correlation over those voxels at or above which the query is the reference masked
_SEED = 0


def _read(path: str, frame: int | None) -> np.ndarray:
    """The image as the digest reads it (`asa.data.digests.ras_voxels`: the same frame, so the same grids meet)."""
    data = ras_voxels(path, frame)[0]
    return data if data.ndim == 3 else data[..., 0]


def kept_voxels(data: np.ndarray) -> np.ndarray | None:
    """The flat indices of the voxels a masked image kept (step 1 of the module docstring), or None when ``data`` is
    not masked (under ``MASKED_SHARE`` of it at exactly its lowest value) or keeps too little to compare."""
    blank = data == data.min()
    if blank.mean() < MASKED_SHARE:
        return None
    kept = ndimage.binary_erosion(~blank)
    return np.flatnonzero(kept) if kept.sum() >= 64 else None


def _correlations(query: np.ndarray, references: np.ndarray) -> np.ndarray:
    """Pearson correlation of ``query`` [S] with each row of ``references`` [R, S] (0 for a constant row)."""
    q = query - query.mean()
    r = references - references.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(r, axis=1) * np.linalg.norm(q)
    return np.where(norms > 0, r @ q / np.maximum(norms, 1e-30), 0.0)


def masked_copies(queries: Sequence[Case], references: Sequence[Case]) -> dict[str, dict[str, float]]:
    """Query case id -> {reference case id: correlation} for every masked image of ``queries`` whose kept voxels
    correlate at ``MASKED_R`` or more with an image of ``references`` on the same grid (any channel with any: no
    two contrasts correlate so). The references are read once and held as [R, voxels] float32 per grid (a 1 mm
    256³ grid: 64 MB a reference), the queries one at a time."""
    by_grid: dict[tuple[int, ...], tuple[list[str], list[np.ndarray]]] = {}
    for case in references:
        for channel, path in case.images.items():
            data = _read(str(path), case.frame(channel))
            owners, rows = by_grid.setdefault(data.shape, ([], []))
            owners.append(case.id)
            rows.append(data.ravel())
    stacks = {shape: (owners, np.stack(rows)) for shape, (owners, rows) in by_grid.items()}
    found: dict[str, dict[str, float]] = {}
    rng = np.random.default_rng(_SEED)
    for case in queries:
        for channel, path in case.images.items():
            data = _read(str(path), case.frame(channel))
            if data.shape not in stacks or (kept := kept_voxels(data)) is None:
                continue
            owners, table = stacks[data.shape]
            picked = np.sort(rng.choice(kept, size=min(MASKED_SAMPLES, kept.size), replace=False))
            scores = _correlations(data.ravel()[picked].astype(np.float64), table[:, picked].astype(np.float64))
            for owner, score in zip(owners, scores):
                if score >= MASKED_R and score > found.get(case.id, {}).get(owner, -1.0):
                    found.setdefault(case.id, {})[owner] = round(float(score), 5)
    return found


def describe_masked(found: Mapping[str, Mapping[str, float]], n: int, *, show: int = 3) -> str:
    """One line: how many of ``n`` cases are masked copies of a reference, and the first of them."""
    line = f"masked copies (skull-stripped or defaced, same grid): {len(found)} of {n} case(s)"
    if found:
        shown = [f"{case} = {', '.join(f'{ref} (r {r:.4f})' for ref, r in sorted(refs.items())[:2])}"
                 for case, refs in sorted(found.items())[:show]]
        line += ": " + "; ".join(shown) + (" ..." if len(found) > show else "")
    return line
