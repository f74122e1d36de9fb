"""Hub-ready model folders: the job behind `asa-export CHECKPOINT OUT_DIR`.

The folder (`asa.io.hub`) holds the encoder of a checkpoint or export as ``model.safetensors``,
what built it as ``config.json`` and a model card as ``README.md``: the layout the Hugging Face hub
takes as is. ``asa.load_encoder(OUT_DIR)`` and ``asa-finetune model.pretrained=OUT_DIR`` read it.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.metadata
import json
import os
import platform
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import asa
from asa.api.machinery.cohort import overlap_statement, recorded_cohort, recorded_overlap, weights_folder
from asa.api.configuration.compat import current_config
from asa.api.machinery.rundir import check_writable
from asa.api.machinery.run import refusing
from asa.data.cohort import (COHORT_LEVELS, IDS_WITHHELD, CohortListMissing, carried_cohort, cohort_digest,
                             cohort_summary, export_cohort, write_cohort_list)
from asa.data.preprocessing import PERCENTILES
from asa.io import atomic_write_json, save_checkpoint, write_model_folder
from asa.io.atomic import atomic_write_bytes
from asa.models import load_weights
from asa.io.hub import (COHORT_LIST, FOLDER_FILES, FOLDER_FORMAT, MODEL_FILE, NNSSL_CHECKPOINT, NNSSL_PLAN, NNUNET_PLANS,
                        NNUNET_WEIGHTS, OPTIONAL_FILES, SEGMENTER_FILE, encoder_network_spec)
from asa.api.exports.nnunet_results import RESULTS_FILES, nnunet_results, results_card, write_nnunet_results
from asa.api.exports.onnx import (ONNX_FILE, OnnxExport, export_onnx, onnx_alone_card, onnx_card,
                                  write_onnx_folder)
from asa.models.cnn.nnssl import nnssl_checkpoint
from asa.models.declared import crop_edges
from asa.models.cnn.nnunet import (NNUNET_CONFIGURATION, READING_NOTE, describe_nnunet, nnunet_checkpoint,
                                   nnunet_fault, nnunet_plans_snippet)
from asa.models.portable import encoder_export
from asa.models.registry import NETWORK_KINDS, current_spec, network_record

HUB_ID = re.compile(r"(?:[A-Za-z0-9][A-Za-z0-9_.-]*/)?[A-Za-z0-9][A-Za-z0-9_.-]*")  # a Hugging Face repository id

__all__ = ["FORMATS", "NNUNET_PLANS", "NNUNET_WEIGHTS", "export_model", "merge_nnunet_plans", "model_card",
           "model_config", "provenance"]

# the run's data settings a model folder repeats; size / patch_size: the crop of runs before data.crop, as recorded
DATA_KEYS = ("name", "layout", "task", "channels", "crop", "size", "patch_size", "resample_mm", "lr_centre")
CHECKPOINT_DIR = "checkpoints"
SOFTWARE = ("torch", "monai", "numpy", "dynamic-network-architectures")  # their versions in config.json
_LOCAL_PATH = re.compile(r"(?<![\w.~/-])(?:~|[A-Za-z]:)?[/\\][^\s'\"`,;]*")  # an absolute path, up to a space or quote
CARRIED = {  # the card's words on what the folder carries of its cohort (asa-export --cohort)
    "full": f"`{COHORT_LIST}` lists each case's id, subject, image digests and fingerprints (`{MODEL_FILE}` and the nnssl "
            "and nnU-Net files carry its summary), against which asa-finetune and asa-probe check their held-out "
            "cases: keep it beside them",
    "digests": f"`{COHORT_LIST}` lists each case's image digests and fingerprints under opaque keys (no case or subject "
               f"id; `{MODEL_FILE}` and the nnssl and nnU-Net files carry its summary), against which asa-finetune "
               "and asa-probe check their held-out cases by content: keep it beside them",
    "none": "this folder carries no cohort list (exported with --cohort none): held-out cases are not checked "
            "against it; compare a cohort with this digest"}
FORMATS = ("hub", "onnx", "nnunet-results")  # asa-export --format
# what asa's own files ask to be cited (config.json, nnssl's checkpoint_final.pth and the card), in the form nnssl's
# files give theirs (nnU-Net's PretrainedTrainer prints them); a published file keeps its own
ASA_CITATION = {
    "type": "method", "name": "ASA (Attentive Symmetric Autoencoder)",
    "apa_citations": ["Huang, J., Li, H., Li, G., & Wan, X. (2022). Attentive Symmetric Autoencoder for Brain MRI "
                      "Segmentation. In Medical Image Computing and Computer Assisted Intervention - MICCAI 2022, "
                      "LNCS 13435 (pp. 203-213). Springer. https://doi.org/10.1007/978-3-031-16443-9_20"],
    "bibtex_citations": ["@inproceedings{huang2022asa, title={Attentive Symmetric Autoencoder for Brain MRI "
                         "Segmentation}, author={Huang, Junjia and Li, Haofeng and Li, Guanbin and Wan, Xiang}, "
                         "booktitle={Medical Image Computing and Computer Assisted Intervention -- MICCAI 2022}, "
                         "series={LNCS}, volume={13435}, pages={203--213}, publisher={Springer}, year={2022}, "
                         "doi={10.1007/978-3-031-16443-9_20}}"]}
# license: other names the terms it stands for (Hugging Face's license_name / license_link): the card's Licence section
OTHER_LICENCE = {"asa": "training-data-terms", "published": "publisher-terms"}
CARD_LINK = "README.md"  # license_link of license: other: the card, whose Licence section states the terms
COMMAND_FILE = "command.txt"  # beside config.yaml in a run folder: the command line that started the run


def export_model(checkpoint: str | os.PathLike, out_dir: str | os.PathLike, *, overwrite: bool = False,
                 license: str | None = None, nnunet_channels: int | None = None,
                 nnunet_plans: str | os.PathLike | None = None, cohort: str | None = None,
                 base_model: str | None = None, datasets: Sequence[str] = (), format: str = "hub") -> Path:
    """Write the hub-ready model folder of ``checkpoint`` to ``out_dir``; returns ``out_dir``.

    Args:
        checkpoint: a checkpoint (``last.pt`` / ``best.pt`` of asa-pretrain or asa-finetune), an
            encoder export (``encoder.pt`` / ``encoder.safetensors``) or a model folder, of a network
            with a registered encoder.
        out_dir: the folder to write (``.``: the working folder); one holding anything but an earlier
            export's three files is refused, naming them; one holding those is refused unless ``overwrite``.
        overwrite: move an earlier export's files in ``out_dir`` to ``<out_dir>.replaced-<time>/``
            (never deleted) and write the new ones.
        license: the model card's licence field (a Hugging Face licence id, e.g. ``apache-2.0``;
            ``other``: stated in the card's text). None: the one the source records (a published file's, an earlier
            folder's), else ``other``; a published file's recorded licence is kept, another one is refused.
        nnunet_channels: for an encoder with an nnU-Net export, the image channels of the nnU-Net checkpoint (a
            1-channel stem is repeated and divided by their number; None: the encoder's own).
        nnunet_plans: an nnU-Net plans file (``$nnUNet_preprocessed/DatasetXXX/<plans>.json``) to add the
            ``3d_fullres_asa`` configuration to (:func:`merge_nnunet_plans`), so that ``nnUNetv2_train`` runs it.
        cohort: what the folder carries of the pretraining cohort (`asa.data.cohort.COHORT_LEVELS`): ``full``,
            each case's id, subject, image digests and fingerprints; ``digests`` (the default), the digests and
            fingerprints under opaque keys (``case-0001``, ...) and no subject, so that a public folder names no
            participant while asa-finetune and asa-probe still find a copy of a pretraining scan among their
            held-out cases; ``none``, no cohort, only its summary digest in ``config.json`` (nothing is checked).
            The list is ``cohort.json.gz`` in the folder, the weight files carry its summary
            (`asa.data.cohort.cohort_summary`). None: ``digests`` when the source carries a cohort; ``full`` or
            ``digests`` of a source that carries none (a folder exported with ``none``) is refused.
        format: `FORMATS`: ``hub``, the model folder; ``onnx``, the folder and ``model.onnx``, the fine-tuned
            segmenter that onnxruntime runs (`asa.api.exports.onnx`); ``nnunet-results``, instead of the folder an
            nnU-Net v2 results folder of the segmenter that nnU-Net's own predictor runs
            (`asa.api.exports.nnunet_results`). Both carry the card's provenance (:func:`provenance`) and refuse a
            network they cannot represent, naming it, before anything is written.

    A fine-tuning checkpoint also gives ``segmenter.pt``, the whole network (weights, spec, run config) that
    ``asa-predict checkpoint=OUT_DIR`` uses, and the card names its task, training data, the metrics of
    asa-evaluate runs found in the run folder and the command that made it. An encoder whose family declares
    the network nnU-Net builds of it (`asa.models.family.NNUNetForm`: resenc without the coordinate channel, a
    plug-in's U-Net) also gets ``nnunet_pretrained_weights.pth`` and
    ``nnunet_plans.json`` (`asa.models.cnn.nnunet`): ``nnUNetv2_train ... -pretrained_weights`` loads the one
    into the network nnU-Net builds from the other; and nnssl's ``checkpoint_final.pth`` with
    ``adaptation_plan.json`` (`asa.models.cnn.nnssl`), which nnU-Net's nnssl route reads.

    A bad input is refused (`asa.api.machinery.run.OptionError`, exit 2 from the console script) before anything is written.
    """
    with refusing():
        source = Path(checkpoint).expanduser()
        if not source.exists():
            raise FileNotFoundError(f"checkpoint {source}: no such file or folder")
        out = Path(out_dir).expanduser().absolute()  # ".": the working folder, by its name
        if out.resolve() == source.resolve() or source.resolve() in out.resolve().parents:
            raise ValueError(f"output folder {out} would replace or sit inside the input {source}")
        if format not in FORMATS:
            raise ValueError(f"--format {format!r}: expected one of {', '.join(FORMATS)}")
        if format == "nnunet-results" and (nnunet_plans is not None or nnunet_channels is not None):
            raise ValueError("--nnunet-plans / --nnunet-channels shape the encoder's nnU-Net files of the model "
                             "folder; --format nnunet-results writes the whole segmenter's results folder instead")
        held = _held(out, overwrite=overwrite, format=format)
        check_writable(out, "OUT_DIR")  # as the training and prediction jobs refuse their output folders
        if cohort is not None and cohort not in COHORT_LEVELS:
            raise ValueError(f"--cohort {cohort!r}: expected one of {', '.join(COHORT_LEVELS)}")
        if license is not None and (not license or any(c.isspace() for c in license)):
            raise ValueError(f"--license {license!r}: expected a licence id without spaces (e.g. apache-2.0, other)")
        for given, what in ((base_model, "--base-model"), *((d, "--dataset") for d in datasets)):
            if given is not None and not HUB_ID.fullmatch(given):
                raise ValueError(f"{what} {given!r}: expected a Hugging Face repository id (owner/name or name)")
        if format != "hub" and source.is_dir() and (source / SEGMENTER_FILE).is_file():
            source = source / SEGMENTER_FILE  # a model folder's whole segmenter, which the formats take
        state = load_weights(source)
        whole = _segmenter(state)
        record = None if whole is None else network_record(current_spec(whole["network"])["arch"])
        if format == "onnx" and record is not None and record.encoder is None:  # DynUNet: no encoder, no folder
            onnx = _onnx_alone(source, whole, license=license, base_model=base_model)
            if held:
                print(f"[asa-export] --overwrite: moved the previous {', '.join(held)} to {_move_aside(out, held)}",
                      file=sys.stderr, flush=True)
            return write_onnx_folder(out, onnx.data, onnx_alone_card(onnx.record, whole["network"]["arch"]))
        export = encoder_export(source, state)
        summary = _carry_cohort(export, *_source_cohort(source, state, cohort), cohort or "digests")
        listed = export.pop("cohort", None)  # the list goes beside the weights, which carry its summary
        if listed is not None:
            export["cohort"] = cohort_summary(listed)
        config = model_config(source, state, export, license=license, cohort=summary)
        config.update({k: v for k, v in (("base_model", base_model), ("datasets", list(datasets))) if v})
        segmenter = _segmenter(state)
        card = model_card(config, segmenter=None if segmenter is None else segmenter["config"])
        spec = export["network"]
        published = config.get("published")  # a published file's own plan, trainer, citations and licence
        nnunet = nnssl = None
        fault = nnunet_fault(spec)  # the formats the encoder's family declares
        if fault is None:
            nnunet = (nnunet_checkpoint(export, in_channels=nnunet_channels, source=str(source)),
                      nnunet_plans_snippet(spec, str(source)))
            if published:  # nnU-Net's file names the plan it came from too
                nnunet[0]["asa"]["published"] = dict(published)
            if export.get("cohort") is not None:  # as --cohort left it: asa-finetune / asa-probe read it from here too
                nnunet[0]["cohort"] = export["cohort"]
            card += ("\n## nnU-Net v2\n\n```\n" + describe_nnunet(Path("."), NNUNET_WEIGHTS, NNUNET_PLANS) + "\n```\n\n"
                     + READING_NOTE + "\n")
            nnssl = nnssl_checkpoint(export, spacing_mm=config.get("spacing_mm"), source=str(source),
                                     dataset=(config.get("data") or {}).get("name") or "asa",
                                     trainer=f"asa:{config.get('method') or 'unknown method'}", published=published,
                                     extra={"license": config["license"],
                                            **({"citations": config["citations"]}
                                               if config.get("citations") and not published else {}),
                                            **({"cohort": export["cohort"]} if export.get("cohort") is not None else {})})
            card += (f"\n`{NNSSL_CHECKPOINT}` and `{NNSSL_PLAN}` are the encoder in nnssl's format: "
                     "`nnUNetv2_preprocess_like_nnssl -pc` takes the file, or this folder's hub address.\n")
        if segmenter is not None:
            card += segmenter_card(source, segmenter["config"], base_model=config.get("base_model"))
        if nnunet is None and nnunet_channels is not None:
            raise ValueError(f"--nnunet-channels: {source} holds {fault}")
        merged = None
        if nnunet_plans is not None:
            if nnunet is None:
                raise ValueError(f"--nnunet-plans: {source} holds {fault}")
            merged = merge_nnunet_plans(nnunet_plans, nnunet[1], overwrite=overwrite)
        onnx = None
        if format != "hub" and segmenter is None:
            raise ValueError(f"--format {format}: {source} holds no fine-tuned segmenter (an encoder only); export "
                             f"the last.pt / best.pt of asa-finetune or a model folder holding {SEGMENTER_FILE}")
        if format == "onnx":  # built, checked and measured before anything is written
            onnx = export_onnx(segmenter, provenance=provenance(config, segmenter["config"]), source=str(source))
            card += onnx_card(onnx.record)
        elif format == "nnunet-results":
            results = nnunet_results(segmenter, provenance=provenance(config, segmenter["config"]),
                                     source=str(source))
            card = results_card(results, config.get("metrics"))  # the folder holds nnU-Net's files, not asa's
    if held:  # --overwrite: the previous export's files go aside, nothing is deleted
        aside = _move_aside(out, held)
        print(f"[asa-export] --overwrite: moved the previous {', '.join(held)} to {aside}", file=sys.stderr, flush=True)
    extra: dict[str, Any] = {}
    if listed is not None:
        extra[COHORT_LIST] = lambda path: write_cohort_list(path.parent, listed, path.name)
    if nnunet is not None:
        extra[NNUNET_WEIGHTS] = lambda path: save_checkpoint(path, nnunet[0])
        extra[NNUNET_PLANS] = lambda path: atomic_write_json(path, nnunet[1])
    if nnssl is not None:  # nnssl's layout: the checkpoint, and its plan beside it with the trainer's name
        extra[NNSSL_CHECKPOINT] = lambda path: save_checkpoint(path, nnssl)
        extra[NNSSL_PLAN] = lambda path: atomic_write_json(
            path, {**nnssl["nnssl_adaptation_plan"], "trainer_name": nnssl["trainer_name"]})
    if segmenter is not None:
        extra[SEGMENTER_FILE] = lambda path: save_checkpoint(path, segmenter)
    if format == "nnunet-results":  # nnU-Net's folder in place of the model folder, with the card
        return write_nnunet_results(out, results, card)
    folder = write_model_folder(out, export, config, card, extra=extra)  # all files, or no folder
    if onnx is not None:  # last: a folder without it is the model folder of format hub
        atomic_write_bytes(folder / ONNX_FILE, onnx.data)
    if merged is not None:  # the dataset's plans gain the configuration last, once the folder is written
        plans_path, plans = merged
        atomic_write_json(plans_path, plans)
        print(f"[asa-export] added configuration {NNUNET_CONFIGURATION} to {plans_path}", file=sys.stderr, flush=True)
    return folder


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


def _source_cohort(source: Path, state: Mapping[str, Any],
                   level: str | None) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(the cohort list the source carries, its summary when only that is at hand) for ``asa-export --cohort
    level``: the list beside a weight file (`asa.data.cohort.carried_cohort`) or its run folder's record
    (`asa.api.machinery.cohort.recorded_cohort`: a pretraining run's cohort.json, a fine-tuning run's encoder's).
    A list that is not beside its file is refused unless ``level`` is ``none`` (the summary is enough); ``full``
    or ``digests`` of a source carrying no cohort is refused, saying what it carries."""
    try:
        cohort = carried_cohort(state, f"checkpoint {source}", weights_folder(source))
    except CohortListMissing as err:
        if level == "none":
            return None, dict(state["cohort"]["summary"])
        raise CohortListMissing(f"{err}; or export with --cohort none (config.json then states the summary "
                                "alone)") from None
    if cohort is None:
        cohort = recorded_cohort(source)
    if cohort is None and level in ("full", "digests"):
        stated = (state.get("model_config") or {}).get("pretraining_cohort") or {}
        raise ValueError(f"--cohort {level}: {source} carries no pretraining cohort "
                         + (f"(exported with --cohort none: its config.json states only the digest "
                            f"{stated.get('digest')} of {stated.get('cases')} cases; export the pretraining run's "
                            "checkpoint or encoder again)"
                            if stated.get("carried") == "none" else
                            "(asa-cohort PRETRAIN_RUN records one; then export that run's checkpoint)"))
    return cohort, None


def _carry_cohort(export: dict[str, Any], cohort: Mapping[str, Any] | None, stated: Mapping[str, Any] | None,
                  level: str) -> dict[str, Any] | None:
    """Leave in ``export`` what ``level`` (``asa-export --cohort``) keeps of the cohort list ``cohort``
    (`asa.data.cohort.export_cohort`: ids kept for ``full``); returns the summary that ``config.json`` states
    (`asa.data.cohort.cohort_digest`, with ``"carried"``: what the folder holds of it; ``stated``: the summary
    alone, of a source whose list is not at hand), None when there is no cohort."""
    export.pop("cohort", None)
    if cohort is None:
        return None if stated is None else {**stated, "carried": "none"}
    summary = cohort_digest(cohort)
    if level == "none":
        return {**summary, "carried": "none"}
    export["cohort"] = export_cohort(cohort, ids=level == "full")
    return {**summary, "carried": "digests" if export["cohort"].get("ids") == IDS_WITHHELD else "full"}


def _segmenter(state: Mapping[str, Any]) -> dict[str, Any] | None:
    """The whole fine-tuned network of a fine-tuning checkpoint as asa-predict reads it (weights, spec, run
    config, step; no optimiser state), or None for any other file."""
    config = state.get("config")
    if not isinstance(config, Mapping) or not isinstance(state.get("model"), Mapping):
        return None
    config = current_config(config)  # an earlier version's record of what it predicts: outputs
    if "outputs" not in config:
        return None
    if NETWORK_KINDS.get(current_spec(state["network"])["arch"]) == "pretraining":
        return None
    return {"model": dict(state["model"]), "network": state["network"], "config": dict(config),
            "step": int(state.get("step") or 0)}


def segmenter_card(source: Path, config: Mapping[str, Any], *, base_model: str | None = None) -> str:
    """The model card's section on the whole segmenter: task, training data, the encoder it started from (the
    hub id ``base_model`` when given, else the file's name), the command that made it."""
    outputs = current_config(config).get("outputs")
    task = outputs if isinstance(outputs, Mapping) else {}
    data = config.get("data") if isinstance(config.get("data"), Mapping) else {}
    run = source.parent.parent if source.parent.name == CHECKPOINT_DIR else None
    command = None
    if run is not None and (run / COMMAND_FILE).is_file():
        command = (run / COMMAND_FILE).read_text(encoding="utf-8").strip()
    labels = task.get("labels") or task.get("regions") or task.get("classes")
    return "\n".join([
        "", "## Segmenter", "",
        f"`{SEGMENTER_FILE}` is the whole fine-tuned network ({source.name}); predict with",
        "", "```", "asa-predict checkpoint=path/to/this/folder input=IMAGES output=PREDICTIONS", "```", "",
        f"- task: {task.get('name', 'unknown')}" + (f", outputs {labels}" if labels else ""),
        f"- training data: {data.get('name', 'unknown')}" + (f" at {_public(str(data['root']))}" if data.get("root")
                                                             else "")
        + (f", split {_public(str(data['split_file']))}" if data.get("split_file") else ""),
        _encoder_line(config, base_model),
        "- metrics on its test split: the asa-evaluate summaries under Metrics (none: not evaluated in the run "
        "folder)",
        f"- command: `{_public(command)}`" if command else "- command: not recorded with the run (runs before command.txt)",
        ""])


def _onnx_alone(source: Path, segmenter: Mapping[str, Any], *, license: str | None,
                base_model: str | None) -> OnnxExport:
    """``model.onnx`` of a segmenter whose network has no encoder (DynUNet), so no model folder: its provenance is
    the licence, the source and asa's version (no encoder, no pretraining cohort)."""
    config = {"license": _licence(license, source), "base_model": base_model, "asa_version": asa.__version__,
              "git_commit": _git_commit(), "source": {"file": source.name, "step": int(segmenter.get("step") or 0)}}
    return export_onnx(segmenter, provenance=provenance(config, segmenter["config"]), source=str(source))


def provenance(config: Mapping[str, Any], segmenter: Mapping[str, Any]) -> dict[str, Any]:
    """What an exported segmenter carries of the card (``model.onnx``'s metadata, nnU-Net's ``dataset.json`` and
    checkpoint): the encoder it was fine-tuned from (``base_model`` when given), the pretraining cohort's summary
    digest, the licence, the task and training data, the source file and step, asa's version and commit.
    ``config``: the folder's ``config.json`` (:func:`model_config`); ``segmenter``: the run config."""
    outputs = segmenter.get("outputs") if isinstance(segmenter.get("outputs"), Mapping) else {}
    data = segmenter.get("data") if isinstance(segmenter.get("data"), Mapping) else {}
    return {"encoder": _encoder_line(segmenter, config.get("base_model")).removeprefix("- encoder: "),
            "base_model": config.get("base_model"),
            "pretraining_cohort": config.get("pretraining_cohort"), "license": config.get("license"),
            "task": outputs.get("name"), "training_data": data.get("name"), "source": config.get("source"),
            "asa_version": config.get("asa_version"), "git_commit": config.get("git_commit")}


def _encoder_line(config: Mapping[str, Any], base_model: str | None) -> str:
    """The segmenter card's line on the encoder it was fine-tuned from: its hub page when ``base_model`` names
    it, else the pretrained file's name (``model.pretrained``), or that it trained from scratch."""
    model = config.get("model") if isinstance(config.get("model"), Mapping) else {}
    pretrained = model.get("pretrained")
    if base_model:
        return (f"- encoder: fine-tuned from [{base_model}](https://huggingface.co/{base_model})"
                + (f" (`{_public(str(pretrained))}`)" if pretrained else ""))
    if pretrained:
        return (f"- encoder: fine-tuned from `{_public(str(pretrained))}` (publish that encoder and give its hub id "
                "with `asa-export --base-model` to link it)")
    return "- encoder: trained from scratch (no pretrained encoder)"


def _public(text: str) -> str:
    """``text`` with each absolute or home-relative local path (``/home/me/data/brats``, ``~/data``) cut to
    ``<local>/`` and its last name: a card is public, the folders of the machine that made it are not."""
    return _LOCAL_PATH.sub(lambda m: "<local>/" + Path(m.group(0).rstrip("/")).name, text)


def _held(out: Path, *, overwrite: bool, format: str = "hub") -> list[str]:
    """The files of an earlier export in ``out`` that ``overwrite`` moves aside; a file, a folder holding
    anything else (a run, data) or, without ``overwrite``, a non-empty folder is refused by name."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"output folder {out} is a file")
    held = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    known = RESULTS_FILES if format == "nnunet-results" else FOLDER_FILES + OPTIONAL_FILES + (ONNX_FILE,)
    foreign = [name for name in held if name not in known]
    if foreign:
        shown = ", ".join(foreign[:6]) + (f", ... ({len(foreign)} entries)" if len(foreign) > 6 else "")
        raise ValueError(f"output folder {out} holds files asa-export did not write ({shown}); nothing was written "
                         f"or moved: choose a new or empty folder (--overwrite replaces only an earlier export's "
                         f"{', '.join(FOLDER_FILES)})")
    if held and not overwrite:
        raise ValueError(f"output folder {out} holds an earlier export ({', '.join(held)}); choose another or pass "
                         f"--overwrite (it moves them to {out.name}.replaced-<time>/)")
    return held


def _move_aside(out: Path, names: list[str]) -> Path:
    """Move the files ``names`` of ``out`` into a new ``<out>.replaced-<YYYYmmdd-HHMMSS>/`` beside it
    (the folder itself stays: it may be the working folder); returns that folder."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    aside, n = out.with_name(f"{out.name}.replaced-{stamp}"), 1
    while aside.exists():
        n += 1
        aside = out.with_name(f"{out.name}.replaced-{stamp}-{n}")
    aside.mkdir()
    for name in names:
        os.replace(out / name, aside / name)
    return aside


def _git_commit() -> str | None:
    """The commit of the asa source in use, when it is a git checkout."""
    with contextlib.suppress(Exception):
        repo = Path(asa.__file__).resolve().parent.parent
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10)
        return (done.stdout.strip() or None) if done.returncode == 0 else None
    return None


def _run_metrics(source: Path, state: Mapping[str, Any]) -> dict[str, Any]:
    """What the run recorded about its quality: the checkpoint's last validation round, and the means
    of every asa-evaluate ``summary.json`` found in the run folder (``<run>/*/summary.json``)."""
    metrics: dict[str, Any] = {}
    history = state.get("history")
    if isinstance(history, list) and history and isinstance(history[-1], Mapping):
        metrics["validation"] = {k: v for k, v in history[-1].items() if isinstance(v, (int, float, str))}
    run = source.parent.parent if source.parent.name == CHECKPOINT_DIR else None
    recorded = recorded_overlap(run) if run is not None else None  # asa-finetune's check of its split
    if recorded is not None and (statement := overlap_statement(recorded)) is not None:
        metrics["pretraining_overlap"] = statement
    for summary in sorted(run.glob("*/summary.json")) if run is not None else ():
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(summary.read_text())
            names = data.get("names") or []
            means = {n: {m: data[n][m]["mean"] for m in ("Dice", "HD95", "NSD") if m in data.get(n, {})}
                     for n in names}
            if means:
                metrics[str(summary.parent.name)] = {"task": data.get("task"), "n_cases": data.get("n_cases"),
                                                     "mean": means,
                                                     **({"pretraining_overlap": data["pretraining_overlap"]}
                                                        if data.get("pretraining_overlap") else {})}
    return metrics


def _licence(given: str | None, source: Path, *, recorded: str | None = None, kept: str | None = None) -> str:
    """The licence of the folder: ``given`` (``--license``) or, when None, the one the published file ``recorded``,
    an earlier folder ``kept``, else ``other``; a published file's recorded licence is not replaced (refused)."""
    recorded = None if recorded == "other" else recorded  # "other" names no licence
    if given is None:
        return recorded or kept or "other"
    if recorded and given != recorded:
        raise ValueError(f"--license {given}: {source} was published under {recorded!r}, which a re-export keeps; "
                         "leave --license out")
    return given


def model_config(source: Path, state: Mapping[str, Any], export: Mapping[str, Any], *, license: str | None,
                 cohort: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``config.json``: the spec of the network ``model.safetensors`` holds (the encoder alone:
    `asa.io.hub.encoder_network_spec`; ``source_network``: the network it was trained in) and what built it (method, data, crop, spacing, orientation,
    preprocessing), the asa version and git commit, the source and the run's metrics when known; ``cohort``: the
    pretraining cohort's summary (:func:`_carry_cohort`), stated as ``pretraining_cohort``; ``license``: the
    ``--license`` given (None: :func:`_licence`). A published file (`asa.io.foreign`) states its own plan, trainer,
    dataset, citations and licence (:func:`_published_config`): they are kept, not replaced by asa's."""
    run = state.get("model_config") or {}  # re-exporting a model folder keeps what it recorded
    if run:
        if run.get("network") == export["network"]:  # a folder of format 1 recorded the source network
            run = {**run, "network": encoder_network_spec(export["network"]), "source_network": export["network"],
                   "format_version": 2}
        if cohort is None and isinstance(run.get("pretraining_cohort"), Mapping):  # a folder that carried none
            cohort = {**run["pretraining_cohort"], "carried": "none"}
        recorded = (run.get("published") or {}).get("license")
        if not run.get("published"):  # asa's own folder, exported before it carried its citation
            run = {"citations": [dict(ASA_CITATION)], **run}
        return {**run, **({"pretraining_cohort": dict(cohort)} if cohort else {}), "software": _software(),
                "license": _licence(license, source, recorded=recorded, kept=run.get("license")),
                "asa_version": asa.__version__, "git_commit": _git_commit() or run.get("git_commit")}
    if isinstance(state.get("foreign"), Mapping) and state["foreign"].get("published"):
        return _published_config(source, state["foreign"], export, license=license, cohort=cohort)
    cfg = current_config(state["config"]) if isinstance(state.get("config"), Mapping) else {}
    outputs = cfg.get("outputs")
    spec = dict(export["network"])
    kwargs = spec.get("kwargs", {})
    data = cfg.get("data") if isinstance(cfg.get("data"), Mapping) else {}
    method = cfg.get("method", {}).get("name") if isinstance(cfg.get("method"), Mapping) else None
    if method is None and "segmenter" in cfg:
        method = f"asa-finetune (model arch {spec.get('arch')})"
    resample = data.get("resample_mm")
    return {
        "asa_format": FOLDER_FORMAT, "format_version": 2, "weights": MODEL_FILE,
        "network": encoder_network_spec(spec), "source_network": spec, "encoder_prefix": next(iter(export["encoder"])).split(".", 1)[0] + ".",
        "method": method,
        "data": {k: data[k] for k in DATA_KEYS if k in data} | ({"task": outputs.get("name")}
                                                                if isinstance(outputs, Mapping) else {})
        | ({"demo_phantoms": True} if _demo(data) else {}),
        "crop": list(crop_edges(kwargs["img_size"])) if "img_size" in kwargs else None,
        "patch_size": kwargs.get("patch_size"),
        "spacing_mm": [float(resample)] * 3 if resample else None,  # None: the data's own grid (no resampling)
        "orientation": "RAS+",
        "preprocessing": {"reorient": "RAS+ (nibabel as_closest_canonical)",
                          "intensity": f"clip to percentiles {list(PERCENTILES)} inside the brain, then z-score "
                                       "there; 0 outside",
                          "crop": "brain-centred, the mid-sagittal plane at the centre of the left-right axis",
                          "resample_mm": resample},
        "source": {"file": source.name, "step": int(export.get("step") or 0)},
        "metrics": _run_metrics(source, state),
        **({"pretraining_cohort": dict(cohort)} if cohort else {}),
        "license": _licence(license, source), "asa_version": asa.__version__, "git_commit": _git_commit(),
        "software": _software(), "citations": [dict(ASA_CITATION)],
    }


def _published_config(source: Path, foreign: Mapping[str, Any], export: Mapping[str, Any], *, license: str | None,
                      cohort: Mapping[str, Any] | None) -> dict[str, Any]:
    """``config.json`` of a published file (``foreign``: `asa.io.foreign`'s account of it): what its own plan
    states (trainer, dataset, spacing, normalisation, reader and transposes), not asa's preprocessing, which it
    never went through; ``published``: its adaptation plan, trainer, citations and licence as the file holds them,
    which the nnssl and nnU-Net files of the folder carry again unchanged."""
    published = dict(foreign["published"])
    pretrain = (published.get("adaptation_plan") or {}).get("pretrain_plan") or {}
    name, conf = next(iter((pretrain.get("configurations") or {}).items()), (None, {}))
    spec = dict(export["network"])
    spacing = foreign.get("spacing_mm")
    reader = pretrain.get("image_reader_writer")
    return {
        "asa_format": FOLDER_FORMAT, "format_version": 2, "weights": MODEL_FILE,
        "network": encoder_network_spec(spec), "source_network": spec,
        "encoder_prefix": next(iter(export["encoder"])).split(".", 1)[0] + ".",
        "method": published.get("trainer_name") or foreign.get("architecture"),
        "data": {"name": pretrain["dataset_name"]} if pretrain.get("dataset_name") else {},
        "crop": list(crop_edges(spec["kwargs"]["img_size"])), "patch_size": None,
        "spacing_mm": [float(z) for z in spacing] if spacing else None,
        "orientation": (f"as {reader} reads a file, then transpose_forward {pretrain.get('transpose_forward')} "
                        "(the published plan's)" if reader else "not recorded in the published file"),
        "preprocessing": {"plan": f"the published file's own ({foreign['layout']}), not asa's",
                          "configuration": name, "spacing_style": conf.get("spacing_style"),
                          "normalization_schemes": conf.get("normalization_schemes"),
                          "use_mask_for_norm": conf.get("use_mask_for_norm"), "image_reader_writer": reader,
                          "transpose_forward": pretrain.get("transpose_forward")},
        "source": {"file": source.name, "step": int(export.get("step") or 0), "layout": foreign["layout"]},
        "published": published, "metrics": {},
        **({"pretraining_cohort": dict(cohort)} if cohort else {}),
        "license": _licence(license, source, recorded=published.get("license")), "asa_version": asa.__version__,
        "git_commit": _git_commit(), "software": _software(),
    }


def _software() -> dict[str, str | None]:
    """The versions of the packages that wrote the folder and that read its weights again (``config.json``'s
    ``software``): Python, torch, MONAI, numpy and dynamic-network-architectures (nnU-Net's networks; None when
    not installed)."""
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in SOFTWARE:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def _demo(data: Mapping[str, Any]) -> bool:
    """Whether the run read asa's generated demo phantoms (``data.root`` and ``data.store`` null)."""
    return "root" in data and data.get("root") is None and data.get("store") is None


def model_card(config: Mapping[str, Any], *, segmenter: Mapping[str, Any] | None = None) -> str:
    """``README.md``: Hugging Face front matter (licence, library, pipeline tag, ``base_model`` and ``datasets``
    when given, tags, and for a segmenter evaluated in its run folder a ``model-index`` of its mean Dice), then
    what it is (an encoder, or a segmenter of its task), intended use, training data, metrics when known, the
    citations (a published file's own, else asa's paper) and how to load it (also strictly with safetensors alone)."""
    spec = config.get("source_network") or config["network"]  # the arch the encoder was trained in
    crop = config.get("crop")
    data = config.get("data") or {}
    metrics = config.get("metrics") or {}
    published = config.get("published")
    outputs = current_config(segmenter).get("outputs") if segmenter is not None else None
    task = outputs.get("name", "unknown task") if isinstance(outputs, Mapping) else "unknown task"
    lines = ["---", *front_matter(config, segmenter), "---", "",
             *([f"# asa encoder ({spec['arch']})", "", "## Intended use", "",
                "A pretrained encoder for 3D brain MRI, to initialise segmentation and other downstream networks "
                "(fine-tuning) or to extract features."] if segmenter is None else
               [f"# {task} segmenter ({spec['arch']}, fine-tuned with asa)", "", "## Intended use", "",
                f"A 3D brain-MRI segmenter ({task}): `{SEGMENTER_FILE}` is the whole fine-tuned network, which "
                f"`asa-predict` runs (Segmenter, below); `{MODEL_FILE}` is its encoder alone, to initialise other "
                "networks."]),
             "Research use only: it is not a medical device and was not validated for clinical decisions.", "",
             "## Training", "",
             f"- method: {config.get('method') or 'unknown'}" + (" (the published file's trainer)" if published else ""),
             f"- data: {'demo phantoms (generated by asa, not scans)' if data.get('demo_phantoms') else data.get('name', 'unknown')}"
             + (f" (layout {data['layout']})" if data.get("layout") else "")
             + (f", channels {', '.join(map(str, data['channels']))}" if data.get("channels") else ""),
             f"- crop: {' x '.join(map(str, crop)) if crop else 'unknown'} voxels"
             + (f", patch size {config['patch_size']}" if config.get("patch_size") else ""),
             f"- spacing: {config['spacing_mm']} mm" if config.get("spacing_mm") else "- spacing: the data's own "
             "(no resampling)",
             f"- orientation: {config.get('orientation', 'RAS+')}; preprocessing: see config.json",
             f"- intensity: {_intensity(config)}",
             f"- asa {config.get('asa_version')}" + (f", commit {config['git_commit']}" if config.get("git_commit") else "")
             + (", exported with " + ", ".join(f"{k} {v}" for k, v in config["software"].items() if v)
                if config.get("software") else ""),
             _source_line(config),
             *([f"- pretraining cohort: {cohort['cases']} cases, {cohort['images']} images, digest "
                f"`{cohort['digest']}`; " + CARRIED.get(cohort.get("carried", "full"), CARRIED["full"])]
               if (cohort := config.get("pretraining_cohort")) else []), "",
             "## Metrics", ""]
    overlap = metrics.get("pretraining_overlap")
    if overlap and overlap.get("accepted"):  # metrics over cases the encoder saw in pretraining: said, not only kept
        lines += [f"**Not held out:** {overlap['text']}: those test metrics include cases the encoder was pretrained "
                  "on.", ""]
    if metrics:
        lines += ["```json", json.dumps(metrics, indent=2), "```", ""]
    else:
        lines += ["None recorded with the run.", ""]
    citations = (published or {}).get("citations") if published else config.get("citations")
    if citations:
        lines += ["## Citations", "", ("The published file asks that these be cited (as nnU-Net's PretrainedTrainer "
                  "prints them):" if published else "Please cite:"), ""]
        lines += [f"- {c.get('type', '?')} `{c.get('name', '?')}`: "
                  + " ".join(c.get("apa_citations") or c.get("bibtex_citations") or []) if isinstance(c, Mapping)
                  else f"- {c}" for c in citations] + [""]
    lines += ["## How to use", "", "```python", "import asa", "",
              "encoder = asa.load_encoder(\"path/to/this/folder\")  # weights loaded, eval mode", "```", "",
              f"Or with torch and safetensors alone, strictly: `{MODEL_FILE}` holds a tensor that two names share "
              "once, and safetensors' `load_model` leaves out the second names, which the network shares as well:", "",
              "```python", "import json", "from safetensors.torch import load_model",
              "from asa.models import build_network", "", "encoder = build_network(json.load(open(\"config.json\"))[\"network\"])",
              f"load_model(encoder, \"{MODEL_FILE}\", strict=True)", "```", "",
              "Fine-tune it with `asa-finetune model.pretrained=path/to/this/folder`.", "",
              "## Licence", "",
              f"`{config['license']}`" + (("." if config["license"] != "other" else
                                          ": the published file records no licence; the terms its publisher released it "
                                          "under apply, state them here." if published else
                                          ": the terms of the training data apply; state them here.")), ""]
    return "\n".join(lines)


def front_matter(config: Mapping[str, Any], segmenter: Mapping[str, Any] | None = None) -> list[str]:
    """The card's YAML front matter, one line each (Hugging Face's model-card metadata): ``pipeline_tag``
    ``image-segmentation`` for a whole segmenter, ``image-feature-extraction`` for an encoder; ``base_model`` and
    ``datasets`` as given to the export (hub ids); ``license: other`` with ``license_name`` and ``license_link`` (the
    card, whose Licence section states the terms); ``model-index`` (in YAML's JSON form) with each asa-evaluate
    summary of the run folder as a result: the mean Dice over the task's outputs on that many cases, its name saying
    "not held out" when test cases of the pretraining cohort were accepted."""
    spec = config.get("source_network") or config["network"]
    lines = [f"license: {config['license']}",
             *([f"license_name: {OTHER_LICENCE['published' if config.get('published') else 'asa']}",
                f"license_link: {CARD_LINK}"] if config["license"] == "other" else []),
             "library_name: asa",
             f"pipeline_tag: {'image-segmentation' if segmenter is not None else 'image-feature-extraction'}"]
    if config.get("base_model"):
        lines.append(f"base_model: {config['base_model']}")
    if config.get("datasets"):
        lines += ["datasets:", *(f"- {d}" for d in config["datasets"])]
    lines += ["tags:", "- medical-imaging", "- 3d", "- brain-mri", "- self-supervised", f"- {spec['arch']}"]
    results = []
    for split, summary in sorted((config.get("metrics") or {}).items()):
        means = summary.get("mean") if isinstance(summary, Mapping) else None
        dice = [m["Dice"] for m in (means or {}).values() if isinstance(m, Mapping) and "Dice" in m]
        if segmenter is None or not dice:
            continue
        name = (config.get("data") or {}).get("name") or "unknown"
        overlap = summary.get("pretraining_overlap") or {}
        flag = f" (not held out: {overlap['text']})" if overlap.get("accepted") else ""
        results.append({"task": {"type": "image-segmentation"}, "dataset": {"name": name, "type": name, "split": split},
                        "metrics": [{"type": "dice", "name": f"mean Dice over {len(dice)} outputs, {summary.get('n_cases')} "
                                     f"cases{flag}", "value": round(float(sum(dice) / len(dice)), 4)}]})
    if results:
        lines.append("model-index: " + json.dumps([{"name": f"asa {spec['arch']}", "results": results}]))
    return lines


def _intensity(config: Mapping[str, Any]) -> str:
    """The card's words on the intensity normalisation the encoder was pretrained with."""
    pre = config.get("preprocessing") or {}
    if config.get("published"):
        schemes, masks = pre.get("normalization_schemes"), pre.get("use_mask_for_norm")
        return (f"{', '.join(map(str, schemes))} (use_mask_for_norm {masks}), as the published plan states"
                if schemes else "not recorded in the published file")
    return pre.get("intensity") or "see config.json"


def _source_line(config: Mapping[str, Any]) -> str:
    """The card's line naming the file the weights came from; a published one's plan is carried unchanged."""
    src = config.get("source") or {}
    line = f"- source: {src.get('file')} (step {src.get('step')})"
    published = config.get("published")
    if not published:
        return line
    plan = (published.get("adaptation_plan") or {}).get("pretrain_plan") or {}
    return (f"- source: a published {published.get('layout')} checkpoint, {src.get('file')} (step {src.get('step')}, "
            f"trainer {published.get('trainer_name') or 'not recorded'}, dataset "
            f"{plan.get('dataset_name') or 'not recorded'}), re-exported by asa: its plan (spacing, normalisation, "
            "reader, transposes, dataset), trainer, citations and licence are carried unchanged into "
            f"`{NNSSL_CHECKPOINT}`, `{NNSSL_PLAN}` and `config.json` (`published`)")
