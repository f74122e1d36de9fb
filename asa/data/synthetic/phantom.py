"""Deterministic brain-like phantoms for tests and the demo data.

A phantom is an ellipsoidal brain of two mirror-symmetric hemispheres (a tiny seeded asymmetry
aside) on a 1 mm grid: folded cortex (GM), white matter, deep grey nuclei, lateral ventricles,
interhemispheric fissure and sulcal CSF; optionally a tumour with nested necrosis / enhancing rim /
oedema (BraTS labels 1 / 4 / 2), or periventricular white-matter lesions (WMH label 1) and an
"other pathology" blob (WMH label 2). Given an ``age`` (and optionally a medial-temporal ``atrophy``
grade), the phantom also has hippocampi inside temporal horns and ages: ventricles enlarge, sulci
widen at the cortex's expense, hippocampi shrink (see `make_phantom`). Four contrasts (T1, T1ce,
T2, FLAIR) are drawn from tissue look-up tables, lightly blurred (partial volume), multiplied by a
smooth bias field and given Rician noise; the background is zero (skull-stripped). Everything is
vectorised numpy: a 64^3 case takes a few tens of milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["Phantom", "make_phantom", "TISSUE_NAMES", "MODALITIES", "HIPPOCAMPUS", "SEXES"]

MODALITIES = ("t1", "t1ce", "t2", "flair")
# class index -> name; pathology classes override tissue classes
TISSUE_NAMES = ("background", "csf", "gm", "wm", "necrosis", "oedema", "enhancing", "wm_lesion", "other")
_LUT = {  # relative signal per class, in TISSUE_NAMES order
    "t1": (0.0, 0.25, 0.55, 0.80, 0.30, 0.50, 0.55, 0.62, 0.35),
    "t1ce": (0.0, 0.25, 0.57, 0.80, 0.30, 0.52, 1.10, 0.62, 0.38),
    "t2": (0.0, 1.00, 0.65, 0.45, 0.90, 0.85, 0.70, 0.78, 0.95),
    "flair": (0.0, 0.12, 0.62, 0.48, 0.55, 0.95, 0.85, 0.98, 0.20),
}

SEXES = ("F", "M")
_HEAD_SCALE = {"F": 0.985, "M": 1.015}  # brain radii: about 9 % more brain volume in M than in F
HIPPOCAMPUS = ((0.28, -0.05, -0.36), (0.13, 0.28, 0.12))
"""Centre (±u, v, w) and radii of the right/left hippocampus of an aged phantom, in brain radii
(u left->right, v posterior->anterior, w inferior->superior; the brain is the unit ball). Its
temporal horn fills the same ellipsoid scaled by 1.12 wherever the hippocampus does not."""
_REFERENCE_AGE = 50.0  # age effects start here: an aged phantom at 50 has default ventricles and sulci


@dataclass(frozen=True)
class _Ageing:
    """Sizes that age and medial-temporal atrophy set (1.0 / 0.95 = the ageless phantom's)."""

    ventricle_scale: float  # ventricle radii across (u, w), sqrt of the volume factor
    sulcal_threshold: float  # outer radius where sulcal CSF starts (0.95 ageless)
    hippocampus_scale: float  # hippocampus radii, cube root of its volume fraction


def _ageing(seed: int, age: float, atrophy: float) -> _Ageing:
    """Age and atrophy effects with seeded per-subject variation (a generator of its own, so the
    ageless phantom's random stream, and hence its images, is untouched).

    Ventricle volume × exp(0.04 (age − 50) + N(0, 0.08)); sulcal CSF from outer radius
    0.95 − 0.001 (age − 50) (cortex 0.15 -> 0.11 of the radius thick at 90); hippocampal volume
    fraction 1 − 0.6 atrophy − 0.005 (age − 50) + N(0, 0.04), in [0.2, 1.1]. Exaggerated against
    real brains (ventricles grow five-fold from 50 to 90, two- to three-fold in real ones) so that the
    age effects survive 32³ grids; the hippocampi, about 3 voxels across at 32³, need 40³ or more."""
    years = max(float(age) - _REFERENCE_AGE, 0.0)
    rng = np.random.default_rng([seed, 24])
    ventricle_volume = float(np.exp(0.04 * years + rng.normal(0.0, 0.08)))
    fraction = float(np.clip(1.0 - 0.6 * atrophy - 0.005 * years + rng.normal(0.0, 0.04), 0.2, 1.1))
    return _Ageing(ventricle_scale=float(np.sqrt(ventricle_volume)), sulcal_threshold=0.95 - 0.001 * years,
                   hippocampus_scale=float(np.cbrt(fraction)))


@dataclass
class Phantom:
    """Arrays [X, Y, Z] on a RAS+ 1 mm grid.

    ``images``: modality -> float32; ``tissue``: uint8 0 bg / 1 CSF / 2 GM / 3 WM (IBSR-style);
    ``tumour``: uint8 0 / 1 NCR / 2 ED / 4 ET (BraTS); ``lesions``: uint8 0 / 1 WMH / 2 other;
    ``classes``: uint8 index into `TISSUE_NAMES`; ``midline``: array coordinate of the mid-sagittal
    plane along axis 0 (voxel i mirrors 2*midline - i); ``affine``: RAS voxel->world, world origin at
    the brain centre.
    """

    images: dict[str, np.ndarray]
    tissue: np.ndarray
    tumour: np.ndarray
    lesions: np.ndarray
    classes: np.ndarray
    brain_mask: np.ndarray
    affine: np.ndarray
    midline: float


def _blur3(a: np.ndarray) -> np.ndarray:
    """Separable [1, 2, 1]/4 smoothing along each axis, edges repeated (partial-volume look)."""
    for ax in range(3):
        a = ndimage.correlate1d(a, [0.25, 0.5, 0.25], axis=ax, mode="nearest")
    return a


def _folds(rng: np.random.Generator, au: np.ndarray, v: np.ndarray, w: np.ndarray, n: int, freq: tuple[float, float]) -> np.ndarray:
    """Sum of n random plane waves in (|u|, v, w): smooth, left-right symmetric, in about [-1, 1]."""
    out = np.zeros(np.broadcast_shapes(au.shape, v.shape, w.shape), dtype=np.float32)
    for _ in range(n):
        k = rng.normal(size=3)
        k *= rng.uniform(*freq) / np.linalg.norm(k)
        out += np.sin(k[0] * au + k[1] * v + k[2] * w + rng.uniform(0, 2 * np.pi)).astype(np.float32)
    return out / np.sqrt(n)


def _ellipsoid(x, y, z, c, r) -> np.ndarray:
    return ((x - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((z - c[2]) / r[2]) ** 2


def make_phantom(
    size: int | tuple[int, int, int] = 64,
    *,
    seed: int = 0,
    tumour: bool = False,
    lesions: bool = False,
    other_pathology: bool = False,
    asymmetry: float = 0.01,
    noise: float = 0.02,
    bias: float = 0.15,
    shift: bool = True,
    age: float | None = None,
    atrophy: float = 0.0,
    sex: str | None = None,
) -> Phantom:
    """Generate one phantom of shape ``size`` (1 mm voxels), fully determined by ``seed``.

    ``shift`` moves the brain a few voxels off the grid centre (so brain-centred cropping is
    exercised); ``asymmetry`` scales a small left-right asymmetric fold perturbation.

    ``age`` (years) gives an aged phantom: a hippocampus (GM) inside a temporal horn (CSF) per
    hemisphere (`HIPPOCAMPUS`), and past 50 years enlarged lateral ventricles, wider sulcal CSF over
    a thinner cortex and smaller hippocampi. ``atrophy`` in [0, 1] (medial-temporal atrophy: 0 none,
    1 severe, as in AD) takes up to 60 % more of the hippocampal volume, the lost tissue becoming CSF
    of the temporal horn; it needs an ``age``. Every effect carries seeded per-subject noise
    (sizes: `_ageing`). ``sex`` ("F" or "M") scales the brain by 0.985 / 1.015. With the defaults
    (no age, no sex) the phantom is, bit for bit, the ageless phantom of earlier versions.
    """
    if age is None and atrophy:
        raise ValueError(f"atrophy={atrophy} needs an age: medial-temporal structures exist only in aged phantoms")
    if not 0.0 <= atrophy <= 1.0:
        raise ValueError(f"atrophy must lie in [0, 1] (0 none, 1 severe), got {atrophy}")
    if sex is not None and sex not in SEXES:
        raise ValueError(f"sex must be one of {SEXES} or None, got {sex!r}")
    shape = (size,) * 3 if isinstance(size, int) else tuple(int(s) for s in size)
    rng = np.random.default_rng(seed)
    radii = np.array([0.36, 0.43, 0.35]) * np.array(shape) * rng.uniform(0.95, 1.03)
    if sex is not None:
        radii = radii * _HEAD_SCALE[sex]
    ageing = None if age is None else _ageing(seed, age, atrophy)
    max_shift = (0.47 * np.array(shape) - radii).clip(0).astype(int)
    offset = np.array([rng.integers(-m, m + 1) if (shift and m > 0) else 0 for m in max_shift])
    centre = (np.array(shape) - 1) / 2 + offset  # brain centre (array coords); exact mirror along axis 0
    x, y, z = (np.arange(n, dtype=np.float32)[tuple(slice(None) if i == a else None for i in range(3))] - centre[a]
               for a, n in enumerate(shape))
    u, v, w = x / radii[0], y / radii[1], z / radii[2]
    au = np.abs(u)
    r = np.sqrt(u * u + v * v + w * w)

    gyri = _folds(rng, au, v, w, 6, (9.0, 14.0))
    asym = _folds(rng, u, v, w, 2, (3.0, 6.0)) * asymmetry  # uses signed u: breaks symmetry slightly
    outer = r + 0.035 * gyri + asym
    brain = outer < 1.0
    cortex_inner = 0.80 + 0.05 * _folds(rng, au, v, w, 4, (4.0, 8.0)) + 0.06 * np.maximum(gyri, 0)

    classes = np.zeros(shape, dtype=np.uint8)
    classes[brain] = 3  # WM
    classes[brain & (outer >= cortex_inner)] = 2  # cortex
    classes[brain & (outer >= (0.95 if ageing is None else ageing.sulcal_threshold))] = 1  # sulcal CSF
    half_voxel = 0.5 / radii[0] + 1e-6
    fissure = brain & (au <= half_voxel) & (w > -0.35)
    classes[fissure] = 1
    # deep grey nuclei and lateral ventricles, one per hemisphere (mirror images)
    k = 1.0 if ageing is None else ageing.ventricle_scale  # x * 1.0 is exact: ageless sizes unchanged
    for side in (-1.0, 1.0):
        nuclei = _ellipsoid(u, v, w, (side * 0.27, 0.0, -0.05), (0.13, 0.18, 0.14)) < 1
        classes[nuclei & brain] = 2
        vent = _ellipsoid(u, v, w, (side * 0.11, 0.02, 0.18), (0.075 * k, 0.38, 0.12 * k)) < 1
        horn = _ellipsoid(u, v, w, (side * 0.13, 0.33, 0.05), (0.06 * k, 0.12, 0.10 * k)) < 1
        classes[(vent | horn) & brain] = 1
        if ageing is not None:  # medial temporal lobe: hippocampus inside its temporal horn
            (cu, cv, cw), r = HIPPOCAMPUS
            horn_t = _ellipsoid(u, v, w, (side * cu, cv, cw), tuple(1.12 * x for x in r)) < 1
            # a shrinking hippocampus keeps its medial and inferior borders, so the lost tissue opens
            # one CSF gap lateral and superior to it (widened temporal horn, as MTA ratings see it)
            s, ru, rw = ageing.hippocampus_scale, r[0], r[2]
            hc = (side * (cu - (1.12 - s) * ru), cv, cw - (1.12 - s) * rw)
            hippocampus = _ellipsoid(u, v, w, hc, tuple(s * x for x in r)) < 1
            classes[horn_t & brain] = 1
            classes[hippocampus & horn_t & brain] = 2
    tissue = classes.copy()

    tumour_map = np.zeros(shape, dtype=np.uint8)
    if tumour:
        side = rng.choice([-1.0, 1.0])
        c = (side * rng.uniform(0.30, 0.45), rng.uniform(-0.3, 0.3), rng.uniform(-0.05, 0.35))
        radius = rng.uniform(0.20, 0.28)
        d = np.sqrt(_ellipsoid(u, v, w, c, (radius,) * 3)) + 0.12 * _folds(rng, u, v, w, 3, (8.0, 12.0))
        core = brain & (classes != 1)
        tumour_map[core & (d < 1.6) & (classes == 3)] = 2  # oedema spreads along WM
        tumour_map[core & (d < 1.0)] = 4
        tumour_map[core & (d < 0.55)] = 1
        classes[tumour_map == 2] = 5
        classes[tumour_map == 4] = 6
        classes[tumour_map == 1] = 4

    lesion_map = np.zeros(shape, dtype=np.uint8)
    if lesions:
        scale = min(shape) / 64
        for _ in range(int(rng.integers(4, 9))):
            side = rng.choice([-1.0, 1.0])
            c = np.array([side * rng.uniform(0.15, 0.35), rng.uniform(-0.35, 0.45), rng.uniform(0.0, 0.4)])
            rad = rng.uniform(1.5, 3.5, size=3) * scale / radii
            blob = (_ellipsoid(u, v, w, c, rad) < 1) & (classes == 3)
            lesion_map[blob] = 1
        classes[lesion_map == 1] = 7
    if other_pathology:
        side = rng.choice([-1.0, 1.0])
        c = (side * rng.uniform(0.35, 0.6), rng.uniform(-0.5, 0.5), rng.uniform(-0.2, 0.3))
        rad = rng.uniform(2.0, 4.0) * min(shape) / 64 / radii
        blob = (_ellipsoid(u, v, w, c, rad) < 1) & brain & (classes != 1)
        lesion_map[blob] = 2
        classes[blob] = 8

    field = np.exp(bias * _folds(rng, u, v, w, 3, (0.8, 2.0)))
    images: dict[str, np.ndarray] = {}
    for name in MODALITIES:
        base = np.asarray(_LUT[name], dtype=np.float32)[classes]
        texture = 1.0 + 0.03 * gyri  # mild within-tissue variation, symmetric
        signal = _blur3(base * texture) * field
        n1 = rng.normal(0.0, noise, size=shape).astype(np.float32)
        n2 = rng.normal(0.0, noise, size=shape).astype(np.float32)
        img = np.sqrt((signal + n1) ** 2 + n2 ** 2)  # Rician magnitude noise
        img[~brain] = 0.0
        images[name] = img.astype(np.float32)

    affine = np.eye(4)
    affine[:3, 3] = -centre  # world (0, 0, 0) at the brain centre, as in MNI-aligned data
    return Phantom(
        images=images,
        tissue=tissue,
        tumour=tumour_map,
        lesions=lesion_map,
        classes=classes,
        brain_mask=brain,
        affine=affine,
        midline=float(centre[0]),
    )
