"""Published checkpoints of other projects (nnssl, nnU-Net v2, AMAES), read as their layouts hold them.

Three layouts are recognised by their top-level keys (the files hold nothing else that tells them apart):

``nnssl`` (nnssl / OpenMind, MIC-DKFZ/nnssl)
    ``{"network_weights": state dict, "nnssl_adaptation_plan": plan, "trainer_name", "init_args", ...}``
    written by ``AbstractBaseTrainer.save_checkpoint`` (``src/nnssl/training/nnsslTrainer/AbstractTrainer.py``;
    the released files went through ``src/nnssl/utilities/add_adaptation_plan.py``, which drops the optimiser
    state). The adaptation plan (``src/nnssl/adaptation_planning/adaptation_plan.py``) gives the architecture (a
    class, ``ResidualEncoderUNet``, ``PlainConvUNet``, with its ``arch_kwargs``, or one of nnssl's presets,
    ``ResEncL``, ``PrimusM``, ..., without them), the transfer keys (``key_to_encoder``, ``key_to_stem``,
    ``keys_to_in_proj``, ``key_to_lpe``), ``pretrain_num_input_channels``, ``recommended_downstream_patchsize`` and
    the pretraining plan's configuration (``spacing``, ``normalization_schemes``, ``patch_size``). A file with
    ``network_weights`` and no plan (an nnU-Net v2 ``checkpoint_final.pth``) is layout ``nnunet``: the
    configuration its ``init_args`` name, that configuration's patch and spacing in the plans it carries.
``amaes`` (AMAES: asparagus on gardening_tools, a PyTorch Lightning checkpoint)
    ``{"state_dict": {"model.*"}, "hyper_parameters", "epoch", ...}`` (``model._orig_mod.`` when the module was
    compiled; asparagus ``asparagus/modules/lightning_modules/base_module.py``): the network's tensors under that
    prefix; no spacing, normalisation or patch (its ``hyper_parameters`` may hold ``target_size``).

:func:`read_foreign` gives the file as it states itself: ``weights``, the network's state dict (the DDP, compile
and Lightning prefixes stripped), ``source``, ``step``, ``cohort`` when the file carries asa's cohort record, and
``foreign``: the layout, the file, the plan as far as the file states it and ``published``, the file's own plan,
trainer, citations and licence as it holds them, which asa-export writes again unchanged. Which of the tensors
are the encoder and what network they form is the architecture's own: the network family that declares that
architecture for nnU-Net reads it (`asa.models.family.NNUNetForm`, `asa.models.published`). This module reads
dicts only: it imports nothing of asa outside `asa.io`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = ["FOREIGN_LAYOUTS", "describe_foreign", "foreign_layout", "plain", "plan_crop", "read_foreign"]

FOREIGN_LAYOUTS = ("nnssl", "nnunet", "amaes")
LIGHTNING_PREFIXES = ("model._orig_mod.", "model.")  # a Lightning module's network held as ``model`` (compiled first)


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
    if isinstance(state, Mapping) and any(isinstance(k, str) and k.startswith(LIGHTNING_PREFIXES) for k in state):
        return "amaes"
    return None


def _nnssl_plan(plan: Mapping[str, Any]) -> dict[str, Any]:
    """What asa uses of an nnssl adaptation plan: the architecture (its class or preset, and the ``arch_kwargs`` it
    states), the pretraining configuration and the transfer keys."""
    arch = plan.get("architecture_plans") or {}
    configs = (plan.get("pretrain_plan") or {}).get("configurations") or {}
    name, config = next(iter(configs.items()), (None, {}))
    return {
        "architecture": arch.get("arch_class_name"), "arch_kwargs": dict(arch.get("arch_kwargs") or {}) or None,
        "configuration": name,
        "spacing_mm": config.get("spacing"), "spacing_style": config.get("spacing_style"),
        "normalization": config.get("normalization_schemes"), "pretrain_patch": config.get("patch_size"),
        "recommended_patch": plan.get("recommended_downstream_patchsize"),
        "input_channels": plan.get("pretrain_num_input_channels"),
        **{key: plan.get(key) for key in ("key_to_encoder", "key_to_stem", "key_to_lpe")},
        "keys_to_in_proj": list(plan.get("keys_to_in_proj") or ()),
    }


def _amaes_plan(blob: Mapping[str, Any]) -> dict[str, Any]:
    """What an AMAES Lightning checkpoint states of its pretraining (its hyper-parameters, when kept)."""
    hp = blob.get("hyper_parameters") if isinstance(blob.get("hyper_parameters"), Mapping) else {}
    patch = hp.get("target_size") or hp.get("pretrained_target_size")
    return {"architecture": None, "configuration": None, "spacing_mm": None, "spacing_style": None,
            "normalization": None, "pretrain_patch": list(patch) if patch else None,
            "recommended_patch": list(patch) if patch else None, "input_channels": None}


def _nnunet_plan(blob: Mapping[str, Any]) -> dict[str, Any]:
    """What an nnU-Net v2 checkpoint states of its training: the configuration its ``init_args`` name, and that
    configuration's patch and spacing in the plans it carries (nnUNetTrainer.save_checkpoint keeps both)."""
    init = blob.get("init_args") if isinstance(blob.get("init_args"), Mapping) else {}
    name, plans = init.get("configuration"), init.get("plans")
    configs = plans.get("configurations") if isinstance(plans, Mapping) else None
    config = configs.get(name) if isinstance(configs, Mapping) and isinstance(name, str) else None
    found = ({"configuration": name, "pretrain_patch": config.get("patch_size"), "spacing_mm": config.get("spacing")}
             if isinstance(config, Mapping) else {})
    return {**found, "architecture": blob.get("trainer_name") or "nnU-Net v2 network"}


def plan_crop(plan: Mapping[str, Any], total_stride: int) -> tuple[int, str]:
    """The crop edge a published file recommends (isotropic, a multiple of the network's total stride), and where
    it came from: its recommended patch, else its pretraining patch, else 5 x the total stride."""
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
                  + (" (as AMAES pretrained ResEnc-B at 160 = 5 x 32)" if plan.get("layout") == "amaes" else ""))


def read_foreign(path: str | os.PathLike, blob: Mapping[str, Any]) -> dict[str, Any] | None:
    """A loaded published checkpoint (``blob``, read from ``path``) as the file states itself (see the module), or
    None when ``blob`` is no published layout. Its network's tensors are taken as they are: which of them are the
    encoder is read by the family of its architecture (`asa.models.published`)."""
    layout = foreign_layout(blob)
    if layout is None:
        return None
    path = Path(path)
    if layout == "amaes":
        state = blob["state_dict"]
        prefix = next(p for p in LIGHTNING_PREFIXES if any(k.startswith(p) for k in state))
        weights = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        plan = {**_amaes_plan(blob), "prefix": prefix}
        step = int(blob.get("global_step") or 0)
    else:
        weights = {_strip(k): v for k, v in blob["network_weights"].items()}
        plan = {**(_nnssl_plan(blob["nnssl_adaptation_plan"]) if layout == "nnssl" else _nnunet_plan(blob)),
                "prefix": ""}
        step = int(blob.get("current_epoch") or 0)
    declared = plan.get("input_channels")
    info = {"layout": layout, "file": str(path), **plan, "input_channels": None if declared is None else int(declared),
            "trainer_name": str(blob["trainer_name"]) if blob.get("trainer_name") else None,
            "published": _published(blob, layout)}
    export = {"weights": weights, "source": f"{layout}:{path.name}", "step": step, "foreign": info}
    if blob.get("cohort") is not None:  # asa-export's nnssl / nnU-Net files carry the pretraining cohort (plain strings)
        export["cohort"] = blob["cohort"]
    return export


def plain(value: Any) -> Any:
    """``value`` as JSON holds it: mappings, lists, strings, numbers, booleans and None (tuples become lists, any
    other object its text), so that a published plan can be written again unchanged into JSON and torch files."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
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
            "adaptation_plan": plain(plan) if isinstance(plan, Mapping) else None,
            "citations": plain(blob["citations"]) if isinstance(blob.get("citations"), (list, tuple)) else [],
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
