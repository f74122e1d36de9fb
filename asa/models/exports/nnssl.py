"""An encoder in nnssl's checkpoint format, as nnssl's tools and nnU-Net's nnssl route read it.

nnssl (MIC-DKFZ/nnssl) saves ``checkpoint_final.pth`` as ``{"network_weights": state dict,
"nnssl_adaptation_plan": plan, "trainer_name", ...}`` (``AbstractBaseTrainer.save_checkpoint`` in
``src/nnssl/training/nnsslTrainer/AbstractTrainer.py``); the plan is ``AdaptationPlan.serialize()``
(``src/nnssl/adaptation_planning/adaptation_plan.py``): ``architecture_plans`` (``arch_class_name``,
``arch_kwargs``: the fields of ``DynamicArchitecturePlans``, op classes as dotted names,
``arch_kwargs_requiring_import``: the string-valued ones), ``pretrain_plan`` (the fields of ``Plan`` and one
``ConfigurationPlan`` per configuration, ``src/nnssl/experiment_planning/experiment_planners/plan.py``;
``Plan.from_dict`` takes exactly those keys), ``pretrain_num_input_channels``,
``recommended_downstream_patchsize``, ``key_to_encoder``, ``key_to_stem``, ``keys_to_in_proj``, ``key_to_lpe``.
Its released folders (``src/nnssl/utilities/add_adaptation_plan.py``) hold ``checkpoint_final.pth`` and
``adaptation_plan.json`` (the plan plus ``trainer_name``).

nnU-Net's route (MIC-DKFZ/nnUNet ``nnunetv2/experiment_planning/like_nnssl.py``,
``nnunetv2/training/nnUNetTrainer/pretraining/pretrainedTrainer.py``, ``dynamicPretrainedTrainer.py``) loads
the file with ``torch.load(weights_only=True)``, reads the plan's fields above unconditionally (and pops
``arch_kwargs_requiring_import``), takes ``network_weights`` under ``key_to_encoder`` / ``key_to_stem`` into the
network's encoder and stem with ``load_state_dict`` (strict), repeats the first of ``keys_to_in_proj`` over the
task's channels, and reads two fields nnssl never writes: ``pretrain_patch_size`` and ``architecture_kwargs``
(``n_stages``, ``kernel_sizes``; without it the dynamic route guesses the stages and assumes 3³ kernels). From
the hub it downloads ``adaptation_plan.json``, ``checkpoint_final.pth`` and ``config.json``.

The architecture is the one the network's family declares for nnU-Net (`asa.models.family.NNUNetForm`; nnssl
names the class by its last part: ``ResidualEncoderUNet``, ``PlainConvUNet``, the dynamic architectures it builds).
The transfer keys are the network's own declarations (dynamic-network-architectures sets ``key_to_encoder``,
``key_to_stem`` and ``keys_to_in_proj`` on its networks), read off the built network by its family
(`asa.models.keys`), for every family alike.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from asa.io.hub import NNSSL_CHECKPOINT, NNSSL_PLAN
from asa.models.declared import crop_edges
from asa.models.exports.nnunet import located, nnunet_architecture, nnunet_network
from asa.models.family import family_of
from asa.models.keys import encoder_keys

__all__ = ["NNSSL_CHECKPOINT", "NNSSL_PLAN", "READER", "TRANSPOSE", "nnssl_adaptation_plan", "nnssl_checkpoint",
           "published_plan"]

# asa's frame in nnssl's terms: nnssl's NibabelIOWithReorient (src/nnssl/imageio/nibabel_reader_writer.py) reorients
# to RAS, as asa does, then transposes the array to (S-I, A-P, L-R) for SimpleITK's axis order; the plan's
# transpose_forward (2, 1, 0) turns that back into asa's (L-R, P-A, I-S) array: what the encoder saw (its own inverse)
READER = "NibabelIOWithReorient"
TRANSPOSE = (2, 1, 0)


def _nnssl_arch(spec: Mapping[str, Any], source: str) -> tuple[str, dict[str, Any]]:
    """nnssl's ``arch_class_name`` and ``arch_kwargs`` of the network ``spec``: nnU-Net's block, the class by its
    last name and each op class by its module and name, as nnssl's ``DynamicArchitecturePlans.serialize`` writes
    them (``torch.nn.modules.activation.LeakyReLU``), and the values again under the names nnU-Net's nnssl route
    reads for the class (the family's ``NNUNetForm.nnssl_names``)."""
    block = nnunet_architecture(spec, source)
    _, resolved = located(block)
    kwargs = dict(block["arch_kwargs"])
    for key in block["_kw_requires_import"]:
        if resolved.get(key) is not None:
            kwargs[key] = f"{resolved[key].__module__}.{resolved[key].__qualname__}"
    form = family_of(spec["arch"]).nnunet  # the names nnU-Net's nnssl route reads for this class, besides
    kwargs.update({new: kwargs[own] for new, own in form.nnssl_names.items()})  # type: ignore[union-attr]
    return block["network_class_name"].rsplit(".", 1)[-1], kwargs


def _configuration(crop: Sequence[int], spacing_mm: Sequence[float] | None, channels: int) -> tuple[str, dict]:
    """The pretraining plan's one configuration (nnssl's ``ConfigurationPlan`` fields, no others)."""
    iso = spacing_mm is not None and len(set(map(float, spacing_mm))) == 1
    style = "noresample" if spacing_mm is None else "onemmiso" if iso and float(spacing_mm[0]) == 1.0 else "fixed"
    resample = {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None}
    return style, {
        "data_identifier": f"asa_{style}", "preprocessor_name": "DefaultPreprocessor", "spacing_style": style,
        # asa z-scores inside the brain and sets 0 outside: nnU-Net's ZScoreNormalization with the mask
        "normalization_schemes": ["ZScoreNormalization"] * channels, "use_mask_for_norm": [True] * channels,
        "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_data_kwargs": resample,
        "resampling_fn_mask": "resample_data_or_seg_to_shape", "resampling_fn_mask_kwargs": {**resample, "order": 1},
        "spacing": [float(s) for s in spacing_mm] if spacing_mm is not None else None,
        "patch_size": [int(c) for c in crop],
    }


def nnssl_adaptation_plan(spec: Mapping[str, Any], net: torch.nn.Module, *, spacing_mm: Sequence[float] | None,
                          dataset: str = "asa", source: str = "the export") -> dict[str, Any]:
    """The ``nnssl_adaptation_plan`` of the network ``spec`` built as ``net`` (the network nnU-Net builds of it,
    whose declared transfer keys it records), pretrained at ``spacing_mm`` (None: the images' own grid) on the data
    named ``dataset``; plus nnU-Net's ``pretrain_patch_size`` and ``architecture_kwargs``."""
    arch_class, arch_kwargs = _nnssl_arch(spec, source)
    kwargs = spec.get("kwargs") or {}
    crop = list(crop_edges(kwargs["img_size"]))
    channels = int(kwargs.get("in_channels", 1))
    name, config = _configuration(crop, spacing_mm, channels)
    keys = encoder_keys(net)  # as the network declares them
    return {
        "architecture_plans": {"arch_class_name": arch_class, "arch_kwargs": arch_kwargs,
                               "arch_kwargs_requiring_import": [k for k, v in arch_kwargs.items() if isinstance(v, str)]},
        "pretrain_plan": {
            "dataset_name": str(dataset), "plans_name": "asaPlans",
            "original_median_spacing_after_transp": config["spacing"],
            "image_reader_writer": READER, "transpose_forward": list(TRANSPOSE),
            "transpose_backward": list(TRANSPOSE), "configurations": {name: config},
            "experiment_planner_used": "asa-pretrain"},
        "pretrain_num_input_channels": channels,
        "recommended_downstream_patchsize": crop,
        "key_to_encoder": keys.encoder, "key_to_stem": keys.stem,
        "keys_to_in_proj": list(keys.in_proj), "key_to_lpe": getattr(net, "key_to_lpe", None),
        # read by nnU-Net's PretrainedTrainer / DynamicPretrainedTrainer, never written by nnssl
        "pretrain_patch_size": crop,
        "architecture_kwargs": dict(arch_kwargs),
    }


def published_plan(published: Mapping[str, Any], spec: Mapping[str, Any], source: str = "the export") -> dict[str, Any]:
    """The adaptation plan of a published file (``published["adaptation_plan"]``, `asa.io.foreign`) as it is, every
    field it states unchanged (architecture, pretraining plan, transfer keys), plus the two fields nnU-Net reads
    and nnssl never writes when the file lacks them: ``pretrain_patch_size`` (its configuration's patch) and
    ``architecture_kwargs`` (the topology asa read off its tensors)."""
    plan = copy.deepcopy(dict(published["adaptation_plan"]))
    configs = (plan.get("pretrain_plan") or {}).get("configurations") or {}
    patch = next(iter(configs.values()), {}).get("patch_size") if configs else None
    crop = list(crop_edges(spec["kwargs"]["img_size"]))
    plan.setdefault("pretrain_patch_size", list(patch) if patch else crop)
    plan.setdefault("architecture_kwargs", _nnssl_arch(spec, source)[1])
    return plan


def nnssl_checkpoint(export: Mapping[str, Any], *, spacing_mm: Sequence[float] | None = None, dataset: str = "asa",
                     trainer: str = "asa-pretrain", source: str = "the export", seed: int = 0,
                     published: Mapping[str, Any] | None = None, extra: Mapping[str, Any] | None = None
                     ) -> dict[str, Any]:
    """``checkpoint_final.pth`` of nnssl for the encoder export ``export``: ``network_weights`` (the whole network
    nnU-Net builds of it, at the encoder's own channels: stem and encoder from the export, the decoder and heads
    as nnU-Net initialises them, seeded, since nnU-Net takes only the stem and encoder), the adaptation plan,
    ``trainer_name`` and ``current_epoch`` (the export's step). The plan and trainer are asa's
    (:func:`nnssl_adaptation_plan`, ``spacing_mm``, ``dataset``, ``trainer``) unless ``published`` holds a published
    file's own (`asa.io.foreign`'s ``published``: its plan, trainer and ``citations``, written again unchanged,
    :func:`published_plan`). ``extra``: more top-level entries (asa-export's ``cohort`` and ``license``). Tensors,
    strings, numbers, None and plain containers only, so ``torch.load(weights_only=True)`` reads it; tensors that
    share storage (nnU-Net's decoder holds the encoder) stay shared, so the file is the size of nnssl's own."""
    net = nnunet_network(export, source=source, seed=seed)
    weights = dict(net.state_dict())  # detached, the network's own: a tensor held under two keys is saved once
    if published is not None and published.get("adaptation_plan"):
        plan = published_plan(published, export["network"], source)
        trainer = published.get("trainer_name") or trainer
    else:
        plan = nnssl_adaptation_plan(export["network"], net, spacing_mm=spacing_mm, dataset=dataset, source=source)
    citations = list((published or {}).get("citations") or [])
    return {"network_weights": weights, "nnssl_adaptation_plan": plan, "trainer_name": str(trainer),
            "current_epoch": int(export.get("step") or 0), "init_args": {"source": str(export.get("source") or source)},
            **({"citations": citations} if citations else {}), **dict(extra or {})}
