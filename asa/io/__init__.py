"""Bottom-layer file I/O shared by every stage: atomic writes and checkpoint files (imports nothing of asa)."""

from __future__ import annotations

from asa.io.atomic import atomic_path, atomic_write_bytes, atomic_write_json, atomic_write_text, default_file_mode
from asa.io.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

__all__ = [
    "CheckpointError", "atomic_path", "atomic_write_bytes", "atomic_write_json", "atomic_write_text",
    "default_file_mode", "load_checkpoint", "save_checkpoint",
]
