"""Demo subjects from a real brain template: the MNI ICBM152 2009 template, warped per subject.

Each subject is the template (T1 intensities and grey / white-matter probability maps, CSF the rest
of the brain mask) resampled once per process onto the output grid, then, per subject: optional
lesions drawn into the template (each in one hemisphere), a random affine (rotation up to 5
degrees, scale ±6 %, shift up to 6 mm) with a smooth random deformation field (MONAI
`Rand3DElastic`, displacement of about 2 mm RMS, drawn independently over the whole volume: the two
hemispheres of the symmetric template deform differently, see `mirror_correlation`), four contrasts (T1 the template's own intensities; T1ce, T2 and FLAIR from tissue tables),
then per contrast a smooth multiplicative bias field (`RandBiasField`), a random gamma in
[0.8, 1.25] and Rician noise (`RandRicianNoise`); skull-stripped (zero outside the
brain), or with ``skull`` the whole head in air (`asa.data.synthetic.head`). Every random number comes from generators seeded by ``(seed, index)``: the same seed and
index give the same arrays, bit for bit; the lesion draws have a stream of their own, so a subject
with ``lesions=True`` is the same head, warp and noise as without.

Labels: 0 background, 1 CSF, 2 GM, 3 WM (argmax of the warped tissue probabilities inside the
brain), and with ``lesions`` two lesion kinds that intensity alone cannot find (`LESION_NAMES`):

* 4 ``heterotopia``: one or two nodules of grey matter inside the deep white matter of one
  hemisphere. In every contrast they have exactly the grey-matter intensities; only their
  surroundings (white matter all round, far from the cortex) say they are abnormal.
* 5 ``deep_grey_enlargement``: the deep grey nuclei (thalamus, basal ganglia) of one hemisphere
  (left or right, drawn per subject) grown by 3-5 mm into the white matter around them, with their
  own grey-matter profile. The added voxels look like the nuclei, so like grey matter, in every
  contrast; they are abnormal only against the other hemisphere (the template is exactly left-right
  symmetric, so the healthy nuclei mirror each other).

Template and licence: the files ``mni_icbm152_{t1,gm,wm}_tal_nlin_sym_09a_converted.nii.gz`` that
nilearn (``pip install "asa[anatomy]"``) ships in its wheel under ``nilearn/datasets/data/``, read
offline with ``nilearn.datasets.load_mni152_template`` / ``load_mni152_gm_template`` /
``load_mni152_wm_template``. nilearn's own description of the template
(``nilearn/datasets/description/icbm152_2009.rst``) names its source,
http://www.bic.mni.mcgill.ca/ServicesAtlases/ICBM152NLin2009 (Fonov et al. 2009, 2011; Collins et
al. 1999), and gives its licence as "unknown"; the source publishes the template under this notice:

    Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre, Montreal Neurological
    Institute, McGill University. Permission to use, copy, modify, and distribute this software and
    its documentation for any purpose and without fee is hereby granted, provided that the above
    copyright notice appear in all copies. The authors and McGill University make no
    representations about the suitability of this software for any purpose. It is provided "as is"
    without express or implied warranty.

asa ships no template file: it reads nilearn's, and the subjects it writes are derived from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch
from monai.transforms import Rand3DElastic, RandBiasField, RandRicianNoise
from scipy import ndimage

from asa.data.synthetic.head import HEAD_MARGIN_MM, NECK_MM, head_hull_distance, head_images

__all__ = ["AnatomySubject", "make_anatomy_subject", "mirror_correlation", "lesion_names", "ANATOMY_CLASSES",
           "LESION_NAMES", "FREE_LESION_NAMES", "PLACEMENTS", "TEMPLATE_NOTICE", "INSTALL_HINT"]

INSTALL_HINT = 'pip install "asa[anatomy]"'
TEMPLATE_NOTICE = ("MNI ICBM152 2009 template (nilearn's copy): Copyright (C) 1993-2009 Louis Collins, McConnell "
                   "Brain Imaging Centre, Montreal Neurological Institute, McGill University")
ANATOMY_CLASSES = ("background", "csf", "gm", "wm")
"""Tissue label values 0..3 (IBSR's)."""
LESION_NAMES = {4: "heterotopia", 5: "deep_grey_enlargement"}
"""Lesion label values of subjects made with ``lesions=True`` (and the default ``placement="fixed"``)."""
PLACEMENTS = ("fixed", "free", "planted")
"""Lesion placements: ``fixed`` the deep white matter and the deep grey nuclei (`LESION_NAMES`), ``free``
anywhere in the tissue with no location prior (`FREE_LESION_NAMES`), ``planted`` as ``free`` with more and larger
heterotopia nodules (a lesion load learnable from one or two labeled cases); see `make_anatomy_subject`."""
FREE_LESION_NAMES = {4: "heterotopia", 5: "grey_enlargement"}
"""Lesion label values of subjects made with ``lesions=True, placement="free"`` (or ``"planted"``)."""
# the heterotopia of each placement with no location prior: (nodules drawn in [low, high), radius range in mm)
_NODULES = {"free": ((1, 4), (3.0, 10.0)), "planted": ((3, 7), (6.0, 12.0))}
MODALITIES = ("t1", "t1ce", "t2", "flair")
# relative signal of CSF, GM, WM per derived contrast (T1 is the template's own image)
_TABLES = {
    "t1ce": (0.28, 0.68, 0.84),
    "t2": (1.00, 0.62, 0.42),
    "flair": (0.12, 0.66, 0.50),
}
_MARGIN = 1.06  # field of view over the brain's bounding box
_DISPLACEMENT_MM = 2.0  # RMS of the elastic displacement
_SIGMA_MM = 12.0  # smoothness of the elastic displacement


@dataclass
class AnatomySubject:
    """Arrays [X, Y, Z] on an isotropic RAS+ grid (``affine``: voxel -> MNI mm, before the subject's warp).

    ``images``: modality (`MODALITIES`) -> float32, about 0..1, zero outside the brain (with ``skull``: the
    head and the noisy air round it); ``tissue``:
    uint8 0 bg / 1 CSF / 2 GM / 3 WM; ``labels``: ``tissue`` with the lesion classes of
    `LESION_NAMES` painted over it; ``hemisphere``: int8, -1 left / +1 right / 0 outside the brain,
    the side of the template's mid-sagittal plane each voxel came from (warped with the subject);
    ``lesions``: what was drawn, per kind (template-space centres in mm, the enlarged side).
    """

    images: dict[str, np.ndarray]
    tissue: np.ndarray
    labels: np.ndarray
    brain_mask: np.ndarray
    affine: np.ndarray
    hemisphere: np.ndarray
    lesions: dict[str, object] = field(default_factory=dict)


@lru_cache(maxsize=1)
def _load_template() -> dict[str, np.ndarray | float]:
    """The 1 mm template: T1 (0..1), GM, WM, CSF probabilities, brain mask, voxel -> mm affine."""
    try:
        from nilearn import datasets
    except ImportError as err:
        raise ImportError("the anatomy demo subjects (anatomy=True, asa-demo-data --anatomy) read the MNI152 template "
                          f"that nilearn ships, and nilearn is not installed: {INSTALL_HINT}") from err
    t1_img = datasets.load_mni152_template()  # bundled in the wheel: no download
    t1 = np.asarray(t1_img.get_fdata(dtype=np.float32))
    gm = np.asarray(datasets.load_mni152_gm_template().get_fdata(dtype=np.float32))
    wm = np.asarray(datasets.load_mni152_wm_template().get_fdata(dtype=np.float32))
    brain = ndimage.binary_fill_holes(t1 > 0.05)  # the T1 is skull-stripped: the brain is what is not zero
    csf = np.where(brain, np.clip(1.0 - gm - wm, 0.0, 1.0), 0.0).astype(np.float32)
    return {"t1": t1, "gm": gm, "wm": wm, "csf": csf, "brain": brain.astype(np.float32), "affine": t1_img.affine}


def _grid(shape: tuple[int, int, int], skull: bool = False) -> np.ndarray:
    """Affine of the isotropic grid ``shape`` that holds the template's brain (with ``skull``: the
    head, `HEAD_MARGIN_MM` beyond the brain and `NECK_MM` of neck below it), centred on x = 0 so
    that voxel i mirrors voxel shape[0] - 1 - i (the template is left-right symmetric about x = 0)."""
    tpl = _load_template()
    idx = np.argwhere(tpl["brain"] > 0)
    lo, hi = (_to_world(tpl["affine"], idx.min(0)), _to_world(tpl["affine"], idx.max(0)))
    if skull:
        lo, hi = lo - np.array([HEAD_MARGIN_MM, HEAD_MARGIN_MM, NECK_MM]), hi + HEAD_MARGIN_MM
        extent = hi - lo + 1.0
    else:
        extent = (hi - lo + 1.0) * _MARGIN
    voxel = float(np.max(extent / np.array(shape)))
    centre = (lo + hi) / 2
    centre[0] = 0.0
    affine = np.diag([voxel, voxel, voxel, 1.0])
    affine[:3, 3] = centre - (np.array(shape) - 1) / 2 * voxel
    return affine


def _to_world(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Voxel coordinates [..., 3] -> world [..., 3]."""
    return np.asarray(points, dtype=np.float64) @ affine[:3, :3].T + affine[:3, 3]


@lru_cache(maxsize=4)
def _template_on_grid(shape: tuple[int, int, int], skull: bool = False) -> dict[str, np.ndarray]:
    """The template resampled onto `_grid` (anti-aliased, trilinear), computed once per shape, field
    of view and process: channels ``t1, csf, gm, wm, brain``, plus the T1 mean of each tissue
    (``t1_means``) and, with ``skull``, the distance to the brain's hull (``hull``, mm)."""
    tpl = _load_template()
    affine = _grid(shape, skull)
    voxel = affine[0, 0]
    sigma = 0.5 * np.sqrt(max(voxel**2 - 1.0, 0.0))  # template voxels are 1 mm
    to_template = np.linalg.inv(tpl["affine"]) @ affine
    coords = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), -1).reshape(-1, 3)
    where = _to_world(to_template, coords).T
    out: dict[str, np.ndarray] = {"affine": affine}
    for name in ("t1", "csf", "gm", "wm", "brain"):
        smooth = ndimage.gaussian_filter(tpl[name], sigma) if sigma > 0 else tpl[name]
        out[name] = ndimage.map_coordinates(smooth, where, order=1, mode="constant").reshape(shape).astype(np.float32)
    means = [float(np.median(tpl["t1"][tpl[k] > 0.9])) for k in ("csf", "gm", "wm")]
    out["t1_means"] = np.asarray(means, dtype=np.float32)
    brain = out["brain"] > 0.5
    out["depth"] = ndimage.distance_transform_edt(brain, sampling=voxel).astype(np.float32)  # mm to the outside
    out["wm_depth"] = ndimage.distance_transform_edt(out["wm"] > 0.5, sampling=voxel).astype(np.float32)
    if skull:
        out["hull"] = head_hull_distance(brain, voxel)
    for value in out.values():
        value.flags.writeable = False  # shared by every subject of the process
    return out


def _ball(shape: tuple[int, ...], centre: np.ndarray, radius_vox: float) -> np.ndarray:
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum((g - c) ** 2 for g, c in zip(grids, centre)) <= radius_vox**2


def _heterotopia(rng: np.random.Generator, tpl: dict[str, np.ndarray]) -> tuple[np.ndarray, list[list[float]]]:
    """One or two GM nodules (radius 6-9 mm, at least 1.6 voxels) inside deep WM of one hemisphere:
    mask and centres (mm).

    Every nodule lies at least a voxel from the mid-sagittal plane (x = 0), and a second nodule drawn
    on the other side than the first is moved to its mirror position (the grid mirrors the template
    exactly, so that is deep white matter too): the other hemisphere stays healthy, the evidence a
    left-right comparison needs."""
    voxel = float(tpl["affine"][0, 0])
    shape = tpl["wm"].shape
    x_mm = _to_world(tpl["affine"], np.c_[np.arange(shape[0]), np.zeros((shape[0], 2))])[:, 0]
    mask = np.zeros(shape, dtype=bool)
    centres = []
    for _ in range(int(rng.integers(1, 3))):
        radius = max(float(rng.uniform(6.0, 9.0)), 1.6 * voxel)
        depth = np.where(mask, 0.0, tpl["wm_depth"])
        if mask.any():  # keep nodules apart
            depth = np.where(ndimage.distance_transform_edt(~mask, sampling=voxel) > radius + 2 * voxel, depth, 0.0)
        depth = np.where(np.abs(x_mm)[:, None, None] >= radius + voxel, depth, 0.0)  # the ball stays on its side
        candidates = np.argwhere(depth >= radius + voxel)
        if not len(candidates):  # coarse grid: the deepest white matter there is
            candidates = np.argwhere(depth >= depth.max() - 1e-6)
        centre = candidates[int(rng.integers(len(candidates)))]
        if centres and np.sign(x_mm[centre[0]]) != np.sign(centres[0][0]):
            mirror = np.array([shape[0] - 1 - centre[0], centre[1], centre[2]])
            if depth[tuple(mirror)] >= min(radius + voxel, depth.max() - 1e-6):
                centre = mirror
            else:  # the mirror is too close to the first nodule: a point of the first one's side
                side = np.where((np.sign(x_mm) == np.sign(centres[0][0]))[:, None, None], depth, 0.0)
                if side.max() <= 0:  # no white matter left there: one nodule
                    break
                same = np.argwhere(side >= min(radius + voxel, side.max() - 1e-6))
                centre = same[int(rng.integers(len(same)))]
        mask |= _ball(shape, centre, radius / voxel) & (tpl["wm"] > 0.5)
        centres.append(_to_world(tpl["affine"], centre).round(1).tolist())
    return mask, centres


def _deep_grey_enlargement(rng: np.random.Generator, tpl: dict[str, np.ndarray], probs: np.ndarray,
                           spare: np.ndarray) -> tuple[np.ndarray, str]:
    """Grow the deep grey nuclei (thalamus, basal ganglia) of one hemisphere by 3-5 mm (at least
    1.2 voxels) into the white matter around them, keeping their grey-matter profile (a grey-level
    dilation of their GM probability): updates ``probs`` [CSF, GM, WM] in place (GM taken from WM,
    nowhere in ``spare``) and returns the voxels that became GM and the side ("left" / "right")."""
    voxel = float(tpl["affine"][0, 0])
    shape = tpl["gm"].shape
    side = ("left", "right")[int(rng.integers(2))]
    sign = 1.0 if side == "right" else -1.0  # RAS: +x is the subject's right
    x, y, z = (_to_world(tpl["affine"], np.eye(3)[a] * np.arange(n)[:, None])[:, a].reshape(
        tuple(n if b == a else 1 for b in range(3))) for a, n in enumerate(shape))
    box = (sign * x > 4) & (sign * x < 34) & (y > -38) & (y < 28) & (z > -12) & (z < 24)  # MNI mm
    parts, n = ndimage.label((tpl["gm"] > 0.5) & box & (tpl["depth"] > 15.0))
    if n == 0:
        raise ValueError(f"no deep grey nuclei found on the {side} of the template at voxel size {voxel:.1f} mm: "
                         "use a larger size")
    nuclei = parts == 1 + int(np.argmax(ndimage.sum_labels(np.ones(shape), parts, index=np.arange(1, n + 1))))
    width = max(float(rng.uniform(3.0, 5.0)), 1.2 * voxel)
    # a voxel's margin from the mid-sagittal plane: still one side after the warp's interpolation
    return _grow_grey(tpl, probs, nuclei, width, (sign * x > 0.25 * voxel) & ~spare), side


def _grow_grey(tpl: dict[str, np.ndarray], probs: np.ndarray, source: np.ndarray, width: float,
               allowed: np.ndarray) -> np.ndarray:
    """Grow the grey matter of ``source`` (bool [X, Y, Z]) by ``width`` mm into the white matter
    around it (a grey-level dilation of its GM probability), only where ``allowed`` and not CSF:
    updates ``probs`` [CSF, GM, WM] in place (GM taken from WM) and returns the voxels that became GM."""
    voxel = float(tpl["affine"][0, 0])
    near = ndimage.distance_transform_edt(~source, sampling=voxel)
    radius = int(np.ceil(width / voxel))
    ball = _ball((2 * radius + 1,) * 3, np.array([radius] * 3), width / voxel)
    grown = ndimage.maximum_filter(np.where(near <= voxel, tpl["gm"], 0.0), footprint=ball)
    allowed = allowed & (near <= width) & (tpl["csf"] < 0.5)
    was_gm = (probs[1] > probs[0]) & (probs[1] > probs[2])
    gain = np.where(allowed, np.minimum(np.maximum(grown - probs[1], 0.0), probs[2]), 0.0)
    probs[1] += gain
    probs[2] -= gain
    return (probs[1] > probs[0]) & (probs[1] > probs[2]) & ~was_gm


def _pick(rng: np.random.Generator, where: np.ndarray) -> np.ndarray:
    """A point drawn uniformly in the voxels of ``where`` (bool [X, Y, Z]): a voxel, then a uniform
    offset within it, so that centres take any position, not the grid's alone. Voxel coordinates [3]."""
    candidates = np.argwhere(where)
    return candidates[int(rng.integers(len(candidates)))] + rng.uniform(-0.5, 0.5, 3)


def _free_heterotopia(rng: np.random.Generator, tpl: dict[str, np.ndarray], count: tuple[int, int] = (1, 4),
                      radius_mm: tuple[float, float] = (3.0, 10.0)) -> tuple[np.ndarray, list[list[float]]]:
    """``count`` (low, high: drawn in [low, high)) GM nodules, by default one to three (radius drawn in
    ``radius_mm``, by default 3-10 mm, at least 1.2 voxels) anywhere in the white matter, either hemisphere each,
    the centre at least half the radius (and a voxel) deep in the white matter, so that white matter encloses the
    nodule's core; fewer where the white matter has no room left: mask and centres (mm)."""
    voxel = float(tpl["affine"][0, 0])
    shape = tpl["wm"].shape
    mask = np.zeros(shape, dtype=bool)
    centres = []
    for _ in range(int(rng.integers(*count))):
        radius = max(float(rng.uniform(*radius_mm)), 1.2 * voxel)
        depth = tpl["wm_depth"]
        if mask.any():  # keep nodules apart
            depth = np.where(ndimage.distance_transform_edt(~mask, sampling=voxel) > radius + voxel, depth, 0.0)
        room = depth >= max(0.5 * radius, voxel)
        if not room.any():
            break
        centre = _pick(rng, room)
        mask |= _ball(shape, centre, radius / voxel) & (tpl["wm"] > 0.5)
        centres.append(_to_world(tpl["affine"], centre).round(1).tolist())
    return mask, centres


def _free_grey_enlargement(rng: np.random.Generator, tpl: dict[str, np.ndarray], probs: np.ndarray,
                           spare: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """The grey matter (cortex or deep nuclei, either hemisphere) within 8-16 mm of a point drawn
    anywhere on the grey / white-matter border, grown by 3-5 mm (at least 1.2 voxels) into the white
    matter there: updates ``probs`` as `_grow_grey` and returns the voxels that became GM and the centre (mm)."""
    voxel = float(tpl["affine"][0, 0])
    shape = tpl["gm"].shape
    wm = tpl["wm"] > 0.5
    border = (tpl["gm"] > 0.5) & (ndimage.distance_transform_edt(~wm, sampling=voxel) <= 1.5 * voxel) & ~spare
    centre = _pick(rng, border)
    reach = max(float(rng.uniform(8.0, 16.0)), 2.0 * voxel)
    width = max(float(rng.uniform(3.0, 5.0)), 1.2 * voxel)
    source = _ball(shape, centre, reach / voxel) & (tpl["gm"] > 0.5)
    became = _grow_grey(tpl, probs, source, width, _ball(shape, centre, (reach + width) / voxel) & ~spare)
    return became, _to_world(tpl["affine"], centre).round(1).tolist()


def _displacement_scale(sigma_vox: float) -> float:
    """RMS of MONAI's elastic offset (uniform(-1, 1) noise smoothed by a Gaussian of ``sigma_vox``)
    per unit magnitude: sqrt(1/3 · Σ g²), Σ g² = (2 √π σ)^-3 for a normalised 3-D Gaussian."""
    return float(np.sqrt(1.0 / 3.0) * (2.0 * np.sqrt(np.pi) * sigma_vox) ** -1.5)


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(2**31 - 1))


def lesion_names(placement: str = "fixed") -> dict[int, str]:
    """Lesion label value -> name under ``placement`` (one of `PLACEMENTS`)."""
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
    return dict(LESION_NAMES if placement == "fixed" else FREE_LESION_NAMES)


def make_anatomy_subject(size: int | tuple[int, int, int] = 64, *, seed: int = 0, index: int = 0,
                         lesions: bool = False, placement: str = "fixed", skull: bool = False) -> AnatomySubject:
    """Demo subject ``index`` of a dataset of seed ``seed`` on a grid of ``size``^3 (or ``size``
    (x, y, z)) voxels covering the brain isotropically (64 -> about 3 mm voxels, 32 -> 6 mm).

    ``lesions`` draws two lesion kinds into the template before the warp; everything else is the
    same as without. Where (``placement``, one of `PLACEMENTS`):

    * ``"fixed"`` (the default): `LESION_NAMES`, as the module docstring says: heterotopia in the
      deepest white matter of one hemisphere (on a coarse grid few positions are deep enough), the
      deep grey nuclei of one side grown (the same nuclei in every subject).
    * ``"free"``: no location prior, `FREE_LESION_NAMES`: 1-3 heterotopia nodules of radius 3-10 mm,
      each centred anywhere in the white matter at least half its radius deep, either hemisphere;
      ``grey_enlargement``: the grey matter (cortex or nuclei) within 8-16 mm of a point drawn
      anywhere on the grey / white-matter border, either hemisphere, grown 3-5 mm into the white
      matter. Centres are drawn to a fraction of a voxel.
    * ``"planted"``: as ``"free"``, with 3-6 heterotopia nodules of radius 6-12 mm (fewer where the white matter
      has no room): the lesion load of asa-study's planted bed, where unlabeled subjects carry the lesions the
      labeled ones mark and a CNN learns them from one or two labeled cases within a CPU budget.

    ``skull``: the head as a T1 shows it before brain extraction (`asa.data.synthetic.head`: CSF,
    skull with its marrow, scalp, a neck with the cord, vertebrae and airway) in a field of view
    that holds the head (so ``size`` 64 gives about 3.6 mm voxels, 48 about 4.8 mm), and the
    background is air: the Rician noise (noise std drawn in [0.01, 0.03]) fills it, as in a
    magnitude image. ``brain_mask``, ``tissue`` and ``labels`` stay the brain's (0 outside it);
    without ``skull`` every image is 0 outside the brain (skull-stripped).

    Needs nilearn (``pip install "asa[anatomy]"``): `ImportError` saying so otherwise. The first subject
    of a process loads and resamples the template (a few seconds); later ones reuse it."""
    shape = (int(size),) * 3 if isinstance(size, (int, np.integer)) else tuple(int(s) for s in size)
    if len(shape) != 3 or min(shape) < 16:
        raise ValueError(f"size must be one edge or three (x, y, z) of at least 16 voxels, got {size}")
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
    tpl = _template_on_grid(shape, bool(skull))
    voxel = float(tpl["affine"][0, 0])
    rng = np.random.default_rng([seed, index, 26])
    lesion_rng = np.random.default_rng([seed, index, 26, 1])  # its own stream: lesions change nothing else

    probs = np.stack([tpl["csf"], tpl["gm"], tpl["wm"]])  # [3, X, Y, Z]
    marks = np.zeros((2,) + shape, dtype=np.float32)
    drawn: dict[str, object] = {}
    if lesions:
        free = placement != "fixed"
        nodules, centres = (_free_heterotopia(lesion_rng, tpl, *_NODULES[placement]) if free
                            else _heterotopia(lesion_rng, tpl))
        probs[:, nodules] = np.array([[0.0], [1.0], [0.0]], dtype=np.float32)
        spare = ndimage.binary_dilation(nodules, iterations=2)
        grown, where = (_free_grey_enlargement if free else _deep_grey_enlargement)(lesion_rng, tpl, probs, spare)
        marks[0], marks[1] = nodules, grown
        drawn = dict(zip(lesion_names(placement).values(), (centres, where)))
    # T1: the template's image, changed by the tissue it lost or gained; the others from tissue tables,
    # with the template's within-tissue texture (its T1 over the T1 its tissue mix predicts)
    means = tpl["t1_means"]
    t1 = tpl["t1"] + np.tensordot(means, probs - np.stack([tpl["csf"], tpl["gm"], tpl["wm"]]), axes=1)
    texture = np.clip(tpl["t1"] / np.maximum(np.tensordot(means, np.stack([tpl["csf"], tpl["gm"], tpl["wm"]]),
                                                          axes=1), 1e-3), 0.85, 1.15)
    contrasts = [t1] + [np.tensordot(np.asarray(_TABLES[m], dtype=np.float32), probs, axes=1) * texture
                        for m in MODALITIES[1:]]
    if skull:  # the head fills what the brain leaves (its partial-volume edge included)
        head = head_images(np.random.default_rng([seed, index, 26, 2]), hull_distance=tpl["hull"],
                           brain=tpl["brain"] > 0.5, affine=tpl["affine"])
        contrasts = [image + layer * (1.0 - tpl["brain"]) for image, layer in zip(contrasts, head)]
    # template x (mm) as a channel: after the warp it says which hemisphere each voxel came from
    x_mm = np.broadcast_to(_to_world(tpl["affine"], np.c_[np.arange(shape[0]), np.zeros((shape[0], 2))])[:, 0, None, None],
                           shape)
    stack = np.concatenate([np.stack(contrasts), probs, marks, tpl["brain"][None], x_mm[None]]).astype(np.float32)

    sigma = _SIGMA_MM / voxel
    warp = Rand3DElastic(sigma_range=(sigma, sigma), prob=1.0,
                         magnitude_range=(m := _DISPLACEMENT_MM / voxel / _displacement_scale(sigma), m),
                         rotate_range=(np.deg2rad(5.0),) * 3, scale_range=(0.06,) * 3,
                         translate_range=(6.0 / voxel,) * 3, mode="bilinear", padding_mode="zeros")
    warp.set_random_state(seed=_seed(rng))
    warped = np.asarray(torch.as_tensor(warp(torch.from_numpy(stack))).numpy(), dtype=np.float32)
    images_w, probs_w, marks_w, brain_w, x_w = warped[:4], warped[4:7], warped[7:9], warped[9], warped[10]

    brain = brain_w > 0.5
    hemisphere = np.where(brain, np.sign(x_w), 0).astype(np.int8)
    background = np.clip(1.0 - probs_w.sum(0), 0.0, 1.0)
    tissue = np.where(brain, np.argmax(np.concatenate([background[None], probs_w]), axis=0), 0).astype(np.uint8)
    tissue[brain & (tissue == 0)] = 1  # inside the mask but little tissue: CSF
    labels = tissue.copy()
    for k, value in enumerate(LESION_NAMES):
        labels[brain & (marks_w[k] > 0.5)] = value

    images = {}
    for name, image in zip(MODALITIES, images_w):
        bias = RandBiasField(degree=3, coeff_range=(-0.04, 0.04), prob=1.0)
        # a whole head's air shows the noise: its std has a floor there (a stripped brain's may be near 0)
        noise = (RandRicianNoise(prob=1.0, std=float(rng.uniform(0.01, 0.03)), sample_std=False) if skull
                 else RandRicianNoise(prob=1.0, std=0.03, sample_std=True))
        bias.set_random_state(seed=_seed(rng))
        out = np.asarray(torch.as_tensor(bias(image[None])).numpy(), dtype=np.float32)
        # gamma on the fixed 0..1 scale, not MONAI's RandAdjustContrast (which rescales by the image's own
        # min and max, so a lesion that changes the maximum would change every voxel)
        out = np.maximum(out, 0.0) ** np.float32(np.exp(rng.uniform(np.log(0.8), np.log(1.25))))
        noise.set_random_state(seed=_seed(rng))
        out = np.asarray(torch.as_tensor(noise(out)).numpy(), dtype=np.float32)
        images[name] = (out[0] if skull else np.where(brain, out[0], 0.0)).astype(np.float32)
    return AnatomySubject(images=images, tissue=tissue, labels=labels, brain_mask=brain,
                          affine=tpl["affine"].copy(), hemisphere=hemisphere, lesions=drawn)


def mirror_correlation(image: np.ndarray, mask: np.ndarray | None = None, *, fit_plane: bool = False) -> float:
    """Pearson correlation of ``image`` [X, Y, Z] with its left-right mirror (RAS axis 0) over ``mask``
    (default: where either is non-zero).

    Without ``fit_plane`` the mirror plane is the grid's centre plane (voxel i <-> X - 1 - i), the
    template's mid-sagittal plane on the subjects' grid: the template itself scores 1.000000 there.
    With ``fit_plane`` the plane is the best one (offset and two tilts, Powell search from three offsets):
    a subject's own mid-sagittal plane, so its pose (rotation, shift) does not count as asymmetry."""
    image = np.asarray(image, dtype=np.float64)
    mask = (image != 0) | (image[::-1] != 0) if mask is None else np.asarray(mask, dtype=bool)
    if image.ndim != 3 or mask.shape != image.shape:
        raise ValueError(f"image must be [X, Y, Z] and mask of its shape, got {image.shape} and {mask.shape}")
    if not fit_plane:
        return float(np.corrcoef(image[mask], image[::-1][mask])[0, 1])
    from scipy import optimize

    centre = (np.array(image.shape) - 1) / 2
    points = np.indices(image.shape).reshape(3, -1) - centre[:, None]  # [3, V] about the grid centre

    def reflected(params: np.ndarray) -> np.ndarray:
        offset, tilt_y, tilt_z = params  # plane n . p = offset (voxels), n tilted from the x axis
        normal = np.array([np.cos(tilt_y) * np.cos(tilt_z), np.sin(tilt_z), np.sin(tilt_y) * np.cos(tilt_z)])
        where = points - 2 * normal[:, None] * (normal @ points - offset)[None] + centre[:, None]
        return ndimage.map_coordinates(image, where, order=1).reshape(image.shape)

    def loss(params: np.ndarray) -> float:
        return -float(np.corrcoef(image[mask], reflected(params)[mask])[0, 1])

    best = min((optimize.minimize(loss, [start, 0.0, 0.0], method="Powell") for start in (-1.0, 0.0, 1.0)),
               key=lambda r: r.fun)
    return -float(best.fun)
