"""Evaluation as a Python function: the job behind `asa-evaluate`, which the fine-tuning task of ``data.task``
runs (`asa.api.tasks`; segmentation: Dice, HD95, NSD, encoder reliance; case targets: metrics with intervals)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from asa.api.configuration.checks import as_config
from asa.api.machinery.cohort import evaluated_overlap_line
from asa.api.machinery.run import refusing
from asa.api.machinery.rundir import check_writable
from asa.api.configuration.schema import EvaluateConfig
from asa.api.tasks import finetune_task

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
        return finetune_task(cfg.data.task).evaluate(cfg)
