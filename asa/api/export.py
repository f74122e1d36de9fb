"""Hub-ready model folders: the job behind `asa-export CHECKPOINT OUT_DIR`.

The folder (`asa.io.hub`) holds the encoder of a checkpoint or export as ``model.safetensors``,
what built it as ``config.json`` and a model card as ``README.md``: the layout the Hugging Face hub
takes as is. ``asa.load_encoder(OUT_DIR)`` and ``asa-finetune model.pretrained=OUT_DIR`` read it.
"""

from __future__ import annotations

import contextlib
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
from asa.api.configuration.compat import current_config
from asa.api.machinery.cohort import overlap_statement, recorded_cohort, recorded_overlap, weights_folder
from asa.api.machinery.rundir import RunDirError, check_writable, move_files_aside
from asa.api.machinery.run import refusing
from asa.data.cohort import (COHORT_LEVELS, IDS_WITHHELD, CohortListMissing, carried_cohort, cohort_digest,
                             cohort_summary, export_cohort)
from asa.formats import ENCODER, FOLDER, SEGMENTER, Format, Job, choices, formats
from asa.api.machinery.rundir import COMMAND_NAME
from asa.formats.card import folder_licence, git_commit, model_card
from asa.formats.hub import model_config
from asa.io.hub import SEGMENTER_FILE, write_folder, write_model_folder
from asa.models import load_weights
from asa.models.family import has_encoder
from asa.models.portable import encoder_export
from asa.models.registry import NETWORK_KINDS, current_spec, network_record

LEVELS = (ENCODER, FOLDER, SEGMENTER)  # the order of the formats' parts: their card sections, files
HUB_ID = re.compile(r"(?:[A-Za-z0-9][A-Za-z0-9_.-]*/)?[A-Za-z0-9][A-Za-z0-9_.-]*")  # a Hugging Face repository id

__all__ = ["export_model"]


def export_model(checkpoint: str | os.PathLike, out_dir: str | os.PathLike, *, overwrite: bool = False,
                 license: str | None = None, cohort: str | None = None, base_model: str | None = None,
                 datasets: Sequence[str] = (), format: str = "hub", **options: Any) -> Path:
    """Write the hub-ready model folder of ``checkpoint`` to ``out_dir`` with the files of every format that takes it
    (`asa.formats`) and return it; a bad input is refused (`asa.api.machinery.run.OptionError`, exit 2 from
    asa-export) before anything is written. A fine-tuning checkpoint also gives ``segmenter.pt``, the whole network
    ``asa-predict checkpoint=OUT_DIR`` runs, and the card names its task, training data, metrics and command.

    Args:
        checkpoint: asa-pretrain's or asa-finetune's ``last.pt`` / ``best.pt``, an encoder export or a model folder.
        out_dir: the folder to write; one holding an earlier export's files is refused unless ``overwrite``, which
            moves them to ``<out_dir>.replaced-<time>/`` (never deleted); one holding anything else is refused.
        license: the card's licence id (``other``: stated in the card's text). None: the one the source records,
            else ``other``; a published file's recorded licence is kept, another one refused.
        cohort: what ``cohort.json.gz`` carries of the pretraining cohort (`asa.data.cohort.COHORT_LEVELS`): ``full``
            (ids and subjects too), ``digests`` (the default: under opaque keys, still checked by asa-finetune and
            asa-probe) or ``none`` (its summary digest in ``config.json`` alone).
        base_model, datasets: the card's Hugging Face ids of the encoder a segmenter started from, and of datasets.
        format: ``hub`` (the model folder) or a segmenter format (`asa.formats.base.choices`): ``onnx`` adds
            ``model.onnx``; ``nnunet-results`` writes nnU-Net's results folder instead.
        options: the formats' own (`asa.formats.base.Option`): ``nnunet_channels`` and ``nnunet_plans`` of the
            nnunet files, ``dataset_id``, ``dataset_name`` and ``spacing`` of ``nnunet-results``.
    """
    declared = {o.name: o for f in formats().values() for o in f.options}
    with refusing():
        if unknown := sorted(set(options) - set(declared)):
            raise ValueError(f"export_model: no format reads the option {unknown[0]!r} (the formats' options: "
                             f"{', '.join(declared)})")
        options = {**dict.fromkeys(declared), **options, "overwrite": overwrite}
        source = Path(checkpoint).expanduser()
        if not source.exists():
            raise FileNotFoundError(f"checkpoint {source}: no such file or folder")
        out = Path(out_dir).expanduser().absolute()  # ".": the working folder, by its name
        if out.resolve() == source.resolve() or source.resolve() in out.resolve().parents:
            raise ValueError(f"output folder {out} would replace or sit inside the input {source}")
        if format not in choices():
            raise ValueError(f"--format {format!r}: expected one of {', '.join(choices())}")
        chosen = formats()[format]
        writes = [chosen] if chosen.alone else sorted((f for f in formats().values() if f.level != SEGMENTER
                                                       or f is chosen), key=lambda f: LEVELS.index(f.level))
        for fmt in formats().values():  # a format's options, given for an export that does not write it
            if fmt not in writes and (given := " / ".join(o.flag for o in fmt.options if options[o.name] is not None)):
                raise ValueError(f"{given}: options of --format {fmt.name}, not of --format {format}"
                                 if fmt.level == SEGMENTER else f"{given}: options of the model folder's {fmt.name} "
                                 f"files, which --format {format} does not write")
        chosen.check(options)
        held = _held(out, overwrite=overwrite, chosen=chosen, writes=writes)
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
        if chosen.level == SEGMENTER and source.is_dir() and (source / SEGMENTER_FILE).is_file():
            source = source / SEGMENTER_FILE  # a model folder's whole segmenter, which the formats take
        state = load_weights(source)
        segmenter = _segmenter(state)
        if chosen.level == SEGMENTER and segmenter is None:
            raise ValueError(f"--format {format}: {source} holds no fine-tuned segmenter (an encoder only); export "
                             f"the last.pt / best.pt of asa-finetune or a model folder holding {SEGMENTER_FILE}")
        arch = None if segmenter is None else current_spec(segmenter["network"])["arch"]
        if chosen.level == SEGMENTER and network_record(arch) is not None and not has_encoder(arch):
            # DynUNet: no encoder, no model folder; the provenance is the licence, the source and asa's version
            config = {"license": folder_licence(license, source), "base_model": base_model,
                      "asa_version": asa.__version__, "git_commit": git_commit(),
                      "source": {"file": source.name, "step": segmenter["step"]}}
            part = chosen.part(Job(source, None, config, segmenter, options))
            _replace(out, held)
            return write_folder(out, part.files)
        export = encoder_export(source, state)
        export.pop("cohort", None)
        summary, listed = _carry_cohort(*_source_cohort(source, state, cohort), cohort or "digests")
        if listed is not None:  # the list goes beside the weights, which carry its summary
            export["cohort"] = cohort_summary(listed)
        run_config = current_config(state["config"]) if isinstance(state.get("config"), Mapping) else {}
        config = model_config(source, state, export, license=license, cohort=summary, run=run_config,
                              metrics=_run_metrics(source, state))
        config.update({k: v for k, v in (("base_model", base_model), ("datasets", list(datasets))) if v})
        job = Job(source, export, config, segmenter, options, listed, _command(source))
        parts = {}  # built, checked and measured before any write: every format that takes the network
        for fmt in writes:
            if (fault := fmt.fault(export["network"])) is None:
                parts[fmt] = fmt.part(job)
            elif given := [o.flag for o in fmt.options if options[o.name] is not None]:
                raise ValueError(f"{given[0]}: {source} holds {fault}")
    _replace(out, held)
    if chosen.alone:  # its own folder in place of the model folder, with its card
        return write_folder(out, parts[chosen].files)
    card = model_card(config, segmenter=None if segmenter is None else segmenter["config"])
    inside = {name: w for fmt, part in parts.items() if fmt.level != SEGMENTER for name, w in part.files.items()}
    folder = write_model_folder(out, export, config, card + "".join(part.card for part in parts.values()),
                                extra=inside)  # all or none
    for fmt, part in parts.items():  # a segmenter format's files last: a folder without them is a model folder
        for name, write in part.files.items() if fmt.level == SEGMENTER else ():
            write(folder / name)
    for part in parts.values():  # outside the folder (the dataset's plans), once the folder is written
        if part.after is not None:
            part.after()
    return folder


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


def _carry_cohort(cohort: Mapping[str, Any] | None, stated: Mapping[str, Any] | None,
                  level: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(the summary ``config.json`` states: `asa.data.cohort.cohort_digest` with ``"carried"``, what the folder
    holds; what ``level``, ``asa-export --cohort``, keeps of the list ``cohort``: `asa.data.cohort.export_cohort`,
    ids for ``full``). ``stated``: the summary alone, of a source whose list is not at hand; (None, None): no cohort."""
    if cohort is None:
        return (None if stated is None else {**stated, "carried": "none"}), None
    summary = cohort_digest(cohort)
    if level == "none":
        return {**summary, "carried": "none"}, None
    listed = export_cohort(cohort, ids=level == "full")
    return {**summary, "carried": "digests" if listed.get("ids") == IDS_WITHHELD else "full"}, listed


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


def _held(out: Path, *, overwrite: bool, chosen: Format, writes: list[Format]) -> list[str]:
    """The files of an earlier export in ``out`` that ``overwrite`` moves aside; a file, a folder holding
    anything else (a run, data) or, without ``overwrite``, a non-empty folder is refused by name."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"output folder {out} is a file")
    held = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    known = chosen.files if chosen.alone else [n for f in formats().values() if not f.alone for n in f.files]
    foreign = [name for name in held if name not in known]
    if foreign:
        own = [n for f in writes if f.level != ENCODER for n in f.files]
        shown = ", ".join(foreign[:6]) + (f", ... ({len(foreign)} entries)" if len(foreign) > 6 else "")
        raise ValueError(f"output folder {out} holds files asa-export did not write ({shown}); nothing was written "
                         f"or moved: choose a new or empty folder (--overwrite replaces only an earlier --format "
                         f"{chosen.name} export's {', '.join(own)})")
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


def _replace(out: Path, names: list[str]) -> None:
    """--overwrite: move the earlier export's files ``names`` of ``out`` into a new
    ``<out>.replaced-<YYYYmmdd-HHMMSS>/`` beside it (never deleted; the folder itself stays: it may be the working
    folder)."""
    if not names:
        return
    aside = move_files_aside(out, names)
    print(f"[asa-export] --overwrite: moved the previous {', '.join(names)} to {aside}", file=sys.stderr, flush=True)


def _run_metrics(source: Path, state: Mapping[str, Any]) -> dict[str, Any]:
    """What the run recorded about its quality: the checkpoint's last validation round, and the means
    of every asa-evaluate ``summary.json`` found in the run folder (``<run>/*/summary.json``)."""
    metrics: dict[str, Any] = {}
    history = state.get("history")
    if isinstance(history, list) and history and isinstance(history[-1], Mapping):
        metrics["validation"] = {k: v for k, v in history[-1].items() if isinstance(v, (int, float, str))}
    run = _run_folder(source)
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


def _run_folder(source: Path) -> Path | None:
    """The run folder of a checkpoint in its ``checkpoints/`` folder (None: a file elsewhere)."""
    return source.parent.parent if source.parent.name == "checkpoints" else None


def _command(source: Path) -> str | None:
    """The command line that started the run of ``source`` (its ``command.txt``; None: not recorded)."""
    run = _run_folder(source)
    path = None if run is None else run / COMMAND_NAME
    return path.read_text(encoding="utf-8").strip() if path is not None and path.is_file() else None
