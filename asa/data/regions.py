"""Region maps for region attention and the focal region loss (RAT, docs/method.md §1.6b).

A region map is an integer label per voxel, on the same grid as the preprocessed image; the
models take the majority label of each patch (`asa.models.patch_regions`). Three sources:

- ``cluster``: k-means on the z-scored intensities (all channels) inside the brain mask into ``k``
  tissue-like classes, numbered 1..k by increasing mean of the first channel, 0 outside the brain
  (the stand-in for RAT's SAM masks; no download). Deterministic for a seed.
- ``file``: a supplied label map per case (an atlas parcellation, a tissue segmentation):
  ``<dir>/<case id>.nii.gz`` (or ``.nii``), on the grid of the case's images.
- ``label``: the dataset's own label file of the case, as stored (e.g. BraTS 0/1/2/4). It is the
  segmentation target, so it may feed a loss term that sees the labels anyway (the focal region
  term), never the network: region attention fed the label would be told where the target is
  (docs/method.md §1.6b), and `RegionSource.from_config` refuses it there.

In a run config (``data.regions.source``) two more values choose no map: ``auto`` (the default)
makes ``cluster`` maps when an option needs regions and none otherwise; ``none`` makes none, and an
option that needs regions is then an error.

The map is made during the deterministic preprocessing, so it is cached with it, and it is cropped
and augmented with the image as a label (nearest interpolation).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from asa.data.geometry import resample_isotropic
from asa.io import find_nifti, load_volume

__all__ = ["CONFIG_SOURCES", "REGION_SOURCES", "TARGET_SOURCES", "RegionSource", "cluster_tissue"]

REGION_SOURCES = ("cluster", "file", "label")
TARGET_SOURCES = ("label",)  # made from the segmentation target: loss terms only, never a network input
CONFIG_SOURCES = ("auto", "none", *REGION_SOURCES)  # what data.regions.source takes
AUTO_SOURCE = "cluster"  # what ``auto`` picks when an option needs regions: no labels, no files


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
            raise ValueError(f"regions.source must be one of {REGION_SOURCES}, got {source!r}")
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
    def from_config(
        cls, spec: Mapping[str, Any], *, needed_by: Sequence[str] = (), network: str | None = None
    ) -> RegionSource | None:
        """From a run config's ``data.regions`` ({source, k, seed, dir}); None when no map is made.

        ``needed_by``: the options that need a region map per case (e.g.
        ``"model.region_attention=alternate"``, ``"task.focal_weight=1.0"``); ``network``: the one of
        them that feeds the map into the network (region attention), if any. ``source: auto`` (or
        missing) gives ``cluster`` maps when ``needed_by`` is not empty and None otherwise; ``none``
        with ``needed_by`` is an error, and so is a source made from the target (``label``) with
        ``network``.
        """
        source = str(spec.get("source") or "auto")
        if source not in CONFIG_SOURCES:
            raise ValueError(f"data.regions.source must be one of {CONFIG_SOURCES}, got {source!r}")
        if source == "auto":
            source = AUTO_SOURCE if needed_by else "none"
        if source == "none":
            if needed_by:
                raise ValueError(f"{' and '.join(needed_by)} need(s) region maps, but data.regions.source=none: "
                                 f"set data.regions.source=cluster (k-means tissue classes) or file (data.regions.dir), "
                                 f"or auto (cluster when an option needs regions)")
            return None
        regions = cls(source, k=int(spec.get("k", 3)), seed=int(spec.get("seed", 0)), dir=spec.get("dir"))
        if network is not None:
            regions.check_network_input(network)
        return regions

    @property
    def from_target(self) -> bool:
        """True when the map is made from the segmentation target (``label``)."""
        return self.source in TARGET_SOURCES

    def check_network_input(self, consumer: str) -> None:
        """Refuse a map made from the target where ``consumer`` (e.g. ``"model.region_attention=all"``)
        feeds it into the network (docs/method.md §1.6b: regions never come from the target)."""
        if self.from_target:
            raise ValueError(
                f"data.regions.source={self.source} makes each case's region map from its own segmentation label, and "
                f"{consumer} feeds the region map into the network: validation Dice, best.pt and predictions would "
                "come from a network told where the target is. Use data.regions.source=cluster (k-means tissue "
                "classes, no labels) or file (a map per case in data.regions.dir: an atlas or tissue segmentation); "
                f"source={self.source} is only for the loss-only focal region term (task.focal_weight) of a network "
                "without region attention")

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
            region = resample_isotropic(region[None], resample[0], resample[1], mode="nearest")[0][0]
        if region.shape != image.shape[1:]:
            raise ValueError(f"case {item['id']}: region map {path} has shape {region.shape}, "
                             f"the image {tuple(image.shape[1:])}")
        return region
