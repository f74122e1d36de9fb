"""Region maps for region attention and the focal region loss (RAT, DESIGN §1.6b).

A region map is an integer label per voxel, on the same grid as the preprocessed image; the
models take the majority label of each patch (`asa.models.patch_regions`). Three sources:

- ``cluster``: k-means on the z-scored intensities (all channels) inside the brain mask into ``k``
  tissue-like classes, numbered 1..k by increasing mean of the first channel, 0 outside the brain
  (the stand-in for RAT's SAM masks; no download). Deterministic for a seed.
- ``file``: a supplied label map per case (an atlas parcellation, a tissue segmentation):
  ``<dir>/<case id>.nii.gz`` (or ``.nii``), on the grid of the case's images.
- ``label``: the dataset's own label file of the case, as stored (e.g. BraTS 0/1/2/4).

The map is made during the deterministic preprocessing, so it is cached with it, and it is cropped
and augmented with the image as a label (nearest interpolation).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from asa.data.io import load_volume
from asa.io.nifti import find_nifti

__all__ = ["REGION_SOURCES", "RegionSource", "cluster_tissue"]

REGION_SOURCES = ("cluster", "file", "label")


def _kmeans_pp(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ initial centres of x [M, C]."""
    centres = [x[rng.integers(len(x))]]
    for _ in range(1, k):
        d2 = np.min([((x - c) ** 2).sum(-1) for c in centres], axis=0)
        total = d2.sum()
        centres.append(x[rng.choice(len(x), p=d2 / total)] if total > 0 else x[rng.integers(len(x))])
    return np.stack(centres)


def cluster_tissue(
    image: np.ndarray, mask: np.ndarray, k: int = 3, *, seed: int = 0, iters: int = 50, max_samples: int = 200_000
) -> np.ndarray:
    """k-means tissue classes: image [C, X, Y, Z], mask [X, Y, Z] bool -> int16 [X, Y, Z] in 0..k.

    Fitted (k-means++ init, Lloyd iterations) on at most ``max_samples`` brain voxels drawn with
    ``seed``, then every brain voxel goes to its nearest centre. Classes are numbered 1..k by
    increasing first-channel centre (CSF, GM, WM on T1 for k = 3); background is 0.
    """
    if k < 1:
        raise ValueError(f"regions.k must be >= 1, got {k}")
    out = np.zeros(mask.shape, dtype=np.int16)
    x = image[:, mask].T.astype(np.float64)  # [M, C]
    if len(x) == 0:
        return out
    rng = np.random.default_rng(seed)
    sample = x[rng.choice(len(x), max_samples, replace=False)] if len(x) > max_samples else x
    centres = _kmeans_pp(sample, k, rng)
    for _ in range(iters):
        assign = ((sample[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)
        moved = np.stack([sample[assign == j].mean(0) if (assign == j).any() else centres[j] for j in range(k)])
        if np.allclose(moved, centres):
            break
        centres = moved
    rank = np.empty(k, dtype=np.int16)
    rank[np.argsort(centres[:, 0], kind="stable")] = np.arange(1, k + 1)
    assign = np.concatenate([((chunk[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)
                             for chunk in np.array_split(x, max(1, len(x) // 500_000))])
    out[mask] = rank[assign]
    return out


class RegionSource:
    """Makes the region map of a case during preprocessing: ``source`` in `REGION_SOURCES`.

    ``k``, ``seed``: the clustering; ``dir``: the folder of supplied maps (``source="file"``).
    """

    def __init__(self, source: str = "cluster", *, k: int = 3, seed: int = 0, dir: str | Path | None = None) -> None:
        if source not in REGION_SOURCES:
            raise ValueError(f"regions.source must be one of {REGION_SOURCES} (or none), got {source!r}")
        if source == "file":
            if dir is None:
                raise ValueError("regions.source=file needs regions.dir: a folder of <case id>.nii.gz label maps")
            dir = Path(dir).expanduser()
            if not dir.is_dir():
                raise FileNotFoundError(f"regions.dir={dir}: no such folder")
        if k < 1:
            raise ValueError(f"regions.k must be >= 1, got {k}")
        self.source = source
        self.k = int(k)
        self.seed = int(seed)
        self.dir = None if dir is None else Path(dir)

    @classmethod
    def from_config(cls, spec: Mapping[str, Any] | None) -> RegionSource | None:
        """From a run config's ``data.regions`` ({source, k, seed, dir}); None for ``source: none``."""
        spec = spec or {}
        source = str(spec.get("source") or "none")
        if source == "none":
            return None
        return cls(source, k=int(spec.get("k", 3)), seed=int(spec.get("seed", 0)), dir=spec.get("dir"))

    def settings(self) -> dict[str, Any]:
        """What the map depends on (part of the preprocessing cache key)."""
        if self.source == "cluster":
            return {"source": "cluster", "k": self.k, "seed": self.seed, "version": 1}
        return {"source": self.source, "dir": None if self.dir is None else str(self.dir)}

    def _file(self, case_id: str) -> Path:
        path = find_nifti(self.dir, case_id)  # type: ignore[arg-type]
        if path is not None:
            return path
        raise FileNotFoundError(f"regions.dir={self.dir}: no region map {case_id}.nii.gz for case {case_id}")

    def __call__(
        self,
        item: dict[str, Any],
        image: np.ndarray,
        mask: np.ndarray,
        *,
        resample: tuple[np.ndarray, float] | None = None,
    ) -> np.ndarray:
        """Region map int16 [X, Y, Z] of a case on the grid of its normalised image [C, X, Y, Z] and
        brain mask. ``resample``: (the files' affine, mm) when the image was resampled to ``mm``
        isotropic voxels; a loaded map is then resampled alike (nearest)."""
        if self.source == "cluster":
            return cluster_tissue(image, mask, self.k, seed=self.seed)
        if self.source == "file":
            path = self._file(item["id"])
        else:
            if item.get("label") is None:
                raise ValueError(f"case {item['id']}: regions.source=label, but the case has no label file")
            path = Path(item["label"])
        region = load_volume(path, label=True).array.astype(np.int16)
        if resample is not None:
            from asa.data.transforms import resample_isotropic

            region = resample_isotropic(region[None], resample[0], resample[1], mode="nearest")[0][0]
        if region.shape != image.shape[1:]:
            raise ValueError(f"case {item['id']}: region map {path} has shape {region.shape}, "
                             f"the image {tuple(image.shape[1:])}")
        return region
