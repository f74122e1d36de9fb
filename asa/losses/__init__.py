"""Reconstruction losses of the masked autoencoder."""

from asa.losses.informativeness import patch_informativeness
from asa.losses.reconstruction import AttentiveReconstructionLoss, masked_patch_weights

__all__ = ["AttentiveReconstructionLoss", "masked_patch_weights", "patch_informativeness"]
