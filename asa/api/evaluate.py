"""Evaluation as a Python function: the job behind `asa-evaluate`, which the fine-tuning task of ``data.task``
runs (`asa.api.tasks`; segmentation: Dice, HD95, NSD, encoder reliance; case targets: metrics with intervals)."""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig

from asa.api.configuration.checks import as_config
from asa.api.machinery.cohort import evaluated_overlap_line, overlap_statement, recorded_overlap
from asa.api.machinery.run import refusing
from asa.api.machinery.rundir import check_writable
from asa.api.configuration.schema import EvaluateConfig
from asa.api.tasks import finetune_task
from asa.io import atomic_write_json

__all__ = ["evaluate"]


def evaluate(config: EvaluateConfig | DictConfig) -> dict:
    """Evaluate as configured (asa-evaluate); returns the summary (also written to ``<output>/summary.json``).

    ``config``: the typed config (EvaluateConfig, e.g. from ``load_config("evaluate")``) or a composed
    Hydra config; it is checked against the schema first. The fine-tuning task of ``data.task``
    (`asa.api.tasks`) scores. With a fine-tuning run's ``split_file``, one line says how many evaluated cases
    were in the encoder's pretraining cohort, as that run's check recorded it (``pretraining_overlap.json``)."""
    with refusing():  # nothing is written before the end: a bad option or input refuses the job (exit 2)
        cfg = as_config(config, "evaluate")
        check_writable(Path(cfg.output).absolute(), "output")  # before the scoring, not after it
        if (line := evaluated_overlap_line(cfg.split_file, cfg.subset)) is not None:
            print(f"[asa] pretraining cohort: {line}", flush=True)
        summary = finetune_task(cfg.data.task).evaluate(cfg)
    return _with_overlap(summary, cfg)


def _with_overlap(summary: dict, cfg: EvaluateConfig) -> dict:
    """``summary`` and its ``summary.json`` with ``pretraining_overlap``: how many of the scored subset's cases
    were in the encoder's pretraining cohort, as the fine-tuning run of ``split_file`` recorded it
    (`asa.api.machinery.cohort.overlap_statement`: "5 of 9 test cases were in the pretraining cohort, accepted"),
    so that metrics over cases the encoder saw say so where they are kept."""
    recorded = recorded_overlap(Path(str(cfg.split_file)).expanduser().parent) if cfg.split_file else None
    statement = overlap_statement(recorded, cfg.subset) if recorded is not None else None
    path = Path(cfg.output).absolute() / "summary.json"
    if statement is None or not path.is_file():
        return summary
    written = json.loads(path.read_text())
    atomic_write_json(path, {**written, "pretraining_overlap": statement})
    return {**summary, "pretraining_overlap": statement}
