"""The one reader of weights files: whatever asa reads (a pretraining checkpoint, an encoder export, a model folder
or hub id, a published nnssl / nnU-Net / AMAES checkpoint) as one kind of dict with its network spec.

`asa.io.read_weights` is the file layer, which knows no architecture: it reads asa's own files as they are and a
published checkpoint with its network in nnU-Net's terms. Here the network family that declares that architecture
for nnU-Net (`asa.models.family.NNUNetForm`) gives such a file its network spec, so every caller above the file layer
reads ``network`` (the spec), ``encoder`` or ``model`` (the tensors) and what else the file records.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch

from asa.io import read_weights
from asa.models.family import families
from asa.models.published import read_published

__all__ = ["load_weights", "published_spec"]


def published_spec(info: Mapping[str, Any]) -> dict[str, Any]:
    """The network spec of a published file read in nnU-Net's terms (`asa.io.foreign`'s ``foreign`` record:
    ``network_class``, ``arch_kwargs``, ``input_channels``, ``crop``), as the family that declares that class for
    nnU-Net gives it (:attr:`NNUNetForm.spec`); a class no family declares is refused, naming the file, the
    architecture it states and the classes asa reads."""
    readers = {f.nnunet.class_name: f.nnunet for f in families().values() if f.nnunet is not None}
    form = readers.get(info["network_class"])
    if form is None:
        raise ValueError(f"{info['file']}: nnssl_adaptation_plan.architecture_plans.arch_class_name="
                         f"{info.get('architecture')!r}; asa reads {' / '.join(readers)} (the architectures its "
                         "network families declare for nnU-Net), not this architecture")
    return form.spec(info["arch_kwargs"], int(info["input_channels"]), int(info["crop"]))


def load_weights(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """A pretraining checkpoint, encoder export, model folder (or hub id) or published checkpoint as a dict with
    its network spec (`asa.io.read_weights`; a published file's spec from the family that declares its
    architecture for nnU-Net, `published_spec`; its adaptation plan under ``"foreign"``): every file asa reads, as
    one kind of dict."""
    blob = read_weights(path, map_location)
    if "foreign" in blob and "network" not in blob:  # read by the family of its architecture
        blob = read_published(blob, [f.nnunet for f in families().values() if f.nnunet is not None])
        blob["network"] = published_spec(blob["foreign"])
    return blob
