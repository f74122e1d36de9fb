"""Training infrastructure shared by pretraining and fine-tuning: distributed setup, optimisers,
schedules, precision, the training-checkpoint format and resume checks, seeding, data loading, preemption,
reporting, image panels and the generic `Engine` (checkpoint files are read and written by `asa.io`); and,
in `asa.train.pretrain`, what every pretraining method shares (validation by its loss, the encoder export).
A method's own step and panels live with the method (`asa.methods`), a task's own loss, step and
validation with the task (`asa.api.tasks`)."""
from __future__ import annotations

from .checkpoint import IncompatibleCheckpointError, check_compatible
from .distributed import DistEnv, all_reduce_mean, cleanup_distributed, setup_distributed
from .engine import Engine, FitResult, NonFiniteLossError, fit
from .optim import build_optimizer, param_groups, scaled_lr
from .resume import ResumePoint, check_training_checkpoint
from .rng import capture_rng, fork_rng, restore_rng, seed_everything
from .schedule import lr_at
from .settings import TrainConfig, TrainerSettings

__all__ = [
    "IncompatibleCheckpointError", "check_compatible",
    "DistEnv", "all_reduce_mean", "cleanup_distributed", "setup_distributed",
    "Engine", "FitResult", "NonFiniteLossError", "ResumePoint", "TrainConfig", "TrainerSettings", "check_training_checkpoint",
    "fit",
    "build_optimizer", "param_groups", "scaled_lr",
    "capture_rng", "fork_rng", "restore_rng", "seed_everything", "lr_at",
]
