"""The built-in fine-tuning tasks (`asa.api.tasks`): segmentation (voxel labels) and case targets (one
classification or regression target per case)."""

from __future__ import annotations

from pathlib import Path

from asa.api.common import refusing
from asa.api.evaluate import evaluate_case, evaluate_segmentation
from asa.api.finetune import finetune_segmentation
from asa.api.finetune_case import CASE_TASK, finetune_case
from asa.api.predict import predict_segmentation
from asa.api.predict_case import predict_case
from asa.api.probe import case_probe_targets, segmentation_probe_targets
from asa.api.schema import EvaluateConfig, FinetuneConfig, FrozenProbeConfig, PredictConfig
from asa.api.tasks import FinetuneTask, PredictSetup, ProbeTargets, register_finetune_task
from asa.train import FitResult

__all__ = ["CaseTask", "SegmentationTask"]


@register_finetune_task
class SegmentationTask(FinetuneTask):
    """Voxel labels: ``data.task`` a segmentation task of `asa.data.get_task` (brats, ibsr, wmh, msd).
    It claims every name no other task claims, and `asa.data.get_task` refuses the unknown ones."""

    name = "segmentation"

    @classmethod
    def claims(cls, data_task: str) -> bool:
        return True

    def finetune(self, cfg: FinetuneConfig) -> FitResult:
        return finetune_segmentation(cfg)

    def predict(self, cfg: PredictConfig, state: dict, checkpoint: Path, inputs: list[str] | str,
                setup: PredictSetup) -> list[Path]:
        return predict_segmentation(cfg, state, checkpoint, inputs, setup)

    def evaluate(self, cfg: EvaluateConfig) -> dict:
        return evaluate_segmentation(cfg)

    def probe_targets(self, cfg: FrozenProbeConfig, root: Path, layout: str) -> ProbeTargets:
        return segmentation_probe_targets(cfg, root, layout)


@register_finetune_task
class CaseTask(FinetuneTask):
    """One target per case (``data.task=case``): diagnosis classification or brain-age regression from
    ``data.target`` with a pooled-token head."""

    name = CASE_TASK

    @classmethod
    def claims(cls, data_task: str) -> bool:
        return data_task == CASE_TASK

    def finetune(self, cfg: FinetuneConfig) -> FitResult:
        return finetune_case(cfg)

    def predict(self, cfg: PredictConfig, state: dict, checkpoint: Path, inputs: list[str] | str,
                setup: PredictSetup) -> list[Path]:
        with refusing():  # every check of a case head's prediction runs before its one file is written
            return predict_case(cfg, state, checkpoint, inputs, setup)

    def evaluate(self, cfg: EvaluateConfig) -> dict:
        return evaluate_case(cfg)

    def probe_targets(self, cfg: FrozenProbeConfig, root: Path, layout: str) -> ProbeTargets:
        return case_probe_targets(cfg, root, layout)
