"""Published nnU-Net-family checkpoints of other projects (residual-encoder U-Nets above all), read as encoder
exports.

Two layouts are recognised by their top-level keys (the files hold nothing else that tells them apart):

``nnssl`` (nnssl / OpenMind ResEnc-L, MIC-DKFZ/nnssl)
    ``{"network_weights": state dict, "nnssl_adaptation_plan": plan, "trainer_name", "init_args", ...}``
    written by ``AbstractBaseTrainer.save_checkpoint`` (``src/nnssl/training/nnsslTrainer/AbstractTrainer.py``;
    the released files went through ``src/nnssl/utilities/add_adaptation_plan.py``, which drops the optimiser
    state). The state dict is dynamic-network-architectures' ``ResidualEncoderUNet``'s (``encoder.stem.*``,
    ``encoder.stages.*``, ``decoder.*``): asa's ``resenc`` keys, taken as they are. The adaptation plan
    (``src/nnssl/adaptation_planning/adaptation_plan.py``) gives the architecture (``ResEncL``, or a dynamic class,
    ``ResidualEncoderUNet`` or ``PlainConvUNet``, with its ``arch_kwargs``), ``key_to_encoder`` / ``key_to_stem``
    (must be ``encoder.stages`` / a key under ``encoder.``), ``pretrain_num_input_channels``,
    ``recommended_downstream_patchsize`` and the pretraining plan's configuration (``spacing``,
    ``normalization_schemes``, ``patch_size``); a ``ResEncL`` plan without ``arch_kwargs`` (the released
    files) has the preset's strides. nnssl's SparK3D trainers save a convolution's ``conv`` and
    ``all_modules.0`` (one module here) as two, training only the latter: for their files the ``all_modules``
    twin is taken and the report says so. A file with ``network_weights`` and no plan (an nnU-Net v2
    ``checkpoint_final.pth``) is read the same way, its topology from the tensors (layout ``nnunet``).
``amaes`` (AMAES ResEnc-B: asparagus on gardening_tools, a PyTorch Lightning checkpoint)
    ``{"state_dict": {"model.encoder.*", "model.decoder.*"}, "hyper_parameters", "epoch", ...}``
    (``model._orig_mod.`` when the module was compiled; asparagus
    ``asparagus/modules/lightning_modules/base_module.py``). The network is gardening_tools'
    ``ResidualEncoderUNet`` (``gardening_tools/modules/networks/resunet.py``; encoder
    ``components/encoders.py``, blocks ``components/blocks.py``) as ``resenc_unet_b`` builds it
    (``asparagus/modules/networks/resenc_unet.py``: features 32..320, blocks (1, 3, 4, 6, 6, 6), stride 2,
    3³ kernels, average-pool shortcuts): the same tensors as nnU-Net's ResEnc-L under other names, which
    are renamed here (stem ``conv1`` -> ``convs.0``, a convolution's norm ``norm_op`` -> ``norm``; ``conv``,
    ``all_modules.i``, ``skip.1`` and the block numbering are the same). Its decoder is gardening_tools' own
    and is left out. The file records no spacing, normalisation or patch (its ``hyper_parameters`` may hold
    ``target_size``).

:func:`read_foreign` turns either into an encoder export without its network spec (``encoder``, ``source``,
``step``, and ``cohort`` when the file carries asa's cohort record) plus ``foreign``: the layout, the network in
nnU-Net's terms (``network_class``: the dynamic-network-architectures class, ``arch_kwargs``: its topology as the
plan states it or, for the residual-encoder U-Net, as its tensors show it; ``input_channels``; ``crop``), the
adaptation plan as far as the file states it, what was left out, and ``published``: the file's own plan, trainer,
citations and licence as it holds them, which asa-export writes again unchanged. The network family that
declares that class for nnU-Net gives the spec (`asa.models.load_weights`). Floating tensors are cast to
float32 (their stored dtype is reported). This module reads dicts only: it imports nothing of asa outside `asa.io`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = ["FOREIGN_LAYOUTS", "describe_foreign", "foreign_layout", "read_foreign"]

FOREIGN_LAYOUTS = ("nnssl", "nnunet", "amaes")
ENCODER = "encoder."
STEM = "encoder.stem.convs.0.conv.weight"
AMAES_STEM = "encoder.stem.conv1.conv.weight"
AMAES_PREFIXES = ("model._orig_mod.", "model.")
RESENC = "ResidualEncoderUNet"  # dynamic-network-architectures' residual-encoder U-Net, nnU-Net's ResEnc
PRESET_CLASSES = {"ResEncL": RESENC}  # nnssl's architecture presets (architecture_registry.py) -> the class they build
_BLOCK = re.compile(r"^encoder\.stages\.(\d+)\.blocks\.(\d+)\.conv1\.conv\.weight$")


def _strip(key: str) -> str:
    """A key without the DDP (``module.``) and torch.compile (``_orig_mod.``) prefixes."""
    for prefix in ("module.", "_orig_mod."):
        key = key.removeprefix(prefix)
    return key


def foreign_layout(blob: Mapping[str, Any]) -> str | None:
    """The published layout of a loaded file (`FOREIGN_LAYOUTS`), None for anything else (asa's own)."""
    if "network" in blob:  # asa's files record their network spec
        return None
    if isinstance(blob.get("network_weights"), Mapping):
        return "nnssl" if isinstance(blob.get("nnssl_adaptation_plan"), Mapping) else "nnunet"
    state = blob.get("state_dict")
    if isinstance(state, Mapping) and any(k.startswith(p + "encoder.") for k in state for p in AMAES_PREFIXES):
        return "amaes"
    return None


def _amaes_key(key: str) -> str:
    """A gardening_tools residual-encoder key in dynamic-network-architectures' naming."""
    key = key.replace("encoder.stem.conv1.", "encoder.stem.convs.0.", 1)
    return key.replace(".norm_op.", ".norm.")


def _topology(weights: Mapping[str, torch.Tensor], path: Path) -> dict[str, Any]:
    """features / blocks per stage, kernel and input channels, read off the encoder tensors."""
    stages: dict[int, dict[int, torch.Tensor]] = {}
    for key, value in weights.items():
        if (m := _BLOCK.match(key)) is not None:
            stages.setdefault(int(m[1]), {})[int(m[2])] = value
    if STEM not in weights or not stages:
        raise ValueError(f"{path}: no residual-encoder stem ({STEM}) or stages (encoder.stages.<s>.blocks.<b>.*): "
                         "not a residual-encoder U-Net checkpoint")
    if sorted(stages) != list(range(len(stages))):
        raise ValueError(f"{path}: encoder stages {sorted(stages)} are not numbered 0..{len(stages) - 1}")
    kernels = {tuple(v.shape[2:]) for blocks in stages.values() for v in blocks.values()}
    if kernels != {(3, 3, 3)}:
        raise ValueError(f"{path}: encoder kernels {sorted(kernels)}; asa's resenc has 3x3x3 convolutions")
    return {"features": [int(stages[s][0].shape[0]) for s in sorted(stages)],
            "blocks": [len(stages[s]) for s in sorted(stages)],
            "in_channels": int(weights[STEM].shape[1])}


def _nnssl_plan(plan: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """What asa uses of an nnssl adaptation plan: the architecture (its class, and the ``arch_kwargs`` it states),
    the pretraining configuration and the transfer keys, which must name the encoder under ``encoder.``."""
    arch = (plan.get("architecture_plans") or {}).get("arch_class_name")
    for field, ok in (("key_to_encoder", lambda key: key == "encoder.stages"),
                      ("key_to_stem", lambda key: isinstance(key, str) and key.startswith(ENCODER))):
        if not ok(plan.get(field)):
            raise ValueError(f"{path}: nnssl_adaptation_plan.{field}={plan.get(field)!r}, expected "
                             + ("'encoder.stages'" if field == "key_to_encoder" else "a key under 'encoder.'"))
    configs = (plan.get("pretrain_plan") or {}).get("configurations") or {}
    name, config = next(iter(configs.items()), (None, {}))
    kwargs = (plan.get("architecture_plans") or {}).get("arch_kwargs") or {}
    strides = kwargs.get("strides")
    named = str(arch).split(".")[-1]
    return {
        "architecture": arch, "network_class": PRESET_CLASSES.get(named, named), "arch_kwargs": dict(kwargs) or None,
        "configuration": name,
        "spacing_mm": config.get("spacing"), "spacing_style": config.get("spacing_style"),
        "normalization": config.get("normalization_schemes"), "pretrain_patch": config.get("patch_size"),
        "recommended_patch": plan.get("recommended_downstream_patchsize"),
        "input_channels": plan.get("pretrain_num_input_channels"),
        "in_proj": [f"{k}.weight" for k in plan.get("keys_to_in_proj") or ()],
        "strides": [int(s[0]) if isinstance(s, (list, tuple)) else int(s) for s in strides] if strides else None,
        "decoder_convs": list(kwargs["n_conv_per_stage_decoder"]) if kwargs.get("n_conv_per_stage_decoder") else None,
    }


# one module under two names in dynamic-network-architectures' ConvDropoutNormReLU (``all_modules`` is
# [conv, norm, nonlin] without dropout); nnssl's SparK3D conversion (src/nnssl/architectures/spark_utils.py,
# convert_to_spark_cnn) rebuilds each name as its own module, and only the ``all_modules`` copy is trained
_ALIASES = ((".conv.", ".all_modules.0."), (".norm.", ".all_modules.1."))


def _resolve_aliases(weights: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """``weights`` with every ``conv`` / ``norm`` tensor that differs from its ``all_modules`` twin replaced by
    the twin (the trained copy of a SparK3D file; nnU-Net's loader ends with it too), and the keys replaced.
    Applied to files of nnssl's Spark trainers only (``trainer_name``): elsewhere twins that differ mean a
    damaged file, which the transfer refuses."""
    replaced = []
    for key in sorted(weights):
        for own, twin in _ALIASES:
            if own in key:
                other = key.replace(own, twin, 1)
                value, trained = weights[key], weights.get(other)
                if (isinstance(trained, torch.Tensor) and trained.shape == value.shape
                        and not torch.equal(trained, value)):
                    weights[key] = trained
                    replaced.append(key)
    return weights, replaced


def _amaes_plan(blob: Mapping[str, Any]) -> dict[str, Any]:
    """What an AMAES Lightning checkpoint states of its pretraining (its hyper-parameters, when kept)."""
    hp = blob.get("hyper_parameters") if isinstance(blob.get("hyper_parameters"), Mapping) else {}
    patch = hp.get("target_size") or hp.get("pretrained_target_size")
    return {"architecture": "gardening_tools ResidualEncoderUNet (resenc_unet_b)", "configuration": None,
            "spacing_mm": None, "spacing_style": None, "normalization": None,
            "pretrain_patch": list(patch) if patch else None, "recommended_patch": list(patch) if patch else None,
            "input_channels": None, "strides": None, "decoder_convs": None, "amaes": True}


def _nnunet_plan(blob: Mapping[str, Any]) -> dict[str, Any]:
    """What an nnU-Net v2 checkpoint states of its training: the configuration its ``init_args`` name, and that
    configuration's patch and spacing in the plans it carries (nnUNetTrainer.save_checkpoint keeps both)."""
    init = blob.get("init_args") if isinstance(blob.get("init_args"), Mapping) else {}
    name, plans = init.get("configuration"), init.get("plans")
    configs = plans.get("configurations") if isinstance(plans, Mapping) else None
    config = configs.get(name) if isinstance(configs, Mapping) and isinstance(name, str) else None
    if not isinstance(config, Mapping):
        return {}
    return {"configuration": name, "pretrain_patch": config.get("patch_size"), "spacing_mm": config.get("spacing")}


def _crop(plan: Mapping[str, Any], total_stride: int, path: Path) -> tuple[int, str]:
    """The crop edge the checkpoint recommends (isotropic, a multiple of the total stride), and where it came from."""
    for field in ("recommended_patch", "pretrain_patch"):
        patch = plan.get(field)
        if patch:
            edges = [int(p) for p in patch]
            edge = min(edges) - min(edges) % total_stride
            if edge >= 2 * total_stride:
                note = f"the file's {field} {edges}" + (f" -> {edge} (isotropic, a multiple of {total_stride})"
                                                        if set(edges) != {edge} else "")
                return edge, note
    edge = 5 * total_stride
    return edge, (f"not recorded in the file: 5 x the total stride {total_stride}"
                  + (" (as AMAES pretrained ResEnc-B at 160 = 5 x 32)" if plan.get("amaes") else ""))


def read_foreign(path: str | os.PathLike, blob: Mapping[str, Any]) -> dict[str, Any] | None:
    """A loaded published checkpoint (``blob``, read from ``path``) as an encoder export whose network is said in
    nnU-Net's terms (see the module), or None when ``blob`` is no published layout. Refused (``ValueError`` naming
    the file and the keys or plan field at fault) when its encoder tensors do not form the network it states."""
    layout = foreign_layout(blob)
    if layout is None:
        return None
    path = Path(path)
    if layout == "amaes":
        state = blob["state_dict"]
        prefix = next(p for p in AMAES_PREFIXES if any(k.startswith(p + "encoder.") for k in state))
        named = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if AMAES_STEM not in named:
            raise ValueError(f"{path}: an AMAES (Lightning) checkpoint without its stem {prefix}{AMAES_STEM}")
        weights = {_amaes_key(k): v for k, v in named.items() if k.startswith(ENCODER)}
        left_out = sorted(prefix + k for k in named if not k.startswith(ENCODER))
        plan = _amaes_plan(blob)
        step = int(blob.get("global_step") or 0)
    else:
        state = {_strip(k): v for k, v in blob["network_weights"].items()}
        weights = {k: v for k, v in state.items() if k.startswith(ENCODER)}
        left_out = sorted(k for k in state if not k.startswith(ENCODER))
        plan = _nnssl_plan(blob["nnssl_adaptation_plan"], path) if layout == "nnssl" else _nnunet_plan(blob)
        if layout == "nnunet":
            plan["architecture"] = blob.get("trainer_name") or "nnU-Net v2 network"
        step = int(blob.get("current_epoch") or 0)
    not_tensors = sorted(k for k, v in weights.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        raise ValueError(f"{path}: encoder entries that are not tensors: {', '.join(not_tensors[:5])}")
    dtypes = sorted({str(v.dtype).removeprefix("torch.") for v in weights.values()})
    weights = {k: v.float() if v.is_floating_point() else v for k, v in weights.items()}
    aliased: list[str] = []
    if "spark" in str(blob.get("trainer_name") or "").lower():  # only nnssl's SparK3D trainers train one twin
        weights, aliased = _resolve_aliases(weights)
    network_class = plan.get("network_class") or RESENC  # nnU-Net's and AMAES's files: the residual encoder's
    if network_class == RESENC:  # the topology read off the tensors (a ResEnc-L plan states none)
        topo = _topology(weights, path)
        in_channels = topo["in_channels"]
        stages = len(topo["features"])
        strides = plan.get("strides") or [1] + [2] * (stages - 1)
        decoder_convs = plan.get("decoder_convs") or [1] * (stages - 1)
        if len(strides) != stages or len(decoder_convs) != stages - 1:
            raise ValueError(f"{path}: the plan's strides {strides} / decoder convs {decoder_convs} do not fit the "
                             f"{stages} encoder stages of the tensors")
        arch_kwargs = {"n_stages": stages, "features_per_stage": topo["features"],
                       "strides": [int(s) for s in strides], "n_blocks_per_stage": topo["blocks"],
                       "n_conv_per_stage_decoder": [int(c) for c in decoder_convs]}
        where = STEM
    else:  # another architecture: as the plan states it, the input channels off its input projection
        arch_kwargs = plan.get("arch_kwargs")
        if not arch_kwargs or not arch_kwargs.get("strides"):
            raise ValueError(f"{path}: nnssl_adaptation_plan.architecture_plans.arch_kwargs states no strides of the "
                             f"{network_class}; asa reads an architecture other than the residual-encoder U-Net "
                             "from its plan's arch_kwargs")
        where = next((k for k in plan.get("in_proj") or () if k in weights), None)
        if where is None:
            raise ValueError(f"{path}: no input projection of the plan's keys_to_in_proj "
                             f"({', '.join(plan.get('in_proj') or ()) or 'none'}) among the encoder tensors")
        in_channels = int(weights[where].shape[1])
        strides = [int(s[0]) if isinstance(s, (list, tuple)) else int(s) for s in arch_kwargs["strides"]]
    total = 1
    for s in strides:
        total *= int(s)
    crop, crop_note = _crop(plan, total, path)
    declared = plan.get("input_channels")
    if declared is not None and int(declared) != in_channels:
        raise ValueError(f"{path}: the plan declares {declared} input channel(s), the stem {where} takes "
                         f"{in_channels}")
    info = {"layout": layout, "file": str(path), "dtypes": dtypes, "crop": crop, "crop_from": crop_note,
            "left_out": left_out, **{k: plan.get(k) for k in ("architecture", "configuration", "spacing_mm",
                                                               "spacing_style", "normalization", "pretrain_patch",
                                                               "recommended_patch")},
            "input_channels": in_channels, "network_class": network_class, "arch_kwargs": _plain(arch_kwargs),
            "aliases_resolved": aliased, "published": _published(blob, layout)}
    export = {"encoder": weights, "source": f"{layout}:{path.name}", "step": step, "foreign": info}
    if blob.get("cohort") is not None:  # asa-export's nnssl / nnU-Net files carry the pretraining cohort (plain strings)
        export["cohort"] = blob["cohort"]
    return export


def _plain(value: Any) -> Any:
    """``value`` as JSON holds it: mappings, lists, strings, numbers, booleans and None (tuples become lists, any
    other object its text), so that a published plan can be written again unchanged into JSON and torch files."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # a numpy or torch scalar
        return value.item()
    return str(value)


def _published(blob: Mapping[str, Any], layout: str) -> dict[str, Any]:
    """What a published file states of itself, kept as it is so that a re-export writes it again: nnssl's
    ``nnssl_adaptation_plan`` (the pretraining plan: dataset, spacing, normalisation, reader, transposes),
    ``trainer_name``, ``citations`` (the papers nnU-Net's ``PretrainedTrainer`` prints) and a ``license`` when the
    file records one (nnssl writes none; asa-export's files do)."""
    plan = blob.get("nnssl_adaptation_plan") if layout == "nnssl" else None
    license_id = blob.get("license")
    return {"layout": layout, "trainer_name": str(blob["trainer_name"]) if blob.get("trainer_name") else None,
            "adaptation_plan": _plain(plan) if isinstance(plan, Mapping) else None,
            "citations": _plain(blob["citations"]) if isinstance(blob.get("citations"), (list, tuple)) else [],
            "license": str(license_id) if isinstance(license_id, str) and license_id else None}


def describe_foreign(info: Mapping[str, Any]) -> list[str]:
    """The adaptation plan of a published checkpoint as report lines: each item and what asa does with it."""
    spacing = info.get("spacing_mm")
    norm = info.get("normalization")
    return [
        f"published layout: {info['layout']} ({info.get('architecture')}), stored dtype "
        f"{'/'.join(info.get('dtypes') or [])} -> float32; left out: {len(info.get('left_out') or [])} tensors "
        "outside the encoder (pretraining decoder, heads)",
        f"plan crop: {info['crop']} ({info['crop_from']}); asa-finetune follows it when data.crop is unset",
        "plan spacing: " + (f"{spacing} mm ({info.get('spacing_style')})" if spacing else "not recorded")
        + "; stated, not applied: asa-finetune uses the images' own grid (resample them to it beforehand)",
        "plan normalisation: " + (", ".join(map(str, norm)) if norm else "not recorded")
        + "; stated, not applied: asa clips to brain percentiles and z-scores inside the brain",
        f"plan input channels: {info.get('input_channels')}; a 1-channel stem is repeated over the task's "
        "channels and divided by their number",
    ] + ([f"{len(info['aliases_resolved'])} conv / norm tensors differed from their all_modules twin (one module of "
          "the network; a SparK3D conversion trains only the all_modules copy): the all_modules tensors were taken "
          f"({', '.join(info['aliases_resolved'][:2])}{' ...' if len(info['aliases_resolved']) > 2 else ''})"]
         if info.get("aliases_resolved") else [])
