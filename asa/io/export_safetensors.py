"""Encoder exports as safetensors: plain tensors plus JSON metadata, no pickle (imports nothing of asa but this layer).

An encoder export is ``{"encoder": {name: tensor}, "network": spec, "source": file name, "step": int}``
(``asa.train.pretrain.export_encoder``). As ``encoder.pt`` it is a ``torch.save`` file; as
``encoder.safetensors`` the tensors are the safetensors tensors and the rest is the file's string
metadata:

=================  ============================================================================
``format``         ``"pt"`` (the safetensors convention for PyTorch tensors, which Hugging Face
                   loaders check)
``asa_format``     ``"asa.encoder"``; ``asa_format_version``: ``"1"``
``network``        the network spec ``{"arch", "kwargs"}`` as JSON (``asa.models.build_network``)
``encoder_prefix`` the prefix every tensor name starts with (``encoder.`` or ``swinViT.``)
``source``         the checkpoint the export was taken from (file name); ``step``: its step
``aliases``        (only when some names share one tensor, as nnU-Net's blocks name each convolution
                   twice) JSON ``{name: the name whose tensor it shares}``; the file holds the tensor
                   once and reading gives both names the same tensor (plain torch: safetensors'
                   ``load_model(network, path, strict=True)`` skips the second names, since the
                   network shares those tensors too; docs/weights-elsewhere.md)
``cohort``         (only when the pretraining run recorded one) JSON of the pretraining cohort's summary
                   (`asa.data.cohort.cohort_summary`: its counts, one digest of its image digests and
                   the name of its list beside the file, ``cohort.json.gz``), a few hundred bytes at any
                   cohort size; files written before it carry the list itself
                   (`asa.data.cohort.export_cohort`), which `asa.data.cohort.carried_cohort` still reads
=================  ============================================================================
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from asa.io.atomic import atomic_path
from asa.io.checkpoint import CheckpointError

__all__ = ["EXPORT_FORMAT", "SAFETENSORS_SUFFIX", "load_export_safetensors", "save_export_safetensors"]

EXPORT_FORMAT = "asa.encoder"
EXPORT_VERSION = "1"
SAFETENSORS_SUFFIX = ".safetensors"


def _common_prefix(names: list[str]) -> str | None:
    """The first dotted component and its dot (``encoder.``) when every name starts with it, else None."""
    heads = {name.split(".", 1)[0] for name in names if "." in name}
    return f"{heads.pop()}." if len(heads) == 1 and all("." in n for n in names) else None


def save_export_safetensors(path: str | os.PathLike, export: Mapping[str, Any]) -> Path:
    """Write an encoder export (the ``encoder.pt`` dict) to ``path`` as safetensors, atomically
    (``asa.io.atomic_path``); the network spec and provenance go to the metadata (module docstring)."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    first: dict[tuple[int, int, tuple[int, ...], tuple[int, ...]], str] = {}  # a view -> its first name
    for name, value in export["encoder"].items():
        view = (value.untyped_storage().data_ptr(), value.storage_offset(), tuple(value.shape), tuple(value.stride()))
        if view in first:  # the same tensor under a second name: written once
            aliases[name] = first[view]
            continue
        first[view] = name
        tensors[name] = value.detach().cpu().contiguous()
    if not tensors:
        raise ValueError(f"encoder export {path}: no tensors to write")
    if export.get("network") is None:
        raise ValueError(f"encoder export {path}: no network spec to write (an export carries its network's spec)")
    metadata = {"format": "pt", "asa_format": EXPORT_FORMAT, "asa_format_version": EXPORT_VERSION,
                "network": json.dumps(export["network"])}
    if aliases:
        metadata["aliases"] = json.dumps(aliases)
    prefix = _common_prefix(list(tensors))
    if prefix:
        metadata["encoder_prefix"] = prefix
    if export.get("source") is not None:
        metadata["source"] = str(export["source"])
    if export.get("step") is not None:
        metadata["step"] = str(int(export["step"]))
    if export.get("cohort") is not None:
        metadata["cohort"] = json.dumps(export["cohort"])
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return Path(path)


def load_export_safetensors(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """An ``encoder.safetensors`` file -> the export dict in ``encoder.pt``'s layout (``encoder``,
    ``network``, ``source``, ``step``, and ``cohort`` when it carries one). No pickle is involved.

    Raises CheckpointError naming the file when it is missing, not a safetensors file (corrupt,
    truncated) or a safetensors file that is not an asa encoder export.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"encoder export {path}: no such file")
    try:
        with safe_open(str(path), framework="pt", device=str(map_location)) as fh:
            metadata = dict(fh.metadata() or {})
            tensors = {name: fh.get_tensor(name) for name in fh.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"encoder export {path}: not a readable safetensors file — corrupt, truncated or "
                              f"another format ({type(err).__name__}: {err})") from err
    if metadata.get("asa_format") != EXPORT_FORMAT:
        raise CheckpointError(
            f"encoder export {path}: a safetensors file, but not an asa encoder export (its metadata has no "
            f"asa_format={EXPORT_FORMAT!r}; found keys {sorted(metadata)}): asa needs the network spec written "
            "by asa-pretrain beside the weights")
    try:
        for name, shared in json.loads(metadata.get("aliases", "{}")).items():
            tensors[name] = tensors[shared]
    except (json.JSONDecodeError, KeyError, AttributeError) as err:
        raise CheckpointError(f"encoder export {path}: metadata 'aliases' does not name tensors of the file ({err})") from err
    export: dict[str, Any] = {"encoder": tensors}
    if "network" in metadata:
        try:
            export["network"] = json.loads(metadata["network"])
        except json.JSONDecodeError as err:
            raise CheckpointError(f"encoder export {path}: metadata 'network' is not valid JSON ({err})") from err
    if "source" in metadata:
        export["source"] = metadata["source"]
    if "step" in metadata:
        export["step"] = int(metadata["step"])
    if "cohort" in metadata:
        try:
            export["cohort"] = json.loads(metadata["cohort"])
        except json.JSONDecodeError as err:
            raise CheckpointError(f"encoder export {path}: metadata 'cohort' is not valid JSON ({err})") from err
    return export
