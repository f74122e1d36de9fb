"""Weights files read as encoder exports, whatever wrote them.

`asa.io.read_weights` reads the file: asa's own checkpoints, exports and model folders as they are, a published
checkpoint (nnssl / OpenMind, nnU-Net v2, AMAES: `asa.io.foreign`) with its network in nnU-Net's terms. Here the
network family that declares that architecture for nnU-Net (`asa.models.family.NNUNetForm`) gives such a file its
network spec, so every caller above the file layer reads one kind of dict: ``network`` (the spec), ``encoder`` or
``model`` (the tensors), and what else the file records.
"""

from __future__ import annotations

import os

import torch

from asa.models.family import read_file

__all__ = ["load_weights"]


def load_weights(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """A pretraining checkpoint, encoder export, model folder (or hub id) or published checkpoint as a dict with
    its network spec (`asa.io.read_weights`; a published file's spec from its family, its adaptation plan under
    ``"foreign"``): the families' one reader, `asa.models.family.read_file`."""
    return read_file(path, map_location)
