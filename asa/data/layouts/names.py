"""The dataset layouts asa reads, by name: the one list that adapters, demo writers and options are checked against."""

from __future__ import annotations

__all__ = ["PRETRAIN_LAYOUTS", "SEGMENTATION_LAYOUTS", "LAYOUTS"]

PRETRAIN_LAYOUTS = ("bids", "caps", "filelist")  # T1 scans without labels
SEGMENTATION_LAYOUTS = ("brats", "ibsr", "wmh", "msd")  # labelled cases; each name is also its task's
LAYOUTS = PRETRAIN_LAYOUTS + SEGMENTATION_LAYOUTS
