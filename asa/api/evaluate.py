"""Evaluation as a Python function: the job behind `asa-evaluate`, which the fine-tuning task of ``data.task``
runs (`asa.api.tasks`; segmentation: Dice, HD95, NSD, encoder reliance; case targets: metrics with intervals).

Which cases are scored is said and kept in ``summary.json`` (``split``): by default (``split_file=auto``) the
``subset`` of the split of the run whose checkpoint wrote the predictions (``pred/predictions.json`` names it), so
that the model's training cases are not scored as if held out. An output folder holding an earlier evaluation is
refused unless ``overwrite=true``, which moves its files to ``<output>.replaced-<time>/`` (nothing is deleted).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from asa.api.configuration.checks import as_config
from asa.api.machinery.cohort import evaluated_overlap_line, overlap_statement, recorded_overlap
from asa.api.machinery.prediction import MANIFEST
from asa.api.machinery.run import OptionError, refusing
from asa.api.machinery.rundir import RunDirError, check_writable, held_refusal, move_files_aside
from asa.api.configuration.schema import EvaluateConfig
from asa.api.tasks import finetune_task
from asa.eval.evaluate import PER_CASE_CSV, SUMMARY_JSON
from asa.eval.reliance import RELIANCE_CSV, RELIANCE_JSON
from asa.io import atomic_write_json

__all__ = ["AUTO", "EVALUATION_FILES", "ScoredSplit", "evaluate"]

APP = "asa-evaluate"
AUTO = "auto"  # split_file=auto: the split of the run whose checkpoint wrote pred
EVALUATION_FILES = (SUMMARY_JSON, PER_CASE_CSV, RELIANCE_CSV, RELIANCE_JSON)  # what an evaluation writes in output


@dataclass(frozen=True)
class ScoredSplit:
    """Which cases an evaluation scored, as ``summary.json`` keeps it (``split``): ``split_file`` (None: every
    case of ``data.root``) and its ``subset``, ``chosen`` how (as given, or what ``split_file=auto`` found), and the
    ``training_cases`` of the checkpoint's run among the predictions scored (``split_file=null``)."""

    split_file: str | None
    subset: str | None
    chosen: str
    training_cases: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """As ``summary.json`` keeps it (JSON: lists)."""
        return {**dataclasses.asdict(self), "training_cases": list(self.training_cases)}


def evaluate(config: EvaluateConfig | DictConfig) -> dict:
    """Evaluate as configured (asa-evaluate); returns the summary (also written to ``<output>/summary.json``).

    ``config``: the typed config (EvaluateConfig, e.g. from ``load_config("evaluate")``) or a composed
    Hydra config; it is checked against the schema first. The fine-tuning task of ``data.task``
    (`asa.api.tasks`) scores the cases of `_scored_split` (said in one line). An ``output`` holding an earlier
    evaluation is refused (`RunDirError`, nothing written) unless ``overwrite``. With a fine-tuning run's split,
    one line says how many evaluated cases were in the encoder's pretraining cohort, as that run's check recorded
    it (``pretraining_overlap.json``)."""
    with refusing():  # nothing is written before the end: a bad option or input refuses the job (exit 2)
        cfg = as_config(config, "evaluate")
        out = Path(cfg.output).expanduser().absolute()
        check_writable(out, "output")  # before the scoring, not after it
        held = _earlier_evaluation(out, overwrite=cfg.overwrite)
        split = _scored_split(cfg)
        cfg = dataclasses.replace(cfg, split_file=split.split_file)
        if (line := evaluated_overlap_line(cfg.split_file, cfg.subset)) is not None:
            print(f"[asa] pretraining cohort: {line}", flush=True)
        if held:
            aside = move_files_aside(out, held)
            print(f"[asa] overwrite=true: moved the previous evaluation ({', '.join(held)}) to {aside}",
                  file=sys.stderr, flush=True)
        summary = finetune_task(cfg.data.task).evaluate(cfg)
    return _with_records(summary, cfg, split)


def _earlier_evaluation(out: Path, *, overwrite: bool) -> list[str]:
    """The files of an earlier evaluation in ``out`` (`EVALUATION_FILES`) that ``overwrite`` moves aside; without
    it they are refused as asa-predict refuses earlier predictions (`held_refusal`). Only these files are moved:
    ``output`` may be a folder that holds other things (the predictions scored, a run)."""
    if out.exists() and not out.is_dir():
        raise RunDirError(f"output={out} is a file, not a folder")
    held = [name for name in EVALUATION_FILES if (out / name).is_file()]
    if held and not overwrite:
        raise RunDirError(held_refusal(out, held, app=APP, what="an evaluation",
                                       moved="its files are moved"))
    return held


def _writer(cfg: EvaluateConfig) -> tuple[str | None, set[str]]:
    """(the checkpoint that wrote ``pred``, as its `MANIFEST` names it, and the cases it predicted there); without a
    readable manifest naming one checkpoint: ``reliance.checkpoint`` (None without it) and no cases."""
    manifest = Path(str(cfg.pred)).expanduser() / MANIFEST if cfg.pred is not None else None
    if manifest is not None and manifest.is_file():
        try:
            cases = json.loads(manifest.read_text()).get("cases") or {}
        except (OSError, ValueError, AttributeError):
            cases = {}
        checkpoints = {str(c.get("checkpoint")) for c in cases.values() if isinstance(c, dict) and c.get("checkpoint")}
        if len(checkpoints) == 1:
            return checkpoints.pop(), set(cases)
    return (None if cfg.reliance.checkpoint is None else str(cfg.reliance.checkpoint)), set()


def _run_splits(checkpoint: str) -> tuple[Path, dict[str, list[str]]] | None:
    """(``<run>/splits.json``, its parts) of the fine-tuning run whose ``<run>/checkpoints/`` holds ``checkpoint``;
    None for a checkpoint elsewhere (an asa-export folder) or a run without a readable one."""
    path = Path(checkpoint).expanduser()
    if path.parent.name != "checkpoints" or not (path.parent.parent / "splits.json").is_file():
        return None
    splits = path.parent.parent / "splits.json"
    try:
        parts = json.loads(splits.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(parts, dict):
        return None
    return splits, {k: [str(i) for i in v] for k, v in parts.items() if isinstance(v, list)}


def _scored_split(cfg: EvaluateConfig) -> ScoredSplit:
    """The cases to score, said in one line. ``split_file`` given: as given. ``auto``: the ``subset`` of the split of
    the run whose checkpoint wrote ``pred`` (`_writer`, `_run_splits`), every case where none is found or where
    none of the predictions is of a case of that split (other data). ``null``: every case, with a warning naming
    the checkpoint's training cases among the predictions. Refuses (`OptionError`) an ``auto`` split with no
    ``subset`` or whose ``subset`` has no prediction in ``pred``."""
    given = cfg.split_file
    if given is not None and str(given) != AUTO:
        return ScoredSplit(str(given), cfg.subset, "split_file")
    checkpoint, predicted = _writer(cfg)
    found = _run_splits(checkpoint) if checkpoint is not None else None
    if given is None:
        train = sorted(set(found[1].get("train", [])) & predicted) if found is not None else []
        if train:
            print(f"[asa] warning: split_file=null scores every case, and {len(train)} of the {len(predicted)} "
                  f"predictions in pred={cfg.pred} are of training cases of the checkpoint {checkpoint} "
                  f"({found[0]}: train; {', '.join(train[:5])}{', ...' if len(train) > 5 else ''}): their scores "
                  f"are not held out; split_file=auto (the default) scores the run's {cfg.subset} cases",
                  file=sys.stderr, flush=True)
        return ScoredSplit(None, None, "split_file=null: every case", tuple(train))
    if found is None:
        why = (f"pred={cfg.pred} names no checkpoint ({MANIFEST} of asa-predict)" if checkpoint is None else
               f"the checkpoint {checkpoint} is not in a run folder's checkpoints/ beside a splits.json")
        print(f"[asa] split_file=auto: {why}, so every case of data.root is scored; split_file=<run>/splits.json "
              "scores one part of a run's split", file=sys.stderr, flush=True)
        return ScoredSplit(None, None, f"split_file=auto: {why}; every case")
    splits, parts = found
    wrote = "wrote pred" if predicted else "is reliance.checkpoint"
    source = f"the split of the run whose checkpoint {checkpoint} {wrote}"
    if predicted and not predicted & {i for ids in parts.values() for i in ids}:
        print(f"[asa] split_file=auto: none of the predictions in pred={cfg.pred} is of a case of {splits}, "
              f"{source}, so every case of data.root is scored (data the run never split)", file=sys.stderr, flush=True)
        return ScoredSplit(None, None, f"split_file=auto: data outside the split {splits}; every case")
    wanted = set(parts.get(cfg.subset, []))
    if not wanted or (predicted and not wanted & predicted):
        held = ", ".join(f"{name} {len(set(ids) & predicted)}" for name, ids in parts.items())
        if cfg.subset not in parts:
            what = f"has no subset {cfg.subset!r}"
        elif not wanted:
            what = f"has no {cfg.subset} case"
        else:
            what = f"has {cfg.subset} cases none of which pred={cfg.pred} predicts (it predicts, per subset: {held})"
        raise OptionError(f"split_file=auto: {splits}, {source}, {what}; set subset= to one of {', '.join(parts)}, "
                          "split_file= to another run's splits.json, or split_file=null to score every case")
    print(f"[asa] split_file=auto: scoring the {cfg.subset} cases of {splits}, {source}; split_file=null scores "
          "every case", flush=True)
    return ScoredSplit(str(splits), cfg.subset, f"split_file=auto: the run of {checkpoint}")


def _with_records(summary: dict, cfg: EvaluateConfig, split: ScoredSplit) -> dict:
    """``summary`` and its ``summary.json`` with ``split`` (`ScoredSplit`: which cases were scored) and, with a
    fine-tuning run's split, ``pretraining_overlap``: how many of the scored subset's cases were in the encoder's
    pretraining cohort, as that run recorded it (`asa.api.machinery.cohort.overlap_statement`: "5 of 9 test cases
    were in the pretraining cohort, accepted"), so that metrics over cases the model saw say so where they are kept."""
    recorded = recorded_overlap(Path(str(cfg.split_file)).expanduser().parent) if cfg.split_file else None
    statement = overlap_statement(recorded, cfg.subset) if recorded is not None else None
    path = Path(cfg.output).expanduser().absolute() / SUMMARY_JSON
    if not path.is_file():
        return summary
    records: dict[str, Any] = {"split": split.to_dict()}
    if statement is not None:
        records["pretraining_overlap"] = statement
    atomic_write_json(path, {**json.loads(path.read_text()), **records})
    return {**summary, **records}
