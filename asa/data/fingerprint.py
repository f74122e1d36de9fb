"""Near-duplicate images: a content fingerprint that survives what redistribution does to a scan.

The exact digest (`asa.data.cohort.volume_digest`) catches a renamed, re-typed or re-oriented copy; a copy
resampled to another grid, cropped by a few voxels, rescaled or shifted in intensity, skull-stripped or defaced
has other voxels and another digest. The fingerprint of an image is its brain, seen at low resolution in its own
box:

1. the voxels in asa's frame (RAS+, as the digest reads them; `asa.data.cohort.volume_signature` reads both),
   averaged in blocks to about ``REDUCE_MM`` voxels;
2. the head: voxels above the background (its 1st percentile, so a constant shift moves both) by
   ``FOREGROUND`` of the range up to the 99th percentile; the brain: that mask eroded by ``ERODE_MM``
   (which parts skin and fat from the brain across the dark skull), its largest component, dilated back
   inside the head mask and its holes filled, so a skull-stripped copy and its source find the same brain;
3. the brain's box, its centroid +- ``BOX_SPREAD`` standard deviations per axis (moments, not extreme voxels: a
   crop, a shift or a resample of the same head moves them by a fraction of a voxel), sampled at ``GRID``^3
   points after a Gaussian of ``SMOOTH`` samples, each sample the brain's mean intensity near it;
4. inside the sampled brain, the intensities z-scored (an intensity scale or shift changes nothing) and a
   smooth version of them (a Gaussian of ``DETAIL_SIGMA`` samples) taken away: what is left is the subject's own
   pattern of folds and ventricles more than the shape every brain shares;
5. stored as ``int8`` (the unit vector times 127 before rounding; :func:`encode_fingerprint` writes it as
   base64 text for JSON and ``weights_only`` files).

Two fingerprints are compared by their dot product: the Pearson correlation of the two detail maps over the
box (:func:`fingerprint_scores`, all pairs in one matrix product). A score of ``NEAR_THRESHOLD`` or more is a
near-duplicate; ``docs/finetuning.md`` gives the scores measured on copies and on distinct subjects that set it.
"""

from __future__ import annotations

import base64

import numpy as np
from scipy import ndimage

__all__ = ["BOX_SPREAD", "DETAIL_SIGMA", "ERODE_MM", "FINGERPRINT", "FOREGROUND", "GRID", "MIN_BOX_MM", "NEAR_THRESHOLD",
           "REDUCE_MM", "SMOOTH", "decode_fingerprint", "encode_fingerprint", "fingerprint_scores",
           "image_fingerprint", "unit_fingerprints"]

GRID = 16  # samples per edge of the brain box
SMOOTH = 0.5  # the Gaussian before sampling, in samples
REDUCE_MM = 2.0  # block averaging before anything else: the cost of a 1 mm 256^3 file is that of a 128^3 one
FOREGROUND = 0.1  # head voxels: above background + 0.1 * (99th percentile - background)
ERODE_MM = 4.0  # the erosion that parts the brain from scalp and fat across the skull
DETAIL_SIGMA = 1.5  # samples: the smooth shape every brain shares, taken away
BOX_SPREAD = 2.2  # the box: the brain's centroid +- 2.2 standard deviations per axis (an ellipsoid reaches 2.24)
NEAR_THRESHOLD = 0.845  # a score at or above it is a near-duplicate (docs/finetuning.md: the scores that set it)
# the smallest brain box (mm along its shortest axis) the threshold holds for: it was set on brain-sized images, and a
# smaller object (asa's 1 mm phantoms of 32-64 voxels) sampled at GRID^3 points gives distinct objects scores above
# it. Such an image gets the zero fingerprint, which scores 0 against everything: no near check, its digest still is
MIN_BOX_MM = 90.0
FINGERPRINT = (f"int8 {GRID}^3 detail map of the brain box (asa.data.fingerprint: reduce {REDUCE_MM} mm, "
               f"foreground {FOREGROUND}, erode {ERODE_MM} mm, box {BOX_SPREAD} sd, smooth {SMOOTH}, "
               f"detail sigma {DETAIL_SIGMA}, boxes under {MIN_BOX_MM:g} mm not fingerprinted)")


def _reduce(data: np.ndarray, zooms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``data`` averaged in blocks of ``max(1, REDUCE_MM // zoom)`` voxels per axis, and the new voxel sizes."""
    factors = [max(1, int(REDUCE_MM // max(float(z), 1e-6))) for z in zooms]
    if max(factors) == 1:
        return data, zooms
    cut = tuple(slice(0, (n // f) * f) for n, f in zip(data.shape, factors))
    d = data[cut]
    shape = [s for n, f in zip(d.shape, factors) for s in (n // f, f)]
    return d.reshape(shape).mean(axis=(1, 3, 5)), zooms * np.asarray(factors, dtype=float)


def _brain(data: np.ndarray, zooms: np.ndarray) -> np.ndarray:
    """The brain mask of ``data``: the head above background, eroded by ``ERODE_MM``, its largest component,
    dilated back within the head and its holes filled (step 2 of the module docstring)."""
    low, high = np.percentile(data, [1.0, 99.0])
    head = data > low + FOREGROUND * (high - low)
    radius = np.maximum(np.round(ERODE_MM / zooms), 2).astype(int)
    r = [np.arange(-k, k + 1) for k in radius]
    ball = (r[0][:, None, None] / radius[0]) ** 2 + (r[1][None, :, None] / radius[1]) ** 2 \
        + (r[2][None, None, :] / radius[2]) ** 2 <= 1.0
    core = ndimage.binary_erosion(head, ball)
    if not core.any():  # a thin object: no erosion
        core = head
    labels, n = ndimage.label(core)
    if n > 1:
        core = labels == (np.argmax(np.bincount(labels.ravel())[1:]) + 1)
    brain = ndimage.binary_dilation(core, ball) & head
    return ndimage.binary_fill_holes(brain)


def image_fingerprint(data: np.ndarray, zooms) -> np.ndarray:
    """The fingerprint of one volume ``data`` [X, Y, Z] in RAS+ with voxel sizes ``zooms`` (mm): ``GRID``^3 int8
    values, unit norm times 127 (the module docstring gives the steps); zeros (no near match with anything) for an
    object whose box is under ``MIN_BOX_MM`` along an axis. A volume with no foreground is refused (`ValueError`)."""
    data = np.asarray(data, dtype=np.float32)
    if data.ndim != 3:
        raise ValueError(f"a fingerprint needs one 3D volume, got shape {data.shape}")
    data, zooms = _reduce(data, np.asarray(zooms, dtype=float)[:3])
    brain = _brain(data, zooms)
    if brain.sum() < 8:
        raise ValueError(f"no foreground to fingerprint in a volume of shape {data.shape}")
    # the box from the brain's moments, not its extreme voxels: a crop, a resample or a stray voxel at the edge
    # moves a centroid and a spread by a fraction of a voxel, an extreme by whole voxels
    idx = np.nonzero(brain)
    centre = np.array([i.mean() for i in idx])
    spread = np.sqrt(np.array([i.var() for i in idx]) + 1 / 12)  # with a voxel's own width: the same on any grid
    step = 2 * BOX_SPREAD * spread / GRID  # voxels per sample along each axis
    if float(np.min(2 * BOX_SPREAD * spread * zooms)) < MIN_BOX_MM:  # smaller than a brain: not fingerprinted
        return np.zeros(GRID**3, dtype=np.int8)
    background = np.percentile(data, 1.0)
    inside = np.where(brain, data - background, 0.0).astype(np.float32)
    sigma = np.maximum(step * SMOOTH, 0.5)
    smooth = ndimage.gaussian_filter(inside, sigma, mode="constant")
    weight = ndimage.gaussian_filter(brain.astype(np.float32), sigma, mode="constant")
    points = np.stack(np.meshgrid(*[centre[a] + (np.arange(GRID) + 0.5 - GRID / 2) * step[a] for a in range(3)],
                                  indexing="ij")).reshape(3, -1)
    values = ndimage.map_coordinates(smooth, points, order=1, mode="constant")
    mass = ndimage.map_coordinates(weight, points, order=1, mode="constant")
    # the brain's mean intensity near each sample (not its edge: a copy's mask differs there by a voxel), with the
    # samples outside the brain at its mean, so that only the brain's own pattern is left
    mask = mass > 0.5
    thumb = np.zeros(GRID**3, dtype=np.float64)
    thumb[mask] = values[mask] / mass[mask]
    thumb[mask] = (thumb[mask] - thumb[mask].mean()) / max(thumb[mask].std(), 1e-6)
    thumb = thumb.reshape((GRID,) * 3)
    detail = thumb - ndimage.gaussian_filter(thumb, DETAIL_SIGMA, mode="constant")
    detail = np.where(mask.reshape(thumb.shape), detail, 0.0).ravel()
    norm = np.linalg.norm(detail)
    if norm == 0:
        raise ValueError(f"a volume of shape {data.shape} has no detail to fingerprint (a constant brain)")
    return np.round(detail / norm * 127).astype(np.int8)


def encode_fingerprint(fingerprint: np.ndarray) -> str:
    """A fingerprint as plain text: ``"b64:"`` and the base64 of its int8 bytes."""
    return "b64:" + base64.b64encode(np.asarray(fingerprint, dtype=np.int8).tobytes()).decode("ascii")


def decode_fingerprint(text: str) -> np.ndarray:
    """The int8 fingerprint of :func:`encode_fingerprint`'s text; another length or prefix is refused."""
    if not isinstance(text, str) or not text.startswith("b64:"):
        raise ValueError(f"not a fingerprint (expected 'b64:<base64 of {GRID ** 3} int8>'): {str(text)[:40]!r}")
    raw = np.frombuffer(base64.b64decode(text[4:]), dtype=np.int8)
    if raw.size != GRID**3:
        raise ValueError(f"a fingerprint of {raw.size} values; this asa's have {GRID ** 3} ({FINGERPRINT})")
    return raw


def unit_fingerprints(fingerprints: np.ndarray) -> np.ndarray:
    """[N, GRID^3] int8 fingerprints -> [N, GRID^3] float32 unit vectors (the zero fingerprint stays zero), so that
    a table of references is normalised once and scored against many queries."""
    x = np.asarray(fingerprints, dtype=np.float32).reshape(len(fingerprints), -1)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-6)


def fingerprint_scores(queries: np.ndarray, references: np.ndarray) -> np.ndarray:
    """Scores of every pair: ``queries`` [Q, GRID^3] and ``references`` [R, GRID^3] int8 fingerprints ->
    [Q, R] correlations in [-1, 1] (dot products of the unit vectors the int8 values round)."""
    return unit_fingerprints(queries) @ unit_fingerprints(references).T
