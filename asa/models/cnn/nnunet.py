"""A resenc encoder as nnU-Net v2 takes it: ``nnUNetv2_train ... -pretrained_weights FILE`` and the plans block.

nnU-Net v2 builds its network from the plans' ``architecture`` block (``network_class_name``, ``arch_kwargs``,
``_kw_requires_import``: what its ResEnc planners write, ``nnunetv2/experiment_planning/experiment_planners/
residual_unets/residual_encoder_unet_planners.py``) and ``-pretrained_weights`` runs
``nnunetv2.run.load_pretrained_weights.load_pretrained_weights``: it reads ``network_weights`` of the file and
asserts that every tensor of the network except the segmentation heads (``.seg_layers.``) is there with its
shape, the decoder included. So the checkpoint written here is the whole ``ResidualEncoderUNet``: the stem and
encoder from asa (every tensor matched, a 1-channel stem repeated over ``in_channels`` and divided by their
number), the decoder as nnU-Net initialises a fresh one (He init, seeded): the decoder is trained from scratch
in nnU-Net as in asa's fine-tuning. The plans block is :func:`nnunet_architecture`'s; its
``configurations`` snippet adds a configuration ``3d_fullres_asa`` inheriting from ``3d_fullres`` with this
architecture and a patch that the encoder's strides divide.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet
from torch import nn

from asa.models.cnn.transfer import in_proj_keys, match_resenc_encoder
from asa.models.family import family_of

__all__ = ["NNUNET_CLASS", "NNUNET_CONFIGURATION", "NNUNET_TRAINER", "READING_NOTE", "nnunet_architecture",
           "nnunet_checkpoint", "nnunet_fault", "nnunet_network", "nnunet_plans_snippet"]

NNUNET_CLASS = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"
NNUNET_CONFIGURATION = "3d_fullres_asa"
REQUIRES_IMPORT = ["conv_op", "norm_op", "dropout_op", "nonlin"]
# what the kwargs-with-classes of the block resolve to (nnU-Net locates them with pydoc from the strings)
_CLASSES = {"conv_op": nn.Conv3d, "norm_op": nn.InstanceNorm3d, "dropout_op": None, "nonlin": nn.LeakyReLU}


def nnunet_fault(spec: Mapping[str, Any]) -> str | None:
    """Why the network ``spec`` has no nnU-Net export, as its family declares (None: it has one)."""
    family = family_of(spec.get("arch"))
    if family is None:
        return f"a {spec.get('arch')!r} network, of no declared family; the nnunet export takes the resenc family"
    return family.export_fault("nnunet", spec)


def _plan(spec: Mapping[str, Any], source: str) -> dict[str, Any]:
    """The resolved resenc plan of a network spec; refused for a network whose family has no nnU-Net export."""
    if (fault := nnunet_fault(spec)) is not None:
        raise ValueError(f"{source}: {fault}")
    kwargs = spec.get("kwargs") or {}
    missing = [k for k in ("features", "strides", "blocks", "decoder_convs") if k not in kwargs]
    if missing:
        raise ValueError(f"{source}: the network spec records no {', '.join(missing)}; re-save it with this asa")
    return {k: [int(v) for v in kwargs[k]] for k in ("features", "strides", "blocks", "decoder_convs")}


def nnunet_architecture(spec: Mapping[str, Any], source: str = "the export") -> dict[str, Any]:
    """nnU-Net v2's plans ``architecture`` block of the resenc network ``spec`` (``{"arch", "kwargs"}``)."""
    plan = _plan(spec, source)
    n = len(plan["features"])
    return {
        "network_class_name": NNUNET_CLASS,
        "arch_kwargs": {
            "n_stages": n, "features_per_stage": plan["features"], "conv_op": "torch.nn.modules.conv.Conv3d",
            "kernel_sizes": [[3, 3, 3]] * n, "strides": [[s] * 3 for s in plan["strides"]],
            "n_blocks_per_stage": plan["blocks"], "n_conv_per_stage_decoder": plan["decoder_convs"], "conv_bias": True,
            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d", "norm_op_kwargs": {"eps": 1e-5, "affine": True},
            "dropout_op": None, "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True},  # slope 0.01, asa's resenc's
        },
        "_kw_requires_import": list(REQUIRES_IMPORT),
    }


def nnunet_plans_snippet(spec: Mapping[str, Any], source: str = "the export") -> dict[str, Any]:
    """The part of an nnU-Net plans file to merge into ``nnUNetPlans.json``: a configuration
    ``3d_fullres_asa`` inheriting from ``3d_fullres``, with the architecture block and the encoder's crop as
    patch (a multiple of the total stride along each axis, as the network needs)."""
    crop = [int(c) for c in (spec.get("kwargs") or {}).get("img_size", [])] or None
    config = {"inherits_from": "3d_fullres", "architecture": nnunet_architecture(spec, source)}
    if crop:
        config["patch_size"] = crop
    return {"configurations": {NNUNET_CONFIGURATION: config}}


def nnunet_network(export: Mapping[str, Any], *, in_channels: int | None = None, source: str = "the export",
                   seed: int = 0) -> ResidualEncoderUNet:
    """dynamic-network-architectures' ``ResidualEncoderUNet`` of :func:`nnunet_architecture` of the encoder export
    ``export`` (``encoder``, ``network``), 2 output classes, deep supervision: every stem and encoder tensor from
    the export (the stem adapted to ``in_channels`` image channels; None: the export's own), the rest as nnU-Net
    initialises it (He init, seeded with ``seed``)."""
    block = nnunet_architecture(export["network"], source)
    own_channels = int(export["network"]["kwargs"]["in_channels"])
    channels = own_channels if in_channels is None else int(in_channels)
    if channels < 1 or (channels != own_channels and own_channels != 1):
        raise ValueError(f"nnunet in_channels={in_channels}: the encoder takes {own_channels} channel(s); only a "
                         "1-channel stem is adapted to more")
    kwargs = {k: _CLASSES[k] if k in _CLASSES else v for k, v in block["arch_kwargs"].items()}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = ResidualEncoderUNet(input_channels=channels, num_classes=2, deep_supervision=True, **kwargs)
        net.apply(net.initialize)  # nnU-Net's own initialisation (get_network_from_plans, allow_init=True)
    update, _ = match_resenc_encoder(net.encoder.state_dict(prefix="encoder."), dict(export), source,
                                     in_proj=in_proj_keys(net), image_channels=channels)
    net.encoder.load_state_dict({k.removeprefix("encoder."): v for k, v in update.items()}, strict=True)
    return net


def nnunet_checkpoint(export: Mapping[str, Any], *, in_channels: int | None = None, source: str = "the export",
                      seed: int = 0) -> dict[str, Any]:
    """``{"network_weights": state dict}`` of nnU-Net's ``ResidualEncoderUNet`` built from
    :func:`nnunet_architecture` of the encoder export ``export`` (``encoder``, ``network``): every encoder tensor
    from the export (the stem adapted to ``in_channels`` image channels; None: the export's own), the decoder as
    nnU-Net initialises it (seeded with ``seed``), the segmentation heads left out (nnU-Net skips them)."""
    block = nnunet_architecture(export["network"], source)
    net = nnunet_network(export, in_channels=in_channels, source=source, seed=seed)
    channels = net.encoder.stem.convs[0].conv.in_channels
    weights = {k: v for k, v in net.state_dict().items() if ".seg_layers." not in k}
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


def describe_nnunet(folder: Path, weights_file: str, plans_file: str) -> str:
    """The command lines that use an export in nnU-Net v2 (for the model card and the console): the plans merged,
    then ``nnUNetv2_train`` with the warm-up trainer the docs recommend (``NNUNET_TRAINER``)."""
    return (f"merge {folder / plans_file} into nnUNet_preprocessed/DatasetXXX/<plans>.json "
            "(asa-export --nnunet-plans does it), then\n"
            f"nnUNetv2_train DatasetXXX {NNUNET_CONFIGURATION} FOLD -p <plans> -tr {NNUNET_TRAINER} "
            f"-pretrained_weights {folder / weights_file}")
