"""Bottom-layer file writing shared by every stage (imports nothing of asa)."""

from __future__ import annotations

from asa.io.atomic import atomic_path, atomic_write_bytes, atomic_write_json, atomic_write_text, default_file_mode

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_json", "atomic_write_text", "default_file_mode"]
