"""Datasets for pretraining and fine-tuning: each case preprocessed from its files, or read from a store.

The deterministic preprocessing (the pipeline's first step) runs once per case and process: a dataset read
from the files keeps each case's preprocessed arrays in memory up to `CASE_CACHE_BYTES` (the cases read first;
any further case is preprocessed again at every read). A dataset reading a store (`asa.data.store`, written
once by asa-preprocess) reads its crops from the store instead. Random augmentation runs after it, every
time, on a copy: a cached read gives the bits a fresh one gives.

Seeding: MONAI random transforms draw from their own ``RandomState``. The datasets reseed it
(a) from ``seed`` at construction, (b) in every DataLoader worker from the worker's torch seed
(``torch.utils.data.get_worker_info().seed``, which derives from the loader's generator / the global
torch seed the engine sets). So runs are reproducible with any ``num_workers`` and workers never
share augmentation streams.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import Dataset as MonaiDataset
from monai.data.utils import set_rnd
from monai.transforms import Compose, Randomizable
from torch.utils.data import default_collate

from asa.data.augmentation import (AUGMENT_ON, DeferredAugmentation, Finalize, pretrain_augmentation,
                                   segmentation_train_augmentation)
from asa.data.batching import CollatedBatch, batch_buffer
from asa.data.case import Case
from asa.data.lattice import LatticeCropd
from asa.data.preprocessing import PERCENTILES, PretrainPreprocess, SegmentationPreprocess, case_to_item
from asa.data.regions import RegionSource
from asa.data.store import Store, StoreLatticeCropd, StorePretrainCrop, StoreSegmentationLoad, open_store, store_settings
from asa.data.labels import Task
from asa.io import Volume, VolumeError, load_volume

__all__ = ["CASE_CACHE_BYTES", "CaseDataset", "CaseLoadError", "StoreCropBatches", "build_pretrain_dataset", "build_segmentation_dataset",
           "preprocess_for_inference", "region_map_for_inference"]


# the preprocessed cases a dataset read from the files keeps in memory, per process (each DataLoader worker holds its
# own): a fine-tuning unit's labeled set (a few cases) fits many times over, a large cohort's first cases only
CASE_CACHE_BYTES = 2**30


class CaseLoadError(RuntimeError):
    """A case failed to load during training (e.g. a file changed after the upfront check); one line
    naming the case, the file and the fault, also when raised again from a DataLoader worker."""


class CaseDataset(torch.utils.data.Dataset):
    """Indexable dataset of preprocessed (and optionally augmented) cases.

    Wraps a MONAI Dataset; reseeds the random transforms once per DataLoader worker.
    """

    def __init__(self, items: list[dict[str, Any]], transform: Compose, *, seed: int | None,
                 cache_bytes: int = 0) -> None:
        """Args:
            items: one dict per case, the input of ``transform``.
            transform: the pipeline; with ``cache_bytes`` its first step must be deterministic (the preprocessing).
            seed: seeds the random steps (None: left as they are).
            cache_bytes: the first step's outputs kept in memory, in bytes of their arrays (0: none kept).
        """
        if cache_bytes and isinstance(transform.transforms[0], Randomizable):
            raise ValueError(f"CaseDataset: cache_bytes={cache_bytes} needs a deterministic first step, got "
                             f"{type(transform.transforms[0]).__name__}")
        self.items = items
        self.transform = transform
        self.inner = MonaiDataset(items, transform)
        if seed is not None:
            set_rnd(transform, seed)
        self._seeded_for: tuple[int, int] | None = None
        self.cache_bytes = int(cache_bytes)
        self._cache: dict[int, Any] = {}  # item index -> the output of the pipeline's first step
        self._cached = 0  # bytes held in the cache

    @property
    def ids(self) -> list[str]:
        return [it["id"] for it in self.items]

    def __len__(self) -> int:
        return len(self.inner)

    def reseed(self, seed: int) -> None:
        """Seed the random transforms; inside a DataLoader worker this also marks the worker as seeded,
        so the once-per-worker seeding below does not override it."""
        set_rnd(self.transform, seed % (2**32))
        info = torch.utils.data.get_worker_info()
        self._seeded_for = None if info is None else (os.getpid(), info.seed)

    def item_in_batch(self, index: int, position: int, batch_size: int) -> Any:
        """Item ``index`` read as the ``position``-th of a batch of ``batch_size`` items (what `asa.train.rng.SeededItems`
        asks for when it reads a batch): its crops know their place in the batch, for nnU-Net's per-batch forced
        share (`asa.data.lattice.LatticeCropd`, ``oversampling="batch"``)."""
        crops = [t for t in self.transform.transforms if isinstance(t, LatticeCropd)]
        for crop in crops:
            crop.batch_slot = (int(position), int(batch_size))
        try:
            return self[index]
        finally:
            for crop in crops:
                crop.batch_slot = None

    def __getitem__(self, index: int) -> Any:
        info = torch.utils.data.get_worker_info()
        if info is not None and self._seeded_for != (os.getpid(), info.seed):
            self.reseed(info.seed)  # distinct, reproducible streams per worker under a plain DataLoader
        try:
            out = self._read(index)
        except Exception as err:  # MONAI wraps it in "applying transform <...>": keep the file and the fault
            cause: BaseException | None = err
            while cause is not None and not isinstance(cause, VolumeError):
                cause = cause.__cause__ or cause.__context__
            if cause is None:
                raise
            raise CaseLoadError(f"case {self.items[index]['id']}: {cause}") from err
        # RandCropByPosNegLabeld returns a list of samples; one sample is returned as a dict
        return out[0] if isinstance(out, list) and len(out) == 1 else out

    def _read(self, index: int) -> Any:
        """Item ``index`` through the pipeline; with a cache, its first step's output is kept while the cache's
        bytes stay within ``cache_bytes``, and the other steps run on a deep copy of it (they may write in place)."""
        if not self.cache_bytes:
            return self.inner[index]
        prepared = self._cache.get(index)
        if prepared is None:
            prepared = self.transform(self.items[index], end=1)
            size = _array_bytes(prepared)
            if self._cached + size <= self.cache_bytes:
                self._cache[index] = prepared
                self._cached += size
        return self.transform(copy.deepcopy(prepared), start=1)


def _array_bytes(value: Any) -> int:
    """Bytes of the tensors and arrays in ``value`` (nested dicts, lists and tuples)."""
    if isinstance(value, torch.Tensor):
        return value.element_size() * value.numel()
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, dict):
        return sum(_array_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_array_bytes(v) for v in value)
    return 0


class StoreCropBatches(CaseDataset):
    """The pretraining crops of a store, for a pipeline with nothing to do on the CPU after the crop
    (no augmentation, or augmentation only drawn here: `DeferredAugmentation`). Item by item it is
    the `CaseDataset` of that pipeline; `read_batch` reads a whole batch instead, each crop straight
    from the memory map into its slot of one buffer per key (shared memory in a DataLoader worker),
    without MONAI's per-item steps: equal to collating the items, in a copy less."""

    def __init__(self, items: list[dict[str, Any]], transform: Compose, *, channels: int, dtype: torch.dtype,
                 seed: int | None) -> None:
        super().__init__(items, transform, seed=seed)
        crop, *draws, finalize = transform.transforms
        if not (isinstance(crop, StorePretrainCrop) and isinstance(finalize, Finalize) and not crop.float_image
                and all(isinstance(t, DeferredAugmentation) for t in draws)):
            raise ValueError("StoreCropBatches: the pipeline must be StorePretrainCrop(float_image=False), "
                             "DeferredAugmentation steps, Finalize")
        self.crop, self.draws, self.keep = crop, draws, finalize.keep
        self.channels, self.dtype = int(channels), dtype

    def read_batch(self, indices: Sequence[int], seeds: Sequence[int]) -> CollatedBatch:
        """The batch of items ``indices``, the random draws of item ``indices[b]`` seeded by ``seeds[b]``
        (as `reseed` seeds them): what collating ``[self[i] for i in indices]`` gives, each reseeded."""
        n, size = len(indices), self.crop.size
        dtypes = {"image": self.dtype, "brain": torch.bool, "region": torch.int64}
        buffers = {k: batch_buffer((n, self.channels if k == "image" else 1, *size), dtypes[k])
                   for k in self.keep if k in dtypes}
        draws = []
        for b, (index, seed) in enumerate(zip(indices, seeds)):
            self.crop.read_into(self.items[index], {k: v[b].numpy() for k, v in buffers.items()})
            if self.draws:
                self.reseed(seed)
                d: dict[str, Any] = {}
                for step in self.draws:
                    d = step(d)
                draws.append(d["augment"])
        parts = {**buffers, "id": [self.items[i]["id"] for i in indices]}
        if draws:
            parts["augment"] = default_collate(draws)
        return CollatedBatch((k, parts[k]) for k in self.keep)


def build_pretrain_dataset(
    cases: Sequence[Case],
    *,
    crop: int | Sequence[int],
    augment: bool = True,
    flip_axes: Sequence[int] = (),
    augment_on: str = "cpu",
    resample_mm: float | None = None,
    channels: Sequence[str] = ("t1",),
    lr_centre: str = "mask",
    seed: int | None = None,
    regions: RegionSource | None = None,
    store: str | Path | Store | None = None,
) -> CaseDataset:
    """Items ``{"image": FloatTensor[C, *crop], "id": str}``: z-scored in brain, brain-centred crop
    with the mid-sagittal plane at the centre of axis 0 (the paper's only augmentation); ``augment``
    adds light intensity augmentation inside the brain mask, ``flip_axes`` random flips
    (`pretrain_augmentation`). With ``regions`` also ``"region"``: LongTensor [1, *crop], the region
    map of the crop.

    ``augment_on="device"``: the augmentation is drawn here but not applied; items carry the draws
    (``"augment"``) and the brain mask (``"brain"``, with ``augment``), and
    `asa.data.augmentation.apply_deferred_augmentation` applies them to the batch on the device,
    giving the numbers ``"cpu"`` gives here.

    With ``store`` (written by asa-preprocess under the same settings) each sample reads its crop
    from the store instead of the files. Unless augmentation runs on the CPU the image then stays in
    the store's precision (float16 by default) until `asa.train.data.move_to` puts it on the device
    as float32, and the dataset reads whole batches (`StoreCropBatches`)."""
    if augment_on not in AUGMENT_ON:
        raise ValueError(f"augment_on must be one of {AUGMENT_ON}, got {augment_on!r}")
    pre = PretrainPreprocess(crop, resample_mm=resample_mm, lr_centre=lr_centre, regions=regions)
    augmentation = list(pretrain_augmentation(intensity=augment, flip_axes=flip_axes,
                                              region=regions is not None).transforms)
    deferred = augment_on == "device" and bool(augmentation)
    cpu_steps = bool(augmentation) and not deferred  # random steps that change the image here
    keep = ("image", "region", "id") if regions is not None else ("image", "id")
    if deferred:
        keep += (("brain",) if augment else ()) + ("augment",)
        augmentation = [DeferredAugmentation(t) for t in augmentation]
    steps: list[Any] = [pre, *augmentation, Finalize(keep)]
    if store is not None:  # the same steps, the first one reading the crop from the store
        opened = open_store(store)
        opened.check_settings(store_settings(pre.settings(), channels=channels, dtype="float16"),
                              ignore_regions=regions is None)
        # without CPU augmentation the crop stays in the store's precision until it is on the device
        steps[0] = StorePretrainCrop(pre.size, brain=augment, region=regions is not None, float_image=cpu_steps)
        steps[-1] = Finalize(keep, float_image=cpu_steps)
        items = opened.items([c.id for c in cases])
        if cpu_steps:
            return CaseDataset(items, Compose(steps), seed=seed)
        return StoreCropBatches(items, Compose(steps), channels=len(channels),
                                dtype=getattr(torch, str(opened.settings["dtype"])), seed=seed)
    return CaseDataset([case_to_item(c, channels) for c in cases], Compose(steps), seed=seed,
                       cache_bytes=CASE_CACHE_BYTES)


def build_segmentation_dataset(
    cases: Sequence[Case],
    task: Task,
    *,
    train: bool,
    crop: int | Sequence[int] | None = None,
    samples_per_case: int = 1,
    seed: int | None = None,
    lattice: int = 8,
    reference_size: int | Sequence[int] | None = None,
    lr_axis: int = 0,
    regions: RegionSource | None = None,
    store: str | Path | Store | None = None,
    percentiles: tuple[float, float] = PERCENTILES,
    **augment_kwargs: Any,
) -> CaseDataset:
    """Fine-tuning dataset on the canonical RAS grid of each case (no whole-volume crop/resample).

    train: ``{"image": [C, p, p, p], "label": target, "offset": int64 [3]}``: crops on the brain
    frame's patch lattice (``lattice`` = the ViT patch size, reference grid ``reference_size`` voxels
    = the pretraining crop, default ``crop``, mirrored axis ``lr_axis``) with their patch
    offsets; with ``samples_per_case > 1`` an item is a list of such dicts (use
    ``monai.data.list_data_collate``). val: ``{"image": [C, X, Y, Z], "label": target, "id",
    "centre": [3] brain centre}``. target: multilabel float32 [K, ...]; softmax int64 [1, ...],
    -1 = ignore. ``augment_kwargs`` go to `segmentation_train_augmentation` (rotate_deg, zoom, ...).
    With ``regions`` every item also has ``"region"``: int64 [1, ...], the region map, augmented
    like the label. With ``store`` (written by asa-preprocess under the same settings) the items
    are read from the store: a training sample copies only its crops. ``percentiles``: the brain's
    intensity range each image is clipped to before its z-score (`SegmentationPreprocess`;
    ``data.percentiles``).
    """
    if train and crop is None:
        raise ValueError("build_segmentation_dataset: train=True needs crop, the fine-tuning crop edge")
    crop = None if crop is None else ((int(crop),) * 3 if isinstance(crop, int) else tuple(int(c) for c in crop))
    reference = crop if reference_size is None else (
        (int(reference_size),) * 3 if isinstance(reference_size, int) else tuple(int(r) for r in reference_size))
    pre = SegmentationPreprocess(task, percentiles=percentiles, regions=regions)
    label_dtype = torch.float32 if task.multilabel else torch.int64
    extra = ("region",) if regions is not None else ()
    if train:
        augment = segmentation_train_augmentation(task, crop, samples_per_case=samples_per_case, lattice=lattice,
                                                  reference_size=reference, lr_axis=lr_axis,
                                                  region=regions is not None, **augment_kwargs)
        steps: list[Any] = [pre, *augment.transforms, Finalize(("image", "label", "offset", *extra), label_dtype)]
    else:
        steps = [pre, Finalize(("image", "label", "id", "centre", *extra), label_dtype)]
    missing = [c.id for c in cases if c.label is None]
    if missing:
        raise ValueError(f"build_segmentation_dataset: cases without labels: {missing[:5]}")
    if store is not None:  # the same steps; the first reads the case (train: its crops) from the store
        opened = open_store(store)
        opened.check_settings(store_settings(pre.settings(), channels=task.channels, dtype="float16"),
                              ignore_regions=regions is None)
        steps[0] = StoreSegmentationLoad(pre.target, whole=not train, region=regions is not None)
        if train:
            steps[1] = StoreLatticeCropd.like(steps[1], pre.target)
        return CaseDataset(opened.items([c.id for c in cases]), Compose(steps), seed=seed)
    return CaseDataset([case_to_item(c, task.channels) for c in cases], Compose(steps), seed=seed,
                       cache_bytes=CASE_CACHE_BYTES)


def preprocess_for_inference(case: Case, task: Task, *, percentiles: tuple[float, float] = PERCENTILES
                             ) -> tuple[torch.Tensor, Volume]:
    """Image [C, X, Y, Z] (canonical grid, clipped to the brain's ``percentiles`` and z-scored in brain, as
    the network was trained: its run's ``data.percentiles``) and the reference Volume (first channel)
    to write predictions back with ``save_volume(pred, reference, path)``; the case's brain centre
    (voxels [3], the brain frame's centre) is recorded in ``reference.meta["brain_centre"]``."""
    item = case_to_item(case, task.channels)
    out = SegmentationPreprocess(task, percentiles=percentiles, with_label=False)(item)
    reference = load_volume(item["images"][0], label=False, frame=item["frames"][0])
    reference.meta["brain_centre"] = out["centre"].tolist()
    return out["image"], reference


def region_map_for_inference(case: Case, task: Task, regions: RegionSource, *,
                             percentiles: tuple[float, float] = PERCENTILES) -> torch.Tensor:
    """Region map [1, X, Y, Z] int64 of a case on the grid of `preprocess_for_inference`'s image (clustered
    from the image preprocessed with ``percentiles``), for networks with region attention; a source made
    from the target (``label``) is refused."""
    regions.check_network_input("region attention at inference")
    item = case_to_item(case, task.channels)
    return SegmentationPreprocess(task, percentiles=percentiles, with_label=False,
                                  regions=regions)(item)["region"].long()
