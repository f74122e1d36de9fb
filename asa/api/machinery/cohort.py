"""Was an evaluation case in the pretraining cohort? The records and checks behind ``asa-cohort`` (`asa.api.cohort`),
a fine-tuning run's split, asa-probe's cases and asa-evaluate's report.

A run folder records its data (``config.yaml``: ``data.root``, ``data.layout``, the demo settings) and its split
(``splits.json``). :func:`pretraining_cohort` turns a pretraining run's into its cohort (`asa.data.cohort`:
each case's part, subject and image content digests) and keeps it as ``cohort.json`` in that folder, so the
images are read once; `asa.api.cohort.check_cohort` compares a fine-tuning run's validation and test cases with it,
by case id, by subject and by image content (a renamed copy counts).

An encoder export carries the recorded cohort's summary (``"cohort"``, `asa.data.cohort.cohort_summary`) and its
list beside it (``cohort.json.gz``), so a fine-tuning run with only ``model.pretrained=<file>`` checks its own split
(:func:`check_pretraining_overlap`); a file whose list is missing is said to be unchecked. A fine-tuning run keeps
its encoder's list (``pretraining_cohort.json.gz``), so an export of its checkpoints carries that cohort on.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

from asa.api.machinery.dataset import dataset_root, on_main_then_share
from asa.api.machinery.run import OptionError
from asa.data import discover
from asa.data.case import Case
from asa.data.cohort import (CohortListMissing, carried_cohort, check_carried_list, cohort_digest, cohort_record,
                             export_cohort, keep_cohort_list)
from asa.data.cohort_list import COHORT_FORMAT, read_cohort_list
from asa.data.digests import DIGEST, image_signatures
from asa.data.overlap import cohort_overlap, overlap_line
from asa.data.fingerprint import FINGERPRINT
from asa.io import atomic_write_json
from asa.io.hub import HUB_PREFIX, resolve_hub_id
from asa.models import load_weights
from asa.train.distributed import DistEnv
from asa.train.resume import written_by

__all__ = ["ACCEPT_OPTION", "COHORT_FILE", "ENCODER_COHORT_FILE", "OVERLAP_FILE", "evaluated_overlap_line",
           "check_pretraining_overlap", "check_probe_overlap", "check_run_kinds",
           "encoder_cohort", "overlap_statement", "pretraining_cohort", "recorded_cohort", "recorded_overlap", "run_cases",
           "run_folder", "weights_folder", "write_overlap"]

ACCEPT_OPTION = "data.accept_pretraining_overlap"  # asa-finetune's option that accepts test cases seen in pretraining

COHORT_FILE = "cohort.json"
OVERLAP_FILE = "pretraining_overlap.json"  # beside a fine-tuning run's splits.json: what check_pretraining_overlap found
# beside it: the list of the encoder's cohort, which an export of the run's checkpoints carries on
ENCODER_COHORT_FILE = "pretraining_cohort.json.gz"


def run_folder(path: str | os.PathLike) -> Path:
    """The run folder of ``path``: the folder itself, or the run of a checkpoint in its ``checkpoints/``."""
    path = Path(path).expanduser()
    if path.is_file() and path.parent.name == "checkpoints":
        path = path.parent.parent
    if not (path / "config.yaml").is_file() or not (path / "splits.json").is_file():
        raise FileNotFoundError(f"{path}: not a run folder (asa-pretrain / asa-finetune write config.yaml and "
                                "splits.json there)")
    return path


def _run_kind(run: Path) -> str | None:
    """The console script that wrote the run folder ``run`` (`asa.train.resume.written_by` of its ``config.yaml``:
    a ``method`` is asa-pretrain's, a ``task`` asa-finetune's); None when it records neither."""
    try:
        config = yaml.safe_load((run / "config.yaml").read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return written_by({"config": config}) if isinstance(config, Mapping) else None


def check_run_kinds(pretrain_run: str | os.PathLike, finetune_run: str | os.PathLike | None) -> None:
    """Refuse (`ValueError`, one line) asa-cohort's PRETRAIN_RUN when it is a fine-tuning run, or its FINETUNE_RUN
    when it is a pretraining run, naming the argument and what was expected; both at once: swapped. A run whose
    ``config.yaml`` records neither a method nor a task is taken as given."""
    pretrain = run_folder(pretrain_run)
    finetune = None if finetune_run is None else run_folder(finetune_run)
    first = _run_kind(pretrain)
    second = None if finetune is None else _run_kind(finetune)
    if first == "asa-finetune" and second == "asa-pretrain":
        raise ValueError(f"the two arguments look swapped: PRETRAIN_RUN={pretrain} is a fine-tuning run and "
                         f"FINETUNE_RUN={finetune} a pretraining run; give the pretraining run first: asa-cohort "
                         f"{finetune} {pretrain}")
    if first == "asa-finetune":
        raise ValueError(f"PRETRAIN_RUN={pretrain} is a fine-tuning run (its config.yaml records a task); expected the "
                         "asa-pretrain run folder whose encoder the fine-tuning started from (its config.yaml records "
                         "a method)")
    if second == "asa-pretrain":
        raise ValueError(f"FINETUNE_RUN={finetune} is a pretraining run (its config.yaml records a method); expected "
                         "an asa-finetune run folder, whose splits.json holds the validation and test cases to check")


def run_cases(run: str | os.PathLike) -> tuple[list[Case], dict[str, list[str]], dict[str, Any]]:
    """(cases, splits, data settings) of a run folder: the cases found in its recorded ``data`` (root and
    layout, or the demo phantoms it generated), its ``splits.json`` and the ``data`` section of ``config.yaml``."""
    run = run_folder(run)
    config = yaml.safe_load((run / "config.yaml").read_text()) or {}
    data = config.get("data")
    if not isinstance(data, dict):
        raise ValueError(f"{run / 'config.yaml'}: no data section")
    root, layout = dataset_root(OmegaConf.create(data))
    cases = discover(layout, root, on_bad_case="skip", validate="none")
    splits = json.loads((run / "splits.json").read_text())
    missing = sorted({i for part in ("train", "val", "test") for i in splits.get(part, [])} - {c.id for c in cases})
    if missing:
        raise FileNotFoundError(f"{run}: {len(missing)} case(s) of its splits.json are not in data.root={root} "
                                f"any more ({', '.join(missing[:5])})")
    return cases, {k: v for k, v in splits.items() if isinstance(v, list)}, {"root": str(root), "layout": layout,
                                                                            "name": data.get("name")}


def pretraining_cohort(run: str | os.PathLike, *, workers: int = 4, refresh: bool = False) -> dict[str, Any]:
    """The cohort of the pretraining run ``run`` (a run folder or a checkpoint in it): its ``cohort.json`` when
    it matches the run's split (and not ``refresh``), else made from the run's data and written there."""
    run = run_folder(run)
    path = run / COHORT_FILE
    splits = json.loads((run / "splits.json").read_text())
    wanted = {i for part in ("train", "val", "test") for i in splits.get(part, [])}
    if path.is_file() and not refresh:
        kept = json.loads(path.read_text())
        if (kept.get("format") == COHORT_FORMAT and kept.get("digest") == DIGEST
                and kept.get("fingerprint") == FINGERPRINT and set(kept.get("cases", {})) == wanted):
            return kept
    cases, parts, data = run_cases(run)
    cohort = cohort_record(cases, parts, workers=workers, source={"run": str(run.resolve()), "data": data})
    atomic_write_json(path, cohort)
    return cohort


def recorded_cohort(checkpoint: str | os.PathLike) -> dict[str, Any] | None:
    """The cohort an encoder export of ``checkpoint`` carries (`asa.data.cohort.export_cohort`), as its run folder
    (``<run>/checkpoints/<file>``) records it: a pretraining run's ``cohort.json``, or the cohort of the encoder a
    fine-tuning run started from (``pretraining_cohort.json.gz``, :func:`write_overlap`); None without one."""
    path = Path(checkpoint).expanduser()
    run = path.parent.parent if path.parent.name == "checkpoints" else None
    if run is not None and (run / ENCODER_COHORT_FILE).is_file() and not (run / COHORT_FILE).is_file():
        return export_cohort(read_cohort_list(run / ENCODER_COHORT_FILE, lazy=True))
    if run is None or not (run / COHORT_FILE).is_file():
        return None
    try:
        kept = json.loads((run / COHORT_FILE).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{run / COHORT_FILE}: not readable JSON ({err}); asa-cohort writes it again") from err
    # one of another digest: asa-cohort records it again
    return export_cohort(kept) if kept.get("format") == COHORT_FORMAT and kept.get("digest") == DIGEST else None


def weights_folder(path: str | os.PathLike) -> Path:
    """The folder a weight file's cohort list sits in: a model folder itself (a hub id's downloaded copy), else
    the file's folder."""
    if isinstance(path, str) and path.startswith(HUB_PREFIX):
        return resolve_hub_id(path)
    path = Path(path).expanduser()
    return path if path.is_dir() else path.parent


def encoder_cohort(path: str | os.PathLike, *, option: str) -> dict[str, Any] | None:
    """The pretraining cohort the encoder file ``path`` carries (`asa.data.cohort.carried_cohort`: its list, read
    from beside it), or None; ``option`` names where the file was given, in messages. A list that is not beside
    the file raises `asa.data.cohort.CohortListMissing`."""
    return carried_cohort(load_weights(path), f"{option}={path}", weights_folder(path))


def check_pretraining_overlap(pretrained: str | os.PathLike, splits: dict[str, Sequence[Case]], *, accept: bool,
                              env: DistEnv | None = None, workers: int = 1) -> dict[str, Any] | None:
    """Say in one line how many validation and test cases of ``splits`` were in the pretraining cohort that the
    encoder file ``pretrained`` carries (by case id, subject, image content and near content; each case's images are read
    once, on rank 0); refuse (`OptionError`, naming ``data.accept_pretraining_overlap``) when a test case was,
    unless ``accept``. Returns ``{"pretrained", "cohort": its digest, "subsets": the overlap report}``
    (`asa.data.overlap.cohort_overlap`; :func:`write_overlap` keeps it in the run folder), or None when the file
    carries no cohort or its list is not beside it (said in the line: nothing was checked)."""
    env = env or DistEnv()
    state = load_weights(pretrained)
    where = f"model.pretrained={pretrained}"
    try:  # the list is checked against the file's summary on rank 0, on the overlap's own read of it (below)
        cohort = carried_cohort(state, where, weights_folder(pretrained), verify=False)
    except CohortListMissing as err:
        if env.is_main:
            print(f"[asa] pretraining cohort: {err}; the validation and test cases were not checked against it",
                  flush=True)
        return None
    if cohort is None:
        summary = (state.get("model_config") or {}).get("pretraining_cohort")
        how = (f"it was exported with asa-export --cohort none: its config.json states only the cohort's digest "
               f"{summary.get('digest')}; export with --cohort digests to check" if isinstance(summary, dict)
               and summary.get("carried") == "none" else
               "record them with asa-cohort PRETRAIN_RUN, then export with asa-export")
        if env.is_main:
            print(f"[asa] pretraining cohort: model.pretrained={pretrained} carries no cohort digests, so the "
                  f"validation and test cases were not checked against it ({how})", flush=True)
        return None
    subsets = {name: list(splits.get(name) or []) for name in ("val", "test")}

    def check() -> tuple[dict[str, Any], dict[str, Any]]:
        found = cohort_overlap(cohort, subsets, workers=workers)
        check_carried_list(state, cohort, where)
        return found, cohort_digest(cohort)  # both taken on the one read of the list

    report, digest = on_main_then_share(check, env)
    if env.is_main:
        print(f"[asa] pretraining cohort: {overlap_line(report)}", flush=True)
    test, n_test = report["test"]["overlapping"], report["test"]["n"]
    report = {"pretrained": str(pretrained), "cohort": digest, "subsets": report,
              "accepted": bool(test) and bool(accept)}  # test cases of the cohort kept, with ACCEPT_OPTION
    if test and not accept:
        raise OptionError(f"model.pretrained={pretrained}: {len(test)} of the {n_test} test case(s) "
                          f"({', '.join(test[:5])}{' ...' if len(test) > 5 else ''}) were in the encoder's "
                          "pretraining cohort, so its test metrics would not be held out; split the data without "
                          f"them, or set {ACCEPT_OPTION}=true to train anyway")
    return report


def check_probe_overlap(entries: Sequence[str], cases: Sequence[Case], *, accept: bool,
                        workers: int = 1) -> dict[str, dict[str, Any]]:
    """asa-probe's check: each probed case is held out in one fold, so each of ``cases`` found in the
    pretraining cohort of an encoder file of ``entries`` (by id, subject or content; the images digested once
    for all encoders) is said in one line per encoder and refused (`OptionError`) unless ``accept``
    (``data.accept_pretraining_overlap``). Returns {entry: overlap report} of the files that carry a cohort."""
    cohorts = {}
    for entry in dict.fromkeys(entries):
        try:
            cohorts[entry] = encoder_cohort(entry, option="encoders")
        except CohortListMissing as err:
            print(f"[asa] pretraining cohort of {entry}: {err}; the probed cases were not checked against it",
                  flush=True)
    for entry in [e for e, c in cohorts.items() if c is None]:
        print(f"[asa] pretraining cohort of {entry}: the file carries no cohort digests, so the probed cases were not "
              "checked against it", flush=True)
        del cohorts[entry]
    if not cohorts:
        return {}
    digests, prints = image_signatures(cases, workers=workers)
    reports = {}
    for entry, cohort in cohorts.items():
        report = reports[entry] = cohort_overlap(cohort, {"probed": cases}, digests=digests, fingerprints=prints)
        print(f"[asa] pretraining cohort of {entry}: {overlap_line(report)}", flush=True)
        found = report["probed"]["overlapping"]
        if found and not accept:
            raise OptionError(f"encoders: {entry}: {len(found)} of the {len(cases)} probed case(s) "
                              f"({', '.join(found[:5])}{' ...' if len(found) > 5 else ''}) were in its pretraining "
                              "cohort, and every probed case is held out in one fold, so its scores would not be held "
                              f"out; probe other cases (split_file, subset), or set {ACCEPT_OPTION}=true to probe "
                              "anyway")
    return reports


def write_overlap(out_dir: str | os.PathLike, report: dict[str, Any]) -> Path:
    """Keep a fine-tuning run's overlap report (:func:`check_pretraining_overlap`) as ``pretraining_overlap.json``
    beside its ``splits.json``, where asa-evaluate finds it, and the list of the encoder's cohort as
    ``pretraining_cohort.json.gz`` (read again from the encoder file), which asa-export of the run's checkpoints
    carries on (:func:`recorded_cohort`), so that a second fine-tuning or a probe of the exported folder is checked.
    The list is copied as it is read (one read, whatever its size) and kept only when its digest is the checked one's."""
    pretrained = report["pretrained"]
    try:
        cohort = carried_cohort(load_weights(pretrained), f"model.pretrained={pretrained}", weights_folder(pretrained),
                                verify=False)  # the copy's digest is compared below
        if cohort is not None:
            path, found = keep_cohort_list(cohort, out_dir, ENCODER_COHORT_FILE)
            if found["digest"] != (report.get("cohort") or {}).get("digest"):
                path.unlink()
    except (CohortListMissing, ValueError, OSError) as err:  # moved since the check: the report is kept all the same
        print(f"[asa] warning: the encoder's cohort list was not kept in {out_dir} ({err}); an export of this run "
              "carries no cohort", file=sys.stderr, flush=True)
    return atomic_write_json(Path(out_dir) / OVERLAP_FILE, report)


def overlap_statement(recorded: Mapping[str, Any], subsets: Sequence[str] | str | None = None) -> dict[str, Any] | None:
    """What a fine-tuning run's overlap report (:func:`check_pretraining_overlap`, ``pretraining_overlap.json``)
    says of ``subsets`` (None: all it holds), for ``summary.json`` and the model card: ``{"pretrained", subset:
    {"cases", "of"}, "accepted", "text"}``, the text e.g. "5 of 9 test cases were in the pretraining cohort,
    accepted (data.accept_pretraining_overlap=true)"; None when the report holds none of them."""
    parts = recorded.get("subsets") if isinstance(recorded.get("subsets"), Mapping) else {}
    names = list(parts) if subsets is None else [subsets] if isinstance(subsets, str) else list(subsets)
    found = {s: {"cases": len(parts[s]["overlapping"]), "of": int(parts[s]["n"])} for s in names if s in parts}
    if not found:
        return None
    named = {"val": "validation", "test": "test"}
    test = found.get("test", {}).get("cases", 0)
    # a run whose test cases were in the cohort was refused unless accepted: written before "accepted" was recorded
    accepted = bool(recorded.get("accepted", test > 0)) and test > 0
    text = "; ".join(f"{v['cases']} of {v['of']} {named.get(s, s)} cases were in the pretraining cohort"
                     + (f", accepted ({ACCEPT_OPTION}=true)" if s == "test" and accepted else "")
                     for s, v in found.items())
    return {"pretrained": recorded.get("pretrained"), **found, "accepted": accepted, "text": text}


def recorded_overlap(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The overlap report a fine-tuning run kept in ``folder`` (``pretraining_overlap.json``), None without one."""
    try:
        recorded = json.loads((Path(folder) / OVERLAP_FILE).read_text())
    except (OSError, ValueError):
        return None
    return recorded if isinstance(recorded, dict) and isinstance(recorded.get("subsets"), dict) else None


def evaluated_overlap_line(split_file: str | os.PathLike | None, subsets: Sequence[str] | str) -> str | None:
    """asa-evaluate's line: how many of the evaluated ``subsets`` of ``split_file`` were in the pretraining cohort,
    as asa-finetune found and recorded it beside that file (``pretraining_overlap.json``); None without a record."""
    if split_file is None:
        return None
    path = Path(str(split_file)).expanduser().parent / OVERLAP_FILE
    recorded = recorded_overlap(path.parent)
    found = {s: recorded["subsets"][s] for s in ([subsets] if isinstance(subsets, str) else subsets)
             if s in recorded["subsets"]} if recorded is not None else {}
    if not found:
        return None
    return f"{overlap_line(found)} (asa-finetune's check of {recorded.get('pretrained')}, {path})"
