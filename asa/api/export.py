"""Hub-ready model folders: the job behind `asa-export CHECKPOINT OUT_DIR`.

The folder (`asa.io.hub`) holds the encoder of a checkpoint or export as ``model.safetensors``,
what built it as ``config.json`` and a model card as ``README.md``: the layout the Hugging Face hub
takes as is. ``asa.load_encoder(OUT_DIR)`` and ``asa-finetune model.pretrained=OUT_DIR`` read it.
"""

from __future__ import annotations

import datetime
import errno
import json
import os
import re
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import asa
from asa.api.machinery.card import folder_licence, git_commit, model_card, model_config, provenance, segmenter_card
from asa.api.machinery.cohort import recorded_cohort, weights_folder
from asa.api.configuration.compat import current_config
from asa.api.machinery.rundir import RunDirError, check_writable
from asa.api.machinery.run import refusing
from asa.data.cohort import (COHORT_LEVELS, IDS_WITHHELD, CohortListMissing, carried_cohort, cohort_digest,
                             cohort_summary, export_cohort, write_cohort_list)
from asa.io import atomic_write_json, save_checkpoint, write_model_folder
from asa.io.atomic import atomic_write_bytes
from asa.models import load_weights
from asa.io.hub import (COHORT_LIST, FOLDER_FILES, NNSSL_CHECKPOINT, NNSSL_PLAN, NNUNET_PLANS, NNUNET_WEIGHTS, OPTIONAL_FILES,
                        SEGMENTER_FILE)
from asa.api.machinery.nnunet_results import (DATASET_ID, RESULTS_FILES, check_dataset, check_spacing, nnunet_results,
                                              results_card, write_nnunet_results)
from asa.api.machinery.onnx_export import (ONNX_FILE, OnnxExport, export_onnx, onnx_alone_card, onnx_card,
                                  write_onnx_folder)
from asa.models.exports.nnssl import nnssl_checkpoint
from asa.models.exports.nnunet import (NNUNET_CONFIGURATION, READING_NOTE, describe_nnunet, nnunet_checkpoint,
                                       nnunet_fault, nnunet_plans_snippet)
from asa.models.family import has_encoder
from asa.models.portable import encoder_export
from asa.models.registry import NETWORK_KINDS, current_spec, network_record

HUB_ID = re.compile(r"(?:[A-Za-z0-9][A-Za-z0-9_.-]*/)?[A-Za-z0-9][A-Za-z0-9_.-]*")  # a Hugging Face repository id

__all__ = ["FORMATS", "NNUNET_PLANS", "NNUNET_WEIGHTS", "export_model", "merge_nnunet_plans", "model_card",
           "model_config", "provenance"]

FORMATS = ("hub", "onnx", "nnunet-results")  # asa-export --format


def export_model(checkpoint: str | os.PathLike, out_dir: str | os.PathLike, *, overwrite: bool = False,
                 license: str | None = None, nnunet_channels: int | None = None,
                 nnunet_plans: str | os.PathLike | None = None, cohort: str | None = None,
                 base_model: str | None = None, datasets: Sequence[str] = (), format: str = "hub",
                 dataset_id: int | None = None, dataset_name: str | None = None,
                 spacing: Sequence[float] | None = None) -> Path:
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
            segmenter that onnxruntime runs (`asa.api.machinery.onnx_export`); ``nnunet-results``, instead of the folder an
            nnU-Net v2 results folder of the segmenter that nnU-Net's own predictor runs
            (`asa.api.machinery.nnunet_results`). Both carry the card's provenance (:func:`provenance`) and refuse a
            network they cannot represent, naming it, before anything is written.
        dataset_id: ``nnunet-results``: the plans' ``Dataset<id>`` (1..999; None: 975), which ``nnUNetv2_predict -d``
            finds in ``$nnUNet_results``: two models need two ids.
        dataset_name: ``nnunet-results``: what follows ``Dataset<id>_`` (None: ``asa_<task>``).
        spacing: ``nnunet-results``: the plans' voxel size in mm (one edge or three, RAS order) for a checkpoint
            fine-tuned before asa-finetune recorded its training cases' median spacing (None: the recorded one).

    A fine-tuning checkpoint also gives ``segmenter.pt``, the whole network (weights, spec, run config) that
    ``asa-predict checkpoint=OUT_DIR`` uses, and the card names its task, training data, the metrics of
    asa-evaluate runs found in the run folder and the command that made it. An encoder whose family declares
    the network nnU-Net builds of it (`asa.models.family.NNUNetForm`: resenc without the coordinate channel, a
    plug-in's U-Net) also gets ``nnunet_pretrained_weights.pth`` and
    ``nnunet_plans.json`` (`asa.models.exports.nnunet`): ``nnUNetv2_train ... -pretrained_weights`` loads the one
    into the network nnU-Net builds from the other; and nnssl's ``checkpoint_final.pth`` with
    ``adaptation_plan.json`` (`asa.models.exports.nnssl`), which nnU-Net's nnssl route reads.

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
        results_options = [name for name, value in (("--dataset-id", dataset_id), ("--dataset-name", dataset_name),
                                                    ("--spacing", spacing)) if value is not None]
        if format != "nnunet-results" and results_options:
            raise ValueError(f"{' / '.join(results_options)}: options of --format nnunet-results (the nnU-Net results "
                             f"folder's dataset and plans), not of --format {format}")
        if format == "nnunet-results":
            check_dataset(DATASET_ID if dataset_id is None else dataset_id, dataset_name)
            spacing = None if spacing is None else check_spacing(spacing)
        held = _held(out, overwrite=overwrite, format=format)
        check_writable(out, "OUT_DIR")  # as the training and prediction jobs refuse their output folders
        if out.is_dir():  # the files are written beside it first, then renamed into it: its folder is written too
            _check_beside(out)
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
        if format == "onnx" and record is not None and not has_encoder(current_spec(whole["network"])["arch"]):
            # DynUNet: no encoder, no folder
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
            usage = describe_nnunet(spec, Path("."), NNUNET_WEIGHTS, NNUNET_PLANS)
            card += "\n## nnU-Net v2\n\n```\n" + usage + "\n```\n\n" + READING_NOTE + "\n"
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
                                     source=str(source), dataset_name=dataset_name, spacing=spacing,
                                     dataset_id=DATASET_ID if dataset_id is None else dataset_id)
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


def _onnx_alone(source: Path, segmenter: Mapping[str, Any], *, license: str | None,
                base_model: str | None) -> OnnxExport:
    """``model.onnx`` of a segmenter whose network has no encoder (DynUNet), so no model folder: its provenance is
    the licence, the source and asa's version (no encoder, no pretraining cohort)."""
    config = {"license": folder_licence(license, source), "base_model": base_model, "asa_version": asa.__version__,
              "git_commit": git_commit(), "source": {"file": source.name, "step": int(segmenter.get("step") or 0)}}
    return export_onnx(segmenter, provenance=provenance(config, segmenter["config"]), source=str(source))


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
                         f"or moved: choose a new or empty folder (--overwrite replaces only an earlier --format "
                         f"{format} export's {', '.join(RESULTS_FILES if format == 'nnunet-results' else _files(format))})")
    if held and not overwrite:
        raise ValueError(f"output folder {out} holds an earlier export ({', '.join(held)}); choose another or pass "
                         f"--overwrite (it moves them to {out.name}.replaced-<time>/)")
    return held


def _check_beside(out: Path) -> None:
    """Refuse (`RunDirError`, exit 2) an existing ``out`` whose own folder cannot be written: every format writes
    its files into a new folder beside ``out`` and renames them into it (an export that fails leaves nothing that
    looks finished), so a writable ``out`` in a read-only folder would fail only after the work."""
    try:
        fd, name = tempfile.mkstemp(prefix=".asa-write-check.", dir=out.parent)
    except OSError as err:
        if err.errno not in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC):
            raise
        raise RunDirError(f"OUT_DIR={out}: its folder {out.parent} cannot be written "
                          f"({os.strerror(err.errno).lower()}), and asa-export writes the files there first, then "
                          "renames them into OUT_DIR; choose an OUT_DIR in a writable folder") from None
    os.close(fd)
    os.unlink(name)


def _files(format: str) -> tuple[str, ...]:
    """The files an export of ``format`` (hub or onnx) writes at least: the model folder's, and ``model.onnx``."""
    return FOLDER_FILES + ((ONNX_FILE,) if format == "onnx" else ())


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


