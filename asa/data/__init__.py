"""Data: NIfTI I/O in RAS+ (from `asa.io`), dataset layouts, tasks, case targets, splits, preprocessing, datasets
and demo data (phantoms, and subjects warped from the MNI152 template)."""

from __future__ import annotations

from asa.io.lazy import lazy_names

# name -> the module it lives in, imported on first use: importing a submodule (asa-prepare's, whose --help
# must not load torch) runs this file, which then loads nothing
_LAZY = {
    "Case": "asa.data.case",
    "CaseDataset": "asa.data.datasets", "build_pretrain_dataset": "asa.data.datasets",
    "build_segmentation_dataset": "asa.data.datasets", "preprocess_for_inference": "asa.data.datasets",
    "region_map_for_inference": "asa.data.datasets",
    "FREE_LESION_NAMES": "asa.data.synthetic.anatomy", "LESION_NAMES": "asa.data.synthetic.anatomy",
    "PLACEMENTS": "asa.data.synthetic.anatomy", "AnatomySubject": "asa.data.synthetic.anatomy",
    "lesion_names": "asa.data.synthetic.anatomy", "make_anatomy_subject": "asa.data.synthetic.anatomy",
    "ANATOMY_LAYOUTS": "asa.data.synthetic.demo", "BIDS_CONTRASTS": "asa.data.synthetic.demo",
    "DEMO_DIAGNOSES": "asa.data.synthetic.demo", "TARGET_LAYOUTS": "asa.data.synthetic.demo",
    "default_cache_dir": "asa.data.synthetic.demo", "demo_subject": "asa.data.synthetic.demo",
    "ensure_demo_dataset": "asa.data.synthetic.demo", "write_anatomy_dataset": "asa.data.synthetic.demo",
    "write_demo_dataset": "asa.data.synthetic.demo",
    "LAYOUTS": "asa.data.layouts", "PRETRAIN_LAYOUTS": "asa.data.layouts",
    "SEGMENTATION_LAYOUTS": "asa.data.layouts", "CaseError": "asa.data.layouts", "detect_layout": "asa.data.layouts",
    "discover": "asa.data.layouts",
    "Phantom": "asa.data.synthetic.phantom", "make_phantom": "asa.data.synthetic.phantom",
    "REGION_SOURCES": "asa.data.regions", "RegionSource": "asa.data.regions", "cluster_tissue": "asa.data.regions",
    "DEFAULT_SPLITS": "asa.data.splits", "make_splits": "asa.data.splits",
    "diseased_labels": "asa.data.subjects", "subject_groups": "asa.data.subjects",
    "MISSING_VALUES": "asa.data.targets", "TARGET_KINDS": "asa.data.targets", "Targets": "asa.data.targets",
    "read_targets": "asa.data.targets",
    "TASKS": "asa.data.labels", "Task": "asa.data.labels", "get_task": "asa.data.labels",
    "non_mri_channels": "asa.data.labels",
    "load_volume": "asa.io", "save_volume": "asa.io",
}

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


__getattr__, __dir__ = lazy_names(__name__, _LAZY)
