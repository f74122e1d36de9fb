"""Data: NIfTI I/O in RAS+ (from `asa.io`), dataset layouts, tasks, case targets, splits, preprocessing, datasets
and demo data (phantoms, and subjects warped from the MNI152 template)."""

from __future__ import annotations

from asa.data.case import Case
from asa.data.datasets import (
    CaseDataset,
    build_pretrain_dataset,
    build_segmentation_dataset,
    preprocess_for_inference,
    region_map_for_inference,
)
from asa.data.synthetic.anatomy import (FREE_LESION_NAMES, LESION_NAMES, PLACEMENTS, AnatomySubject, lesion_names,
                                        make_anatomy_subject)
from asa.data.synthetic.demo import (ANATOMY_LAYOUTS, BIDS_CONTRASTS, DEMO_DIAGNOSES, TARGET_LAYOUTS, default_cache_dir,
                                     demo_subject, ensure_demo_dataset, write_anatomy_dataset, write_demo_dataset)
from asa.data.layouts import LAYOUTS, PRETRAIN_LAYOUTS, SEGMENTATION_LAYOUTS, CaseError, detect_layout, discover
from asa.data.synthetic.phantom import Phantom, make_phantom
from asa.data.regions import REGION_SOURCES, RegionSource, cluster_tissue
from asa.data.splits import DEFAULT_SPLITS, make_splits
from asa.data.subjects import diseased_labels, subject_groups
from asa.data.targets import MISSING_VALUES, TARGET_KINDS, Targets, read_targets
from asa.data.labels import TASKS, Task, get_task, non_mri_channels
from asa.io import load_volume, save_volume  # the data stage's public NIfTI reader and writer (docs/python-api.md)

__all__ = [
    "ANATOMY_LAYOUTS",
    "AnatomySubject",
    "LESION_NAMES",
    "FREE_LESION_NAMES",
    "PLACEMENTS",
    "lesion_names",
    "BIDS_CONTRASTS",
    "make_anatomy_subject",
    "write_anatomy_dataset",
    "Case",
    "CaseDataset",
    "CaseError",
    "DEFAULT_SPLITS",
    "DEMO_DIAGNOSES",
    "LAYOUTS",
    "MISSING_VALUES",
    "PRETRAIN_LAYOUTS",
    "SEGMENTATION_LAYOUTS",
    "Phantom",
    "REGION_SOURCES",
    "RegionSource",
    "TARGET_KINDS",
    "TARGET_LAYOUTS",
    "TASKS",
    "Targets",
    "Task",
    "build_pretrain_dataset",
    "build_segmentation_dataset",
    "cluster_tissue",
    "default_cache_dir",
    "demo_subject",
    "detect_layout",
    "diseased_labels",
    "discover",
    "ensure_demo_dataset",
    "get_task",
    "load_volume",
    "make_phantom",
    "non_mri_channels",
    "make_splits",
    "subject_groups",
    "preprocess_for_inference",
    "read_targets",
    "region_map_for_inference",
    "save_volume",
    "write_demo_dataset",
]
