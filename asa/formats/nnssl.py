"""nnssl's files of an encoder (format ``nnssl``): ``checkpoint_final.pth`` and ``adaptation_plan.json``.

nnssl saves ``{"network_weights", "nnssl_adaptation_plan", "trainer_name", ...}``, the plan being
``AdaptationPlan.serialize()``; nnU-Net's nnssl route (``pretrainedTrainer.py``) loads it with
``torch.load(weights_only=True)``, takes the weights under ``key_to_encoder`` / ``key_to_stem`` strictly and reads two
fields nnssl never writes (``pretrain_patch_size``, ``architecture_kwargs``). The network is the one the family
declares for nnU-Net (`asa.models.family.NNUNetForm`), its transfer keys read off it (`asa.models.keys`).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from asa.formats.base import ENCODER, Format, Job, Part, family_fault, register_format
from asa.formats.nnunet import READER, TRANSPOSE, located, nnunet_architecture, nnunet_network, resampling
from asa.io import atomic_write_json, save_checkpoint
from asa.io.hub import NNSSL_CHECKPOINT, NNSSL_PLAN
from asa.models.declared import crop_edges
from asa.models.family import family_of
from asa.models.keys import encoder_keys

__all__ = ["NNSSL", "NNSSL_CHECKPOINT", "NNSSL_PLAN", "nnssl_adaptation_plan", "nnssl_checkpoint",
           "published_plan", "route_note", "route_plans_name"]



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
    return style, {
        "data_identifier": f"asa_{style}", "preprocessor_name": "DefaultPreprocessor", "spacing_style": style,
        # asa z-scores inside the brain and sets 0 outside: nnU-Net's ZScoreNormalization with the mask
        "normalization_schemes": ["ZScoreNormalization"] * channels, "use_mask_for_norm": [True] * channels,
        **resampling(native=False, data=3, mask=1),
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


def route_note(pretrain_plan: Mapping[str, Any]) -> str:
    """The card's note on nnU-Net's nnssl route, of a file whose ``pretrain_plan`` is given: the route builds its plans
    from the dataset's own and reads neither the reader nor the transposes the file states, so without them the encoder
    meets left-right wherever each file's stored orientation put it (benchmarks/nnunet_nnssl_route.py). Empty when the
    plan states neither."""
    reader, transpose = pretrain_plan.get("image_reader_writer"), pretrain_plan.get("transpose_forward")
    if reader is None or transpose is None:
        return ""
    return (" That route builds its plans from the dataset's own and reads neither the reader nor the transposes of "
            f"this file's plan: give the dataset both, `\"overwrite_image_reader_writer\": \"{reader}\"` in its "
            f"`dataset.json` before planning and `transpose_forward` and `transpose_backward` `{list(transpose)}` in "
            "its plans before the route (docs/weights-elsewhere.md).")


def route_plans_name(pretraining_name: str, spacing: Sequence[float | None], channels: int) -> str:
    """The plans name nnU-Net's ``nnUNetv2_preprocess_like_nnssl -n pretraining_name`` writes (``-p`` of training and
    prediction), as ``like_nnssl.py`` composes it: the target spacing in mm to two decimals (``None`` for
    ``-am no_resample``) and one ``Z`` per image channel of the dataset (its z-score per channel)."""
    edges = "_".join("None" if s is None else f"{float(s):.2f}" for s in spacing)
    return f"ptPlans__{pretraining_name}____Spacing__{edges}___Norm__{'_'.join(['Z'] * int(channels))}"


def nnssl_checkpoint(export: Mapping[str, Any], *, spacing_mm: Sequence[float] | None = None, dataset: str = "asa",
                     trainer: str = "asa-pretrain", source: str = "the export", seed: int = 0,
                     published: Mapping[str, Any] | None = None, extra: Mapping[str, Any] | None = None
                     ) -> dict[str, Any]:
    """nnssl's ``checkpoint_final.pth`` of the encoder export ``export``: ``network_weights`` (the network nnU-Net
    builds of it: stem and encoder from the export, the rest as nnU-Net initialises it, seeded), the adaptation plan
    (asa's, :func:`nnssl_adaptation_plan`, or a ``published`` file's own with its trainer and citations),
    ``trainer_name``, ``current_epoch`` and ``extra`` entries; plain types only (``torch.load(weights_only=True)``),
    tensors that share storage saved once."""
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


class Nnssl(Format):
    """nnssl's ``checkpoint_final.pth`` and ``adaptation_plan.json`` beside the model folder, of an encoder whose
    family declares how nnU-Net builds it; a published file's own plan, trainer and citations are carried again."""

    name, level, files = "nnssl", ENCODER, (NNSSL_CHECKPOINT, NNSSL_PLAN)

    def fault(self, spec: Mapping[str, Any]) -> str | None:
        return family_fault(spec, "nnssl", lambda family: family.nnunet is not None)

    def part(self, job: Job) -> Part:
        export, config = job.export, job.config
        assert export is not None
        published = config.get("published")
        extra = {"license": config["license"],
                 **({"citations": config["citations"]} if config.get("citations") and not published else {}),
                 **({"cohort": export["cohort"]} if export.get("cohort") is not None else {})}
        nnssl = nnssl_checkpoint(export, spacing_mm=config.get("spacing_mm"), source=str(job.source),
                                 dataset=(config.get("data") or {}).get("name") or "asa",
                                 trainer=f"asa:{config.get('method') or 'unknown method'}", published=published,
                                 extra=extra)
        plan = {**nnssl["nnssl_adaptation_plan"], "trainer_name": nnssl["trainer_name"]}  # nnssl's released layout
        return Part({NNSSL_CHECKPOINT: lambda path: save_checkpoint(path, nnssl),
                     NNSSL_PLAN: lambda path: atomic_write_json(path, plan)},
                    f"\n`{NNSSL_CHECKPOINT}` and `{NNSSL_PLAN}` are the encoder in nnssl's format: "
                    "`nnUNetv2_preprocess_like_nnssl -pc` takes the file, or this folder's hub address."
                    + route_note(plan.get("pretrain_plan") or {}) + "\n")


NNSSL = register_format(Nnssl())
