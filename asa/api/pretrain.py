"""ASA pretraining as a Python function: the job behind `asa-pretrain` (its hooks: `asa.api.machinery.pretraining`)."""
from __future__ import annotations

from omegaconf import DictConfig

from asa.api.configuration.checks import as_config
from asa.api.machinery.pretraining import PretrainJob
from asa.api.machinery.run import refusing
from asa.api.configuration.schema import PretrainConfig
from asa.train import FitResult

__all__ = ["pretrain"]


def pretrain(config: PretrainConfig | DictConfig) -> FitResult:
    """Pretrain as configured (asa-pretrain); returns the engine's FitResult (rank 0 writes every file).

    ``config``: the typed config (PretrainConfig, e.g. from ``load_config("pretrain")``) or a composed
    Hydra config; it is checked against the schema first."""
    with refusing():  # a key the schema does not know (e.g. added with +key=value): refused
        cfg = as_config(config, "pretrain")
    return PretrainJob().train(cfg)
