"""Networks: SW-ViT with LW-MSA/SLW-MSA, symmetric position encoding, the ASA autoencoder."""

from asa.models.attention import LinearWindowAttention
from asa.models.compiled import compile_blocks
from asa.models.mae import ASA, MAEOutput
from asa.models.patch import PatchEmbed, patch_grid, patchify, unpatchify
from asa.models.position import brain_frame_encoding, symmetric_position_encoding
from asa.models.presets import PRESETS
from asa.models.segmenter import SPE_FRAMES, ASASegmenter, LoadReport, recorded_pretraining
from asa.models.swvit import SWBlock, SWViT
from asa.models.zoo import ARCHITECTURES, build_from_config, build_segmentation_network

__all__ = [
    "ARCHITECTURES",
    "ASA",
    "ASASegmenter",
    "LoadReport",
    "PRESETS",
    "SPE_FRAMES",
    "LinearWindowAttention",
    "MAEOutput",
    "PatchEmbed",
    "SWBlock",
    "SWViT",
    "brain_frame_encoding",
    "build_from_config",
    "compile_blocks",
    "build_segmentation_network",
    "patch_grid",
    "patchify",
    "recorded_pretraining",
    "symmetric_position_encoding",
    "unpatchify",
]
