"""The typed Python API: the jobs behind the console scripts, and their typed configs.

    from asa.api import load_config, pretrain

    cfg = load_config("pretrain", "trainer=smoke")    # PretrainConfig: the asa-pretrain defaults + overrides
    cfg.output_dir = "runs/notebook"
    result = pretrain(cfg)

Each job also takes a composed Hydra config (what the console scripts pass).
"""

from asa.api.config import compose_config, load_config
from asa.api.evaluate import evaluate
from asa.api.export import export_model
from asa.api.finetune import finetune
from asa.api.predict import predict
from asa.api.preprocess import preprocess
from asa.api.pretrain import pretrain
from asa.api.probe import probe
from asa.api.configuration.schema import (EvaluateConfig, FinetuneConfig, FrozenProbeConfig, PredictConfig, PreprocessConfig,
                            PretrainConfig)
from asa.api.tasks import FinetuneTask, TaskSettings, register_finetune_task
# the built-in tasks register themselves
from asa.api.tasks import segmentation  # noqa: F401,I001
from asa.api.tasks import case  # noqa: F401

__all__ = [
    "EvaluateConfig", "FinetuneConfig", "FinetuneTask", "FrozenProbeConfig", "PredictConfig", "PreprocessConfig",
    "PretrainConfig", "compose_config", "evaluate", "export_model", "finetune", "load_config", "predict", "preprocess",
    "pretrain", "probe", "register_finetune_task", "TaskSettings",
]
