"""A published checkpoint (`asa.io.foreign`: nnssl, nnU-Net v2, AMAES) as an encoder export whose network is said in
nnU-Net's terms, read by the family that declares its architecture for nnU-Net.

The file layer gives the file as it states itself (its network's tensors, its plan). Here the architecture's form
(`asa.models.family.NNUNetForm`) is found, the one whose class or nnssl preset the plan names (``arch_class_name``),
or for a file without a plan the one that declares its layout (``layouts``), and it reads the file
(:attr:`NNUNetForm.read` -> a :class:`FileEncoder`: which tensors are the encoder, under the network's keys, and
the network they form, ``arch_kwargs``); for every architecture alike, the plan's transfer keys must be the ones
the architecture declares, the tensors are cast to float32 (their stored dtype reported), the input channels are
read off the input projection and checked against the plan, and the crop is the one the file recommends (a
multiple of the encoder's total stride) unless the architecture needs its own. The result is the encoder export
`asa.models.load_weights` gives its spec: ``encoder``, ``source``, ``step``, ``cohort`` when carried, and
``foreign`` (`asa.io.foreign.describe_foreign` reports it). This module imports only `asa.io`: the forms are
handed in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Optional

import torch

from asa.io.foreign import plain, plan_crop

__all__ = ["FileEncoder", "read_planned", "read_published"]


class FileEncoder(NamedTuple):
    """What an architecture reads of a published file (`NNUNetForm.read`)."""

    weights: dict[str, torch.Tensor]  # the encoder's (and stem's) tensors, under the network's keys
    left_out: list[str]  # the file's other tensors (pretraining decoder, heads), as the file names them
    arch_kwargs: dict[str, Any]  # the network in nnU-Net's terms (its plans' arch_kwargs)
    in_proj: str  # the input projection's weight key: the file's image channels
    stride: int  # the encoder's total stride (a crop is a multiple of it)
    architecture: Optional[str] = None  # how the report names the architecture, where the file names none
    crop: Optional[tuple[int, str]] = None  # the crop the architecture needs and why (None: the file's recommended)
    aliases_resolved: Sequence[str] = ()  # keys whose trained twin was taken (a SparK3D file)


def _form(info: Mapping[str, Any], forms: Sequence[Any]) -> Any:
    """The form that reads the file ``info`` describes: the one naming its class or preset, or its layout."""
    if info["layout"] == "nnssl":
        named = str(info.get("architecture")).rsplit(".", 1)[-1]
        found = [f for f in forms if named == f.class_name or named in f.presets]
    else:
        found = [f for f in forms if info["layout"] in f.layouts]
    if not found:
        readers = " / ".join(name for f in forms for name in (f.class_name, *f.presets))
        what = (f"nnssl_adaptation_plan.architecture_plans.arch_class_name={info.get('architecture')!r}"
                if info["layout"] == "nnssl" else f"a {info['layout']} checkpoint")
        raise ValueError(f"{info['file']}: {what}; asa reads {readers} (the architectures its network families "
                         "declare for nnU-Net), not this architecture")
    return found[0]


def _check_keys(info: Mapping[str, Any], form: Any) -> None:
    """The plan's transfer keys must be those the architecture declares (where it declares them)."""
    if info["layout"] != "nnssl" or form.keys is None:
        return
    for field, own in (("key_to_encoder", form.keys.encoder), ("key_to_stem", form.keys.stem)):
        if info.get(field) != own:
            raise ValueError(f"{info['file']}: nnssl_adaptation_plan.{field}={info.get(field)!r}, expected {own!r} "
                             f"(the {form.class_name}'s, as dynamic-network-architectures declares it)")


def read_published(blob: Mapping[str, Any], forms: Sequence[Any]) -> dict[str, Any]:
    """The file layer's reading ``blob`` of a published checkpoint (`asa.io.foreign.read_foreign`) as an encoder
    export without its network spec, read by the form among ``forms`` (`asa.models.family.NNUNetForm`) of its
    architecture (see the module). Refused (``ValueError`` naming the file and the keys or plan field at fault)
    when no family reads the architecture or its encoder tensors do not form the network it states."""
    info = dict(blob["foreign"])
    path = Path(info["file"])
    form = _form(info, forms)
    _check_keys(info, form)
    read: FileEncoder = form.read(dict(blob["weights"]), info, path)
    weights = read.weights
    not_tensors = sorted(k for k, v in weights.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        raise ValueError(f"{path}: encoder entries that are not tensors: {', '.join(not_tensors[:5])}")
    dtypes = sorted({str(v.dtype).removeprefix("torch.") for v in weights.values()})
    weights = {k: v.float() if v.is_floating_point() else v for k, v in weights.items()}
    if read.in_proj not in weights:
        raise ValueError(f"{path}: no input projection {read.in_proj} among the encoder tensors")
    in_channels = int(weights[read.in_proj].shape[1])
    declared = info.get("input_channels")
    if declared is not None and int(declared) != in_channels:
        raise ValueError(f"{path}: the plan declares {declared} input channel(s), the stem {read.in_proj} takes "
                         f"{in_channels}")
    crop, crop_note = read.crop or plan_crop(info, read.stride)
    info.update({"architecture": info.get("architecture") or read.architecture, "dtypes": dtypes, "crop": crop,
                 "crop_from": crop_note, "left_out": sorted(read.left_out), "input_channels": in_channels,
                 "network_class": form.class_name, "arch_kwargs": plain(read.arch_kwargs),
                 "aliases_resolved": list(read.aliases_resolved)})
    export = {"encoder": weights, "source": blob["source"], "step": blob["step"], "foreign": info}
    if blob.get("cohort") is not None:
        export["cohort"] = blob["cohort"]
    return export


def read_planned(weights: dict[str, torch.Tensor], info: Mapping[str, Any], path: Path) -> FileEncoder:
    """An architecture as its nnssl plan states it (``arch_kwargs`` with the stage ``strides``, as
    dynamic-network-architectures' U-Nets take them), its encoder under the plan's ``key_to_encoder`` and
    ``key_to_stem``, its input channels off the first of ``keys_to_in_proj`` the file holds: the reading of a form
    that declares none of its own (`asa.models.family.NNUNetForm.read`)."""
    arch_kwargs = info.get("arch_kwargs")
    if not arch_kwargs or not arch_kwargs.get("strides"):
        raise ValueError(f"{path}: nnssl_adaptation_plan.architecture_plans.arch_kwargs states no strides of the "
                         f"{info.get('architecture')}; asa reads this architecture from its plan's arch_kwargs")
    encoder, stem = info.get("key_to_encoder"), info.get("key_to_stem")
    prefixes = tuple(f"{key}." for key in (encoder, stem) if isinstance(key, str) and key
                     and (key == encoder or not key.startswith(f"{encoder}.")))
    if not prefixes:
        raise ValueError(f"{path}: nnssl_adaptation_plan.key_to_encoder={encoder!r}: no encoder key")
    in_proj = next((f"{k}.weight" for k in info.get("keys_to_in_proj") or () if f"{k}.weight" in weights), None)
    if in_proj is None:
        raise ValueError(f"{path}: no input projection of the plan's keys_to_in_proj "
                         f"({', '.join(info.get('keys_to_in_proj') or ()) or 'none'}) among the encoder tensors")
    stride = math.prod(int(s[0]) if isinstance(s, (list, tuple)) else int(s) for s in arch_kwargs["strides"])
    return FileEncoder(weights={k: v for k, v in weights.items() if k.startswith(prefixes)},
                       left_out=[k for k in weights if not k.startswith(prefixes)], arch_kwargs=dict(arch_kwargs),
                       in_proj=in_proj, stride=stride)
