"""NIfTI I/O in canonical RAS+ orientation, with an exact way back to the file's own space.

`load_volume` reorients every volume with nibabel's closest-canonical transform (array axis 0 runs
left->right, 1 posterior->anterior, 2 inferior->superior) and keeps what is needed to undo it;
`save_volume` writes an array given on that canonical grid back in the reference file's original
orientation, shape, affine and header. All writes are atomic (`atomic_path`).
"""

from __future__ import annotations

import gzip
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.orientations import apply_orientation, io_orientation, ornt_transform

from asa.io.atomic import atomic_path
from asa.io.nifti import nifti_suffix

__all__ = ["Volume", "VolumeError", "decode_nifti", "load_volume", "read_nifti", "save_volume"]


class VolumeError(ValueError):
    """An input volume cannot be used; the message names the file and the fault."""

    def __init__(self, path: str | os.PathLike | None, fault: str) -> None:
        self.path = None if path is None else Path(path)
        self.fault = fault
        super().__init__(f"{path}: {fault}")


@dataclass
class Volume:
    """A volume on its canonical RAS+ grid plus what is needed to write results back.

    ``array``: [D, H, W] (or [D, H, W, T] when loaded with ``allow_4d``) float32 for images, the
    on-disk integer dtype for labels; ``affine``: canonical voxel->world (mm) 4x4;
    ``spacing``: voxel size in mm along the canonical axes; ``original_affine``/``original_shape``/
    ``header``: the file as stored.
    """

    array: np.ndarray
    affine: np.ndarray
    spacing: tuple[float, float, float]
    original_affine: np.ndarray
    original_shape: tuple[int, ...]
    header: Any
    path: Path | None = None
    is_label: bool = False
    meta: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    @property
    def original_axcodes(self) -> tuple[str, ...]:
        """Orientation of the stored file, e.g. ``("L", "P", "S")``."""
        return tuple(nib.aff2axcodes(self.original_affine))


def read_nifti(path: Path) -> nib.Nifti1Image:
    """The NIfTI image at ``path`` with its header read and its data not yet decoded; `VolumeError` names the file."""
    if not path.exists():
        raise VolumeError(path, "file not found")
    if not path.is_file():
        raise VolumeError(path, "not a regular file")
    try:
        img = nib.load(str(path))
    except ImageFileError as err:
        raise VolumeError(path, f"not a NIfTI image ({err})") from err
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile, ValueError) as err:
        raise VolumeError(path, f"unreadable or corrupt file ({type(err).__name__}: {err})") from err
    if not isinstance(img, nib.Nifti1Image):  # Nifti2Image is a subclass
        raise VolumeError(path, f"not a NIfTI image (nibabel read it as {type(img).__name__})")
    return img


def decode_nifti(img: nib.Nifti1Image, path: Path) -> np.ndarray:
    """The stored array of ``img`` (read from ``path``), as on disk; `VolumeError` for truncated or corrupt data."""
    try:
        return np.asanyarray(img.dataobj)
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile, ValueError) as err:
        raise VolumeError(path, f"truncated or corrupt image data ({type(err).__name__}: {err})") from err


def _looks_like_label(img: nib.Nifti1Image, data: np.ndarray) -> bool:
    """Integer storage without scaling and at most 64 distinct values."""
    if not np.issubdtype(data.dtype, np.integer):
        return False
    slope, inter = img.header.get_slope_inter()
    if slope not in (None, 1.0) or inter not in (None, 0.0):
        return False
    lo, hi = int(data.min()), int(data.max())
    if hi - lo > 4096:
        return False
    return int(np.count_nonzero(np.bincount((data - lo).ravel().astype(np.int64)))) <= 64


def load_volume(
    path: str | os.PathLike,
    *,
    label: bool | None = None,
    frame: int | None = None,
    allow_4d: bool = False,
    allow_empty: bool | None = None,
) -> Volume:
    """Read a NIfTI file and reorient it to RAS+ (nibabel closest canonical).

    ``label``: True keeps the stored integer dtype (and checks values are integers), False gives
    float32, None decides from the file (unscaled integer storage with <= 64 distinct values).
    ``frame`` selects one volume of a 4D file (e.g. a channel of an MSD image); otherwise a 4D file
    with more than one volume is an error unless ``allow_4d``. ``allow_empty`` (default: labels
    only) accepts an all-zero array. Every fault raises `VolumeError` naming the file.
    """
    path = Path(path)
    img = read_nifti(path)
    original_shape = tuple(int(s) for s in img.shape)
    data = decode_nifti(img, path)
    # squeeze trailing singleton dims (x, y, z, 1, 1), then handle real 4D
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim < 3:
        raise VolumeError(path, f"expected a 3D volume, got shape {original_shape}")
    if data.ndim > 3:
        if frame is not None:
            if data.ndim != 4 or not 0 <= frame < data.shape[3]:
                raise VolumeError(path, f"frame {frame} requested from an image of shape {original_shape}")
            data = data[..., frame]
        elif not allow_4d:
            raise VolumeError(path, f"expected a 3D volume, got a {data.ndim}D image of shape {original_shape}")
    elif frame not in (None, 0):
        raise VolumeError(path, f"frame {frame} requested from a 3D image")

    is_label = _looks_like_label(img, data) if label is None else bool(label)
    if is_label:
        if not np.issubdtype(data.dtype, np.integer):
            if not np.all(np.isfinite(data)):
                raise VolumeError(path, "label map contains NaN or Inf values")
            if not np.array_equal(data, np.round(data)):
                raise VolumeError(path, "label map contains non-integer values")
            data = data.astype(np.int16 if np.abs(data).max() < 2**15 else np.int32)
    else:
        data = data.astype(np.float32, copy=False)
        finite = np.isfinite(data)
        if not finite.all():
            raise VolumeError(path, f"image contains {int((~finite).sum())} NaN/Inf voxels")
    if allow_empty is None:
        allow_empty = is_label
    if not allow_empty and not np.any(data):
        raise VolumeError(path, "image is all zeros")

    # reorient the already decoded array instead of decoding twice
    ornt = io_orientation(img.affine)
    to_ras = ornt_transform(ornt, np.array([[0, 1], [1, 1], [2, 1]]))
    canonical = np.ascontiguousarray(apply_orientation(data, to_ras))
    affine = img.affine @ nib.orientations.inv_ornt_aff(to_ras, data.shape[:3])
    spacing = tuple(float(s) for s in np.sqrt((affine[:3, :3] ** 2).sum(axis=0)))
    return Volume(
        array=canonical,
        affine=affine,
        spacing=spacing,  # type: ignore[arg-type]
        original_affine=img.affine.copy(),
        original_shape=original_shape,
        header=img.header.copy(),
        path=path,
        is_label=is_label,
    )


def save_volume(
    array: np.ndarray | Any,
    reference: Volume | str | os.PathLike,
    path: str | os.PathLike,
    *,
    dtype: np.dtype | str | None = None,
) -> Path:
    """Write ``array`` (on the canonical grid of ``reference``) in the reference's own space.

    ``array``: [D, H, W] (or [D, H, W, T]) as returned by `load_volume` for ``reference``; it is
    reoriented back to the stored orientation and written with the reference's original affine and a
    copy of its header (data type set from ``dtype`` or the array: bool -> uint8, float64 -> float32).
    Loading the reference and saving its array reproduces the file's voxels, affine and header.
    """
    if not isinstance(reference, Volume):
        reference = load_volume(reference, allow_4d=True, allow_empty=True)
    path = Path(path)
    if not nifti_suffix(path):
        raise ValueError(f"save_volume: output path {path} must end with .nii or .nii.gz")
    if hasattr(array, "detach"):  # torch tensor
        array = array.detach().cpu().numpy()
    array = np.asarray(array)
    canonical_shape = reference.array.shape[:3]
    if array.shape[:3] != canonical_shape:
        raise ValueError(
            f"save_volume: array shape {array.shape} does not match the canonical grid {canonical_shape} "
            f"of reference {reference.path}"
        )
    if dtype is None:
        dtype = np.uint8 if array.dtype == bool else (np.float32 if array.dtype == np.float64 else array.dtype)
    array = array.astype(dtype, copy=False)

    from_ras = ornt_transform(np.array([[0, 1], [1, 1], [2, 1]]), io_orientation(reference.original_affine))
    data = np.ascontiguousarray(apply_orientation(array, from_ras))
    header = reference.header.copy()
    header.set_data_dtype(data.dtype)
    if np.issubdtype(data.dtype, np.floating) or np.issubdtype(data.dtype, np.integer):
        header.set_slope_inter(None, None)  # write values as given, no rescaling
    img = nib.Nifti1Image(data, reference.original_affine, header=header)
    # keep the reference's qform/sform codes exactly
    img.set_qform(reference.header.get_qform(), code=int(reference.header["qform_code"]))
    img.set_sform(reference.header.get_sform(), code=int(reference.header["sform_code"]))
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return path
