"""Networks: SW-ViT with LW-MSA/SLW-MSA, symmetric position encoding, the ASA autoencoder."""

from asa.models.attention import LinearWindowAttention
from asa.models.case_head import POOLINGS, ASACaseHead, AttentionPool, build_case_head
from asa.models.compiled import compile_blocks, unwrap
from asa.models.encoder import SWViTEncoder
from asa.models.layout import channels_last_inference
from asa.models.mae import ASA, MAEOutput
from asa.models.patch import PatchEmbed, patch_grid, patchify, unpatchify
from asa.models.portable import ENCODER_MODULES, VolumeEncoder, export_for_monai, load_encoder
from asa.models.position import brain_frame_encoding, position_index, symmetric_position_encoding
from asa.models.sa_swin import SASwin, SymmetryAwareLayer
from asa.models.sa_swin_pretrain import SAHOutput, SymmetryAwareHead
from asa.models.saca import SymmetryCrossAttention, WindowSymmetryCrossAttention, mirror_index
from asa.models.presets import PRESETS
from asa.models.region_attention import RegionAttention, patch_regions
from asa.models.segmenter import SPE_FRAMES, ASASegmenter, LoadReport, recorded_pretraining
from asa.models.swvit import SWBlock, SWViT
from asa.models.zoo import ARCHITECTURES, NETWORKS, build_from_config, build_network, build_segmentation_network, network_spec

__all__ = [
    "ARCHITECTURES",
    "ENCODER_MODULES",
    "ASA",
    "ASASegmenter",
    "ASACaseHead",
    "AttentionPool",
    "POOLINGS",
    "build_case_head",
    "LoadReport",
    "NETWORKS",
    "PRESETS",
    "SPE_FRAMES",
    "LinearWindowAttention",
    "MAEOutput",
    "PatchEmbed",
    "RegionAttention",
    "SAHOutput",
    "SASwin",
    "SWBlock",
    "SWViT",
    "SWViTEncoder",
    "VolumeEncoder",
    "brain_frame_encoding",
    "SymmetryAwareHead",
    "SymmetryAwareLayer",
    "SymmetryCrossAttention",
    "WindowSymmetryCrossAttention",
    "brain_frame_encoding",
    "build_from_config",
    "build_network",
    "compile_blocks",
    "unwrap",
    "export_for_monai",
    "load_encoder",
    "build_segmentation_network",
    "channels_last_inference",
    "network_spec",
    "mirror_index",
    "patch_grid",
    "patch_regions",
    "patchify",
    "recorded_pretraining",
    "position_index",
    "symmetric_position_encoding",
    "unpatchify",
]
