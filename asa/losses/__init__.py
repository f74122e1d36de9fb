"""Losses: the masked autoencoder's reconstruction losses (AR-loss, focal region), SA-Swin's
Symmetry-Aware Head terms and the fine-tuning segmentation loss (with nnU-Net's deep supervision)."""

from asa.losses.deep_supervision import DeepSupervisionLoss, deep_supervision_weights
from asa.losses.focal_region import FocalRegionLoss, region_error_weights
from asa.losses.informativeness import patch_informativeness
from asa.losses.reconstruction import AttentiveReconstructionLoss, masked_patch_weights
from asa.losses.segmentation import SegmentationLoss
from asa.losses.symmetry_head import SAH_TERMS, inpainting_loss, nt_xent, rotation_loss, symmetry_loss

__all__ = [
    "SAH_TERMS",
    "AttentiveReconstructionLoss",
    "DeepSupervisionLoss",
    "FocalRegionLoss",
    "SegmentationLoss",
    "deep_supervision_weights",
    "inpainting_loss",
    "masked_patch_weights",
    "nt_xent",
    "patch_informativeness",
    "region_error_weights",
    "rotation_loss",
    "symmetry_loss",
]
