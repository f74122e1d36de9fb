"""The head around a template brain: the layers a T1 shows before brain extraction.

Outward from the brain (its hull: the brain mask closed over the sulci): subarachnoid CSF, the skull
(inner table of cortical bone, bright fatty marrow of the diploë, outer table), then the scalp
(galea and muscle, subcutaneous fat, skin); layer thicknesses vary smoothly over the head, drawn per
subject. Below the skull base a neck (an elliptic cylinder of skin, fat and muscle) carries the
spinal cord in its CSF, the vertebral bodies in front of it and the airway in front of those; the
foramen magnum leaves the skull open around the cord. Everything else is air. Intensities are per
contrast (`HEAD_TABLES`), on the scale of the template's T1 (white matter about 0.87). Distances are
in mm on the subject's grid, in template space (before the subject's warp, which then moves the
head with the brain). No face, eyes or ears: the head is a schematic shell, enough to give the
volume what skull stripping removes (bright scalp fat and marrow, dark bone, a neck, and the
background that the Rician noise fills)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["HEAD_TISSUES", "HEAD_TABLES", "HEAD_MARGIN_MM", "NECK_MM", "head_hull_distance", "head_images"]

HEAD_TISSUES = ("air", "csf", "bone", "marrow", "muscle", "fat", "skin", "cord")
# signal per contrast (t1, t1ce, t2, flair) of each head tissue: fat and marrow bright in T1, bone and air dark
# everywhere, CSF dark in T1 and FLAIR and bright in T2 (the brain's own CSF values, `anatomy._TABLES`)
HEAD_TABLES = np.array([
    (0.00, 0.00, 0.00, 0.00),  # air
    (0.27, 0.28, 1.00, 0.12),  # csf
    (0.03, 0.03, 0.03, 0.03),  # cortical bone
    (0.75, 0.78, 0.55, 0.60),  # marrow
    (0.45, 0.50, 0.30, 0.35),  # muscle
    (0.95, 0.95, 0.75, 0.80),  # fat
    (0.55, 0.60, 0.45, 0.50),  # skin
    (0.80, 0.80, 0.45, 0.50),  # spinal cord (white matter)
], dtype=np.float32)
# outer edge of each layer outside the brain's hull (mm, before the per-subject thickness factor)
_SHELL = (("csf", 2.0), ("bone", 3.5), ("marrow", 6.5), ("bone", 8.0), ("muscle", 10.0), ("fat", 14.0),
          ("skin", 15.5))
HEAD_MARGIN_MM = 24.0
"""Field of view beyond the brain on every side but the bottom: the scalp (up to about 19 mm) and air."""
NECK_MM = 45.0
"""How far the field of view reaches below the brain mask's lowest point (the template's cut brainstem)."""
_NECK_TOP_MM = -30.0  # MNI z where the neck meets the head (the skull base lies around -40 .. -60)
_CLOSING_MM = 8.0  # sulci narrower than this are bridged by the hull


def head_hull_distance(brain: np.ndarray, voxel: float) -> np.ndarray:
    """Distance (mm) of each voxel to the brain's hull (0 inside): brain [X, Y, Z] bool closed by
    `_CLOSING_MM`, so that the skull follows the outer surface of the brain, not its sulci."""
    dilated = ndimage.distance_transform_edt(~brain, sampling=voxel) <= _CLOSING_MM
    hull = ndimage.distance_transform_edt(dilated, sampling=voxel) > _CLOSING_MM
    return ndimage.distance_transform_edt(~(hull | brain), sampling=voxel).astype(np.float32)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], sigma_vox: float) -> np.ndarray:
    """Smooth Gaussian noise of unit standard deviation."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma_vox, mode="wrap")
    return field / max(float(field.std()), 1e-6)


def head_images(rng: np.random.Generator, *, hull_distance: np.ndarray, brain: np.ndarray, affine: np.ndarray
                ) -> np.ndarray:
    """The head outside the brain, per contrast: float32 [4, X, Y, Z] (t1, t1ce, t2, flair), 0 in the air.

    hull_distance: [X, Y, Z] mm to the brain's hull (`head_hull_distance`); brain: [X, Y, Z] bool, the
    template's brain mask on the grid (its lowest slices are the cut brainstem, which the cord continues);
    affine: the grid's voxel -> MNI mm. ``rng`` draws the subject's layer thicknesses, neck and texture."""
    shape = brain.shape
    voxel = float(affine[0, 0])
    idx = np.indices(shape, dtype=np.float32).reshape(3, -1)
    x, y, z = (affine[:3, :3] @ idx + affine[:3, 3:]).reshape((3,) + shape)
    tissue = np.zeros(shape, dtype=np.int64)  # air

    # the neck: an elliptic cylinder up to the skull base, with the cord below the brainstem
    stem = np.argwhere(brain[:, :, int(np.argmax(brain.any((0, 1))))])  # the brain's lowest slice
    cord_y = float(affine[1, 1] * stem[:, 1].mean() + affine[1, 3]) if len(stem) else -35.0
    half_lr, half_ap = rng.uniform(48.0, 58.0), rng.uniform(50.0, 60.0)
    centre_y = cord_y + rng.uniform(8.0, 16.0)
    radial = np.sqrt((x / half_lr) ** 2 + ((y - centre_y) / half_ap) ** 2)
    depth = (1.0 - radial) * min(half_lr, half_ap)  # mm inside the neck's surface (approximately)
    neck = (depth > 0) & (z < _NECK_TOP_MM)
    fat = rng.uniform(4.0, 8.0)
    tissue[neck] = HEAD_TISSUES.index("muscle")
    tissue[neck & (depth < fat)] = HEAD_TISSUES.index("fat")
    tissue[neck & (depth < 1.5)] = HEAD_TISSUES.index("skin")
    cord = np.hypot(x, y - cord_y)
    body = np.hypot(x / 1.4, y - (cord_y + 17.0))  # vertebral bodies, wider than deep
    airway = np.hypot(x / 1.3, y - (cord_y + 36.0))
    below = neck & (z < -40.0)
    tissue[below & (body < 10.0)] = HEAD_TISSUES.index("bone")
    tissue[below & (body < 8.5)] = HEAD_TISSUES.index("marrow")
    tissue[below & (airway < 7.0)] = HEAD_TISSUES.index("air")
    canal = (cord < 8.0) & (z < -40.0)  # through the foramen magnum up to the brainstem
    tissue[canal] = HEAD_TISSUES.index("csf")
    tissue[canal & (cord < 5.0)] = HEAD_TISSUES.index("cord")

    # the skull and scalp round the brain's hull, thicknesses varying smoothly by ±15 %
    thickness = np.clip(1.0 + 0.15 * _smooth_field(rng, shape, 25.0 / voxel), 0.7, 1.3)
    shell = hull_distance / thickness
    inner = -1.0  # the first layer (CSF) also fills the hull's sulci outside the brain mask
    for name, outer in _SHELL:
        layer = (shell > inner) & (shell <= outer) & ~canal
        tissue[layer] = HEAD_TISSUES.index(name)
        inner = outer

    texture = 1.0 + 0.06 * _smooth_field(rng, shape, 3.0 / voxel)  # muscle fibres, fat lobules
    images = np.moveaxis(HEAD_TABLES[tissue], -1, 0) * texture
    return ndimage.gaussian_filter(images, (0, 0.5, 0.5, 0.5)).astype(np.float32)  # partial volume at the borders
