"""The training loop's settings: the ``trainer`` config group plus what the data and optim groups set."""
from __future__ import annotations

from dataclasses import dataclass, field

from asa.choices import one_of
from .precision import AMP_CHOICES

__all__ = ["TrainerSettings", "TrainConfig"]

MODES = ("min", "max")  # of the monitored metric


@dataclass
class TrainerSettings:
    """Training-loop settings of the `trainer` config group (it maps 1:1 onto these fields; the
    structured config checks their types when it is composed, these checks their ranges)."""

    epochs: int = 100  # the lr schedule spans epochs × steps_per_epoch
    max_steps: int | None = None  # stop after this many optimiser steps; the schedule still spans `epochs`
    batch_size: int = 2  # per device
    accum_steps: int = 1  # micro-batches per optimiser step (no all-reduce on the others)
    warmup_epochs: float = 0.0
    warmup_steps: int | None = None  # overrides warmup_epochs when set
    amp: str = one_of("auto", AMP_CHOICES)  # auto (fp16 on CUDA, bf16 on a CPU with native bf16, else off) | fp16 | bf16 | off
    threads: int | None = None  # torch intra-op threads (None: torch's default)
    compile: bool = False  # torch.compile the model's blocks (see asa.models.compile_blocks)
    clip_grad: float | None = None  # max global grad norm; the norm is logged either way
    log_every: int = 10  # steps
    ckpt_every: int = 100  # steps between last.pt writes (also at the end, on a stop signal, at the first epoch's
    # end, and at an epoch's end when ckpt_every steps have passed since the last write; 0: at every epoch's end)
    ckpt_minutes: float = 10.0  # last.pt also once this many minutes have passed since it was last written, so
    # that a SIGKILL loses at most that much (0: steps only); docs/run-folders.md gives the write's measured cost
    keep_last: int = 0  # >0: also keep the newest k step_XXXXXXXX.pt files
    keep_steps: list[int] = field(default_factory=list)  # steps whose state is also kept as kept_XXXXXXXX.pt, never
    # pruned: a run read at a shorter budget than its own (asa-study's head start; a pretraining run's export_step)
    val_every: int = 1  # epochs between validation rounds (and one at the run's end)
    val_every_steps: int | None = None  # optimiser steps between validation rounds instead of val_every's epochs
    # (null: by epochs); the round falls at the step itself, also inside an epoch
    val_min_steps: int = 0  # of the epoch cadence: a round due at an epoch's end waits until this many optimiser
    # steps have passed since the last round (the run's first and last rounds always run; 0: every epoch's end
    # runs it), so that short epochs (a small cohort) do not validate every few steps (docs/speed.md)
    monitor: str = "val/loss"
    mode: str = one_of("min", MODES)  # min | max
    patience: int | None = None  # validation rounds without improvement before stopping
    max_nonfinite: int = 5  # consecutive non-finite steps (loss or gradient) before aborting
    panel_every: int = 0  # epochs between image panels (0 = never)
    progress: bool = True
    deterministic: bool = True  # deterministic kernels on CPU and CUDA (asa.train.rng.kernel_determinism); false: cuDNN autotunes
    find_unused_parameters: bool = False

    def __post_init__(self) -> None:
        if self.amp not in AMP_CHOICES:
            raise ValueError(f"trainer.amp={self.amp!r}: expected one of {', '.join(AMP_CHOICES)}")
        if self.threads is not None and int(self.threads) < 1:
            raise ValueError(f"trainer.threads={self.threads}: expected a positive thread count or null")
        if self.mode not in MODES:
            raise ValueError(f"trainer.mode={self.mode!r}: expected 'min' or 'max'")
        for name in ("epochs", "batch_size", "accum_steps", "log_every", "val_every", "max_nonfinite"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"trainer.{name}={getattr(self, name)}: expected >= 1")
        if int(self.val_min_steps) < 0:
            raise ValueError(f"trainer.val_min_steps={self.val_min_steps}: expected >= 0 optimiser steps between "
                             "validation rounds (0: a round at every trainer.val_every epochs' end)")
        if self.val_every_steps is not None:
            if int(self.val_every_steps) < 1:
                raise ValueError(f"trainer.val_every_steps={self.val_every_steps}: expected >= 1 optimiser steps, or "
                                 "null to validate by epochs (trainer.val_every)")
            if int(self.val_every) != 1:
                raise ValueError(f"trainer.val_every={self.val_every} (epochs) and trainer.val_every_steps="
                                 f"{self.val_every_steps} (optimiser steps) both set the validation cadence: keep one")
        if not float(self.ckpt_minutes) >= 0:  # also NaN
            raise ValueError(f"trainer.ckpt_minutes={self.ckpt_minutes}: expected minutes >= 0 (0: by steps only)")
        if odd := [s for s in self.keep_steps if int(s) < 1]:
            raise ValueError(f"trainer.keep_steps={list(self.keep_steps)}: {odd} are not optimiser steps (expected "
                             ">= 1)")
        if self.max_steps is not None and int(self.max_steps) < 1:  # 0 or fewer steps: an untrained export
            raise ValueError(f"trainer.max_steps={self.max_steps}: expected >= 1, or null to train the whole "
                             "schedule (trainer.epochs)")


@dataclass
class TrainConfig(TrainerSettings):
    """Everything the Engine reads: the trainer settings plus what the data and optim groups set."""

    num_workers: int = 0  # DataLoader workers per rank (data.num_workers)
    schedule: str = "cosine"  # cosine | poly | constant (optim.schedule)
    min_lr: float = 0.0  # (optim.min_lr)
    power: float = 0.9  # poly exponent (optim.power)
    warmup_fraction: float = 0.0  # linear warm-up over this fraction of the schedule (optim.warmup_fraction)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ValueError(f"optim.warmup_fraction={self.warmup_fraction}: expected a value in [0, 1)")
        if self.warmup_fraction > 0 and (self.warmup_steps is not None or self.warmup_epochs > 0):
            raise ValueError(f"optim.warmup_fraction={self.warmup_fraction} and trainer.warmup_epochs="
                             f"{self.warmup_epochs} / warmup_steps={self.warmup_steps} both set the warm-up: keep one")

