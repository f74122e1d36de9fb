"""nnU-Net v2's files: an encoder as ``nnUNetv2_train -pretrained_weights`` takes it (format ``nnunet``, beside the
model folder) and a fine-tuned segmenter as a results folder nnU-Net's predictor runs (``nnunet-results``, alone).

The network is the one the family declares for nnU-Net (`asa.models.family.NNUNetForm`), built as nnU-Net builds
it from the plans' ``architecture`` block; a family without one is refused, naming it (the SW-ViT U-Net needs its
windows' place in the brain frame, which nnU-Net does not hand a network). The plans reproduce asa's reading of a
scan with nnU-Net's parts: ``NibabelIOWithReorient`` with ``transpose_forward`` [2, 1, 0] (left-right on axis 0),
``ZScoreNormalization`` with ``use_mask_for_norm`` (asa's own scheme for a run with ``data.percentiles`` [0, 100],
else without asa's percentile clip, which nnU-Net cannot state), the training cases' spacing as
asa-finetune recorded it (`TRAINING_SPACING`: the export reads no data) and the network's crop as patch.
"""

from __future__ import annotations

import json
import os
import pydoc
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from asa.data import Task
from asa.data.preprocessing import PERCENTILES, run_percentiles
from asa.formats.base import ENCODER, SEGMENTER, Format, Job, Option, Part, family_fault, register_format
from asa.formats.card import provenance, provenance_card
from asa.io import atomic_write_json, atomic_write_text, save_checkpoint
from asa.io.hub import CARD_FILE, NNUNET_PLANS, NNUNET_WEIGHTS
from asa.models.blocks.encoder_weights import match_file_encoder
from asa.models.declared import crop_edges
from asa.models.family import NNUNetForm, family_of
from asa.models.keys import encoder_keys

__all__ = ["CLIP_AGREEMENT", "CONFIGURATION", "DATASET_ID", "NNUNET", "NNUNET_CONFIGURATION", "NNUNET_RESULTS", "NNUNET_TRAINER",
           "READING_NOTE", "RESULTS_FILES", "TRAINING_SPACING", "NNUnetResults", "describe_nnunet", "located", "merge_nnunet_plans", "nnunet_architecture",
           "clip_warning", "nnunet_checkpoint", "nnunet_fault", "nnunet_network", "nnunet_plans_snippet", "nnunet_results",
           "results_card"]

NNUNET_CONFIGURATION = "3d_fullres_asa"
CLIP_AGREEMENT = {"clip": (0.825, 0.060), "no clip": (0.951, 0.500)}
"""nnU-Net's predictor against asa-predict on the results folder of a network fine-tuned with asa's default clip and
of one fine-tuned with ``data.percentiles=[0,100]``: lesion Dice between the two, mean and worst over 16 held-out
scans (``python -m benchmarks.nnunet_agreement``, benchmarks/results/nnunet-agreement-2026-11-26/,
docs/weights-elsewhere.md). The gap depends on how much of each scan the clip moves, so no export can measure it."""
TRAINING_SPACING = "training_spacing"  # the run config's record of its training cases' spacing (nnU-Net's median)


def nnunet_fault(spec: Mapping[str, Any]) -> str | None:
    """Why the network ``spec`` has no nnU-Net export: its family declares no nnU-Net form, or refuses the spec."""
    return family_fault(spec, "nnunet", lambda family: family.nnunet is not None)


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
    """The network nnU-Net builds of the encoder export ``export`` (:func:`nnunet_architecture`, 2 classes): the stem
    and encoder from the export (a 1-channel stem adapted to ``in_channels``), the rest as nnU-Net initialises it
    (the class's ``initialize``, seeded with ``seed``)."""
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
    """``-pretrained_weights``' file of the encoder export ``export``: the state dict of :func:`nnunet_network` but the
    segmentation heads (nnU-Net skips them), and what asa made it of."""
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


def describe_nnunet(spec: Mapping[str, Any]) -> str:
    """The command lines that use the nnU-Net files of the network ``spec`` (the card's nnU-Net v2 section): the plans
    merged, then ``nnUNetv2_train`` with the warm-up trainer the docs recommend
    (``NNUNET_TRAINER``); for a class that takes no ``deep_supervision`` (its family's `NNUNetForm`), what the trainer
    must do instead."""
    lines = (f"merge {NNUNET_PLANS} into nnUNet_preprocessed/DatasetXXX/<plans>.json "
             "(asa-export --nnunet-plans does it), then\n"
             f"nnUNetv2_train DatasetXXX {NNUNET_CONFIGURATION} FOLD -p <plans> -tr {NNUNET_TRAINER} "
             f"-pretrained_weights {NNUNET_WEIGHTS}")
    form: NNUNetForm = family_of(spec["arch"]).nnunet  # type: ignore[union-attr, assignment]
    if form.deep_supervision is None:
        lines += (f"\n# {form.class_name} takes no deep_supervision, which nnU-Net's trainers pass: -tr a trainer with "
                  "enable_deep_supervision = False whose build_network_architecture calls get_network_from_plans(..., "
                  "deep_supervision=None); -pretrained_weights checks every tensor but .seg_layers., the output "
                  "layer included: the file's network has 2 output classes (one foreground label)")
    return lines


def resampling(*, native: bool, **orders: int) -> dict[str, Any]:
    """A plans configuration's ``resampling_fn_<kind>`` and its kwargs for each kind of ``orders`` (the spline order):
    ``native``, nnU-Net's ``no_resampling_hack`` (every scan predicted on its own grid, as asa predicts a network
    trained without ``data.resample_mm``), else nnU-Net's default resampling to the plans' spacing, no separate z."""
    if native:
        return {key: value for kind in orders for key, value in (
            (f"resampling_fn_{kind}", "no_resampling_hack"), (f"resampling_fn_{kind}_kwargs", {}))}
    return {key: value for kind, order in orders.items() for key, value in (
        (f"resampling_fn_{kind}", "resample_data_or_seg_to_shape"),
        (f"resampling_fn_{kind}_kwargs", {"is_seg": kind == "seg", "order": order, "order_z": 0, "force_separate_z": None}))}


def merge_nnunet_plans(path: str | os.PathLike, snippet: Mapping[str, Any], *,
                       overwrite: bool = False) -> tuple[Path, dict[str, Any]]:
    """The nnU-Net plans file ``path`` with the configurations of ``snippet`` (``nnunet_plans.json``) added:
    (path, merged plans), nothing written. Refused (naming the file) when it is not a plans file, lacks the
    configuration the snippet inherits from (``3d_fullres``: plan and preprocess the dataset first), or already
    holds another ``3d_fullres_asa`` and not ``overwrite``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"--nnunet-plans {path}: no such file (nnUNetv2_plan_and_preprocess writes "
                                "$nnUNet_preprocessed/DatasetXXX/<plans name>.json)")
    try:
        plans = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"--nnunet-plans {path}: not readable JSON ({err})") from err
    configs = plans.get("configurations") if isinstance(plans, dict) else None
    if not isinstance(configs, dict):
        raise ValueError(f"--nnunet-plans {path}: no 'configurations': not an nnU-Net plans file")
    for name, config in snippet["configurations"].items():
        parent = config.get("inherits_from")
        if parent is not None and parent not in configs:
            raise ValueError(f"--nnunet-plans {path} has no configuration {parent!r}, which {name} inherits "
                             f"(configurations: {', '.join(sorted(configs))}); plan and preprocess the dataset first")
        if name in configs and configs[name] != config and not overwrite:
            raise ValueError(f"--nnunet-plans {path} already holds another {name} configuration; pass --overwrite "
                             "to replace it")
    return path, {**plans, "configurations": {**configs, **snippet["configurations"]}}


CONFIGURATION = "3d_fullres"
FOLD = "fold_all"
CHECKPOINT = "checkpoint_final.pth"
TRAINER = "nnUNetTrainer"
PLANS_NAME = "nnUNetPlans"
READER = "NibabelIOWithReorient"
TRANSPOSE = [2, 1, 0]  # NibabelIOWithReorient's arrays are (S-I, A-P, L-R) of RAS; asa's (L-R, P-A, I-S)
DATASET_ID = 975  # the folder's place under $nnUNet_results by default: Dataset975_asa_<task> (--dataset-id)
DATASET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # what follows DatasetXXX_ (--dataset-name)
RESULTS_FILES = ("README.md", "dataset.json", "plans.json", FOLD)
MIRRORING = (0, 1, 2)  # nnU-Net's default test-time mirroring (nnUNetPredictor use_mirroring=True)


class NNUnetResults(NamedTuple):
    """What the results folder holds, built before anything is written."""

    dataset: dict[str, Any]
    plans: dict[str, Any]
    checkpoint: dict[str, Any]
    spacing_from: str  # where the plans' spacing came from, for the card
    percentiles: tuple[float, float] = PERCENTILES  # the run's data.percentiles: asa's clip, which the card states


def _labels(task: Task, source: str) -> dict[str, Any]:
    """dataset.json's ``labels`` (and ``regions_class_order``) of ``task``; a class task whose values are not
    0..K-1 is refused (nnU-Net writes the argmax index as the label)."""
    if task.multilabel:
        labels: dict[str, Any] = {"background": 0}
        labels.update({name: sorted(int(v) for v in region) if len(region) > 1 else int(region[0])
                       for name, region in zip(task.output_names, task.regions)})
        extra = {"regions_class_order": [int(v) for v in task.regions_class_order]}
    else:
        values = [int(v) for v in task.class_values]
        if values != list(range(len(values))):
            raise ValueError(f"--format nnunet-results: {source} predicts the label values {values}; nnU-Net writes "
                             f"a class's index as its label, so its classes must be 0..{len(values) - 1}")
        labels = {"background": 0, **{name: v for name, v in zip(task.output_names, values[1:])}}
        extra = {}
    if task.ignore_label is not None:
        labels["ignore"] = int(task.ignore_label)
    return {"labels": labels, **extra}


def _spacing(config: Mapping[str, Any], source: str, given: Sequence[float] | None = None) -> tuple[list[float], str]:
    """The plans' spacing (RAS, asa's axis order) and where it came from, read from the checkpoint alone: the run's
    ``data.resample_mm``, else ``given`` (``--spacing``; refused against a ``data.resample_mm``), else the training
    cases' median as asa-finetune recorded it (`TRAINING_SPACING`), else 1 mm for asa's demo phantoms, else refused."""
    data = config.get("data") if isinstance(config.get("data"), Mapping) else {}
    if data.get("resample_mm"):
        resampled = [float(data["resample_mm"])] * 3
        if given is not None and not all(abs(g - r) <= 1e-6 * r for g, r in zip(given, resampled)):
            raise ValueError(f"--spacing {' '.join(f'{g:g}' for g in given)}: {source} was trained on scans resampled "
                             f"to data.resample_mm={data['resample_mm']} mm, the spacing its plans must state")
        return resampled, "the run's data.resample_mm"
    if given is not None:
        return [float(g) for g in given], "--spacing"
    recorded = config.get(TRAINING_SPACING)
    if isinstance(recorded, Mapping) and recorded.get("median_mm"):
        return ([float(v) for v in recorded["median_mm"]],
                f"the median voxel size of its {recorded.get('cases')} training cases, as nnU-Net plans it "
                "(recorded by asa-finetune)")
    if data.get("root") is None and data.get("store") is None:  # asa's demo phantoms (asa.data.synthetic): 1 mm voxels
        return [1.0, 1.0, 1.0], "asa's demo phantoms (1 mm)"
    raise ValueError(f"--format nnunet-results: {source} records no spacing of its training data (fine-tuned before "
                     "asa-finetune recorded it); nnU-Net's plans must state one: give --spacing MM (the training "
                     "cases' median voxel size: one edge, or three in RAS order)")


def nnunet_results(segmenter: Mapping[str, Any], *, provenance: Mapping[str, Any], source: str, dataset_id: int,
                   dataset_name: str | None, spacing: Sequence[float] | None) -> NNUnetResults:
    """The results folder of a fine-tuned segmenter (weights ``model``, spec ``network``, run ``config``, ``step``),
    ``provenance`` in ``dataset.json`` and the checkpoint under ``asa``; ``dataset_id``, ``dataset_name`` and
    ``spacing`` as `ResultsFolder.check` left them. Refused (naming ``source``) for a network nnU-Net cannot build
    or a label layout it cannot write."""
    spec, config = segmenter["network"], segmenter["config"]
    architecture = nnunet_architecture(spec, f"--format nnunet-results: {source}")
    kwargs = spec.get("kwargs") or {}
    task = Task.from_dict(config["outputs"])
    if kwargs.get("deep_supervision") is None and "deep_supervision" in architecture["arch_kwargs"]:
        architecture["arch_kwargs"].pop("deep_supervision")
    spacing, spacing_from = _spacing(config, source, spacing)
    name = dataset_name or f"asa_{task.name}"
    patch = list(crop_edges(kwargs["img_size"]))
    channels = len(task.channels)
    dataset = {"channel_names": {str(i): name for i, name in enumerate(task.channels)}, **_labels(task, source),
               "numTraining": 0, "file_ending": ".nii.gz", "overwrite_image_reader_writer": READER,
               "name": name, "description": f"asa fine-tuned {spec['arch']} segmenter ({task.name})",
               "asa": dict(provenance)}
    plans = {
        "dataset_name": f"Dataset{dataset_id:03d}_{name}", "plans_name": PLANS_NAME,
        "original_median_spacing_after_transp": spacing, "original_median_shape_after_transp": patch,
        "image_reader_writer": READER, "transpose_forward": TRANSPOSE, "transpose_backward": TRANSPOSE,
        "experiment_planner_used": "asa-export (asa.formats.nnunet)", "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {str(i): {} for i in range(channels)},
        "configurations": {CONFIGURATION: {
            "data_identifier": f"{PLANS_NAME}_{CONFIGURATION}", "preprocessor_name": "DefaultPreprocessor",
            "batch_size": 2, "patch_size": patch, "median_image_size_in_voxels": patch, "spacing": spacing,
            "normalization_schemes": ["ZScoreNormalization"] * channels, "use_mask_for_norm": [True] * channels,
            **resampling(native=not (config.get("data") or {}).get("resample_mm"), data=3, seg=1, probabilities=1),
            "architecture": architecture, "batch_dice": False}}}
    weights = _shared_once({k: v for k, v in segmenter["model"].items() if isinstance(v, torch.Tensor)})
    checkpoint = {"network_weights": weights, "trainer_name": TRAINER, "current_epoch": 0,
                  "init_args": {"plans": plans, "configuration": CONFIGURATION, "fold": "all",
                                "dataset_json": dataset, "device": "cpu"},
                  "inference_allowed_mirroring_axes": MIRRORING,
                  "asa": {**dict(provenance), "network": dict(spec), "step": int(segmenter.get("step") or 0)}}
    return NNUnetResults(dataset, plans, checkpoint, spacing_from, run_percentiles(config))


def _shared_once(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A copy of ``state`` in which tensors that share memory (nnU-Net's residual blocks register each convolution
    twice, as ``conv`` and ``all_modules.0``) still share it, so ``torch.save`` stores each once: one copy of each
    storage, every view of it rebuilt on the copy."""
    copies: dict[tuple[torch.device, int], torch.Tensor] = {}
    out = {}
    for key, tensor in state.items():
        tensor = tensor.detach()
        storage = tensor.untyped_storage()
        where = (tensor.device, storage.data_ptr())
        if where not in copies:  # the whole storage, as a flat byte tensor
            copies[where] = torch.empty(0, dtype=torch.uint8, device=tensor.device).set_(storage).clone()
        out[key] = torch.empty(0, dtype=tensor.dtype, device=tensor.device).set_(
            copies[where].untyped_storage(), tensor.storage_offset(), tensor.shape, tensor.stride())
    return out


def _metrics_lines(metrics: Mapping[str, Any] | None) -> list[str]:
    """The card's Metrics section: the checkpoint's last validation round (asa-finetune's, during training) apart
    from the asa-evaluate summaries found in the run folder (each under its folder's name), each titled by what
    made it; none: no section."""
    metrics = dict(metrics or {})
    validation = metrics.pop("validation", None)
    overlap = metrics.pop("pretraining_overlap", None)
    lines: list[str] = []
    if validation:
        lines += ["", "### Validation (asa-finetune's last validation round, in the checkpoint)", "", "```json",
                  json.dumps(validation, indent=2), "```"]
    for folder, summary in metrics.items():
        lines += ["", f"### asa-evaluate: `{folder}/summary.json` in the run folder", "", "```json",
                  json.dumps(summary, indent=2), "```"]
    if overlap:
        lines += ["", f"Pretraining overlap: {overlap.get('text') if isinstance(overlap, Mapping) else overlap}"]
    return ["", "## Metrics", *lines] if lines else []


def results_card(results: NNUnetResults, metrics: Mapping[str, Any] | None = None) -> str:
    """``README.md`` of the results folder: front matter, the provenance (encoder, pretraining cohort digest,
    licence, task, training data, source), the run's asa-evaluate summaries (``metrics``), how nnU-Net's predictor
    and 3D Slicer run the folder and what differs from asa-predict's reading of a scan."""
    conf = results.plans["configurations"][CONFIGURATION]
    prov = results.dataset["asa"]
    arch = conf["architecture"]["network_class_name"].rsplit(".", 1)[-1]
    return "\n".join([
        *provenance_card(prov, library="nnunet", tags=("nnunet",), cohort=True,
                         title=f"asa segmenter ({prov.get('task')}) as an nnU-Net v2 results folder"),
        *_metrics_lines(metrics),
        "", "## nnU-Net v2 results folder", "",
        f"This folder is an nnU-Net v2 results folder ({TRAINER}, configuration {CONFIGURATION}, fold all) of the "
        f"fine-tuned segmenter ({arch}), which nnU-Net's own "
        "predictor runs:", "",
        "```", "nnUNetv2_predict_from_modelfolder -i IMAGES -o PREDICTIONS -m path/to/this/folder -f all", "```", "",
        f"or, placed as `$nnUNet_results/{results.plans['dataset_name']}/{TRAINER}__{PLANS_NAME}__{CONFIGURATION}/`, "
        f"`nnUNetv2_predict -d {int(results.plans['dataset_name'][7:10])} -c {CONFIGURATION} -f all`"
        + (" and 3D Slicer's nnU-Net extension (docs/weights-elsewhere.md)"
           if len(results.dataset["channel_names"]) == 1
           else "; 3D Slicer's nnU-Net extension cannot run it: it hands nnU-Net one volume (`_0000`), and this "
                f"model reads {len(results.dataset['channel_names'])}")
        + ". Images are named `<case>_0000.nii.gz`, ... in the channel order "
        f"{', '.join(results.dataset['channel_names'].values())}.", "",
        f"- reading: {READER} and transpose_forward {TRANSPOSE} (left-right on array axis 0, as asa reads a scan)",
        f"- spacing: {conf['spacing']} mm, from {results.spacing_from}; patch {conf['patch_size']}; "
        + ("every scan predicted on its own grid (no_resampling_hack), as asa predicts a network trained without "
           "data.resample_mm" if conf["resampling_fn_data"] == "no_resampling_hack"
           else "scans resampled to it, as asa-finetune resampled them (data.resample_mm)"),
        _intensity_line(results.percentiles),
        f"- test-time mirroring: nnU-Net's default mirrors along axes {list(MIRRORING)}; asa-predict mirrors only "
        "with tta=true (`--disable_tta` gives asa-predict's default)",
        "- provenance (encoder, pretraining cohort digest, licence): `dataset.json` and the checkpoint, under `asa`",
        ""])


def _intensity_line(percentiles: Sequence[float]) -> str:
    """The card's intensity line: nnU-Net's z-score over the nonzero region is asa's scheme exactly for a network
    trained without a clip (``data.percentiles`` [0, 100]); otherwise asa's clip, which nnU-Net cannot state."""
    low, high = (float(p) for p in percentiles)
    line = "- intensity: nnU-Net's ZScoreNormalization over the nonzero region (use_mask_for_norm), 0 outside"
    if (low, high) == (0.0, 100.0):
        return (line + ": asa's own scheme for this network, which was trained with data.percentiles [0, 100] (no "
                "clip), the same z-score over the same voxels where asa's brain mask is the nonzero region (a "
                "skull-stripped image; nnU-Net also counts zeros enclosed by the brain, asa does not)")
    return (line + f"; asa also clips each image to its brain's {low:g}-{high:g} percentiles first (the run's "
            "data.percentiles), which nnU-Net cannot state; a network fine-tuned with data.percentiles=[0,100] is "
            "read the same by both")


class NNUNet(Format):
    """nnU-Net's ``-pretrained_weights`` checkpoint and plans block, beside the model folder of an encoder whose
    family declares how nnU-Net builds it; ``--nnunet-plans`` merges the block into a dataset's plans, last."""

    name, level, files = "nnunet", ENCODER, (NNUNET_WEIGHTS, NNUNET_PLANS)
    options = (Option("nnunet_channels", "the nnU-Net checkpoint for K image channels (a 1-channel stem repeated and "
                                         "divided by K; default: the encoder's own)", int, metavar="K"),
               Option("nnunet_plans", "add the 3d_fullres_asa configuration to this nnU-Net plans file, so that "
                                      "nnUNetv2_train runs it (--overwrite replaces an earlier one there)",
                      metavar="PLANS_JSON"))

    def fault(self, spec: Mapping[str, Any]) -> str | None:
        return nnunet_fault(spec)

    def part(self, job: Job) -> Part:
        export, source = job.export, str(job.source)
        assert export is not None
        spec = export["network"]
        weights = nnunet_checkpoint(export, in_channels=job.options.get("nnunet_channels"), source=source)
        plans = nnunet_plans_snippet(spec, source)
        if job.config.get("published"):  # nnU-Net's file names the plan it came from too
            weights["asa"]["published"] = dict(job.config["published"])
        if export.get("cohort") is not None:  # as --cohort left it: asa-finetune / asa-probe read it from here too
            weights["cohort"] = export["cohort"]
        after = None
        if job.options.get("nnunet_plans") is not None:
            path, merged = merge_nnunet_plans(job.options["nnunet_plans"], plans, overwrite=job.options["overwrite"])

            def after() -> None:  # the dataset's plans gain the configuration once the folder is written
                atomic_write_json(path, merged)
                print(f"[asa-export] added configuration {NNUNET_CONFIGURATION} to {path}", file=sys.stderr, flush=True)
        usage = describe_nnunet(spec)
        return Part({NNUNET_WEIGHTS: lambda path: save_checkpoint(path, weights),
                     NNUNET_PLANS: lambda path: atomic_write_json(path, plans)},
                    "\n## nnU-Net v2\n\n```\n" + usage + "\n```\n\n" + READING_NOTE + "\n", after)


def clip_warning(percentiles: Sequence[float], source: str) -> str | None:
    """The console warning for the results folder of a network trained with asa's percentile clip (the run's
    ``data.percentiles``), which nnU-Net's predictor does not apply; None for one trained without it ([0, 100])."""
    low, high = (float(p) for p in percentiles)
    if (low, high) == (0.0, 100.0):
        return None
    (mean, worst), (fair, _) = CLIP_AGREEMENT["clip"], CLIP_AGREEMENT["no clip"]
    return (f"{source} was fine-tuned with data.percentiles [{low:g}, {high:g}]: asa clips each image to its brain's "
            f"{low:g}-{high:g} percentiles before the z-score, and nnU-Net's predictor does not, so nnUNetv2_predict "
            f"and asa-predict can disagree on this folder (measured: lesion Dice between the two {mean:.3f} mean, "
            f"{worst:.3f} worst over 16 scans, docs/weights-elsewhere.md; how much depends on your scans). Fine-tune "
            f"with data.percentiles=[0,100] for a network both read alike ({fair:.3f} mean on the same scans)")


class ResultsFolder(Format):
    """``--format nnunet-results``: instead of the model folder, nnU-Net's results folder of the segmenter."""

    name, level, files, alone = "nnunet-results", SEGMENTER, RESULTS_FILES, True
    about = ("instead of the folder, the segmenter's nnU-Net v2 results folder, which nnUNetv2_predict_from_modelfolder "
             "runs")
    options = (Option("dataset_id", "the plans' Dataset<ID> (1-999, default 975) in $nnUNet_results, where two models "
                                    "need two ids", int, metavar="ID"),
               Option("dataset_name", "the name after Dataset<ID>_ (default asa_<task>)", metavar="NAME"),
               Option("spacing", "the plans' voxel size in mm (one edge, or three in RAS order) of a checkpoint that "
                                 "records none; default: the recorded one", float, "+", "MM"))

    def check(self, options: dict[str, Any]) -> None:
        if options.get("dataset_id") is None:
            options["dataset_id"] = DATASET_ID
        number, name = options["dataset_id"], options.get("dataset_name")
        if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= 999:
            raise ValueError(f"--dataset-id {number!r}: expected a whole number from 1 to 999 (nnU-Net's "
                             "Dataset<id>_<name>, e.g. 501)")
        if name is not None and not DATASET_NAME.fullmatch(name):
            raise ValueError(f"--dataset-name {name!r}: expected letters, digits, '_', '.' or '-' without spaces, "
                             "starting with a letter or digit (e.g. asa_brats)")
        if options.get("spacing") is not None:  # one voxel edge (isotropic) or three in RAS order
            edges = [float(v) for v in options["spacing"]]
            if len(edges) not in (1, 3) or not all(0 < v < float("inf") for v in edges):
                raise ValueError(f"--spacing {' '.join(f'{v:g}' for v in edges)}: expected one or three positive "
                                 "voxel edges in mm (RAS order)")
            options["spacing"] = edges * 3 if len(edges) == 1 else edges

    def part(self, job: Job) -> Part:
        assert job.segmenter is not None
        results = nnunet_results(job.segmenter, provenance=provenance(job.config, job.segmenter["config"]),
                                 source=str(job.source), dataset_name=job.options.get("dataset_name"),
                                 spacing=job.options.get("spacing"), dataset_id=job.options["dataset_id"])
        card = results_card(results, job.config.get("metrics"))  # the folder holds nnU-Net's files, not asa's
        if (warning := clip_warning(results.percentiles, str(job.source))) is not None:
            print(f"[asa-export] warning: {warning}", file=sys.stderr, flush=True)

        def fold(path: Path) -> None:
            path.mkdir()
            save_checkpoint(path / CHECKPOINT, results.checkpoint)
        return Part({CARD_FILE: lambda path: atomic_write_text(path, card),
                     "dataset.json": lambda path: atomic_write_json(path, results.dataset),
                     "plans.json": lambda path: atomic_write_json(path, results.plans), FOLD: fold})


NNUNET = register_format(NNUNet())
NNUNET_RESULTS = register_format(ResultsFolder())
