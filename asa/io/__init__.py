"""Bottom-layer file I/O shared by every stage: atomic writes, checkpoint files, safetensors encoder exports, NIfTI
file names, hub-ready model folders and NIfTI volumes in RAS+ (imports nothing of asa outside this package)."""

from __future__ import annotations

from asa.io.atomic import WriteError, atomic_path, atomic_write_bytes, atomic_write_json, atomic_write_text, default_file_mode
from asa.io.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from asa.io.export_safetensors import SAFETENSORS_SUFFIX, load_export_safetensors, save_export_safetensors
from asa.io.hub import is_model_folder, load_model_folder, read_weights, write_model_folder
from asa.io.nifti import (NIFTI_SUFFIXES, PREDICTION_SUFFIX, find_nifti, is_nifti, nifti_suffix, prediction_path,
                          probabilities_path, strip_nifti)
from asa.io.volume import Volume, VolumeError, decode_nifti, load_volume, read_nifti, save_volume

__all__ = [
    "CheckpointError", "WriteError", "atomic_path", "atomic_write_bytes", "atomic_write_json", "atomic_write_text",
    "default_file_mode", "load_checkpoint", "save_checkpoint",
    "NIFTI_SUFFIXES", "PREDICTION_SUFFIX", "find_nifti", "is_nifti", "nifti_suffix", "prediction_path",
    "probabilities_path", "strip_nifti",
    "SAFETENSORS_SUFFIX", "load_export_safetensors", "read_weights", "save_export_safetensors",
    "is_model_folder", "load_model_folder", "write_model_folder",
    "Volume", "VolumeError", "decode_nifti", "load_volume", "read_nifti", "save_volume",
]
