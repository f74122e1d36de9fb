"""Bottom-layer file I/O shared by every stage: atomic writes, checkpoint files, safetensors encoder exports, NIfTI
file names, hub-ready model folders and NIfTI volumes in RAS+ (imports nothing of asa outside this package)."""

from __future__ import annotations

from asa.io.lazy import lazy_names

# name -> the module it lives in, imported on first use: importing a submodule (asa-prepare's, whose --help
# must not load torch) runs this file, which then loads nothing
_LAZY = {
    "WriteError": "asa.io.atomic", "atomic_path": "asa.io.atomic", "atomic_write_bytes": "asa.io.atomic",
    "atomic_write_json": "asa.io.atomic", "atomic_write_text": "asa.io.atomic", "default_file_mode": "asa.io.atomic",
    "describe_write_failure": "asa.io.atomic", "is_atomic_temporary": "asa.io.atomic",
    "CheckpointError": "asa.io.checkpoint", "CheckpointWriter": "asa.io.checkpoint",
    "load_checkpoint": "asa.io.checkpoint", "save_checkpoint": "asa.io.checkpoint",
    "SAFETENSORS_SUFFIX": "asa.io.export_safetensors", "load_export_safetensors": "asa.io.export_safetensors",
    "save_export_safetensors": "asa.io.export_safetensors",
    "is_model_folder": "asa.io.hub", "load_model_folder": "asa.io.hub", "read_weights": "asa.io.hub",
    "write_model_folder": "asa.io.hub",
    "NIFTI_SUFFIXES": "asa.io.nifti", "PREDICTION_SUFFIX": "asa.io.nifti", "find_nifti": "asa.io.nifti",
    "is_nifti": "asa.io.nifti", "is_temporary": "asa.io.nifti", "nifti_suffix": "asa.io.nifti", "prediction_path": "asa.io.nifti",
    "probabilities_path": "asa.io.nifti", "strip_nifti": "asa.io.nifti",
    "Volume": "asa.io.volume", "VolumeError": "asa.io.volume", "decode_nifti": "asa.io.volume",
    "load_volume": "asa.io.volume", "read_nifti": "asa.io.volume", "save_volume": "asa.io.volume",
}

__all__ = [
    "CheckpointError", "CheckpointWriter", "WriteError", "atomic_path", "atomic_write_bytes", "atomic_write_json",
    "atomic_write_text", "default_file_mode", "describe_write_failure", "is_atomic_temporary", "load_checkpoint", "save_checkpoint",
    "NIFTI_SUFFIXES", "PREDICTION_SUFFIX", "find_nifti", "is_nifti", "is_temporary", "nifti_suffix", "prediction_path",
    "probabilities_path", "strip_nifti",
    "SAFETENSORS_SUFFIX", "load_export_safetensors", "read_weights", "save_export_safetensors",
    "is_model_folder", "load_model_folder", "write_model_folder",
    "Volume", "VolumeError", "decode_nifti", "load_volume", "read_nifti", "save_volume",
]


__getattr__, __dir__ = lazy_names(__name__, _LAZY)
