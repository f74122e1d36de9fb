"""Near-duplicate images: a content fingerprint that survives what redistribution does to a scan.

The exact digest (`asa.data.digests.volume_digest`) catches a renamed, re-typed or re-oriented copy; a copy
resampled to another grid, cropped by a few voxels, rescaled or shifted in intensity, skull-stripped or defaced
has other voxels and another digest. The fingerprint of an image is its brain, seen at low resolution in its own
box:

1. the voxels in asa's frame (RAS+, as the digest reads them; `asa.data.digests.volume_signature` reads both),
   averaged in blocks to about ``REDUCE_MM`` voxels;
2. the head: voxels above the background (its 1st percentile, so a constant shift moves both) by
   ``FOREGROUND`` of the range up to the 99th percentile, its largest component with its holes filled. A
   foreground of ``HEAD_ML`` or more is a whole head (no brain is that large): its brain is what lies deeper
   than ``HEAD_DEPTH_MM`` below the head's surface (scalp, skull and CSF; on a grid of 4-5 mm voxels the dark
   bone is no longer seen, so depth, not intensity, parts them), above the neck (the axial slices below the
   widest whose back half is under ``NECK_AREA`` of the widest's), a block of exact background beside the head
   (a defaced face) counting as head for the depth. A smaller foreground is a brain (skull-stripped): eroded by
   ``ERODE_MM``, its largest component, dilated back inside it and its holes filled;
3. the brain's box, its centroid +- ``BOX_SPREAD`` standard deviations per axis (moments, not extreme voxels: a
   crop, a shift or a resample of the same head moves them by a fraction of a voxel), sampled at ``GRID``^3
   points after a Gaussian of ``SMOOTH`` samples, each sample the brain's mean intensity near it;
4. inside the sampled brain, the intensities z-scored (an intensity scale or shift changes nothing) and a
   smooth version of them (a Gaussian of ``DETAIL_SIGMA`` samples) taken away: what is left is the subject's own
   pattern of folds and ventricles more than the shape every brain shares;
5. stored as ``int8`` (the unit vector times 127 before rounding; :func:`encode_fingerprint` writes it as
   base64 text for JSON and ``weights_only`` files).

Two fingerprints are compared by their dot product: the Pearson correlation of the two detail maps over the
box (:func:`fingerprint_scores`, all pairs in one matrix product). Images are compared within a contrast (a T2w
with T2-weighted images only): a score of the contrast's ``NEAR_THRESHOLDS`` or more is a near-duplicate, each
threshold the highest score between distinct subjects of that contrast plus a margin; ``NEAR_THRESHOLD``, the
strictest, holds for an image whose contrast is unknown. ``docs/weights-elsewhere.md`` gives the scores measured
on copies and on distinct subjects that set them (``benchmarks/near_duplicates.py``).
"""

from __future__ import annotations

import base64

import numpy as np
from scipy import ndimage

__all__ = ["BOX_SPREAD", "DETAIL_SIGMA", "ERODE_MM", "FINGERPRINT", "FOREGROUND", "GRID", "HEAD_DEPTH_MM", "HEAD_ML",
           "MIN_BOX_MM", "NEAR_THRESHOLD", "NEAR_THRESHOLDS", "NECK_AREA", "REDUCE_MM", "SMOOTH",
           "decode_fingerprint", "encode_fingerprint", "fingerprint_scores", "image_fingerprint", "unit_fingerprints"]

GRID = 16  # samples per edge of the brain box
SMOOTH = 0.5  # the Gaussian before sampling, in samples
REDUCE_MM = 2.0  # block averaging before anything else: the cost of a 1 mm 256^3 file is that of a 128^3 one
FOREGROUND = 0.1  # head voxels: above background + 0.1 * (99th percentile - background)
ERODE_MM = 4.0  # the erosion that parts a brain from what is left of its edge (a skull-stripped image)
# a foreground of this many mL or more is a head, not a brain: an adult brain with its CSF holds 1.1-2.0 L (asa's
# template subjects, MNI-sized, up to about 2.3 L), a head with its scalp and some neck 3.2 L or more
HEAD_ML = 2600.0
HEAD_DEPTH_MM = 18.0  # a head's brain: what lies deeper than this below its surface (scalp, skull and CSF)
NECK_AREA = 0.5  # a head's axial slice below its widest with under half its back half's area is neck, not brain
DETAIL_SIGMA = 1.5  # samples: the smooth shape every brain shares, taken away
BOX_SPREAD = 2.2  # the box: the brain's centroid +- 2.2 standard deviations per axis (an ellipsoid reaches 2.24)
# a score at or above its contrast's threshold, between two images of that contrast, is a near-duplicate: the highest
# score between distinct subjects of the contrast plus a margin (docs/weights-elsewhere.md: the scores that set them)
NEAR_THRESHOLDS: dict[str, float | None] = {"t1": 0.889, "t1ce": 0.882, "t2": 0.924, "flair": 0.868}
# an image of no known contrast (an ADC, a plain file): the strictest
NEAR_THRESHOLD = max(t for t in NEAR_THRESHOLDS.values() if t is not None)
# the smallest brain box (mm along its shortest axis) the threshold holds for: it was set on brain-sized images, and a
# smaller object (asa's 1 mm phantoms of 32-64 voxels) sampled at GRID^3 points gives distinct objects scores above
# it. Such an image gets the zero fingerprint, which scores 0 against everything: no near check, its digest still is
MIN_BOX_MM = 90.0
FINGERPRINT = (f"int8 {GRID}^3 detail map of the brain box (asa.data.fingerprint: reduce {REDUCE_MM} mm, "
               f"foreground {FOREGROUND}, erode {ERODE_MM} mm, heads from {HEAD_ML:g} mL cut to {HEAD_DEPTH_MM} mm "
               f"deep above a neck under {NECK_AREA} of the widest slice's back, box {BOX_SPREAD} sd, smooth {SMOOTH}, "
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


def _ball(radius_mm: float, zooms: np.ndarray) -> np.ndarray:
    """An ellipsoid of ``radius_mm`` (at least 2 voxels per axis) on a grid of voxel sizes ``zooms``."""
    radius = np.maximum(np.round(radius_mm / zooms), 2).astype(int)
    r = [np.arange(-k, k + 1) for k in radius]
    return (r[0][:, None, None] / radius[0]) ** 2 + (r[1][None, :, None] / radius[1]) ** 2 \
        + (r[2][None, None, :] / radius[2]) ** 2 <= 1.0


def _largest(mask: np.ndarray) -> np.ndarray:
    labels, n = ndimage.label(mask)
    return labels == (np.argmax(np.bincount(labels.ravel())[1:]) + 1) if n > 1 else mask


def _brain(data: np.ndarray, zooms: np.ndarray) -> np.ndarray:
    """The brain mask of ``data`` (step 2 of the module docstring): the head above background, its largest
    component with its holes filled; a head (``HEAD_ML`` or more) is cut to what lies deeper than
    ``HEAD_DEPTH_MM`` below its surface, a brain is eroded by ``ERODE_MM`` and dilated back within itself."""
    low, high = np.percentile(data, [1.0, 99.0])
    above = data > low + FOREGROUND * (high - low)
    if not above.any():
        return above
    head = ndimage.binary_fill_holes(_largest(above))
    if head.sum() * float(np.prod(zooms)) / 1000.0 >= HEAD_ML:
        # scalp, skull and the CSF round the brain: a layer of about HEAD_DEPTH_MM whose dark bone a grid of 4 mm
        # voxels no longer shows, so the brain is found by depth, not by intensity. A block of the lowest value (a
        # defacing mask: a face set to zero; 5 % of the head or more) is no air the depth counts from where it lies
        # within twice HEAD_DEPTH_MM of the head (where the face was), unless it is half or more of what is outside
        # the head (a head masked to zero all round)
        labels, n = ndimage.label(data <= data.min())
        sizes = np.bincount(labels.ravel())
        blank = np.isin(labels, np.nonzero(sizes >= 0.05 * head.sum())[0]) & (labels > 0)
        filled = head
        if 0 < blank.sum() < 0.5 * (~head).sum():
            filled = head | (blank & (ndimage.distance_transform_edt(~head, sampling=zooms) <= 2 * HEAD_DEPTH_MM))
        deep = (ndimage.distance_transform_edt(filled, sampling=zooms) > HEAD_DEPTH_MM) & head
        # the neck: the axial slices (RAS axis 2) below the head's widest whose back half (behind the widest
        # slice's centre, RAS axis 1: what defacing leaves) is under NECK_AREA of that slice's back half
        widest = int(np.argmax(head.sum(axis=(0, 1))))
        middle = int(round(np.nonzero(head[:, :, widest])[1].mean()))
        back = head[:, :middle, :].sum(axis=(0, 1))
        narrow = np.nonzero(back[:widest] < NECK_AREA * back[widest])[0]
        if narrow.size:
            deep[:, :, : narrow.max() + 1] = False
        if deep.sum() >= 8:
            return ndimage.binary_fill_holes(_largest(deep))
    ball = _ball(ERODE_MM, zooms)
    core = ndimage.binary_erosion(above, ball)
    if not core.any():  # a thin object: no erosion
        core = above
    brain = ndimage.binary_dilation(_largest(core), ball) & above
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
    offsets = np.arange(GRID) + 0.5 - GRID / 2  # samples from the box's centre
    points = np.stack(np.meshgrid(*[centre[a] + offsets * step[a] for a in range(3)], indexing="ij")).reshape(3, -1)
    values = ndimage.map_coordinates(smooth, points, order=1, mode="constant")
    mass = ndimage.map_coordinates(weight, points, order=1, mode="constant")
    # the brain's mean intensity near each sample (not its edge: a copy's mask differs there by a voxel), with the
    # samples outside the brain at its mean, so that only the brain's own pattern is left. Keeping only the samples
    # away from the brain's edge brings a head and its skull-stripped copy closer, but distinct subjects closer still
    # (T1, 120 template subjects: highest distinct score 0.83 -> 0.91), and the thresholds that follow miss most
    # resampled copies of a brain: docs/weights-elsewhere.md
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
