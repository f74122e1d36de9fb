"""Losses: the masked autoencoder's reconstruction losses (AR-loss, focal region) and the fine-tuning segmentation loss."""

from asa.losses.focal_region import FocalRegionLoss, region_error_weights
from asa.losses.informativeness import patch_informativeness
from asa.losses.reconstruction import AttentiveReconstructionLoss, masked_patch_weights
from asa.losses.segmentation import SegmentationLoss

__all__ = [
    "AttentiveReconstructionLoss",
    "FocalRegionLoss",
    "SegmentationLoss",
    "masked_patch_weights",
    "patch_informativeness",
    "region_error_weights",
]
