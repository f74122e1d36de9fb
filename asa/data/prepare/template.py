"""The symmetric MNI152 2009 template (nilearn's copy: ``mni_icbm152_t1_tal_nlin_sym_09a``, 1 mm,
197 x 233 x 189, skull-stripped, its brain mask) and the prepared grids placed on it.

The template is its own left-right mirror about x = 0 (MNI mm), so on a grid centred on x = 0 voxel i
mirrors voxel X - 1 - i: the mid-sagittal plane of a prepared brain is the grid's centre plane."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from asa.data.prepare.tools import need

__all__ = ["TEMPLATE_SPACE", "TEMPLATE_NAME", "BOXES", "Template", "load_template", "prepared_grid"]

TEMPLATE_SPACE = "MNI152NLin2009aSym"
"""The space of the prepared images (the BIDS ``space-`` label of the template)."""
TEMPLATE_NAME = "MNI ICBM152 2009a symmetric, 1 mm (nilearn.datasets.load_mni152_template(resolution=1))"
BOXES = ("centre", "template")
"""``centre``: a cube of ``crop`` voxels at the template brain's centre (the paper's 128^3 at 1 mm);
``template``: the template brain's bounding box (4 mm margin), whole."""
_MARGIN_MM = 4.0


@dataclass(frozen=True)
class Template:
    """The template's T1 (0..1, zero outside the brain) and brain mask [X, Y, Z] on its 1 mm RAS grid
    (``affine``: voxel -> MNI mm)."""

    t1: np.ndarray
    brain: np.ndarray
    affine: np.ndarray

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(lowest, highest) MNI mm of the brain mask's voxel centres, x made symmetric about 0."""
        idx = np.argwhere(self.brain)
        lo, hi = (self.affine[:3, :3] @ idx.min(0) + self.affine[:3, 3], self.affine[:3, :3] @ idx.max(0)
                  + self.affine[:3, 3])
        half = max(-lo[0], hi[0])
        lo[0], hi[0] = -half, half
        return lo, hi


@lru_cache(maxsize=1)
def load_template() -> Template:
    """The template read from the nilearn wheel (no download)."""
    datasets = need("nilearn.datasets", "the MNI152 template of asa-prepare")
    t1 = datasets.load_mni152_template(resolution=1)
    mask = datasets.load_mni152_brain_mask(resolution=1)
    data = np.asarray(t1.get_fdata(dtype=np.float32))
    data.flags.writeable = False
    brain = np.asarray(mask.dataobj) > 0
    brain.flags.writeable = False
    return Template(t1=data, brain=brain, affine=np.asarray(t1.affine, dtype=np.float64))


def prepared_grid(*, box: str = "centre", crop: int = 128, spacing: float = 1.0) -> tuple[tuple[int, int, int],
                                                                                         np.ndarray]:
    """(shape, affine voxel -> MNI mm) of the prepared images: RAS axes, isotropic ``spacing`` mm, centred
    on x = 0 (voxel i mirrors voxel X - 1 - i).

    box: one of `BOXES`; crop: the cube's edge in voxels (``box="centre"``); spacing: the voxel edge (mm)."""
    if box not in BOXES:
        raise ValueError(f"box={box!r}: expected one of {BOXES}")
    if spacing <= 0:
        raise ValueError(f"spacing={spacing}: expected a voxel edge in mm > 0")
    lo, hi = load_template().bounds()
    centre = (lo + hi) / 2
    centre[0] = 0.0
    if box == "centre":
        if crop < 8:
            raise ValueError(f"crop={crop}: expected a cube edge of at least 8 voxels")
        shape = (int(crop),) * 3
    else:
        extent = hi - lo + 2 * _MARGIN_MM
        shape = tuple(int(np.ceil(e / spacing)) + 1 for e in extent)
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = centre - (np.asarray(shape) - 1) / 2 * spacing
    return shape, affine
