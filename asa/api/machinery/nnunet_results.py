"""``asa-export RUN OUT --format nnunet-results``: a fine-tuned segmenter as an nnU-Net v2 results folder.

``OUT`` holds what nnU-Net's predictor reads of a trained model
(``nnUNetPredictor.initialize_from_trained_model_folder``, ``nnUNetv2_predict_from_modelfolder -i IN -o OUT -m FOLDER
-f all``): ``dataset.json``, ``plans.json`` and
``fold_all/checkpoint_final.pth`` (the fine-tuned weights under ``network_weights``, ``trainer_name`` nnUNetTrainer,
the configuration ``3d_fullres``), with the model card as ``README.md``.

The network is the one nnU-Net builds from the plans' architecture block, as the network's family declares it for
nnU-Net (`asa.models.family.NNUNetForm`, written by `asa.models.exports.nnunet.nnunet_architecture`): the resenc family's
``ResidualEncoderUNet``, whose keys asa's ResEnc U-Net shares, so the weights load as they are. A network of a family
that declares no nnU-Net form is refused, naming it: the SW-ViT U-Net cannot be named in a plans file, since nnU-Net
builds a class as ``cls(input_channels=, num_classes=, deep_supervision=, **arch_kwargs)`` and runs it on windows
without their place in the brain frame, which the SW-ViT U-Net's position code and windows need.

The plans reproduce asa's reading of a scan with nnU-Net's own parts: ``NibabelIOWithReorient`` (every file
reoriented to RAS) with ``transpose_forward`` [2, 1, 0] puts left-right on array axis 0 as asa reads it; the crop to
the nonzero region and ``ZScoreNormalization`` with ``use_mask_for_norm`` z-score the nonzero (brain) voxels, 0
outside, as asa does, without asa's clip to the brain's 0.5-99.5 percentiles (nnU-Net has no per-image clip); the
spacing is the one nnU-Net would plan for the training cases, which asa-finetune records in the checkpoint
(`asa.api.machinery.dataset.planned_spacing`), so the export reads no data (asa predicts on each scan's own grid;
nnU-Net resamples to the plans' spacing, a no-op for scans of that spacing); the patch is the network's crop,
windows overlap by half a window with Gaussian weights in both. Labels: a region task (BraTS) as nnU-Net's regions
with ``regions_class_order``; a class task needs its classes to be 0..K-1 (nnU-Net writes the argmax index), else it
is refused.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch

from asa.api.machinery.dataset import TRAINING_SPACING
from asa.data import Task
from asa.io import atomic_write_json, save_checkpoint
from asa.models.exports.nnunet import nnunet_architecture
from asa.models.declared import crop_edges

__all__ = ["CONFIGURATION", "DATASET_ID", "RESULTS_FILES", "NNUnetResults", "check_dataset", "check_spacing",
           "dataset_folder", "nnunet_results", "results_card", "write_nnunet_results"]

CONFIGURATION = "3d_fullres"
FOLD = "fold_all"
CHECKPOINT = "checkpoint_final.pth"
TRAINER = "nnUNetTrainer"
PLANS_NAME = "nnUNetPlans"
READER = "NibabelIOWithReorient"
TRANSPOSE = [2, 1, 0]  # NibabelIOWithReorient's arrays are (z, y, x) of RAS; asa's are (x, y, z)
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


def check_dataset(dataset_id: int, dataset_name: str | None) -> None:
    """Refuse (``ValueError`` naming the option) a dataset id nnU-Net cannot name (1..999: ``Dataset%03d``) or a
    name that is not one word of letters, digits, ``_``, ``.`` and ``-``."""
    if isinstance(dataset_id, bool) or not isinstance(dataset_id, int) or not 1 <= dataset_id <= 999:
        raise ValueError(f"--dataset-id {dataset_id!r}: expected a whole number from 1 to 999 (nnU-Net's "
                         "Dataset<id>_<name>, e.g. 501)")
    if dataset_name is not None and not DATASET_NAME.fullmatch(dataset_name):
        raise ValueError(f"--dataset-name {dataset_name!r}: expected letters, digits, '_', '.' or '-' without spaces, "
                         "starting with a letter or digit (e.g. asa_brats)")


def check_spacing(spacing: Sequence[float]) -> list[float]:
    """``--spacing``: one voxel edge (isotropic) or three in RAS order, each positive and finite, as three edges in
    mm; else refused (``ValueError`` naming the option and the values given)."""
    edges = [float(v) for v in spacing]
    if len(edges) not in (1, 3) or not all(0 < v < float("inf") for v in edges):
        raise ValueError(f"--spacing {' '.join(f'{v:g}' for v in edges)}: expected one or three positive voxel edges "
                         "in mm (RAS order)")
    return edges * 3 if len(edges) == 1 else edges


def dataset_folder(dataset_id: int, name: str) -> str:
    """nnU-Net's name of a dataset's folder: ``Dataset<id, 3 digits>_<name>``."""
    return f"Dataset{dataset_id:03d}_{name}"


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
    """The plans' spacing (asa's axis order, RAS, after ``transpose_forward``) and where it came from, read from the
    checkpoint alone (no training data): the run's ``data.resample_mm`` when it resampled, else ``given``
    (``asa-export --spacing``), else the training cases' spacing as asa-finetune recorded it
    (`asa.api.machinery.dataset.TRAINING_SPACING`, nnU-Net's planned median), else 1 mm for asa's demo phantoms;
    refused when none is known (a run fine-tuned before the record) or ``given`` contradicts ``data.resample_mm``."""
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


def nnunet_results(segmenter: Mapping[str, Any], *, provenance: Mapping[str, Any], source: str,
                   dataset_id: int = DATASET_ID, dataset_name: str | None = None,
                   spacing: Sequence[float] | None = None) -> NNUnetResults:
    """The results folder of a fine-tuned segmenter (``segmenter``: weights ``model``, spec ``network``, run
    ``config``, ``step``); ``provenance`` (the card's encoder, pretraining cohort and licence) goes into
    ``dataset.json`` and the checkpoint under ``asa``. Refused (``ValueError``, naming ``source``) for a network
    nnU-Net cannot build or a label layout it cannot write, before anything is written.

    Args:
        dataset_id: the plans' ``Dataset<id>``, under which ``nnUNetv2_predict -d`` finds the folder in
            ``$nnUNet_results`` (1..999).
        dataset_name: what follows ``Dataset<id>_`` (None: ``asa_<task>``).
        spacing: the plans' voxel size in mm (RAS order; one value: isotropic) for a checkpoint that records none
            (`_spacing`; None: the recorded one)."""
    check_dataset(dataset_id, dataset_name)
    spacing = None if spacing is None else check_spacing(spacing)
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
        "dataset_name": dataset_folder(dataset_id, name), "plans_name": PLANS_NAME,
        "original_median_spacing_after_transp": spacing, "original_median_shape_after_transp": patch,
        "image_reader_writer": READER, "transpose_forward": TRANSPOSE, "transpose_backward": TRANSPOSE,
        "experiment_planner_used": "asa-export (asa.api.machinery.nnunet_results)", "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {str(i): {} for i in range(channels)},
        "configurations": {CONFIGURATION: {
            "data_identifier": f"{PLANS_NAME}_{CONFIGURATION}", "preprocessor_name": "DefaultPreprocessor",
            "batch_size": 2, "patch_size": patch, "median_image_size_in_voxels": patch, "spacing": spacing,
            "normalization_schemes": ["ZScoreNormalization"] * channels, "use_mask_for_norm": [True] * channels,
            "resampling_fn_data": "resample_data_or_seg_to_shape",
            "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
            "resampling_fn_seg": "resample_data_or_seg_to_shape",
            "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
            "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
            "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
            "architecture": architecture, "batch_dice": False}}}
    weights = _shared_once({k: v for k, v in segmenter["model"].items() if isinstance(v, torch.Tensor)})
    checkpoint = {"network_weights": weights, "trainer_name": TRAINER, "current_epoch": 0,
                  "init_args": {"plans": plans, "configuration": CONFIGURATION, "fold": "all",
                                "dataset_json": dataset, "device": "cpu"},
                  "inference_allowed_mirroring_axes": MIRRORING,
                  "asa": {**dict(provenance), "network": dict(spec), "step": int(segmenter.get("step") or 0)}}
    return NNUnetResults(dataset, plans, checkpoint, spacing_from)


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


def write_nnunet_results(out: Path, results: NNUnetResults, card: str) -> Path:
    """Write ``results`` and the model card as the folder ``out`` (emptied beforehand by the caller): all files in a
    new folder beside it, then moved into place, so a failed write leaves no folder that looks finished."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        (tmp / FOLD).mkdir()
        atomic_write_json(tmp / "dataset.json", results.dataset)
        atomic_write_json(tmp / "plans.json", results.plans)
        save_checkpoint(tmp / FOLD / CHECKPOINT, results.checkpoint)
        (tmp / "README.md").write_text(card, encoding="utf-8")
        os.chmod(tmp, 0o777 & ~_umask())
        if out.is_dir():  # the caller moved an earlier export aside; the folder itself may be the working folder
            for name in RESULTS_FILES:
                os.replace(tmp / name, out / name)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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
    cohort = prov.get("pretraining_cohort") or {}
    source = prov.get("source") or {}
    return "\n".join([
        "---", f"license: {prov.get('license')}", "library_name: nnunet", "pipeline_tag: image-segmentation", "tags:",
        "- medical-imaging", "- 3d", "- brain-mri", "- nnunet", "---", "",
        f"# asa segmenter ({prov.get('task')}) as an nnU-Net v2 results folder", "",
        "A fine-tuned 3D brain-MRI segmenter. Research use only: it is not a medical device and was not validated "
        "for clinical decisions.", "",
        f"- task: {prov.get('task')}; training data: {prov.get('training_data')}",
        f"- encoder: {prov.get('encoder')}",
        (f"- pretraining cohort: {cohort.get('cases')} cases, {cohort.get('images')} images, digest "
         f"`{cohort.get('digest')}`" if cohort else "- pretraining cohort: none recorded"),
        f"- source: {source.get('file')} (step {source.get('step')}); asa {prov.get('asa_version')}"
        + (f", commit {prov['git_commit']}" if prov.get("git_commit") else ""),
        f"- licence: `{prov.get('license')}`",
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
        f"- spacing: {conf['spacing']} mm, from {results.spacing_from}; patch {conf['patch_size']}",
        "- intensity: nnU-Net's ZScoreNormalization over the nonzero region (use_mask_for_norm), 0 outside; asa "
        "also clips each image to its brain's 0.5-99.5 percentiles first, which nnU-Net cannot state",
        f"- test-time mirroring: nnU-Net's default mirrors along axes {list(MIRRORING)}; asa-predict mirrors only "
        "with tta=true (`--disable_tta` gives asa-predict's default)",
        "- provenance (encoder, pretraining cohort digest, licence): `dataset.json` and the checkpoint, under `asa`",
        ""])
