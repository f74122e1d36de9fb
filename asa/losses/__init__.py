"""Losses: the masked autoencoder's reconstruction loss and the fine-tuning segmentation loss."""

from asa.losses.informativeness import patch_informativeness
from asa.losses.reconstruction import AttentiveReconstructionLoss, masked_patch_weights
from asa.losses.segmentation import SegmentationLoss

__all__ = ["AttentiveReconstructionLoss", "SegmentationLoss", "masked_patch_weights", "patch_informativeness"]
