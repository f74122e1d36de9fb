"""Fine-tuning as a Python function: the job behind `asa-finetune`, which runs the training of the
fine-tuning task that claims ``data.task`` (`asa.api.tasks.FinetuneTask.finetune`: one skeleton, the
task's hooks)."""

from __future__ import annotations

from omegaconf import DictConfig

from asa.api.configuration.checks import as_config
from asa.api.machinery.run import refusing
from asa.api.configuration.schema import FinetuneConfig
from asa.api.tasks import finetune_task
from asa.train import FitResult

__all__ = ["finetune"]


def finetune(config: FinetuneConfig | DictConfig) -> FitResult:
    """Fine-tune as configured (asa-finetune); returns the engine's FitResult (rank 0 writes every file).

    ``config``: the typed config (FinetuneConfig, e.g. from ``load_config("finetune")``) or a composed
    Hydra config; it is checked against the schema first (its ``task`` section against the task's settings)."""
    with refusing():  # a key the schema does not know (e.g. added with +key=value): refused
        cfg = as_config(config, "finetune")
        task = finetune_task(cfg.data.task)
    return task.finetune(cfg)
