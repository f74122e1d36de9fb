"""Training infrastructure shared by pretraining and fine-tuning: distributed setup, optimisers,
schedules, checkpoints, seeding and the generic `Engine`."""
from __future__ import annotations

from .checkpoint import (
    CheckpointError,
    IncompatibleCheckpointError,
    check_compatible,
    load_checkpoint,
    save_checkpoint,
)
from .distributed import DistEnv, all_reduce_mean, cleanup_distributed, setup_distributed
from .engine import Engine, FitResult, NonFiniteLossError, fit
from .optim import build_optimizer, param_groups, scaled_lr
from .rng import capture_rng, fork_rng, restore_rng, seed_everything
from .schedule import lr_at
from .settings import TrainConfig, TrainerSettings

__all__ = [
    "CheckpointError", "IncompatibleCheckpointError", "check_compatible", "load_checkpoint", "save_checkpoint",
    "DistEnv", "all_reduce_mean", "cleanup_distributed", "setup_distributed",
    "Engine", "FitResult", "NonFiniteLossError", "TrainConfig", "TrainerSettings", "fit",
    "build_optimizer", "param_groups", "scaled_lr",
    "capture_rng", "fork_rng", "restore_rng", "seed_everything", "lr_at",
]
