"""An encoder as nnU-Net v2 takes it: ``nnUNetv2_train ... -pretrained_weights FILE`` and the plans block.

nnU-Net v2 builds its network from the plans' ``architecture`` block (``network_class_name``, ``arch_kwargs``,
``_kw_requires_import``: what its planners write, e.g. ``nnunetv2/experiment_planning/experiment_planners/
residual_unets/residual_encoder_unet_planners.py``) and ``-pretrained_weights`` runs
``nnunetv2.run.load_pretrained_weights.load_pretrained_weights``: it reads ``network_weights`` of the file and
asserts that every tensor of the network except the segmentation heads (``.seg_layers.``) is there with its
shape, the decoder included. The block is the one the network's family declares (`asa.models.family.NNUNetForm`:
nnU-Net's residual-encoder U-Net for ``resenc``, a plug-in's class for its own family), for every family alike;
the network is built from it as nnU-Net builds it (the class and the op classes located by their dotted names). So
the checkpoint written here is the whole network: the stem and encoder from asa (every tensor under the keys the
network declares, `asa.models.keys`, a 1-channel stem repeated over ``in_channels`` and
divided by their number), the decoder as nnU-Net initialises a fresh one (the class's own ``initialize``, seeded):
the decoder is trained from scratch in nnU-Net as in asa's fine-tuning. Its
``configurations`` snippet adds a configuration ``3d_fullres_asa`` inheriting from ``3d_fullres`` with this
architecture and a patch that the encoder's strides divide.
"""

from __future__ import annotations

import pydoc
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from asa.models.blocks.encoder_weights import match_file_encoder
from asa.models.declared import crop_edges
from asa.models.family import NNUNetForm, families, family_of
from asa.models.keys import encoder_keys

__all__ = ["NNUNET_CONFIGURATION", "NNUNET_TRAINER", "READING_NOTE", "located", "nnunet_architecture",
           "nnunet_checkpoint", "nnunet_fault", "nnunet_network", "nnunet_plans_snippet"]

NNUNET_CONFIGURATION = "3d_fullres_asa"


def nnunet_fault(spec: Mapping[str, Any]) -> str | None:
    """Why the network ``spec`` has no nnU-Net export, as its family declares (None: it has one)."""
    family = family_of(spec.get("arch"))
    if family is None:
        takers = " / ".join(name for name, f in families().items() if "nnunet" in f.exports) or "no"
        return f"a {spec.get('arch')!r} network, of no declared family; the nnunet export takes the {takers} family"
    return family.export_fault("nnunet", spec)


def nnunet_architecture(spec: Mapping[str, Any], source: str = "the export") -> dict[str, Any]:
    """nnU-Net v2's plans ``architecture`` block of the network ``spec`` (``{"arch", "kwargs"}``), as its family
    declares it (`asa.models.family.NNUNetForm`); refused, naming ``source``, for a network whose family has no
    nnU-Net export."""
    if (fault := nnunet_fault(spec)) is not None:
        raise ValueError(f"{source}: {fault}")
    form: NNUNetForm = family_of(spec["arch"]).nnunet  # type: ignore[union-attr, assignment]
    arch_kwargs = form.arch_kwargs(spec, source)
    return {"network_class_name": form.network_class, "arch_kwargs": arch_kwargs,
            "_kw_requires_import": [k for k in form.requires_import if k in arch_kwargs]}


def located(block: Mapping[str, Any]) -> tuple[type[nn.Module], dict[str, Any]]:
    """The network class of an architecture block and its keyword arguments with the op classes resolved, as
    nnU-Net resolves them (``pydoc.locate`` of the dotted names in ``_kw_requires_import``; None stays None)."""
    cls = pydoc.locate(block["network_class_name"])
    if cls is None:
        raise ValueError(f"network_class_name {block['network_class_name']!r}: no such class is installed")
    kwargs = dict(block["arch_kwargs"])
    for key in block.get("_kw_requires_import", ()):
        if kwargs.get(key) is not None:
            kwargs[key] = pydoc.locate(kwargs[key])
    return cls, kwargs  # type: ignore[return-value]


def nnunet_network(export: Mapping[str, Any], *, in_channels: int | None = None, source: str = "the export",
                   seed: int = 0) -> nn.Module:
    """The network nnU-Net builds from :func:`nnunet_architecture` of the encoder export ``export`` (``encoder``,
    ``network``), 2 output classes, deep supervision: every stem and encoder tensor from the export (the stem
    adapted to ``in_channels`` image channels; None: the export's own), the rest as nnU-Net initialises it (the
    class's ``initialize``, seeded with ``seed``)."""
    cls, kwargs = located(nnunet_architecture(export["network"], source))
    own_channels = int(export["network"]["kwargs"].get("in_channels", 1))
    channels = own_channels if in_channels is None else int(in_channels)
    if channels < 1 or (channels != own_channels and own_channels != 1):
        raise ValueError(f"nnunet in_channels={in_channels}: the encoder takes {own_channels} channel(s); only a "
                         "1-channel stem is adapted to more")
    form: NNUNetForm = family_of(export["network"]["arch"]).nnunet  # type: ignore[union-attr, assignment]
    if form.deep_supervision is not None:  # as get_network_from_plans passes it
        kwargs["deep_supervision"] = form.deep_supervision
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = cls(input_channels=channels, num_classes=2, **kwargs)
        if hasattr(net, "initialize"):
            net.apply(net.initialize)  # nnU-Net's own initialisation (get_network_from_plans, allow_init=True)
    keys = encoder_keys(net)  # as nnU-Net's network declares them
    update, _ = match_file_encoder(keys.state(net), dict(export), source, in_proj=keys.in_proj_weights,
                                   image_channels=channels)
    keys.load(net, update)
    return net


def nnunet_plans_snippet(spec: Mapping[str, Any], source: str = "the export") -> dict[str, Any]:
    """The part of an nnU-Net plans file to merge into ``nnUNetPlans.json``: a configuration
    ``3d_fullres_asa`` inheriting from ``3d_fullres``, with the architecture block and the encoder's crop as
    patch (a multiple of the total stride along each axis, as the network needs)."""
    size = (spec.get("kwargs") or {}).get("img_size")
    config = {"inherits_from": "3d_fullres", "architecture": nnunet_architecture(spec, source)}
    if size:
        config["patch_size"] = list(crop_edges(size))
    return {"configurations": {NNUNET_CONFIGURATION: config}}


def nnunet_checkpoint(export: Mapping[str, Any], *, in_channels: int | None = None, source: str = "the export",
                      seed: int = 0) -> dict[str, Any]:
    """``{"network_weights": state dict}`` of the network nnU-Net builds from :func:`nnunet_architecture` of the
    encoder export ``export`` (``encoder``, ``network``): every encoder tensor from the export (the stem adapted to
    ``in_channels`` image channels; None: the export's own), the decoder as nnU-Net initialises it (seeded with
    ``seed``), the segmentation heads left out (nnU-Net skips them)."""
    block = nnunet_architecture(export["network"], source)
    net = nnunet_network(export, in_channels=in_channels, source=source, seed=seed)
    state = net.state_dict()
    channels = int(state[encoder_keys(net).in_proj_weights[0]].shape[1])
    weights = {k: v for k, v in state.items() if ".seg_layers." not in k}
    return {"network_weights": weights,
            "asa": {"source": str(export.get("source") or source), "architecture": block, "in_channels": channels,
                    "decoder": f"nnU-Net's initialisation, seed {seed} (not pretrained)"}}


NNUNET_TRAINER = "nnUNetTrainer_warmup"  # in nnU-Net's 2.8.1 wheel: the whole network warmed up, then poly decay
# how nnU-Net hands an image to the network, against asa's RAS+ array (axis 0 left -> right), as measured with
# nnunetv2 2.8.1's readers on RAS, LAS, LIA and PIR files (docs/weights-elsewhere.md; tests/api/test_export_nnssl.py)
READING_NOTE = (
    "Axis order and intensity: asa pretrained on RAS+ arrays, left-right on array axis 0 (left to right). nnU-Net's "
    "default reader for NIfTI (SimpleITKIO) keeps a file's stored order, reversed: left-right lands on array axis 2 "
    "for RAS, LAS and LIA files, running right to left for LAS and LIA (flipped), and on axis 0 for a sagittal PIR "
    "file. With `\"overwrite_image_reader_writer\": \"NibabelIOWithReorient\"` in the dataset's `dataset.json`, "
    "every file is reoriented to RAS first: left-right on axis 2, left to right, whatever the file's orientation; "
    "setting `transpose_forward` and `transpose_backward` to `[2, 1, 0]` in the plans before preprocessing "
    "(isotropic spacing and patch: nothing else changes) puts it on axis 0, as asa pretrained. Intensity: asa clips "
    "each image to its brain's 0.5-99.5 percentiles and z-scores it inside the brain, 0 outside; nnU-Net's "
    "ZScoreNormalization with use_mask_for_norm (which its planner sets for skull-stripped images) z-scores the "
    "nonzero region, 0 outside, without the clip.")


def describe_nnunet(spec: Mapping[str, Any], folder: Path, weights_file: str, plans_file: str) -> str:
    """The command lines that use the export of the network ``spec`` in nnU-Net v2 (for the model card and the
    console): the plans merged, then ``nnUNetv2_train`` with the warm-up trainer the docs recommend
    (``NNUNET_TRAINER``); for a class that takes no ``deep_supervision`` (its family's `NNUNetForm`), what the trainer
    must do instead."""
    lines = (f"merge {folder / plans_file} into nnUNet_preprocessed/DatasetXXX/<plans>.json "
             "(asa-export --nnunet-plans does it), then\n"
             f"nnUNetv2_train DatasetXXX {NNUNET_CONFIGURATION} FOLD -p <plans> -tr {NNUNET_TRAINER} "
             f"-pretrained_weights {folder / weights_file}")
    form: NNUNetForm = family_of(spec["arch"]).nnunet  # type: ignore[union-attr, assignment]
    if form.deep_supervision is None:
        lines += (f"\n# {form.class_name} takes no deep_supervision, which nnU-Net's trainers pass: -tr a trainer with "
                  "enable_deep_supervision = False whose build_network_architecture calls get_network_from_plans(..., "
                  "deep_supervision=None); -pretrained_weights checks every tensor but .seg_layers., the output "
                  "layer included: the file's network has 2 output classes (one foreground label)")
    return lines
