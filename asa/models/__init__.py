"""Networks: SW-ViT with LW-MSA/SLW-MSA, symmetric position encoding, the ASA autoencoder.

Every network registers itself by name in its own module (:func:`register_network`); all modules
of this package and its folders are imported below, so a new network is a new file in its family. The
network families (``swvit/``, ``swin/``, ``vit/``, ``cnn/``) share the parts of ``blocks/`` and import no
other family; the heads (``heads/``) sit on a family's encoder (``tests/models/test_model_layering.py``).
"""

import importlib
import pkgutil

from asa.models.swvit.attention import LinearWindowAttention
from asa.models.declared import Capabilities, capabilities, input_size, unwrap
from asa.models.face import EncoderFace, StageTokens
from asa.models.family import Family, NNUNetForm, families, family_of, register_family
from asa.models.weights import load_weights
from asa.models.vit.unetr import UNETRSettings, ViTSettings
from asa.models.swin.swin_unetr import SwinSettings, SwinUNETRSettings
from asa.models.heads.case_baselines import SwinCaseNet, SwinCaseSettings, ViTCaseNet, ViTCaseSettings
from asa.models.heads.case_head import POOLINGS, ASACaseHead, AttentionPool, PooledTokenHead
from asa.models.compiled import compile_blocks
from asa.models.swvit.encoder import ENCODER_PREFIX, EncoderOptions, EncoderSettings, SWViTEncoder, SWViTSettings
from asa.models.cnn.dynunet import DeepSupervisedDynUNet, DynUNetSettings, plan_dynunet
from asa.models.layout import channels_last_inference
from asa.models.swvit.mae import ASA, LOSS_WEIGHTINGS, MAEOutput, MaskedAutoencoder, PretrainModelConfig
from asa.models.blocks.objective import FocalRegionReconstruction, PatchReconstruction, reconstruction_objective
from asa.models.blocks.patch import PatchEmbed, patch_grid, patchify, unpatchify
from asa.models.keys import EncoderKeys, encoder_keys
from asa.models.portable import VolumeEncoder, load_encoder, network_encoder
from asa.models.blocks.position import brain_frame_encoding, position_index, symmetric_position_encoding
from asa.models.presets import DEFAULT_CROP, PRESETS, SWIN_SIZES
from asa.models.swvit.region_attention import RegionAttention, patch_regions
from asa.models.registry import (NETWORK_SETTINGS, NETWORKS, RENAMED_NETWORKS, NetworkRecord, NetworkSettings,
                                 architectures, build_network, current_spec, network_spec, record_spec,
                                 register_network, registered_networks)
from asa.models.swin.sa_swin import SASwin, SASwinSettings, SymmetryAwareLayer
from asa.models.swin.sa_swin_pretrain import SAHOutput, SymmetryAwareHead
from asa.models.blocks.saca import SymmetryCrossAttention, WindowSymmetryCrossAttention, mirror_index
from asa.models.swvit.segmenter import (SPE_FRAMES, SYMMETRY_KEYS, ASASegmenter, SWViTSegmenter, SWViTUNetSettings,
                                        recorded_pretraining)
from asa.models.blocks.encoder_weights import LoadReport
from asa.models.swvit.swvit import SWBlock, SWViT, sw_blocks
from asa.models.zoo import build_segmentation_network
from asa.models.swvit.family import SWVIT  # the families in the order their names are listed
from asa.models.swin.family import SWIN
from asa.models.vit.family import VIT
from asa.models.cnn.family import DYNUNET, RESENC

for _module in pkgutil.walk_packages(__path__, f"{__name__}."):  # the networks of modules not named above register too
    importlib.import_module(_module.name)
del _module

__all__ = [
    "ENCODER_PREFIX",
    "LOSS_WEIGHTINGS",
    "PretrainModelConfig",
    "EncoderFace",
    "EncoderKeys",
    "encoder_keys",
    "Family",
    "NNUNetForm",
    "StageTokens",
    "load_weights",
    "families",
    "family_of",
    "register_family",
    "DeepSupervisedDynUNet",
    "plan_dynunet",
    "ASA",
    "ASASegmenter",
    "ASACaseHead",
    "Capabilities",
    "capabilities",
    "input_size",
    "PooledTokenHead",
    "SwinCaseNet",
    "ViTCaseNet",
    "AttentionPool",
    "POOLINGS",
    "EncoderOptions",
    "EncoderSettings",
    "NETWORK_SETTINGS",
    "NetworkRecord",
    "NetworkSettings",
    "SWViTSettings",
    "SWViTUNetSettings",
    "SASwinSettings",
    "SwinCaseSettings",
    "SwinSettings",
    "SwinUNETRSettings",
    "UNETRSettings",
    "ViTCaseSettings",
    "ViTSettings",
    "DynUNetSettings",
    "FocalRegionReconstruction",
    "LoadReport",
    "MaskedAutoencoder",
    "NETWORKS",
    "RENAMED_NETWORKS",
    "current_spec",
    "DEFAULT_CROP",
    "PRESETS",
    "SWIN_SIZES",
    "PatchReconstruction",
    "SPE_FRAMES",
    "SYMMETRY_KEYS",
    "LinearWindowAttention",
    "MAEOutput",
    "PatchEmbed",
    "RegionAttention",
    "SAHOutput",
    "SASwin",
    "SWBlock",
    "SWViT",
    "SWViTEncoder",
    "SWViTSegmenter",
    "VolumeEncoder",
    "SymmetryAwareHead",
    "SymmetryAwareLayer",
    "SymmetryCrossAttention",
    "WindowSymmetryCrossAttention",
    "architectures",
    "brain_frame_encoding",
    "build_network",
    "compile_blocks",
    "unwrap",
    "load_encoder",
    "network_encoder",
    "build_segmentation_network",
    "channels_last_inference",
    "network_spec",
    "mirror_index",
    "patch_grid",
    "patch_regions",
    "patchify",
    "recorded_pretraining",
    "reconstruction_objective",
    "record_spec",
    "register_network",
    "registered_networks",
    "position_index",
    "sw_blocks",
    "symmetric_position_encoding",
    "unpatchify",
]
